// A host's traffic on its page: totals, a bar chart of the last 24 hours or
// 30 days (received above the axis, sent below), and the quotas that count
// it. The operator adds and removes quotas here; a tenant sees them.

import { h, replace, badge, fmtTime } from './dom.js';
import { get, post, del, enc } from './api.js';
import { button, dialog, field, formBanner, onSubmit, formValue, toast, busy, describeError, confirmDialog, errorBox, loading, dl } from './ui.js';

const SVG_NS = 'http://www.w3.org/2000/svg';

/** 1536 → "1.5 KiB". */
export function fmtBytes(n) {
  const v = Number(n) || 0;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let x = v;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${x.toFixed(x < 10 ? 2 : x < 100 ? 1 : 0)} ${units[i]}`;
}

function svg(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

/** The series as bars: received up, sent down, one column per bucket. */
export function trafficChart(series) {
  const buckets = series.buckets || [];
  const W = 720;
  const H = 180;
  const mid = H / 2;
  const top = Math.max(1, ...buckets.map((b) => b.rx_bytes));
  const bottom = Math.max(1, ...buckets.map((b) => b.tx_bytes));
  const peak = Math.max(top, bottom);
  const step = W / Math.max(1, buckets.length);
  const bar = Math.max(1, step * 0.7);
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H + 18}`, class: 'traffic-chart', role: 'img', 'aria-label': `Traffic per ${series.bucket}` });
  chart.appendChild(svg('line', { x1: 0, x2: W, y1: mid, y2: mid, class: 'traffic-axis' }));
  buckets.forEach((b, i) => {
    const x = i * step + (step - bar) / 2;
    const label = `${fmtTime(b.start)}: ${fmtBytes(b.rx_bytes)} received, ${fmtBytes(b.tx_bytes)} sent`;
    const g = svg('g', { 'data-test': 'traffic-bucket', 'data-rx': b.rx_bytes, 'data-tx': b.tx_bytes });
    const title = svg('title');
    title.textContent = label;
    g.appendChild(title);
    const up = b.rx_bytes > 0 ? Math.max(1, (b.rx_bytes / peak) * (mid - 4)) : 0;
    const down = b.tx_bytes > 0 ? Math.max(1, (b.tx_bytes / peak) * (mid - 4)) : 0;
    g.appendChild(svg('rect', { x, y: mid - up, width: bar, height: up, class: 'traffic-rx' }));
    g.appendChild(svg('rect', { x, y: mid, width: bar, height: down, class: 'traffic-tx' }));
    chart.appendChild(g);
  });
  // First, middle and last bucket times under the chart.
  const marks = buckets.length ? [0, Math.floor(buckets.length / 2), buckets.length - 1] : [];
  for (const i of new Set(marks)) {
    const d = new Date(buckets[i].start);
    const text = series.bucket === 'day'
      ? d.toLocaleDateString(undefined, { month: 'short', day: '2-digit' })
      : d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', hour12: false });
    const t = svg('text', { x: Math.min(W - 40, i * step), y: H + 14, class: 'traffic-label' });
    t.textContent = text;
    chart.appendChild(t);
  }
  return h('figure', { class: 'traffic-figure', 'data-test': 'traffic-chart', 'data-bucket': series.bucket },
    chart,
    h('figcaption', { class: 'row muted' },
      h('span', { class: 'legend legend-rx' }, 'received'),
      h('span', { class: 'legend legend-tx' }, 'sent'),
      h('span', null, `peak ${fmtBytes(peak)} per ${series.bucket}`)));
}

function quotaRow(q, onDelete) {
  const pct = Math.min(100, Math.round((q.used_bytes / q.limit_bytes) * 100));
  const meter = h('div', { class: 'meter', title: `${pct}%` }, h('div', { class: q.exceeded ? 'meter-fill meter-bad' : 'meter-fill', style: { width: `${pct}%` } }));
  const what = { event: 'record an event', stop: 'stop the host', cut_egress: 'cut egress' }[q.action] || q.action;
  const dir = { in: 'received', out: 'sent', total: 'in + out' }[q.direction] || q.direction;
  return h('div', { class: 'quota', 'data-test': 'quota', 'data-quota-id': q.id, 'data-exceeded': String(q.exceeded) },
    h('div', { class: 'row' },
      h('strong', null, `${fmtBytes(q.limit_bytes)} ${q.period} (${dir})`),
      h('span', { class: 'muted' }, `then ${what}${q.user_id ? ', across the user\'s hosts' : ''}`),
      q.exceeded ? badge('exceeded', { kind: 'bad', test: 'quota-state' }) : badge('within', { kind: 'ok', test: 'quota-state' }),
      h('span', { class: 'spacer' }),
      onDelete ? button('Remove', { small: true, kind: 'danger-soft', icon: 'trash', test: 'quota-delete', onClick: (e) => onDelete(q, e.currentTarget) }) : null),
    meter,
    h('p', { class: 'hint' }, `${fmtBytes(q.used_bytes)} used since ${fmtTime(q.period_start)}; starts again ${fmtTime(q.period_end)}.`,
      q.exceeded && q.exceeded_at ? ` Exceeded ${fmtTime(q.exceeded_at)}.` : ''));
}

