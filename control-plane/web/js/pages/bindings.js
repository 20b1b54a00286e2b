// Operator: bindings of hosts to egress IPs: list (filter by egress IP),
// create, rotate a WireGuard binding's key, remove.

import { h, replace, timeAgo, shortId } from '../dom.js';
import { get, post, del, enc } from '../api.js';
import { list } from '../list.js';
import { pageHeader, card, button, table, dialog, field, formBanner, onSubmit, formValue, toast, busy, describeError, confirmDialog, copyButton, hostPicker } from '../ui.js';

export async function bindingsPage(ctx) {
  ctx.setTitle('Bindings');
  const egressById = new Map();
  const hostNames = new Map();
  try {
    const page = await get('/v1/admin/egress-ips', { page_size: 500 });
    for (const e of page.data || []) egressById.set(e.id, e);
  } catch (err) {
    if (err.status === 401) return;
  }

  const l = list({
    ctx,
    test: 'bindings-list',
    keys: { egress_ip_id: '', host_id: '' },
    load: (s, signal) => get('/v1/admin/bindings', { egress_ip_id: s.egress_ip_id, host_id: s.host_id, page: s.page, page_size: s.page_size }, { signal }),
    render: (page) => {
      const rows = page.data || [];
      const t = table({
        test: 'bindings-table',
        caption: 'Bindings',
        emptyText: 'No bindings. Bind a host to send its traffic through an egress IP.',
        rows,
        rowAttrs: (b) => ({ 'data-test': 'binding-row', 'data-binding-id': b.id }),
        columns: [
          { label: 'Host', cell: (b) => h('a', { href: `#/hosts/${enc(b.host_id)}`, class: 'cell-main', 'data-host-name': b.host_id }, hostNames.get(b.host_id) || shortId(b.host_id)) },
          {
            label: 'Egress IP',
            cell: (b) => {
              const e = egressById.get(b.egress_ip_id);
              return e ? h('a', { href: `#/egress/${enc(e.id)}` }, e.label, ' ', h('span', { class: 'muted' }, `(${e.ip_address})`)) : shortId(b.egress_ip_id);
            },
          },
          { label: 'Host public key', cell: (b) => (b.wg_public_key ? h('span', { class: 'kv-inline' }, h('code', { class: 'mono', title: b.wg_public_key }, `${b.wg_public_key.slice(0, 12)}…`), copyButton(b.wg_public_key, { iconOnly: true, label: 'Copy public key' })) : h('span', { class: 'muted' }, '—')) },
          { label: 'Peer address', cell: (b) => (b.wg_peer_address ? h('code', { class: 'mono' }, b.wg_peer_address) : h('span', { class: 'muted' }, '—')) },
          { label: 'Created', class: 'nowrap', cell: (b) => timeAgo(b.created_at) },
          {
            label: h('span', { class: 'sr-only' }, 'Actions'),
            class: 'col-actions',
            cell: (b) => {
              const out = [];
              const e = egressById.get(b.egress_ip_id);
              if (!e || e.tunnel_type === 'wireguard') {
                const rot = button('Rotate key', { small: true, icon: 'refresh', test: 'binding-rotate' });
                rot.addEventListener('click', async () => {
                  const ok = await confirmDialog({ title: 'Rotate the host\'s WireGuard key', message: 'Make a new key pair for this binding? Register the new public key with the provider; the host uses it from its next start.', confirmLabel: 'Rotate' });
                  if (!ok) return;
                  await busy(rot, async () => {
                    try {
                      await post(`/v1/admin/bindings/${enc(b.id)}/rotate-wg-key`);
                      toast('New key made. Register it with the provider.');
                      l.reload({ quiet: true });
                    } catch (err) {
                      toast(describeError(err), 'error');
                    }
                  });
                });
                out.push(rot);
              }
              const rm = button('Unbind', { small: true, kind: 'danger-soft', icon: 'x', test: 'binding-delete' });
              rm.addEventListener('click', async () => {
                const ok = await confirmDialog({ title: 'Remove binding', message: 'The host leaves directly through its node after its next start.', confirmLabel: 'Unbind', danger: true });
                if (!ok) return;
                await busy(rm, async () => {
                  try {
                    await del(`/v1/admin/bindings/${enc(b.id)}`);
                    toast('Binding removed.');
                    l.reload({ quiet: true });
                  } catch (err) {
                    toast(describeError(err), 'error');
                  }
                });
              });
              out.push(rm);
              return out;
            },
          },
        ],
      });
      fillHostNames(t, rows);
      return t;
    },
  });

  // Host names are not in a binding: look up the ones on this page, a few at a time.
  async function fillHostNames(root, rows) {
    const missing = [...new Set(rows.map((b) => b.host_id))].filter((id) => !hostNames.has(id));
    const work = async () => {
      while (missing.length) {
        const id = missing.shift();
        try {
          const x = await get(`/v1/admin/hosts/${enc(id)}`);
          hostNames.set(id, `${x.name || x.short_id} · ${x.username || ''}`);
        } catch {
          hostNames.set(id, null);
        }
      }
    };
    await Promise.all([work(), work(), work(), work()]);
    if (!ctx.alive()) return;
    for (const a of root.querySelectorAll('[data-host-name]')) {
      const name = hostNames.get(a.dataset.hostName);
      if (name) replace(a, name);
    }
  }

  const egressFilter = field({
    label: 'Egress IP', name: 'egress_ip_id', type: 'select', value: l.state.egress_ip_id, test: 'bindings-egress-filter',
    options: [['', 'All egress IPs'], ...[...egressById.values()].map((e) => [e.id, `${e.label} (${e.ip_address})`])],
  });
  egressFilter.querySelector('select').addEventListener('change', (ev) => l.set({ egress_ip_id: ev.target.value }));

  const newBtn = button('New binding', { kind: 'primary', icon: 'plus', test: 'new-binding' });
  newBtn.addEventListener('click', () => newBindingDialog([...egressById.values()], () => l.reload({ quiet: true })));

  ctx.view.append(
    pageHeader('Bindings', { subtitle: 'Which host leaves through which egress IP. Changes take effect at the host\'s next start.', actions: newBtn }),
    card(null, [h('div', { class: 'toolbar' }, egressFilter), l.el], { class: 'card-flush' }),
  );
  l.reload();
}

