// Pieces of a host's page shared by the operator's and the tenant's views:
// access commands, egress checks and health, and the action runner that
// follows the task an action starts.

import { h, badge, fmtMs, timeAgo, fmtTime, icon } from './dom.js';
import { post, enc, ApiError } from './api.js';
import { copyLine, taskProgress, toast, busy, describeError, dl, linkButton, button } from './ui.js';

export const TRANSITIONAL = new Set(['pending', 'creating', 'deleting']);

export function accessBlock(host) {
  const a = host.access || {};
  const items = [];
  if (a.ssh_command) items.push(['SSH', a.ssh_command, 'access-ssh']);
  if (a.entry_command) items.push(['One-line entry (curl | bash)', a.entry_command, 'access-entry']);
  if (a.entry_url) items.push(['Entry URL', a.entry_url, 'access-entry-url']);
  if (!items.length) return h('p', { class: 'muted' }, 'No access commands yet.');
  return h('div', { class: 'access-list', 'data-test': 'access' }, items.map(([label, value, test]) => h('div', null,
    h('div', { class: 'label' }, label), copyLine(value, { test }))));
}

export function checkCard(c) {
  const passed = c.passed ?? c.status === 'pass';
  const names = { connectivity: 'Connectivity', exit_ip: 'Exit IP', dns_leak: 'DNS leak' };
  return h('div', { class: `check ${passed ? 'check-pass' : 'check-fail'}`, 'data-test': 'check', 'data-check': c.name, 'data-passed': String(!!passed) },
    h('div', { class: 'check-head' }, h('span', { class: 'check-name' }, names[c.name] || c.name), badge(passed ? 'pass' : 'fail', { test: 'check-status' })),
    h('dl', { class: 'dl' },
      h('dt', null, 'Latency'), h('dd', { 'data-test': 'check-latency' }, fmtMs(c.latency_ms)),
      c.observed ? [h('dt', null, 'Observed'), h('dd', null, h('code', { class: 'mono' }, c.observed))] : null),
    c.error ? h('p', { class: 'err', 'data-test': 'check-error' }, c.error) : null);
}

export function checksGrid(checks) {
  if (!checks || !checks.length) return h('p', { class: 'muted' }, 'No checks reported.');
  return h('div', { class: 'checks', 'data-test': 'checks' }, checks.map(checkCard));
}

/** egress_health of a bound host: tunnel state, exit IP, the three checks. */
export function healthBlock(eh) {
  if (!eh) return h('p', { class: 'muted', 'data-test': 'egress-health' }, 'Not checked yet: the agent checks a bound host soon after its tunnel comes up, then every minute.');
  return h('div', { class: 'stack', 'data-test': 'egress-health' },
    dl([
      ['Health', badge(eh.healthy ? 'healthy' : 'unhealthy')],
      ['Tunnel', badge(eh.tunnel || 'unknown', { test: 'tunnel-state', spin: eh.tunnel === 'starting' || eh.tunnel === 'restarting' })],
      ['Exit IP', eh.exit_ip ? h('code', { class: 'mono', 'data-test': 'exit-ip' }, eh.exit_ip) : '—'],
      ['Checked', eh.checked_at ? h('span', { title: fmtTime(eh.checked_at) }, timeAgo(eh.checked_at)) : '—'],
    ]),
    checksGrid(eh.checks));
}

/**
 * Runs a host action that answers a task and shows its progress in `slot`.
 * onDone(task) runs when the task finishes. Returns the action's answer.
 */
export async function runTask(btn, { scope, url, body, slot, label, onStarted, onDone, stops }) {
  return busy(btn, async () => {
    let res;
    try {
      res = await post(url, body);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401) toast(describeError(err), 'error');
      return null;
    }
    const task = res && res.task ? res.task : res;
    if (onStarted) onStarted(res);
    if (task && task.id) {
      const stop = followTask(slot, scope, task, label, onDone);
      if (stops) stops.push(stop);
    }
    return res;
  });
}

/** Shows a live progress bar for a task in slot (newest first). Returns stop(). */
export function followTask(slot, scope, task, label, onDone) {
  const { el, stop } = taskProgress(scope, task, {
    label,
    onDone: (t) => {
      if (t.status === 'succeeded') toast(`${label || 'Task'} finished.`);
      else if (t.status === 'failed') toast(`${label || 'Task'} failed${t.error ? `: ${t.error}` : '.'}`, 'error');
      if (onDone) onDone(t);
    },
  });
  slot.prepend(el);
  // Keep the slot short: three most recent.
  while (slot.children.length > 3) slot.lastElementChild.remove();
  return stop;
}

export function openButtons(host, base) {
  const running = host.status === 'running';
  const title = running ? null : 'The host must be running';
  const desk = running ? linkButton('Desktop', `${base}/desktop`, { icon: 'desktop', test: 'open-desktop' }) : button('Desktop', { icon: 'desktop', disabled: true, test: 'open-desktop', title });
  const term = running ? linkButton('Terminal', `${base}/terminal`, { icon: 'terminal', test: 'open-terminal' }) : button('Terminal', { icon: 'terminal', disabled: true, test: 'open-terminal', title });
  return [desk, term];
}

export function statusLine(host) {
  return h('span', { class: 'row' },
    badge(host.status, { test: 'host-status' }),
    h('code', { class: 'mono id', title: host.id }, host.short_id || host.id),
    host.username ? h('span', { class: 'muted' }, 'owner ', host.user_id ? h('a', { href: `#/users/${enc(host.user_id)}` }, host.username) : host.username) : null);
}

export function lastError(host) {
  if (!host.last_error) return null;
  return h('div', { class: 'alert alert-error', role: 'alert', 'data-test': 'host-last-error' }, icon('alert'), h('span', { class: 'spacer' }, host.last_error));
}

