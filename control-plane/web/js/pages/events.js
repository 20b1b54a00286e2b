// Operator: the audit log with filters (type, user, host, time range) and
// paging.

import { h, fmtTime, fmtTimeShort, badge, shortId } from '../dom.js';
import { get, enc } from '../api.js';
import { list } from '../list.js';
import { pageHeader, card, button, field, userPicker, hostPicker, table } from '../ui.js';
import { toIso, toLocalInput } from '../forms.js';

const TYPE_PRESETS = [
  ['', 'Any type'], ['auth.', 'Sign-in (auth.*)'], ['user.', 'Users (user.*)'], ['host.', 'Hosts (host.*)'], ['egress', 'Egress (egress*)'],
  ['binding.', 'Bindings (binding.*)'], ['access.', 'Access scripts (access.*)'], ['ssh.', 'SSH gateway (ssh.*)'], ['vnc.', 'Web desktop (vnc.*)'], ['terminal.', 'Web terminal (terminal.*)'],
];

function detailsCell(details) {
  if (details === null || details === undefined || (typeof details === 'object' && !Object.keys(details).length)) return h('span', { class: 'muted' }, '—');
  const text = typeof details === 'string' ? details : JSON.stringify(details);
  if (text.length <= 80) return h('code', { class: 'details' }, text);
  return h('details', null, h('summary', null, h('code', { class: 'details' }, `${text.slice(0, 72)}…`)),
    h('pre', { class: 'mono details' }, typeof details === 'string' ? details : JSON.stringify(details, null, 2)));
}

export async function eventsPage(ctx) {
  ctx.setTitle('Events');
  const l = list({
    ctx,
    test: 'events-list',
    keys: { type: '', user_id: '', host_id: '', since: '', until: '' },
    load: (s, signal) => get('/v1/admin/events', { type: s.type, user_id: s.user_id, host_id: s.host_id, since: s.since, until: s.until, page: s.page, page_size: s.page_size }, { signal }),
    render: (page) => table({
      test: 'events-table',
      caption: 'Events',
      emptyText: 'No events match these filters.',
      rows: page.data || [],
      rowAttrs: (e) => ({ 'data-test': 'event-row', 'data-event-id': e.id, 'data-type': e.type }),
      columns: [
        { label: 'Time', class: 'nowrap', cell: (e) => h('time', { datetime: e.created_at, title: fmtTime(e.created_at) }, fmtTimeShort(e.created_at)) },
        { label: 'Type', cell: (e) => h('code', { class: 'mono' }, e.type) },
        { label: 'Outcome', cell: (e) => badge(e.outcome || 'success') },
        { label: 'Actor', cell: (e) => e.actor_name || (e.actor_id ? shortId(e.actor_id) : h('span', { class: 'muted' }, 'system')) },
        { label: 'User', cell: (e) => (e.user_id ? h('a', { href: `#/users/${enc(e.user_id)}` }, shortId(e.user_id)) : '—') },
        { label: 'Host', cell: (e) => (e.host_id ? h('a', { href: `#/hosts/${enc(e.host_id)}` }, shortId(e.host_id)) : '—') },
        { label: 'IP', cell: (e) => (e.ip ? h('code', { class: 'mono' }, e.ip) : '—') },
        { label: 'Details', cell: (e) => detailsCell(e.details) },
      ],
    }),
  });

  const typeInput = field({ label: 'Type', name: 'type', value: l.state.type, placeholder: 'auth., host.created', test: 'events-type' });
  typeInput.querySelector('input').title = 'Comma-separated; a value ending in "." matches a prefix.';
  const preset = field({ label: 'Common types', name: 'preset', type: 'select', options: TYPE_PRESETS, value: TYPE_PRESETS.some(([v]) => v && v === l.state.type) ? l.state.type : '', test: 'events-type-preset' });
  preset.querySelector('select').addEventListener('change', (ev) => {
    typeInput.querySelector('input').value = ev.target.value;
    l.set({ type: ev.target.value });
  });
  const up = userPicker({ name: 'user_id', label: 'User', test: 'events-user' });
  const hp = hostPicker({ name: 'host_id', label: 'Host', test: 'events-host' });
  if (l.state.user_id) {
    up.hidden.value = l.state.user_id;
    up.input.value = l.state.user_id;
    get(`/v1/admin/users/${enc(l.state.user_id)}`).then((u) => { up.input.value = u.username; }).catch(() => {});
  }
  if (l.state.host_id) {
    hp.hidden.value = l.state.host_id;
    hp.input.value = l.state.host_id;
    get(`/v1/admin/hosts/${enc(l.state.host_id)}`).then((x) => { hp.input.value = x.name || x.short_id; }).catch(() => {});
  }
  const since = field({ label: 'Since', name: 'since', type: 'datetime-local', value: toLocalInput(l.state.since), test: 'events-since' });
  const until = field({ label: 'Until', name: 'until', type: 'datetime-local', value: toLocalInput(l.state.until), test: 'events-until' });
  const reset = button('Reset', { kind: 'ghost', test: 'events-reset', onClick: () => ctx.navigate('#/events') });
  const form = h('form', { class: 'toolbar filters-grid', 'data-test': 'events-filters', novalidate: true },
    preset, typeInput, up.el, hp.el, since, until,
    h('div', { class: 'field' }, h('span', { class: 'field-label', 'aria-hidden': 'true' }, '\u00a0'), h('div', { class: 'row' }, button('Apply', { kind: 'primary', type: 'submit', test: 'events-apply' }), reset)));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    l.set({
      type: String(fd.get('type') || '').trim(),
      user_id: up.input.value.trim() ? fd.get('user_id') || '' : '',
      host_id: hp.input.value.trim() ? fd.get('host_id') || '' : '',
      since: fd.get('since') ? toIso(fd.get('since')) : '',
      until: fd.get('until') ? toIso(fd.get('until')) : '',
    });
  });

  ctx.view.append(
    pageHeader('Events', { subtitle: 'Every change and every sign-in attempt, newest first.' }),
    card(null, [form, l.el], { class: 'card-flush' }),
  );
  l.reload();
}
