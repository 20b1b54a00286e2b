// Tenant portal: my hosts (access, start, rebuild, desktop, terminal), my
// SSH keys and changing my password.

import { h, replace } from '../dom.js';
import { get, post, enc, currentSession } from '../api.js';
import { list } from '../list.js';
import { pageHeader, card, button, field, formBanner, onSubmit, toast, confirmDialog, empty, loading } from '../ui.js';
import { accessBlock, runTask, openButtons, statusLine, lastError, healthBlock, TRANSITIONAL } from '../hostview.js';
import { trafficBlock } from '../traffic.js';
import { sshKeysCard } from '../sshkeys.js';

function hostCard(ctx, host, { onChange, stops, detail = false }) {
  const base = `/v1/user/hosts/${enc(host.id)}`;
  const progress = h('div', { class: 'stack', 'data-test': 'task-slot' });
  const canStart = host.status === 'stopped' || host.status === 'error';
  const start = button('Start', { kind: canStart ? 'primary' : 'secondary', icon: 'play', test: 'host-start', disabled: !canStart });
  start.addEventListener('click', () => runTask(start, { scope: 'user', url: `${base}/start`, slot: progress, label: 'Start', stops, onDone: onChange }));
  const rebuild = button('Rebuild', { icon: 'rebuild', test: 'host-rebuild', disabled: host.status === 'deleting' });
  rebuild.addEventListener('click', async () => {
    const r = await confirmDialog({
      title: 'Rebuild host',
      message: 'Your host is made again from a fresh image; running programs stop. Files in your home directory are kept unless you wipe them.',
      confirmLabel: 'Rebuild',
      checkboxes: [{ name: 'wipe', label: 'Also wipe my home directory (every file in it is lost)' }],
    });
    if (!r) return;
    if (r.wipe) {
      const sure = await confirmDialog({ title: 'Wipe home directory?', message: 'All files in your home directory will be deleted. This cannot be undone.', confirmLabel: 'Wipe and rebuild', danger: true });
      if (!sure) return;
    }
    runTask(rebuild, { scope: 'user', url: `${base}/rebuild`, body: { wipe: !!r.wipe }, slot: progress, label: r.wipe ? 'Rebuild with wipe' : 'Rebuild', stops, onDone: onChange });
  });
  const title = detail ? null : h('a', { href: `#/hosts/${enc(host.id)}` }, host.name || host.short_id);
  const el = card(title || (host.name || host.short_id), [
    h('div', { class: 'stack' },
      statusLine({ ...host, username: null }),
      lastError(host),
      host.status === 'stopped' ? h('p', { class: 'hint' }, 'Stopped. Start it here, or just connect: the entry command starts it too.') : null,
      accessBlock(host),
      h('div', { class: 'actions-bar' }, canStart ? start : null, rebuild, ...openButtons(host, `#/hosts/${enc(host.id)}`)),
      progress,
      detail && host.egress_ip_id ? h('div', { class: 'stack' }, h('h3', null, 'Egress'), healthBlock(host.egress_health)) : null),
  ], { test: 'my-host', class: 'host-card' });
  el.dataset.hostId = host.id;
  el.dataset.status = host.status;
  return { el, progress };
}

/** Work started elsewhere (by the operator, or the entry script): the status is polled meanwhile. */
function noteTransitional(host, progress) {
  if (!TRANSITIONAL.has(host.status)) return;
  progress.appendChild(h('p', { class: 'muted row', 'data-test': 'host-busy-note' }, h('span', { class: 'spinner spinner-xs' }), `The host is ${host.status}…`));
}

export async function myHostsPage(ctx) {
  ctx.setTitle('My hosts');
  const stops = [];
  let timer = null;
  ctx.onCleanup(() => {
    clearTimeout(timer);
    for (const s of stops) s();
  });
  const l = list({
    ctx,
    test: 'my-hosts',
    keys: {},
    load: (s, signal) => get('/v1/user/hosts', { page: s.page, page_size: s.page_size }, { signal }),
    render: (page) => {
      const hosts = page.data || [];
      clearTimeout(timer);
      if (hosts.some((x) => TRANSITIONAL.has(x.status))) {
        timer = setTimeout(() => {
          if (!document.querySelector('dialog[open]') && !document.querySelector('[data-test="task-progress"]:not([data-status="succeeded"]):not([data-status="failed"]):not([data-status="cancelled"])')) l.reload({ quiet: true });
        }, 5000);
      }
      if (!hosts.length) return empty('You have no host yet. Ask your operator to create one.');
      return h('div', { class: 'host-cards' }, hosts.map((x) => {
        const c = hostCard(ctx, x, { stops, onChange: () => l.reload({ quiet: true }) });
        noteTransitional(x, c.progress);
        return c.el;
      }));
    },
  });
  ctx.view.append(pageHeader('My hosts', { subtitle: 'Your machines: connect with SSH, the one-line command, or in the browser.' }), l.el);
  l.reload();
}

