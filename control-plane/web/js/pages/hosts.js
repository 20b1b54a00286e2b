// Operator: the hosts list: search, status and user filters, paging,
// multi-select with bulk start/stop/delete, and the create form.

import { h, replace, timeAgo, badge, icon } from '../dom.js';
import { get, post, del, enc } from '../api.js';
import { list, searchField, selectFilter } from '../list.js';
import { pageHeader, card, button, table, dialog, field, formBanner, onSubmit, formValue, toast, confirmDialog, userPicker, describeError } from '../ui.js';
import { intOrUndef } from '../forms.js';
import { putFlash } from '../flash.js';
import { fmtBytes } from '../traffic.js';

export const HOST_STATUSES = ['pending', 'creating', 'running', 'stopped', 'error', 'deleting'];
const TRANSITIONAL = new Set(['pending', 'creating', 'deleting']);

export async function hostsPage(ctx) {
  ctx.setTitle('Hosts');
  const selected = new Map(); // id -> host
  const bulkbar = h('div', { class: 'bulkbar', 'data-test': 'bulk-bar', hidden: true });
  let poll = null;

  const l = list({
    ctx,
    test: 'hosts-list',
    keys: { q: '', status: '', user_id: '' },
    load: (s, signal) => get('/v1/admin/hosts', { q: s.q, status: s.status, user_id: s.user_id, page: s.page, page_size: s.page_size }, { signal }),
    render: (page) => {
      const rows = page.data || [];
      // Keep the selection to what is on this page.
      const onPage = new Set(rows.map((x) => x.id));
      for (const id of [...selected.keys()]) if (!onPage.has(id)) selected.delete(id);
      for (const x of rows) if (selected.has(x.id)) selected.set(x.id, x);
      paintBulk();
      schedulePoll(rows);
      const all = h('input', { type: 'checkbox', 'aria-label': 'Select all hosts on this page', 'data-test': 'host-select-all' });
      const boxes = [];
      const syncAll = () => {
        all.checked = rows.length > 0 && selected.size === rows.length;
        all.indeterminate = selected.size > 0 && selected.size < rows.length;
      };
      all.addEventListener('change', () => {
        for (const [box, x] of boxes) {
          box.checked = all.checked;
          box.closest('tr').classList.toggle('is-selected', all.checked);
          if (all.checked) selected.set(x.id, x);
          else selected.delete(x.id);
        }
        paintBulk();
      });
      const t = table({
        test: 'hosts-table',
        caption: 'Hosts',
        emptyText: l.state.q || l.state.status || l.state.user_id ? 'No host matches these filters.' : 'No hosts yet.',
        rows,
        rowAttrs: (x) => ({ 'data-test': 'host-row', 'data-host-id': x.id, 'data-status': x.status, class: selected.has(x.id) ? 'is-selected' : null }),
        columns: [
          {
            label: all,
            class: 'col-check',
            cell: (x) => {
              const box = h('input', { type: 'checkbox', checked: selected.has(x.id), 'aria-label': `Select ${x.name || x.short_id}`, 'data-test': 'host-select' });
              boxes.push([box, x]);
              box.addEventListener('change', () => {
                if (box.checked) selected.set(x.id, x);
                else selected.delete(x.id);
                box.closest('tr').classList.toggle('is-selected', box.checked);
                syncAll();
                paintBulk();
              });
              return box;
            },
          },
          { label: 'Host', cell: (x) => h('div', null, h('a', { href: `#/hosts/${enc(x.id)}`, class: 'cell-main', 'data-test': 'host-link' }, x.name || x.short_id), h('code', { class: 'mono sub' }, x.short_id)) },
          { label: 'User', cell: (x) => (x.user_id ? h('a', { href: `#/users/${enc(x.user_id)}` }, x.username || x.user_id) : '—') },
          { label: 'Status', cell: (x) => h('div', null, badge(x.status, { test: 'host-status' }), x.status === 'error' && x.last_error ? h('span', { class: 'sub', title: x.last_error }, truncate(x.last_error, 60)) : null) },
          { label: 'Egress', cell: (x) => egressCell(x) },
          { label: 'Traffic', class: 'nowrap', cell: (x) => trafficCell(x) },
          { label: 'Limits', class: 'nowrap', cell: (x) => h('span', { class: 'muted' }, limits(x)) },
          { label: 'Created', class: 'nowrap', cell: (x) => timeAgo(x.created_at) },
        ],
      });
      if (rows.length) syncAll();
      return t;
    },
  });

  function schedulePoll(rows) {
    clearTimeout(poll);
    if (rows.some((x) => TRANSITIONAL.has(x.status))) {
      poll = setTimeout(() => {
        if (document.visibilityState === 'visible') l.reload({ quiet: true });
        else schedulePoll(rows);
      }, 5000);
    }
  }
  ctx.onCleanup(() => clearTimeout(poll));

  function paintBulk() {
    if (!selected.size) {
      bulkbar.hidden = true;
      return;
    }
    bulkbar.hidden = false;
    const hosts = [...selected.values()];
    const start = button('Start', { small: true, icon: 'play', test: 'bulk-start' });
    const stop = button('Stop', { small: true, icon: 'stop', test: 'bulk-stop' });
    const remove = button('Delete', { small: true, kind: 'danger-soft', icon: 'trash', test: 'bulk-delete' });
    const clearSel = button('Clear selection', { small: true, kind: 'ghost', test: 'bulk-clear' });
    start.addEventListener('click', () => bulk('start', hosts));
    stop.addEventListener('click', () => bulk('stop', hosts));
    remove.addEventListener('click', () => bulk('delete', hosts));
    clearSel.addEventListener('click', () => {
      selected.clear();
      paintBulk();
      l.reload({ quiet: true });
    });
    replace(bulkbar, h('strong', { 'data-test': 'bulk-count' }, `${hosts.length} selected`), start, stop, remove, h('span', { class: 'spacer' }), clearSel);
  }

  async function bulk(action, hosts) {
    const names = hosts.map((x) => x.name || x.short_id);
    const verb = { start: 'Start', stop: 'Stop', delete: 'Delete' }[action];
    const ok = await confirmDialog({
      title: `${verb} ${hosts.length} ${hosts.length === 1 ? 'host' : 'hosts'}`,
      message: h('div', null,
        h('p', null, action === 'delete' ? 'These hosts and their home volumes will be removed. This cannot be undone.' : `A ${action} task is queued for each of these hosts.`),
        h('p', { class: 'muted' }, names.slice(0, 12).join(', ') + (names.length > 12 ? `, and ${names.length - 12} more` : ''))),
      confirmLabel: verb,
      danger: action === 'delete',
    });
    if (!ok) return;
    for (const b of bulkbar.querySelectorAll('button')) b.disabled = true;
    const status = h('span', { class: 'row', 'data-test': 'bulk-progress' }, h('span', { class: 'spinner spinner-xs' }), h('span', null, `0 / ${hosts.length}`));
    bulkbar.appendChild(status);
    let done = 0;
    const failures = [];
    const queue = [...hosts];
    const worker = async () => {
      while (queue.length) {
        const x = queue.shift();
        try {
          if (action === 'delete') await del(`/v1/admin/hosts/${enc(x.id)}`);
          else await post(`/v1/admin/hosts/${enc(x.id)}/${action}`);
        } catch (err) {
          failures.push(`${x.name || x.short_id}: ${describeError(err)}`);
        }
        done += 1;
        status.lastChild.textContent = `${done} / ${hosts.length}`;
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    const okCount = hosts.length - failures.length;
    if (okCount) toast(`${verb} queued for ${okCount} ${okCount === 1 ? 'host' : 'hosts'}.`);
    if (failures.length) toast(`${failures.length} failed. ${failures.slice(0, 3).join('; ')}`, 'error');
    selected.clear();
    paintBulk();
    l.reload({ quiet: true });
  }

  const picker = userPicker({ name: 'user_filter', label: 'User', test: 'hosts-user-filter', onChange: (u) => l.set({ user_id: u ? u.id : '' }) });
  if (l.state.user_id) {
    picker.input.value = '…';
    get(`/v1/admin/users/${enc(l.state.user_id)}`).then((u) => {
      picker.input.value = u.username;
    }).catch(() => {
      picker.input.value = l.state.user_id;
    });
  }

  const newBtn = button('New host', { kind: 'primary', icon: 'plus', test: 'new-host' });
  newBtn.addEventListener('click', () => createHostDialog(ctx, null));

  ctx.view.append(
    pageHeader('Hosts', { subtitle: 'Containers with sshd and a web desktop, one or more per user.', actions: newBtn }),
    card(null, [
      h('div', { class: 'toolbar' },
        searchField(l, { label: 'Search', placeholder: 'Name, username or short id…', test: 'hosts-search' }),
        selectFilter(l, 'status', 'Status', [['', 'Any status'], ...HOST_STATUSES.map((s) => [s, s[0].toUpperCase() + s.slice(1)])], 'hosts-status-filter'),
        picker.el),
      bulkbar,
      l.el,
    ], { class: 'card-flush' }),
  );
  l.reload();

  if (ctx.query.get('new') === '1') {
    const uid = ctx.query.get('user_id');
    let user = null;
    if (uid) user = await get(`/v1/admin/users/${enc(uid)}`).catch(() => null);
    createHostDialog(ctx, user);
  }
}

function truncate(s, n) {
  const t = String(s);
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

function limits(x) {
  const parts = [];
  if (x.memory_mb) parts.push(`${x.memory_mb} MB`);
  if (x.cpu_millis) parts.push(`${(x.cpu_millis / 1000).toFixed(x.cpu_millis % 1000 ? 2 : 0)} CPU`);
  if (x.pids_limit) parts.push(`${x.pids_limit} pids`);
  return parts.join(' · ') || 'defaults';
}

export function egressCell(x) {
  if (!x.egress_ip_id) return h('span', { class: 'muted' }, 'direct');
  const eh = x.egress_health;
  if (!eh) return h('span', { class: 'kv-inline' }, icon('egress'), h('span', { class: 'muted' }, 'bound, not checked'));
  return h('span', { class: 'kv-inline', title: eh.checked_at ? `checked ${eh.checked_at}` : '' },
    badge(eh.healthy ? 'healthy' : 'unhealthy', { test: 'egress-health' }),
    eh.exit_ip ? h('code', { class: 'mono' }, eh.exit_ip) : null);
}

/** The create form. `user` preselects the owner. */
export function createHostDialog(ctx, user) {
  const picker = userPicker({ name: 'user_id', label: 'User', required: true, test: 'create-host-user', initial: user });
  const form = h('form', { novalidate: true, 'data-test': 'create-host-form' },
    formBanner(),
    picker.el,
    field({ label: 'Name', name: 'name', optional: true, placeholder: 'dev', hint: 'Shown in lists; the short id is made by the server.', test: 'create-host-name' }),
    h('fieldset', null, h('legend', null, 'Limits (optional)'),
      h('div', { class: 'form-grid form-grid-3' },
        field({ label: 'Memory (MB)', name: 'memory_mb', type: 'number', min: 1, inputmode: 'numeric', test: 'create-host-memory' }),
        field({ label: 'CPU (millicores)', name: 'cpu_millis', type: 'number', min: 1, inputmode: 'numeric', hint: '1000 = one core', test: 'create-host-cpu' }),
        field({ label: 'Process limit', name: 'pids_limit', type: 'number', min: 1, inputmode: 'numeric', test: 'create-host-pids' }))),
    h('div', { class: 'dialog-actions' },
      button('Cancel', { onClick: () => d.close() }),
      button('Create host', { kind: 'primary', type: 'submit', test: 'create-host-submit' })));
  onSubmit(form, async (fd) => {
    const userId = fd.get('user_id');
    if (!userId) throw Object.assign(new Error('Pick a user from the list.'), { field: 'user_id' });
    const body = { user_id: userId };
    const name = formValue(fd, 'name');
    if (name) body.name = name;
    for (const k of ['memory_mb', 'cpu_millis', 'pids_limit']) {
      const v = intOrUndef(fd.get(k));
      if (v !== undefined) body[k] = v;
    }
    const host = await post('/v1/admin/hosts', body);
    putFlash(`host:${host.id}`, { ssh_password: host.ssh_password, task_id: host.task_id, created: true });
    d.close();
    toast(`Host ${host.name || host.short_id} is being created.`);
    ctx.navigate(`#/hosts/${enc(host.id)}`);
  });
  const d = dialog({ title: 'New host', body: form, test: 'create-host-dialog', wide: true });
  if (!user) picker.input.focus();
}

/** Received / sent since the host was made, and a mark when a quota cut its egress. */
function trafficCell(x) {
  const t = x.traffic || { rx_bytes: 0, tx_bytes: 0 };
  return h('span', { class: 'muted', 'data-test': 'host-traffic-cell', title: 'received / sent since created' },
    `↓ ${fmtBytes(t.rx_bytes)} ↑ ${fmtBytes(t.tx_bytes)}`,
    x.egress_cut ? h('span', null, ' ', badge('egress cut', { kind: 'bad', test: 'host-egress-cut' })) : null);
}
