// Operator: the overview: counts, hosts by status, nodes and gateways with
// heartbeat age, running tasks, recent events, egress IPs with their last
// test. Refreshes every 10 s while visible.

import { h, replace, icon, timeAgo, badge, shortId } from '../dom.js';
import { get, enc } from '../api.js';
import { card, table, errorBox, loading, linkButton, pageHeader } from '../ui.js';
import { miniProgress } from './tasks.js';
import { heartbeat } from './infra.js';
import { egressKind, lastTestBadge } from './egress.js';

const STATUS_ORDER = [
  ['running', 'ok'], ['creating', 'busy'], ['pending', 'busy'], ['stopped', 'off'], ['error', 'bad'], ['deleting', 'warn'],
];

function stat(label, value, sub, ic, test) {
  return h('div', { class: 'stat', 'data-test': test },
    h('div', { class: 'stat-label' }, icon(ic), label),
    h('div', { class: 'stat-value', 'data-test': `${test}-value` }, String(value ?? '—')),
    sub ? h('div', { class: 'stat-sub' }, sub) : null);
}

function hostsBreakdown(hosts) {
  const by = (hosts && hosts.by_status) || {};
  const total = hosts && hosts.total ? hosts.total : Object.values(by).reduce((a, b) => a + b, 0);
  const known = new Set(STATUS_ORDER.map(([s]) => s));
  const entries = [...STATUS_ORDER.map(([s, k]) => [s, k, by[s] || 0]), ...Object.entries(by).filter(([s]) => !known.has(s)).map(([s, n]) => [s, 'off', n])];
  const bar = h('div', { class: 'statusbar', role: 'img', 'aria-label': entries.filter(([, , n]) => n).map(([s, , n]) => `${n} ${s}`).join(', ') || 'no hosts' });
  for (const [, k, n] of entries) {
    if (!n || !total) continue;
    const seg = h('span', { class: `seg-${k}` });
    seg.style.width = `${(n / total) * 100}%`;
    bar.appendChild(seg);
  }
  return h('div', { 'data-test': 'hosts-by-status' }, bar,
    h('div', { class: 'legend' }, entries.map(([s, k, n]) => h('a', { class: 'legend-item', href: `#/hosts?status=${enc(s)}`, 'data-test': `hosts-count-${s}` },
      h('span', { class: `sw seg-${k}` }), `${s} `, h('strong', null, String(n))))));
}