export async function myHostPage(ctx) {
  const id = ctx.params.id;
  const stops = [];
  let timer = null;
  ctx.onCleanup(() => {
    clearTimeout(timer);
    for (const s of stops) s();
  });
  const slot = h('div', null, loading());
  const head = h('div');
  ctx.view.append(head, slot);
  async function load() {
    clearTimeout(timer);
    const host = await get(`/v1/user/hosts/${enc(id)}`);
    ctx.setTitle(host.name || host.short_id);
    replace(head, pageHeader(host.name || host.short_id, { back: '#/hosts' }));
    const busyNow = slot.querySelector('[data-test="task-progress"][data-status="running"], [data-test="task-progress"][data-status="queued"]');
    if (busyNow) {
      // Keep the live progress; refresh after it ends.
      timer = setTimeout(() => load().catch(() => {}), 5000);
      return;
    }
    const c = hostCard(ctx, host, { stops, detail: true, onChange: () => load().catch(() => {}) });
    replace(slot, c.el, card('Traffic', trafficBlock('user', host).el, { test: 'host-traffic-card' }));
    noteTransitional(host, c.progress);
    if (TRANSITIONAL.has(host.status)) timer = setTimeout(() => load().catch(() => {}), 5000);
  }
  await load();
}

export async function myKeysPage(ctx) {
  ctx.setTitle('SSH keys');
  ctx.view.append(
    pageHeader('SSH keys', { subtitle: 'Keys that can log in to your hosts through the SSH gateway.' }),
    sshKeysCard({ base: '/v1/user/ssh-keys', ctx, owner: ctx.user.username, title: 'My SSH keys' }),
  );
}

export async function passwordPage(ctx) {
  ctx.setTitle('Change password');
  const form = h('form', { novalidate: true, 'data-test': 'password-form', class: 'narrow-form' },
    formBanner(),
    h('input', { type: 'text', name: 'username', autocomplete: 'username', value: ctx.user.username, hidden: true, readOnly: true, tabindex: '-1', 'aria-hidden': 'true' }),
    field({ label: 'Current password', name: 'old_password', type: 'password', required: true, autocomplete: 'current-password', test: 'password-old' }),
    field({ label: 'New password', name: 'new_password', type: 'password', required: true, autocomplete: 'new-password', hint: '8-256 characters.', test: 'password-new' }),
    field({ label: 'Repeat the new password', name: 'confirm', type: 'password', required: true, autocomplete: 'new-password', test: 'password-confirm' }),
    h('div', { class: 'form-actions' }, button('Change password', { kind: 'primary', type: 'submit', test: 'password-submit' })));
  onSubmit(form, async (fd) => {
    const oldPw = fd.get('old_password') || '';
    const newPw = fd.get('new_password') || '';
    if (newPw !== (fd.get('confirm') || '')) throw Object.assign(new Error('The two new passwords differ.'), { field: 'confirm' });
    try {
      await post('/v1/user/change-password', { old_password: oldPw, new_password: newPw }, { allow401: true });
    } catch (err) {
      if (err.status === 401) {
        err.field = 'old_password';
        err.message = 'The current password is wrong.';
      }
      throw err;
    }
    form.reset();
    // Other sessions end; this one may too.
    const s = await currentSession().catch(() => null);
    if (!s) {
      ctx.endSession('Password changed. Sign in with the new one.');
      return;
    }
    toast('Password changed. Your other sessions have been signed out.');
  });
  ctx.view.append(
    pageHeader('Change password', { subtitle: 'For signing in here, to the entry command and to SSH.' }),
    card(null, form, { class: 'narrow' }),
  );
}
