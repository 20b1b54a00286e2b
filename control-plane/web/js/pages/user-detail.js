// Operator: one user: account state, expiry, password rotation, deletion,
// their hosts and their SSH keys.

import { h, replace, fmtTime, timeAgo, badge, shortId } from '../dom.js';
import { get, post, put, patch, del, enc } from '../api.js';
import { pageHeader, card, button, linkButton, dl, dialog, field, formBanner, onSubmit, formValue, toast, busy, describeError, confirmDialog, secretBox, table, errorBox, loading } from '../ui.js';
import { toIso, toLocalInput } from '../forms.js';
import { userStatus } from './users.js';
import { sshKeysCard } from '../sshkeys.js';

export async function userDetailPage(ctx) {
  const id = ctx.params.id;
  let user = await get(`/v1/admin/users/${enc(id)}`);
  ctx.setTitle(`User ${user.username}`);

  const head = h('div');
  const account = h('div');
  const secretSlot = h('div');

  function paint() {
    const toggle = button(user.status === 'active' ? 'Disable' : 'Enable', {
      kind: user.status === 'active' ? 'danger-soft' : 'secondary',
      test: user.status === 'active' ? 'user-disable' : 'user-enable',
      icon: user.status === 'active' ? 'stop' : 'play',
    });
    toggle.addEventListener('click', async () => {
      const disabling = user.status === 'active';
      if (disabling) {
        const ok = await confirmDialog({ title: 'Disable user', message: `Disable ${user.username}? Their sessions and tokens stop working at once, and they cannot sign in until enabled.`, confirmLabel: 'Disable', danger: true });
        if (!ok) return;
      }
      await busy(toggle, async () => {
        try {
          user = await patch(`/v1/admin/users/${enc(id)}`, { status: disabling ? 'disabled' : 'active' });
          toast(`${user.username} ${disabling ? 'disabled' : 'enabled'}.`);
          paint();
        } catch (err) {
          toast(describeError(err), 'error');
        }
      });
    });
    const expiry = button('Set expiry', { icon: 'events', test: 'user-expiry' });
    expiry.addEventListener('click', () => expiryDialog(user, (u) => {
      user = u;
      paint();
    }));
    const rotate = button('Rotate password', { icon: 'refresh', test: 'user-rotate-password' });
    rotate.addEventListener('click', async () => {
      const ok = await confirmDialog({ title: 'Rotate password', message: `Give ${user.username} a new random password? The current one, and every session and API token of this user, stop working.`, confirmLabel: 'Rotate' });
      if (!ok) return;
      await busy(rotate, async () => {
        try {
          const res = await post(`/v1/admin/users/${enc(id)}/rotate-password`);
          replace(secretSlot, secretBox(`New password for ${user.username}`, res.password, { test: 'rotated-password' }));
          secretSlot.scrollIntoView({ block: 'nearest' });
        } catch (err) {
          toast(describeError(err), 'error');
        }
      });
    });
    const remove = button('Delete', { kind: 'danger', icon: 'trash', test: 'user-delete' });
    remove.addEventListener('click', async () => {
      const ok = await confirmDialog({
        title: 'Delete user',
        message: h('div', null, h('p', null, 'This deletes ', h('strong', null, user.username), ', their SSH keys and tokens, and every one of their hosts with its home volume.'), h('p', null, 'It cannot be undone.')),
        confirmLabel: 'Delete user',
        danger: true,
        typeToConfirm: user.username,
      });
      if (!ok) return;
      await busy(remove, async () => {
        try {
          await del(`/v1/admin/users/${enc(id)}`);
          toast(`User ${user.username} deleted; their hosts are being removed.`);
          ctx.navigate('#/users');
        } catch (err) {
          toast(describeError(err), 'error');
        }
      });
    });
    // For someone who lost the phone and the recovery codes of their second factor.
    const resetTotp = user.totp_enabled ? button('Reset two-factor', { icon: 'shield', test: 'user-reset-totp' }) : null;
    if (resetTotp) {
      resetTotp.addEventListener('click', async () => {
        const ok = await confirmDialog({ title: 'Reset two-factor sign-in', message: `Turn off two-factor sign-in for ${user.username}? They sign in with the password alone until they set it up again.`, confirmLabel: 'Reset', danger: true });
        if (!ok) return;
        await busy(resetTotp, async () => {
          try {
            await del(`/v1/admin/users/${enc(id)}/totp`);
            user = { ...user, totp_enabled: false };
            toast(`Two-factor sign-in is off for ${user.username}.`);
            paint();
          } catch (err) {
            toast(describeError(err), 'error');
          }
        });
      });
    }
    replace(head, pageHeader(user.username, {
      back: '#/users',
      subtitle: h('span', { class: 'row' }, userStatus(user), h('span', { class: 'muted' }, 'tenant account'), shortId(user.id)),
      actions: [toggle, expiry, rotate, resetTotp, remove].filter(Boolean),
    }));
    replace(account, card('Account', dl([
      ['Username', h('strong', null, user.username)],
      ['Status', userStatus(user)],
      ['Expires', user.expires_at ? h('span', null, fmtTime(user.expires_at), ' ', h('span', { class: 'muted' }, '(', timeAgo(user.expires_at), ')')) : h('span', { class: 'muted' }, 'never')],
      ['Two-factor sign-in', h('span', { 'data-test': 'user-totp' }, user.totp_enabled ? 'on' : 'off')],
      ['Created', fmtTime(user.created_at)],
      ['Updated', fmtTime(user.updated_at)],
      ['ID', h('code', { class: 'mono' }, user.id)],
    ]), { test: 'user-account' }));
  }
  paint();

  const hostsBody = h('div', null, loading());
  const hostsCard = card('Hosts', hostsBody, {
    class: 'card-flush',
    actions: [
      linkButton('All in hosts list', `#/hosts?user_id=${enc(id)}`, { small: true }),
      linkButton('New host', `#/hosts?new=1&user_id=${enc(id)}`, { small: true, kind: 'primary', icon: 'plus', test: 'user-new-host' }),
    ],
  });
  async function loadHosts() {
    try {
      const page = await get('/v1/admin/hosts', { user_id: id, page_size: 20 });
      replace(hostsBody, table({
        rows: page.data || [],
        emptyText: 'This user has no host yet.',
        rowAttrs: (x) => ({ 'data-test': 'host-row', 'data-host-id': x.id }),
        columns: [
          { label: 'Host', cell: (x) => h('a', { href: `#/hosts/${enc(x.id)}`, class: 'cell-main' }, x.name || x.short_id) },
          { label: 'Short id', cell: (x) => h('code', { class: 'mono' }, x.short_id) },
          { label: 'Status', cell: (x) => badge(x.status, { test: 'host-status' }) },
          { label: 'Created', cell: (x) => timeAgo(x.created_at) },
        ],
      }));
    } catch (err) {
      if (err.status !== 401) replace(hostsBody, errorBox(err, loadHosts));
    }
  }
  loadHosts();

  ctx.view.append(head, secretSlot, h('div', { class: 'grid grid-2' }, account, hostsCard),
    sshKeysCard({ base: `/v1/admin/users/${enc(id)}/ssh-keys`, ctx, owner: user.username }));
}