export async function overviewPage(ctx) {
  ctx.setTitle('Overview');
  const statsSlot = h('div', null, loading());
  const hostsSlot = h('div', null, loading());
  const infraSlot = h('div', null, loading());
  const tasksSlot = h('div', null, loading());
  const eventsSlot = h('div', null, loading());
  const egressSlot = h('div', null, loading());
  let timer = null;

  const guard = (slot, retry) => (err) => {
    if (err.status !== 401) replace(slot, errorBox(err, retry));
  };

  async function load() {
    clearTimeout(timer);
    await Promise.all([
      get('/v1/admin/dashboard/stats').then((s) => {
        const u = s.users || {};
        const e = s.egress_ips || {};
        const t = s.tasks || {};
        replace(statsSlot, h('div', { class: 'stats', 'data-test': 'stats' },
          stat('Hosts', s.hosts ? s.hosts.total : 0, `${(s.hosts && s.hosts.by_status && s.hosts.by_status.running) || 0} running`, 'hosts', 'stat-hosts'),
          stat('Users', u.total, `${u.active ?? 0} active · ${u.disabled ?? 0} disabled · ${u.expired ?? 0} expired`, 'users', 'stat-users'),
          stat('Egress IPs', e.total, `${e.bound ?? 0} bound · ${e.wireguard ?? 0} WireGuard · ${e.proxy ?? 0} proxy`, 'egress', 'stat-egress'),
          stat('Tasks', (t.running ?? 0) + (t.queued ?? 0), `${t.running ?? 0} running · ${t.queued ?? 0} queued · ${t.failed_24h ?? 0} failed in 24 h`, 'tasks', 'stat-tasks'),
          stat('Agents', s.agents ? s.agents.connected : 0, 'connected node agents', 'nodes', 'stat-agents')));
        replace(hostsSlot, hostsBreakdown(s.hosts));
      }).catch(guard(statsSlot, load)),
      Promise.all([
        get('/v1/admin/nodes', { page_size: 20 }).catch(() => null),
        get('/v1/admin/gateways', { page_size: 20 }).catch(() => null),
      ]).then(([n, g]) => {
        const rows = [
          ...((n && n.data) || []).map((x) => ({ ...x, kind: 'Node' })),
          ...((g && g.data) || []).map((x) => ({ ...x, kind: 'Gateway' })),
        ];
        replace(infraSlot, !n && !g ? h('p', { class: 'muted card-body' }, 'Not available.') : table({
          test: 'overview-infra',
          rows,
          emptyText: 'No node or gateway has registered.',
          rowAttrs: (x) => ({ 'data-test': x.kind === 'Node' ? 'node-row' : 'gateway-row' }),
          columns: [
            { label: 'Name', cell: (x) => h('span', { class: 'cell-main' }, x.name || x.id) },
            { label: 'Kind', cell: (x) => x.kind },
            { label: 'Heartbeat', cell: heartbeat },
            { label: 'Hosts', cell: (x) => (x.hosts !== undefined ? String(x.hosts) : '—') },
          ],
        }));
      }),
      get('/v1/admin/tasks', { status: 'running', page_size: 10 }).then((p) => replace(tasksSlot, table({
        test: 'overview-tasks',
        rows: p.data || [],
        emptyText: 'Nothing running.',
        rowAttrs: (x) => ({ 'data-test': 'task-row', 'data-task-id': x.id }),
        columns: [
          { label: 'Kind', cell: (x) => h('span', { class: 'cell-main' }, x.kind.replace(/_/g, ' ')) },
          { label: 'Host', cell: (x) => (x.host_id ? h('a', { href: `#/hosts/${enc(x.host_id)}` }, shortId(x.host_id)) : '—') },
          { label: 'Progress', cell: miniProgress },
          { label: 'Started', cell: (x) => timeAgo(x.started_at || x.created_at) },
        ],
      }))).catch(guard(tasksSlot, load)),
      get('/v1/admin/events', { page_size: 10 }).then((p) => replace(eventsSlot, table({
        test: 'overview-events',
        rows: p.data || [],
        emptyText: 'No events yet.',
        rowAttrs: () => ({ 'data-test': 'event-row' }),
        columns: [
          { label: 'When', class: 'nowrap', cell: (x) => timeAgo(x.created_at) },
          { label: 'Type', cell: (x) => h('code', { class: 'mono' }, x.type) },
          { label: 'Outcome', cell: (x) => badge(x.outcome || 'success') },
          { label: 'Actor', cell: (x) => x.actor_name || h('span', { class: 'muted' }, 'system') },
        ],
      }))).catch(guard(eventsSlot, load)),
      get('/v1/admin/egress-ips', { page_size: 10 }).then((p) => replace(egressSlot, table({
        test: 'overview-egress',
        rows: p.data || [],
        emptyText: 'No egress IPs.',
        rowAttrs: () => ({ 'data-test': 'egress-row' }),
        columns: [
          { label: 'Label', cell: (x) => h('a', { href: `#/egress/${enc(x.id)}`, class: 'cell-main' }, x.label) },
          { label: 'Type', cell: egressKind },
          { label: 'Exit', cell: (x) => h('code', { class: 'mono' }, x.observed_ip || x.ip_address) },
          { label: 'Hosts', cell: (x) => String(x.bound_hosts ?? 0) },
          { label: 'Health', cell: lastTestBadge },
        ],
      }))).catch(guard(egressSlot, load)),
    ]);
    if (ctx.alive()) {
      timer = setTimeout(function tick() {
        if (document.visibilityState === 'visible') load();
        else timer = setTimeout(tick, 3000);
      }, 10000);
    }
  }
  ctx.onCleanup(() => clearTimeout(timer));

  ctx.view.append(
    pageHeader('Overview', { subtitle: 'The state of hosts, tunnels and agents at a glance.' }),
    statsSlot,
    h('div', { class: 'grid grid-2' },
      card('Hosts by status', hostsSlot, { test: 'overview-hosts', actions: linkButton('All hosts', '#/hosts', { small: true }) }),
      card('Nodes & gateways', infraSlot, { class: 'card-flush', test: 'overview-infra-card', actions: linkButton('Details', '#/infra', { small: true }) })),
    h('div', { class: 'grid grid-2' },
      card('Running tasks', tasksSlot, { class: 'card-flush', test: 'overview-tasks-card', actions: linkButton('All tasks', '#/tasks', { small: true }) }),
      card('Egress IPs', egressSlot, { class: 'card-flush', test: 'overview-egress-card', actions: linkButton('Manage', '#/egress', { small: true }) })),
    card('Recent events', eventsSlot, { class: 'card-flush', test: 'overview-events-card', actions: linkButton('All events', '#/events', { small: true }) }),
  );
  await load();
}
