// Operator: enrolment keys, which separate node agents and SSH gateways trade
// once for credentials of their own. A key's secret is shown only when made.

import { h, replace, timeAgo, fmtTime, badge } from '../dom.js';
import { get, post, del, enc } from '../api.js';
import { card, button, table, dialog, field, formBanner, onSubmit, formValue, toast, busy, describeError, confirmDialog, secretBox, errorBox, loading } from '../ui.js';
import { intOrUndef } from '../forms.js';

function keyState(k) {
  if (k.valid) return badge('active');
  return badge(k.state === 'used_up' ? 'used up' : (k.state || 'invalid'));
}

function keysTable(rows, reload) {
  return table({
    test: 'enrolment-keys-table',
    caption: 'Enrolment keys',
    emptyText: 'No enrolment keys. Make one to add a node agent or SSH gateway on another machine.',
    rows,
    rowAttrs: (k) => ({ 'data-test': 'enrolment-key-row', 'data-key-id': k.id, 'data-state': k.valid ? 'active' : k.state }),
    columns: [
      { label: 'Name', cell: (k) => h('span', { class: 'cell-main' }, k.name) },
      { label: 'Kind', cell: (k) => k.kind },
      { label: 'Key', cell: (k) => h('code', { class: 'mono' }, `${k.prefix || ''}…`) },
      { label: 'Uses', class: 'nowrap', cell: (k) => h('span', { 'data-test': 'enrolment-key-uses' }, `${k.uses} / ${k.usage_limit}`) },
      { label: 'State', cell: keyState },
      { label: 'Expires', class: 'nowrap', cell: (k) => h('span', { title: fmtTime(k.expires_at) }, timeAgo(k.expires_at)) },
      {
        label: h('span', { class: 'sr-only' }, 'Actions'),
        class: 'col-actions',
        cell: (k) => {
          if (k.revoked) return '';
          const b = button('Revoke', { small: true, kind: 'danger-soft', test: 'enrolment-key-revoke' });
          b.addEventListener('click', async () => {
            const ok = await confirmDialog({ title: 'Revoke key', message: `Revoke "${k.name}"? It enrols nothing from now on; machines it enrolled keep their credentials.`, confirmLabel: 'Revoke', danger: true });
            if (!ok) return;
            await busy(b, async () => {
              try {
                await del(`/v1/admin/enrolment-keys/${enc(k.id)}`);
                toast('Key revoked.');
                reload();
              } catch (err) {
                toast(describeError(err), 'error');
              }
            });
          });
          return b;
        },
      },
    ],
  });
}

// The card of keys with its "New key" button; `secretSlot` shows a new key's secret.
export function enrolmentCard(secretSlot) {
  const body = h('div', null, loading());
  async function reload() {
    try {
      const page = await get('/v1/admin/enrolment-keys', { page_size: 200 });
      replace(body, keysTable(page.data || [], reload));
    } catch (err) {
      if (err.status !== 401) replace(body, errorBox(err, reload));
    }
  }
  const newBtn = button('New enrolment key', { kind: 'primary', icon: 'plus', test: 'new-enrolment-key' });
  newBtn.addEventListener('click', () => {
    const form = h('form', { novalidate: true, 'data-test': 'enrolment-key-form' },
      formBanner(),
      field({ label: 'Kind', name: 'kind', type: 'select', value: 'agent', options: [['agent', 'Node agent'], ['gateway', 'SSH gateway']], test: 'enrolment-key-kind' }),
      field({ label: 'Name', name: 'name', required: true, placeholder: 'node-2', test: 'enrolment-key-name' }),
      field({ label: 'Uses', name: 'usage_limit', type: 'number', min: 1, max: 10000, value: 1, inputmode: 'numeric', hint: '1: single-use.', test: 'enrolment-key-uses-input' }),
      field({ label: 'Valid for (hours)', name: 'hours', type: 'number', min: 1, max: 8760, value: 24, inputmode: 'numeric', test: 'enrolment-key-hours' }),
      h('div', { class: 'dialog-actions' },
        button('Cancel', { onClick: () => d.close() }),
        button('Create key', { kind: 'primary', type: 'submit', test: 'enrolment-key-submit' })));
    onSubmit(form, async (fd) => {
      const body = { kind: formValue(fd, 'kind'), name: formValue(fd, 'name') };
      const uses = intOrUndef(fd.get('usage_limit'));
      if (uses !== undefined) body.usage_limit = uses;
      const hours = intOrUndef(fd.get('hours'));
      if (hours !== undefined) body.expires_at = new Date(Date.now() + hours * 3600 * 1000).toISOString();
      const created = await post('/v1/admin/enrolment-keys', body);
      d.close();
      replace(secretSlot, secretBox(`Enrolment key "${created.name}"`, created.secret, {
        test: 'new-enrolment-key',
        extra: h('p', { class: 'hint' }, 'Start the ', created.kind === 'gateway' ? 'gateway' : 'agent', ' once with ', h('code', { class: 'mono' }, 'ENROLMENT_KEY=<key>'), '.'),
      }));
      reload();
    });
    const d = dialog({ title: 'New enrolment key', body: form, test: 'enrolment-key-dialog' });
  });
  reload();
  return card('Enrolment keys', body, { class: 'card-flush', test: 'enrolment-keys-card', actions: newBtn });
}

// A "Revoke" (nodes) or "Remove" (gateways) button for one row of the infra tables.
export function revokeButton(kind, item, reload) {
  if (kind === 'node' && !item.enrolled) return h('span', { class: 'muted' }, item.revoked_at ? 'revoked' : 'not enrolled');
  const label = kind === 'node' ? 'Revoke' : 'Remove';
  const b = button(label, { small: true, kind: 'danger-soft', test: `${kind}-revoke` });
  b.addEventListener('click', async () => {
    const message = kind === 'node'
      ? `Revoke node "${item.name}"? Its agent is refused from its next request; its hosts stay.`
      : `Remove gateway "${item.name}"? It is refused at once and its key leaves every host.`;
    const ok = await confirmDialog({ title: `${label} ${kind}`, message, confirmLabel: label, danger: true });
    if (!ok) return;
    await busy(b, async () => {
      try {
        await del(kind === 'node' ? `/v1/admin/nodes/${enc(item.id)}` : `/v1/admin/gateways/${enc(item.name)}`);
        toast(kind === 'node' ? 'Node revoked.' : 'Gateway removed.');
        reload();
      } catch (err) {
        toast(describeError(err), 'error');
      }
    });
  });
  return b;
}
