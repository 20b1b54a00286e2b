// Operator: egress IPs: list, test (connectivity, exit IP, DNS leak), delete.
// The create/edit form is egress-form.js.

import { h, replace, timeAgo, fmtTime, fmtMs, badge } from '../dom.js';
import { get, post, del, enc } from '../api.js';
import { list, selectFilter } from '../list.js';
import { pageHeader, card, button, linkButton, table, dialog, toast, busy, describeError, confirmDialog, dl, alert } from '../ui.js';
import { checksGrid } from '../hostview.js';

export function egressKind(e) {
  if (e.tunnel_type === 'proxy') return e.proxy_config && e.proxy_config.type ? `proxy · ${e.proxy_config.type}` : 'proxy';
  return e.tunnel_type || '—';
}

export function lastTestBadge(e) {
  const t = e.last_test;
  if (!t) return h('span', { class: 'muted', 'data-test': 'egress-last-test' }, 'never tested');
  return h('span', { class: 'kv-inline', 'data-test': 'egress-last-test' }, badge(t.passed ? 'pass' : 'fail', { label: t.passed ? 'passed' : 'failed' }), timeAgo(t.tested_at || e.last_test_at));
}

/** The answer of POST …/test, or a stored last_test. */
export function testResultBlock(result) {
  return h('div', { class: 'stack', 'data-test': 'egress-test-result', 'data-passed': String(!!result.passed) },
    result.passed ? alert('ok', 'All three checks passed.') : alert('error', 'The test failed. See the checks below.'),
    dl([
      ['Declared IP', h('code', { class: 'mono' }, result.declared_ip || '—')],
      ['Observed exit IP', result.observed_ip ? h('code', { class: 'mono', 'data-test': 'observed-ip' }, result.observed_ip) : '—'],
      ['Duration', fmtMs(result.duration_ms)],
      ['Tested', result.tested_at ? fmtTime(result.tested_at) : '—'],
    ]),
    checksGrid(result.checks));
}

/** Runs a test from `btn`; shows the outcome in a dialog or in `slot`. */
export async function runEgressTest(btn, egress, { slot, onDone } = {}) {
  const label = btn.querySelector('span');
  const before = label ? label.textContent : '';
  if (label) label.textContent = 'Testing…';
  try {
    await busy(btn, async () => {
      try {
        const result = await post(`/v1/admin/egress-ips/${enc(egress.id)}/test`);
        if (slot) replace(slot, testResultBlock(result));
        else {
          dialog({ title: `Test of ${egress.label}`, body: testResultBlock(result), wide: true, test: 'egress-test-dialog', actions: [] });
        }
        if (onDone) onDone(result);
      } catch (err) {
        const msg = describeError(err);
        if (slot) {
          // Keep the previous result below the error.
          for (const old of slot.querySelectorAll('[data-test="egress-test-error"]')) old.remove();
          const a = alert('error', msg);
          a.dataset.test = 'egress-test-error';
          slot.prepend(a);
        } else toast(msg, 'error');
      }
    });
  } finally {
    if (label) label.textContent = before;
  }
}

export async function egressPage(ctx) {
  ctx.setTitle('Egress IPs');
  const l = list({
    ctx,
    test: 'egress-list',
    keys: { tunnel_type: '' },
    load: (s, signal) => get('/v1/admin/egress-ips', { tunnel_type: s.tunnel_type, page: s.page, page_size: s.page_size }, { signal }),
    render: (page) => table({
      test: 'egress-table',
      caption: 'Egress IPs',
      emptyText: 'No egress IPs yet. Add a WireGuard peer or a proxy.',
      rows: page.data || [],
      rowAttrs: (e) => ({ 'data-test': 'egress-row', 'data-egress-id': e.id }),
      columns: [
        { label: 'Label', cell: (e) => h('div', null, h('a', { href: `#/egress/${enc(e.id)}`, class: 'cell-main' }, e.label), e.provider && e.provider !== 'manual' ? h('span', { class: 'sub' }, e.provider) : null) },
        { label: 'Type', cell: (e) => h('span', { class: 'nowrap' }, egressKind(e)) },
        { label: 'Declared IP', cell: (e) => h('code', { class: 'mono' }, e.ip_address) },
        {
          label: 'Observed',
          cell: (e) => {
            if (!e.observed_ip) return h('span', { class: 'muted' }, '—');
            const mismatch = e.observed_ip !== e.ip_address;
            return h('code', { class: 'mono', title: mismatch ? 'Differs from the declared address' : null }, e.observed_ip, mismatch ? ' ≠' : '');
          },
        },
        { label: 'Hosts', cell: (e) => String(e.bound_hosts ?? 0) },
        { label: 'Last test', cell: lastTestBadge },
        {
          label: h('span', { class: 'sr-only' }, 'Actions'),
          class: 'col-actions',
          cell: (e) => {
            const test = button('Test', { small: true, icon: 'test', test: 'egress-test' });
            test.addEventListener('click', () => runEgressTest(test, e, { onDone: () => l.reload({ quiet: true }) }));
            const remove = button('Delete', { small: true, kind: 'danger-soft', icon: 'trash', test: 'egress-delete' });
            remove.addEventListener('click', () => deleteEgress(remove, e, () => l.reload({ quiet: true })));
            return [test, remove];
          },
        },
      ],
    }),
  });

  ctx.view.append(
    pageHeader('Egress IPs', {
      subtitle: 'Exit addresses hosts can be bound to: a WireGuard tunnel or a proxy.',
      actions: linkButton('New egress IP', '#/egress/new', { kind: 'primary', icon: 'plus', test: 'new-egress' }),
    }),
    card(null, [
      h('div', { class: 'toolbar' }, selectFilter(l, 'tunnel_type', 'Type', [['', 'All types'], ['wireguard', 'WireGuard'], ['proxy', 'Proxy']], 'egress-type-filter')),
      l.el,
    ], { class: 'card-flush' }),
  );
  l.reload();
}

export async function deleteEgress(btn, e, done) {
  const ok = await confirmDialog({
    title: 'Delete egress IP',
    message: e.bound_hosts ? `"${e.label}" is bound to ${e.bound_hosts} host(s); the server refuses to delete it until they are unbound.` : `Delete "${e.label}"?`,
    confirmLabel: 'Delete',
    danger: true,
  });
  if (!ok) return;
  await busy(btn, async () => {
    try {
      await del(`/v1/admin/egress-ips/${enc(e.id)}`);
      toast(`Egress IP ${e.label} deleted.`);
      done();
    } catch (err) {
      toast(describeError(err), 'error');
    }
  });
}
