// Operator: node agents and SSH gateways with their heartbeats. Fields the
// server adds later show up in a generic column.

import { h, replace, timeAgo, badge, fmtTime } from '../dom.js';
import { get } from '../api.js';
import { pageHeader, card, table, errorBox, loading } from '../ui.js';
import { enrolmentCard, revokeButton } from './enrolment.js';

const KNOWN = new Set(['id', 'name', 'last_seen_at', 'connected', 'hosts', 'created_at', 'updated_at']);

export function heartbeat(item) {
  return h('span', { class: 'kv-inline' },
    badge(item.connected ? 'connected' : 'disconnected', { test: 'infra-connected' }),
    item.last_seen_at ? h('span', { class: 'muted', title: fmtTime(item.last_seen_at) }, timeAgo(item.last_seen_at)) : h('span', { class: 'muted' }, 'never seen'));
}

function scalar(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function extraCell(item) {
  const pairs = Object.entries(item).filter(([k]) => !KNOWN.has(k));
  if (!pairs.length) return h('span', { class: 'muted' }, '—');
  return h('div', { class: 'details' }, pairs.map(([k, v]) => h('div', null, h('span', { class: 'muted' }, `${k}: `), scalar(v))));
}

function infraTable(rows, kind, reload) {
  const columns = [
    { label: 'Name', cell: (x) => h('span', { class: 'cell-main' }, x.name || x.id) },
    { label: 'Heartbeat', cell: heartbeat },
  ];
  if (kind === 'node') columns.push({ label: 'Hosts', cell: (x) => scalar(x.hosts) });
  columns.push({ label: 'Other', cell: extraCell });
  columns.push({ label: h('span', { class: 'sr-only' }, 'Actions'), class: 'col-actions', cell: (x) => revokeButton(kind, x, reload) });
  return table({
    test: `${kind}s-table`,
    emptyText: kind === 'node' ? 'No node agent has registered.' : 'No SSH gateway has registered.',
    rows,
    rowAttrs: (x) => ({ 'data-test': `${kind}-row`, 'data-id': x.id, 'data-connected': String(!!x.connected) }),
    columns,
  });
}

export async function infraPage(ctx) {
  ctx.setTitle('Nodes & gateways');
  const nodes = h('div', null, loading());
  const gateways = h('div', null, loading());
  const secretSlot = h('div');
  let timer = null;
  async function load() {
    clearTimeout(timer);
    await Promise.all([
      get('/v1/admin/nodes', { page_size: 200 }).then((p) => replace(nodes, infraTable(p.data || [], 'node', load))).catch((err) => { if (err.status !== 401) replace(nodes, errorBox(err, load)); }),
      get('/v1/admin/gateways', { page_size: 200 }).then((p) => replace(gateways, infraTable(p.data || [], 'gateway', load))).catch((err) => { if (err.status !== 401) replace(gateways, errorBox(err, load)); }),
    ]);
    if (ctx.alive()) timer = setTimeout(load, 10000);
  }
  ctx.onCleanup(() => clearTimeout(timer));
  ctx.view.append(
    pageHeader('Nodes & gateways', { subtitle: 'Node agents run hosts; SSH gateways take logins on port 2222. Connected means a heartbeat in the last 15 s.' }),
    card('Nodes', nodes, { class: 'card-flush', test: 'nodes-card' }),
    card('SSH gateways', gateways, { class: 'card-flush', test: 'gateways-card' }),
    secretSlot,
    enrolmentCard(secretSlot),
  );
  load();
}
