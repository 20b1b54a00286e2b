// Operator: session recordings (list with filters and paging) and the player,
// which replays an asciicast v2 file in xterm.js: output ("o") is written to
// the terminal at its recorded time, resizes ("r") resize it. Pauses longer
// than IDLE_LIMIT are shortened to it, as asciinema's players do.

import { h, icon, fmtTime, fmtTimeShort, shortId, replace } from '../dom.js';
import { get, enc } from '../api.js';
import { list } from '../list.js';
import { pageHeader, card, button, field, userPicker, hostPicker, table, errorBox } from '../ui.js';
import { toIso, toLocalInput } from '../forms.js';
import { loadXterm } from '../terminal.js';

const IDLE_LIMIT = 2; // seconds
const SPEEDS = [['1', '1×'], ['2', '2×'], ['4', '4×'], ['8', '8×']];
const FONT = 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace';

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return '—';
  const s = Math.round(ms / 1000);
  const m = Math.floor(s / 60);
  return m ? `${m}m ${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export async function recordingsPage(ctx) {
  ctx.setTitle('Recordings');
  const l = list({
    ctx,
    test: 'recordings-list',
    keys: { user_id: '', host_id: '', since: '', until: '' },
    load: (s, signal) => get('/v1/admin/recordings', { user_id: s.user_id, host_id: s.host_id, since: s.since, until: s.until, page: s.page, page_size: s.page_size }, { signal }),
    render: (page) => table({
      test: 'recordings-table',
      caption: 'Session recordings',
      emptyText: 'No recordings match these filters. Sessions are recorded when SESSION_RECORDING or a user\u2019s or host\u2019s setting says so.',
      rows: page.data || [],
      rowAttrs: (r) => ({ 'data-test': 'recording-row', 'data-recording-id': r.id }),
      columns: [
        { label: 'Started', class: 'nowrap', cell: (r) => h('time', { datetime: r.started_at, title: fmtTime(r.started_at) }, fmtTimeShort(r.started_at)) },
        { label: 'User', cell: (r) => h('a', { href: `#/users/${enc(r.user_id)}` }, shortId(r.user_id)) },
        { label: 'Host', cell: (r) => h('a', { href: `#/hosts/${enc(r.host_id)}` }, shortId(r.host_id)) },
        { label: 'Via', cell: (r) => (r.via === 'web' ? `web (${r.opened_by || '?'})` : 'ssh') },
        { label: 'Duration', cell: (r) => (r.ended_at ? fmtDuration(r.duration_ms) : h('span', { class: 'muted' }, 'open')) },
        { label: 'Size', cell: (r) => `${fmtBytes(r.size_bytes)} (${fmtBytes(r.stored_bytes)} stored)` },
        { label: 'Problem', cell: (r) => (r.error ? h('span', { class: 'text-bad' }, r.error) : '—') },
        { label: '', cell: (r) => h('span', { class: 'row' },
          h('a', { class: 'btn btn-secondary btn-sm', href: `#/recordings/${enc(r.id)}`, 'data-test': 'recording-play' }, icon('play'), 'Play'),
          h('a', { class: 'btn btn-ghost btn-sm', href: `/v1/admin/recordings/${enc(r.id)}/cast`, download: `${r.id}.cast`, 'data-test': 'recording-download' }, icon('download'), '.cast')) },
      ],
    }),
  });

  const up = userPicker({ name: 'user_id', label: 'User', test: 'recordings-user' });
  const hp = hostPicker({ name: 'host_id', label: 'Host', test: 'recordings-host' });
  if (l.state.user_id) {
    up.hidden.value = l.state.user_id;
    up.input.value = l.state.user_id;
  }
  if (l.state.host_id) {
    hp.hidden.value = l.state.host_id;
    hp.input.value = l.state.host_id;
  }
  const since = field({ label: 'Since', name: 'since', type: 'datetime-local', value: toLocalInput(l.state.since), test: 'recordings-since' });
  const until = field({ label: 'Until', name: 'until', type: 'datetime-local', value: toLocalInput(l.state.until), test: 'recordings-until' });
  const reset = button('Reset', { kind: 'ghost', test: 'recordings-reset', onClick: () => ctx.navigate('#/recordings') });
  const form = h('form', { class: 'toolbar filters-grid', 'data-test': 'recordings-filters', novalidate: true },
    up.el, hp.el, since, until,
    h('div', { class: 'field' }, h('span', { class: 'field-label', 'aria-hidden': 'true' }, '\u00a0'), h('div', { class: 'row' }, button('Apply', { kind: 'primary', type: 'submit', test: 'recordings-apply' }), reset)));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    l.set({
      user_id: up.input.value.trim() ? fd.get('user_id') || '' : '',
      host_id: hp.input.value.trim() ? fd.get('host_id') || '' : '',
      since: fd.get('since') ? toIso(fd.get('since')) : '',
      until: fd.get('until') ? toIso(fd.get('until')) : '',
    });
  });

  ctx.view.append(
    pageHeader('Session recordings', { subtitle: 'Recorded pty sessions (SSH gateway and web terminal), newest first.' }),
    card(null, [form, l.el], { class: 'card-flush' }),
  );
  l.reload();
}

/** Parses an asciicast v2 file: {header, events: [[time, code, data], …]}. */
export function parseCast(text) {
  const lines = text.split('\n').filter((line) => line.trim() !== '');
  if (!lines.length) throw new Error('the recording is empty');
  const header = JSON.parse(lines[0]);
  if (header.version !== 2) throw new Error(`not asciicast v2 (version ${header.version})`);
  const events = [];
  for (const line of lines.slice(1)) {
    const ev = JSON.parse(line);
    if (Array.isArray(ev) && ev.length === 3 && typeof ev[0] === 'number') events.push(ev);
  }
  // Long pauses shortened, so playback time is what the viewer waits.
  let last = 0;
  let shift = 0;
  for (const ev of events) {
    const gap = ev[0] - last;
    last = ev[0];
    if (gap > IDLE_LIMIT) shift += gap - IDLE_LIMIT;
    ev[0] -= shift;
  }
  return { header, events };
}

