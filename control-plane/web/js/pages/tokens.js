// Both roles: the signed-in account's personal API tokens: create (the
// token is shown once), list, revoke.

import { h, replace, timeAgo, fmtTime, badge } from '../dom.js';
import { get, post, del, enc } from '../api.js';
import { list } from '../list.js';
import { pageHeader, card, button, table, dialog, field, formBanner, onSubmit, formValue, toast, busy, describeError, confirmDialog, secretBox } from '../ui.js';
import { intOrUndef } from '../forms.js';

function tokenState(t) {
  if (t.revoked_at) return badge('revoked');
  if (t.expires_at && new Date(t.expires_at).getTime() < Date.now()) return badge('expired');
  return badge('active');
}

export async function tokensPage(ctx) {
  ctx.setTitle('API tokens');
  const secretSlot = h('div');
  const l = list({
    ctx,
    test: 'tokens-list',
    keys: {},
    load: (s, signal) => get('/v1/auth/api-tokens', { page: s.page, page_size: s.page_size }, { signal }),
    render: (page) => table({
      test: 'tokens-table',
      caption: 'API tokens',
      emptyText: 'No API tokens. Create one for scripts and the command line.',
      rows: page.data || [],
      rowAttrs: (t) => ({ 'data-test': 'token-row', 'data-token-id': t.id }),
      columns: [
        { label: 'Name', cell: (t) => h('span', { class: 'cell-main' }, t.name) },
        { label: 'Token', cell: (t) => h('code', { class: 'mono' }, `${t.prefix || ''}…`) },
        { label: 'Scope', cell: (t) => badge(t.scope || 'full', { test: 'token-scope' }) },
        { label: 'State', cell: tokenState },
        { label: 'Expires', class: 'nowrap', cell: (t) => h('span', { title: fmtTime(t.expires_at) }, timeAgo(t.expires_at)) },
        { label: 'Last used', class: 'nowrap', cell: (t) => (t.last_used_at ? timeAgo(t.last_used_at) : h('span', { class: 'muted' }, 'never')) },
        { label: 'Created', class: 'nowrap', cell: (t) => timeAgo(t.created_at) },
        {
          label: h('span', { class: 'sr-only' }, 'Actions'),
          class: 'col-actions',
          cell: (t) => {
            if (t.revoked_at) return '';
            const b = button('Revoke', { small: true, kind: 'danger-soft', test: 'token-revoke' });
            b.addEventListener('click', async () => {
              const ok = await confirmDialog({ title: 'Revoke token', message: `Revoke "${t.name}"? Anything using it stops working at once.`, confirmLabel: 'Revoke', danger: true });
              if (!ok) return;
              await busy(b, async () => {
                try {
                  await del(`/v1/auth/api-tokens/${enc(t.id)}`);
                  toast('Token revoked.');
                  l.reload({ quiet: true });
                } catch (err) {
                  toast(describeError(err), 'error');
                }
              });
            });
            return b;
          },
        },
      ],
    }),
  });

  const newBtn = button('New token', { kind: 'primary', icon: 'plus', test: 'new-token' });
  newBtn.addEventListener('click', () => {
    const form = h('form', { novalidate: true, 'data-test': 'token-form' },
      formBanner(),
      field({ label: 'Name', name: 'name', required: true, placeholder: 'ci', test: 'token-name' }),
      field({ label: 'Scope', name: 'scope', type: 'select', options: [['full', 'Full: everything your account may do'], ['read', 'Read: GET requests only']], test: 'token-scope-select' }),
      field({ label: 'Valid for (days)', name: 'expires_in_days', type: 'number', min: 1, max: 365, value: 30, inputmode: 'numeric', hint: '1 to 365.', test: 'token-days' }),
      h('div', { class: 'dialog-actions' },
        button('Cancel', { onClick: () => d.close() }),
        button('Create token', { kind: 'primary', type: 'submit', test: 'token-submit' })));
    onSubmit(form, async (fd) => {
      const body = { name: formValue(fd, 'name'), scope: formValue(fd, 'scope') || 'full' };
      const days = intOrUndef(fd.get('expires_in_days'));
      if (days !== undefined) body.expires_in_days = days;
      const created = await post('/v1/auth/api-tokens', body);
      d.close();
      replace(secretSlot, secretBox(`Token "${created.name}"`, created.token, {
        test: 'new-token',
        extra: h('p', { class: 'hint' }, 'Use it as ', h('code', { class: 'mono' }, 'Authorization: Bearer <token>'), '.'),
      }));
      l.reload({ quiet: true });
    });
    const d = dialog({ title: 'New API token', body: form, test: 'token-dialog' });
  });

  ctx.view.append(
    pageHeader('API tokens', { subtitle: `Personal tokens of ${ctx.user.username} for scripts; they act with your role (read tokens only read).`, actions: newBtn }),
    secretSlot,
    card(null, l.el, { class: 'card-flush' }),
  );
  l.reload();
}