function quotaDialog(hostId, done) {
  const form = h('form', { novalidate: true, 'data-test': 'quota-form' },
    formBanner(),
    field({ label: 'Limit (GiB)', name: 'limit_gib', type: 'number', required: true, value: '100', hint: 'Traffic in one period above which the action happens. Decimals allowed.', test: 'quota-limit' }),
    field({ label: 'Counted', name: 'direction', type: 'select', options: [['total', 'Received and sent'], ['in', 'Received'], ['out', 'Sent']], test: 'quota-direction' }),
    field({ label: 'Period', name: 'period', type: 'select', options: [['monthly', 'Monthly'], ['weekly', 'Weekly'], ['daily', 'Daily']], test: 'quota-period' }),
    field({ label: 'Then', name: 'action', type: 'select', options: [['event', 'Only record an event'], ['cut_egress', 'Cut egress until the period ends'], ['stop', 'Stop the host']], test: 'quota-action' }),
    h('div', { class: 'dialog-actions' },
      button('Cancel', { onClick: () => d.close() }),
      button('Add quota', { kind: 'primary', type: 'submit', test: 'quota-submit' })));
  onSubmit(form, async (fd) => {
    const gib = Number(formValue(fd, 'limit_gib'));
    if (!(gib > 0)) throw Object.assign(new Error('Give a limit above zero.'), { field: 'limit_gib' });
    await post('/v1/admin/traffic-quotas', {
      host_id: hostId,
      limit_bytes: Math.max(1, Math.round(gib * 1024 ** 3)),
      direction: fd.get('direction'),
      period: fd.get('period'),
      action: fd.get('action'),
    });
    d.close();
    done();
  });
  const d = dialog({ title: 'Traffic quota', body: form, test: 'quota-dialog' });
}

/**
 * The traffic card's body for a host. scope: 'admin' or 'user'. Returns
 * { el, refresh } — refresh() reloads the chart and quotas.
 */
export function trafficBlock(scope, host) {
  const base = `/v1/${scope}/hosts/${enc(host.id)}/traffic`;
  let bucket = 'hour';
  const totals = h('div');
  const chartSlot = h('div', null, loading());
  const quotaSlot = h('div');
  const hourBtn = button('24 hours', { small: true, test: 'traffic-hours' });
  const dayBtn = button('30 days', { small: true, test: 'traffic-days' });
  const pick = (b) => {
    bucket = b;
    refresh();
  };
  hourBtn.addEventListener('click', () => pick('hour'));
  dayBtn.addEventListener('click', () => pick('day'));

  function paintTotals(current) {
    replace(totals, h('div', { class: 'stack' },
      current.egress_cut ? h('div', { class: 'alert alert-error', role: 'alert', 'data-test': 'egress-cut' },
        'Egress cut by a traffic quota: nothing leaves this host until the quota\'s period ends or it is removed. SSH and the desktop still work.') : null,
      dl([
        ['Received', h('span', { 'data-test': 'traffic-rx-total' }, fmtBytes(current.traffic ? current.traffic.rx_bytes : 0))],
        ['Sent', h('span', { 'data-test': 'traffic-tx-total' }, fmtBytes(current.traffic ? current.traffic.tx_bytes : 0))],
      ])));
  }

  async function loadChart() {
    try {
      const series = await get(base, { bucket });
      hourBtn.classList.toggle('is-active', bucket === 'hour');
      dayBtn.classList.toggle('is-active', bucket === 'day');
      replace(chartSlot, h('div', { class: 'stack' },
        h('div', { class: 'row' }, hourBtn, dayBtn, h('span', { class: 'muted', 'data-test': 'traffic-range-total' },
          `${fmtBytes(series.rx_bytes)} received, ${fmtBytes(series.tx_bytes)} sent in this range`)),
        trafficChart(series)));
    } catch (err) {
      if (err.status !== 401) replace(chartSlot, errorBox(err, loadChart));
    }
  }

  async function loadQuotas() {
    try {
      const list = scope === 'admin'
        ? (await get('/v1/admin/traffic-quotas', { host_id: host.id, page_size: 50 })).data || []
        : (await get('/v1/user/traffic-quotas')).filter((q) => !q.host_id || q.host_id === host.id);
      const ownerQuotas = scope === 'admin' && host.user_id
        ? ((await get('/v1/admin/traffic-quotas', { user_id: host.user_id, page_size: 50 })).data || [])
        : [];
      const all = [...list, ...ownerQuotas];
      const remove = scope === 'admin' ? async (q, btn) => {
        const ok = await confirmDialog({ title: 'Remove quota', message: 'Remove this quota? A host whose egress it cut gets it back.', confirmLabel: 'Remove', danger: true });
        if (!ok) return;
        await busy(btn, async () => {
          try {
            await del(`/v1/admin/traffic-quotas/${enc(q.id)}`);
            toast('Quota removed.');
            refresh();
          } catch (err) {
            toast(describeError(err), 'error');
          }
        });
      } : null;
      const add = scope === 'admin' ? button('Add quota', { small: true, icon: 'plus', test: 'quota-add', onClick: () => quotaDialog(host.id, () => {
        toast('Quota added.');
        refresh();
      }) }) : null;
      replace(quotaSlot, h('div', { class: 'stack', 'data-test': 'quotas' },
        h('div', { class: 'row' }, h('h3', null, 'Quotas'), h('span', { class: 'spacer' }), add),
        all.length ? all.map((q) => quotaRow(q, remove)) : h('p', { class: 'muted' }, 'No quota counts this host\'s traffic.')));
    } catch (err) {
      if (err.status !== 401) replace(quotaSlot, errorBox(err, loadQuotas));
    }
  }

  async function refresh(current) {
    let now = current;
    if (!now) now = await get(`/v1/${scope}/hosts/${enc(host.id)}`).catch(() => host);
    paintTotals(now);
    await Promise.all([loadChart(), loadQuotas()]);
  }

  paintTotals(host);
  refresh(host);
  return { el: h("div", { class: "stack", "data-test": "host-traffic" }, totals, chartSlot, quotaSlot), refresh };
}
