// Operator: the users list, with search, status filter, paging, quick
// enable/disable and a create form.

import { h, timeAgo, fmtTime, badge } from '../dom.js';
import { get, post, patch, enc } from '../api.js';
import { list, searchField, selectFilter } from '../list.js';
import { pageHeader, card, button, table, dialog, field, formBanner, onSubmit, formValue, toast, busy, describeError, secretBox } from '../ui.js';
import { toIso, randomPassword } from '../forms.js';

export function userStatus(u) {
  if (u.status === 'active' && u.expired) return badge('expired', { test: 'user-status' });
  return badge(u.status, { test: 'user-status' });
}

export async function usersPage(ctx) {
  ctx.setTitle('Users');
  const l = list({
    ctx,
    test: 'users-list',
    keys: { q: '', status: '' },
    load: (s, signal) => get('/v1/admin/users', { q: s.q, status: s.status, page: s.page, page_size: s.page_size }, { signal }),
    render: (page) => table({
      test: 'users-table',
      caption: 'Users',
      emptyText: l.state.q || l.state.status ? 'No user matches these filters.' : 'No users yet. Create the first one.',
      rows: page.data || [],
      rowAttrs: (u) => ({ 'data-test': 'user-row', 'data-user-id': u.id }),
      columns: [
        { label: 'Username', cell: (u) => h('a', { href: `#/users/${enc(u.id)}`, class: 'cell-main', 'data-test': 'user-link' }, u.username) },
        { label: 'Status', cell: userStatus },
        { label: 'Expires', cell: (u) => (u.expires_at ? h('span', { title: fmtTime(u.expires_at) }, fmtTime(u.expires_at)) : h('span', { class: 'muted' }, 'never')) },
        { label: 'Created', cell: (u) => timeAgo(u.created_at) },
        {
          label: h('span', { class: 'sr-only' }, 'Actions'),
          class: 'col-actions',
          cell: (u) => {
            const enable = u.status !== 'active';
            const btn = button(enable ? 'Enable' : 'Disable', { small: true, kind: enable ? 'secondary' : 'danger-soft', test: enable ? 'user-enable' : 'user-disable' });
            btn.addEventListener('click', () => busy(btn, async () => {
              try {
                await patch(`/v1/admin/users/${enc(u.id)}`, { status: enable ? 'active' : 'disabled' });
                toast(`${u.username} ${enable ? 'enabled' : 'disabled'}.`);
                l.reload({ quiet: true });
              } catch (err) {
                toast(describeError(err), 'error');
              }
            }));
            return btn;
          },
        },
      ],
    }),
  });

  const newBtn = button('New user', { kind: 'primary', icon: 'plus', test: 'new-user' });
  newBtn.addEventListener('click', () => createUserDialog(() => l.reload({ quiet: true }), ctx));

  ctx.view.append(
    pageHeader('Users', { subtitle: 'Tenant accounts: each signs in to reach their hosts.', actions: newBtn }),
    card(null, [
      h('div', { class: 'toolbar' },
        searchField(l, { label: 'Search', placeholder: 'Username…', test: 'users-search' }),
        selectFilter(l, 'status', 'Status', [['', 'Any status'], ['active', 'Active'], ['disabled', 'Disabled']], 'users-status-filter')),
      l.el,
    ], { class: 'card-flush' }),
  );
  l.reload();
}

export function createUserDialog(onCreated, ctx) {
  const pw = field({ label: 'Password', name: 'password', type: 'text', required: true, hint: '8-256 characters. The user can change it after signing in.', test: 'create-user-password', monospace: true, autocomplete: 'new-password' });
  const pwInput = pw.querySelector('input');
  const gen = button('Generate', { small: true, icon: 'refresh', test: 'generate-password' });
  gen.addEventListener('click', () => {
    pwInput.value = randomPassword(20);
    pwInput.focus();
  });
  const row = h('div', { class: 'input-row' });
  pwInput.replaceWith(row);
  row.append(pwInput, gen);
  const form = h('form', { 'data-test': 'create-user-form', novalidate: true },
    formBanner(),
    field({ label: 'Username', name: 'username', required: true, hint: '3-50 letters, digits, ".", "_" or "-".', test: 'create-user-username', autocomplete: 'off' }),
    pw,
    field({ label: 'Expires', name: 'expires_at', type: 'datetime-local', optional: true, hint: 'Leave empty for an account that does not expire. Your local time.', test: 'create-user-expires' }),
    h('div', { class: 'dialog-actions' },
      button('Cancel', { onClick: () => d.close() }),
      button('Create user', { kind: 'primary', type: 'submit', test: 'create-user-submit' })));
  onSubmit(form, async (fd) => {
    const body = { username: formValue(fd, 'username'), password: fd.get('password') || '' };
    const exp = formValue(fd, 'expires_at');
    if (exp) body.expires_at = toIso(exp);
    const user = await post('/v1/admin/users', body);
    d.close();
    toast(`User ${user.username} created.`);
    onCreated(user);
    if (ctx) {
      const info = dialog({
        title: 'User created',
        test: 'user-created-dialog',
        body: [
          h('p', null, 'Hand these credentials to ', h('strong', null, user.username), '.'),
          secretBox('Password', body.password, { test: 'new-user-password', note: 'Not shown again: the server keeps only a hash.' }),
        ],
        actions: [
          button('Open user', { kind: 'secondary', test: 'user-created-open', onClick: () => { info.close(); ctx.navigate(`#/users/${enc(user.id)}`); } }),
          button('Done', { kind: 'primary', onClick: () => info.close() }),
        ],
      });
    }
  });
  const d = dialog({ title: 'New user', body: form, test: 'create-user-dialog' });
}