function expiryDialog(user, done) {
  const form = h('form', { novalidate: true, 'data-test': 'expiry-form' },
    formBanner(),
    field({ label: 'Expires at', name: 'expires_at', type: 'datetime-local', value: toLocalInput(user.expires_at), hint: 'Your local time. After it the user cannot sign in and their hosts are stopped.', test: 'expiry-input' }),
    h('div', { class: 'dialog-actions' },
      button('Cancel', { onClick: () => d.close() }),
      button('Never expires', { test: 'expiry-clear', onClick: (ev) => save(ev.currentTarget, null) }),
      button('Save', { kind: 'primary', type: 'submit', test: 'expiry-submit' })));
  async function save(btn, value) {
    await busy(btn, async () => {
      try {
        const u = await put(`/v1/admin/users/${enc(user.id)}/expiry`, { expires_at: value });
        d.close();
        toast(value ? 'Expiry set.' : 'Expiry cleared.');
        done(u);
      } catch (err) {
        const banner = form.querySelector('[data-test="form-error"]');
        banner.textContent = describeError(err);
        banner.hidden = false;
      }
    });
  }
  onSubmit(form, async (fd) => {
    const v = formValue(fd, 'expires_at');
    if (!v) throw Object.assign(new Error('Pick a date and time, or choose "Never expires".'), { field: 'expires_at' });
    const u = await put(`/v1/admin/users/${enc(user.id)}/expiry`, { expires_at: toIso(v) });
    d.close();
    toast('Expiry set.');
    done(u);
  });
  const d = dialog({ title: `Expiry of ${user.username}`, body: form, test: 'expiry-dialog' });
}