/** Operator route: #/recordings/<id> */
export async function recordingPlayerPage(ctx) {
  const id = ctx.params.id;
  ctx.setTitle('Recording');
  let meta;
  let cast;
  try {
    meta = await get(`/v1/admin/recordings/${enc(id)}`);
    const res = await fetch(`/v1/admin/recordings/${enc(id)}/cast`, { credentials: 'same-origin', cache: 'no-store' });
    if (!res.ok) throw new Error(`the server answered ${res.status}`);
    cast = parseCast(await res.text());
  } catch (err) {
    if (err.status === 401) return;
    replace(ctx.view, errorBox(err));
    return;
  }
  const Terminal = await loadXterm();

  const timeText = h('span', { class: 'mono', 'data-test': 'player-time' }, '0:00');
  const total = cast.events.length ? cast.events[cast.events.length - 1][0] : 0;
  const playBtn = h('button', { type: 'button', class: 'btn btn-secondary btn-sm', 'data-test': 'player-toggle' }, icon('play'), h('span', { class: 'label-text' }, 'Pause'));
  const restartBtn = h('button', { type: 'button', class: 'btn btn-secondary btn-sm', 'data-test': 'player-restart' }, icon('refresh'), h('span', { class: 'label-text' }, 'Restart'));
  const endBtn = h('button', { type: 'button', class: 'btn btn-secondary btn-sm', 'data-test': 'player-end' }, icon('expand'), h('span', { class: 'label-text' }, 'Skip to end'));
  const speed = field({ label: 'Speed', name: 'speed', type: 'select', options: SPEEDS, value: '1', test: 'player-speed' });
  const termHost = h('div', { class: 'term-host' });
  const viewer = h('div', { class: 'viewer terminal-viewer', 'data-test': 'player-viewer', 'data-state': 'loading' }, termHost);
  const who = meta.via === 'web' ? `web terminal, opened by ${meta.opened_by || '?'}` : 'SSH';
  const page = h('div', { class: 'viewer-page', 'data-test': 'player-page' },
    h('div', { class: 'viewer-bar' },
      h('a', { href: '#/recordings', class: 'btn btn-ghost btn-sm', 'data-test': 'player-back', 'aria-label': 'Back to the recordings' }, icon('back'), h('span', { class: 'label-text' }, 'Recordings')),
      h('span', { class: 'title', 'data-test': 'player-title' }, `${fmtTime(meta.started_at)} · host ${String(meta.host_id).slice(0, 8)} · ${who}`),
      timeText, h('span', { class: 'muted' }, ` / ${fmtDuration(total * 1000)}`),
      h('span', { class: 'spacer' }),
      speed, playBtn, restartBtn, endBtn),
    viewer);
  replace(ctx.view, page);

  const width = Number(cast.header.width) || 80;
  const height = Number(cast.header.height) || 24;
  const term = new Terminal({ cols: width, rows: height, fontFamily: FONT, fontSize: 14, scrollback: 5000, screenReaderMode: true, disableStdin: true, theme: { background: '#101318', foreground: '#e6e9ef' } });
  term.open(termHost);

  let next = 0; // index of the next event to play
  let position = 0; // seconds of the recording shown
  let playing = false;
  let wallStart = 0;
  let posStart = 0;
  let timer = null;

  const rate = () => Number(speed.querySelector('select').value) || 1;
  const fmtPos = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;

  function apply(ev) {
    if (ev[1] === 'o') term.write(ev[2]);
    else if (ev[1] === 'r') {
      const m = /^(\d+)x(\d+)$/.exec(ev[2]);
      if (m) term.resize(Number(m[1]), Number(m[2]));
    }
  }

  function playTo(target) {
    while (next < cast.events.length && cast.events[next][0] <= target) {
      apply(cast.events[next]);
      next += 1;
    }
    position = Math.min(target, total);
    timeText.textContent = fmtPos(position);
    if (next >= cast.events.length) setPlaying(false, 'ended');
  }

  function tick() {
    timer = null;
    if (!playing) return;
    playTo(posStart + ((performance.now() - wallStart) / 1000) * rate());
    if (playing) timer = setTimeout(tick, 40);
  }

  function setPlaying(on, state) {
    playing = on;
    viewer.dataset.state = state || (on ? 'playing' : 'paused');
    playBtn.querySelector('.label-text').textContent = on ? 'Pause' : 'Play';
    if (on) {
      wallStart = performance.now();
      posStart = position;
      if (!timer) timer = setTimeout(tick, 0);
    } else if (timer) {
      clearTimeout(timer);
      timer = null;
    }
  }

  function restart() {
    term.reset();
    term.resize(width, height);
    next = 0;
    position = 0;
    setPlaying(true);
  }

  playBtn.addEventListener('click', () => {
    if (viewer.dataset.state === 'ended') restart();
    else setPlaying(!playing);
  });
  restartBtn.addEventListener('click', restart);
  endBtn.addEventListener('click', () => {
    setPlaying(false);
    playTo(Infinity);
  });
  speed.querySelector('select').addEventListener('change', () => {
    if (playing) setPlaying(true);
  });
  ctx.onCleanup(() => {
    playing = false;
    if (timer) clearTimeout(timer);
    term.dispose();
  });
  setPlaying(true);
}
