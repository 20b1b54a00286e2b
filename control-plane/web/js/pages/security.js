// Both roles: the account's second factor (TOTP). Enrol with an authenticator
// app from a QR code, confirm with its first code, keep the recovery codes
// (shown once), or remove it with the password and a code.

import { h, replace } from '../dom.js';
import { get, post, del } from '../api.js';
import { pageHeader, card, button, field, formBanner, onSubmit, alert, toast, secretBox, dl } from '../ui.js';

function passwordField() {
  return field({ label: 'Password', name: 'password', type: 'password', required: true, autocomplete: 'current-password', test: 'totp-password' });
}

function codeField(opts = {}) {
  return field({
    label: opts.label || 'Code from the app', name: 'code', required: true, autocomplete: 'one-time-code',
    inputmode: opts.recovery ? 'text' : 'numeric', hint: opts.hint, test: 'totp-code',
  });
}

function wrongPassword(err) {
  if (err.status === 401) {
    err.field = 'password';
    err.message = 'The password is wrong.';
  }
  return err;
}

export async function securityPage(ctx) {
  ctx.setTitle('Two-factor sign-in');
  const slot = h('div', { 'data-test': 'totp-panel' });
  ctx.view.append(
    pageHeader('Two-factor sign-in', { subtitle: 'A one-time code from an authenticator app, asked for after your password on the dashboard and the API.' }),
    card(null, slot, { class: 'narrow' }),
  );
  const show = async () => {
    const status = await get('/v1/auth/totp');
    if (status.enabled) enabledView(slot, status, show);
    else startView(slot, show);
  };
  await show();
}

function startView(slot, show) {
  const form = h('form', { novalidate: true, class: 'narrow-form', 'data-test': 'totp-start-form' },
    formBanner(),
    h('p', null, 'Two-factor sign-in is off. Turn it on to ask for a code from your phone each time you sign in.'),
    passwordField(),
    h('div', { class: 'form-actions' }, button('Set up', { kind: 'primary', type: 'submit', test: 'totp-start' })));
  onSubmit(form, async (fd) => {
    let enrolment;
    try {
      enrolment = await post('/v1/auth/totp', { password: fd.get('password') || '' }, { allow401: true });
    } catch (err) {
      throw wrongPassword(err);
    }
    confirmView(slot, enrolment, show);
  });
  replace(slot, form);
}

function confirmView(slot, enrolment, show) {
  // The QR code is an SVG document from the server, shown as an image so none of it runs.
  const qr = h('img', {
    class: 'totp-qr', alt: 'QR code to scan with an authenticator app', width: 200, height: 200, 'data-test': 'totp-qr',
    src: `data:image/svg+xml;base64,${btoa(enrolment.qr_svg)}`,
  });
  const form = h('form', { novalidate: true, class: 'narrow-form', 'data-test': 'totp-confirm-form' },
    formBanner(),
    h('ol', { class: 'steps' },
      h('li', null, 'Scan this code with an authenticator app (or type the key below).'),
      h('li', null, 'Enter the six-digit code the app shows.')),
    h('div', { class: 'totp-enrol' }, qr,
      dl([['Key', h('code', { class: 'mono', 'data-test': 'totp-secret' }, enrolment.secret)]])),
    codeField({ hint: 'Six digits; it changes every 30 seconds.' }),
    h('div', { class: 'form-actions' }, button('Turn on', { kind: 'primary', type: 'submit', test: 'totp-confirm' })));
  onSubmit(form, async (fd) => {
    const code = (fd.get('code') || '').trim();
    if (!/^\d{6}$/.test(code)) throw Object.assign(new Error('Enter the six digits the app shows.'), { field: 'code' });
    const { recovery_codes: codes } = await post('/v1/auth/totp/confirm', { code });
    const done = button('I have saved them', { kind: 'primary', test: 'totp-codes-saved', onClick: () => show() });
    replace(slot,
      alert('ok', 'Two-factor sign-in is on.'),
      secretBox('Recovery codes', codes.join('\n'), {
        test: 'totp-recovery',
        note: 'Each one signs you in once if you lose your phone. Shown only this once: keep them somewhere safe.',
      }),
      h('div', { class: 'form-actions' }, done));
    toast('Two-factor sign-in is on.');
  });
  replace(slot, form);
  form.querySelector('input[name="code"]').focus();
}

function enabledView(slot, status, show) {
  const form = h('form', { novalidate: true, class: 'narrow-form', 'data-test': 'totp-remove-form' },
    formBanner(),
    passwordField(),
    codeField({ label: 'Code from the app, or a recovery code', recovery: true }),
    h('div', { class: 'form-actions' }, button('Turn off', { kind: 'danger', type: 'submit', test: 'totp-remove' })));
  onSubmit(form, async (fd) => {
    try {
      await del('/v1/auth/totp', { body: { password: fd.get('password') || '', code: (fd.get('code') || '').trim() }, allow401: true });
    } catch (err) {
      throw wrongPassword(err);
    }
    toast('Two-factor sign-in is off.');
    await show();
  });
  replace(slot,
    alert('ok', 'Two-factor sign-in is on.'),
    dl([['Recovery codes left', h('span', { 'data-test': 'totp-codes-left' }, String(status.recovery_codes_left))]]),
    h('h3', null, 'Turn it off'),
    form);
}
