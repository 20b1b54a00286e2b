// Sign-in: one page for operators and tenants; the role that comes back
// decides where the app goes next.

import { h, icon, replace } from '../dom.js';
import { signIn } from '../api.js';
import { field, formBanner, onSubmit, formValue, alert } from '../ui.js';

export function loginPage(root, { notice, onSignedIn }) {
  document.title = 'Sign in · Cloud CLI Proxy';
  const user = field({ label: 'Username', name: 'username', required: true, autocomplete: 'username', test: 'login-username' });
  const pass = field({ label: 'Password', name: 'password', type: 'password', required: true, autocomplete: 'current-password', test: 'login-password' });
  // Shown once the server asks for it: the account has two-factor sign-in on.
  const code = field({
    label: 'One-time code', name: 'totp_code', autocomplete: 'one-time-code', inputmode: 'numeric',
    hint: 'From your authenticator app, or one of your recovery codes.', test: 'login-totp',
  });
  code.hidden = true;
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block', 'data-test': 'login-submit' }, h('span', null, 'Sign in'));
  const form = h('form', { class: 'login-form', 'data-test': 'login-form', novalidate: true },
    formBanner(), user, pass, code, submit);
  const userInput = user.querySelector('input');
  const passInput = pass.querySelector('input');
  const codeInput = code.querySelector('input');
  onSubmit(form, async (fd) => {
    const username = formValue(fd, 'username');
    const password = fd.get('password') || '';
    if (!username) {
      throw Object.assign(new Error('Enter your username.'), { field: 'username' });
    }
    if (!password) {
      throw Object.assign(new Error('Enter your password.'), { field: 'password' });
    }
    const totpCode = code.hidden ? '' : (fd.get('totp_code') || '').trim();
    if (!code.hidden && !totpCode) {
      throw Object.assign(new Error('Enter the code from your authenticator app.'), { field: 'totp_code' });
    }
    try {
      const session = await signIn(username, password, totpCode);
      onSignedIn(session);
    } catch (err) {
      if (err.code === 'totp_required') {
        code.hidden = false;
        err.message = 'This account has two-factor sign-in: enter the code from your authenticator app.';
        err.field = null;
        setTimeout(() => codeInput.focus(), 0);
      } else if (err.code === 'totp_invalid') {
        codeInput.value = '';
        err.message = 'That code is wrong or was already used. Wait for the next one and try again.';
        err.field = 'totp_code';
      } else if (err.status === 401) {
        passInput.value = '';
        err.message = 'Wrong username or password, or the account is not active.';
        err.field = null;
      }
      throw err;
    }
  });
  const panel = h('div', { class: 'login' },
    h('div', { class: 'login-card' },
      h('div', { class: 'login-brand' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, icon('hosts')),
        h('div', null, h('h1', null, 'Cloud CLI Proxy'), h('p', { class: 'muted' }, 'Sign in to manage your hosts.'))),
      notice ? alert('info', notice) : null,
      form),
    h('p', { class: 'login-foot muted' }, 'Operators and tenants sign in here.'));
  replace(root, panel);
  userInput.focus();
}