function newBindingDialog(egressList, done) {
  const picker = hostPicker({ required: true, test: 'binding-host' });
  const form = h('form', { novalidate: true, 'data-test': 'binding-form' },
    formBanner(),
    picker.el,
    field({ label: 'Egress IP', name: 'egress_ip_id', type: 'select', required: true, test: 'binding-egress', options: [['', egressList.length ? 'Choose…' : 'No egress IPs yet'], ...egressList.map((e) => [e.id, `${e.label} (${e.ip_address}, ${e.tunnel_type})`])] }),
    field({ label: 'Peer address', name: 'wg_peer_address', optional: true, monospace: true, placeholder: '10.64.0.7/32', hint: 'WireGuard only, when the provider gives each peer its own address.', test: 'binding-peer' }),
    h('div', { class: 'dialog-actions' },
      button('Cancel', { onClick: () => d.close() }),
      button('Bind', { kind: 'primary', type: 'submit', test: 'binding-submit' })));
  onSubmit(form, async (fd) => {
    const body = { host_id: fd.get('host_id'), egress_ip_id: fd.get('egress_ip_id') };
    if (!body.host_id) throw Object.assign(new Error('Pick a host from the list.'), { field: 'host_id' });
    if (!body.egress_ip_id) throw Object.assign(new Error('Choose an egress IP.'), { field: 'egress_ip_id' });
    const peer = formValue(fd, 'wg_peer_address');
    if (peer) body.wg_peer_address = peer;
    await post('/v1/admin/bindings', body);
    d.close();
    toast('Bound. It takes effect at the host\'s next start.');
    done();
  });
  const d = dialog({ title: 'Bind a host to an egress IP', body: form, test: 'binding-dialog' });
}
