// The web terminal: xterm.js on the control plane's terminal WebSocket
// (subprotocol ccp-terminal.v1). The first frame opens a shell, or resumes
// the last one after a drop from the number of bytes already received (the
// server keeps a buffer per shell); binary frames carry UTF-8 both ways;
// resize and exit/error are small JSON text frames.

import { h, icon, replace, debounce } from './dom.js';
import { get, enc } from './api.js';
import { copyText, toast } from './ui.js';

const XTERM_JS = '/ui/vendor/xterm/xterm.js';
const XTERM_CSS = '/ui/vendor/xterm/xterm.css';
const PROTOCOL = 'ccp-terminal.v1';
const BACKOFF = [500, 1000, 2000, 4000, 8000, 15000];
const FONT = 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace';

let xtermLoading = null;

/** Loads xterm.js (a classic script defining window.Terminal) once. */
export function loadXterm() {
  if (window.Terminal) return Promise.resolve(window.Terminal);
  if (xtermLoading) return xtermLoading;
  xtermLoading = new Promise((resolve, reject) => {
    if (!document.querySelector(`link[href="${XTERM_CSS}"]`)) {
      document.head.appendChild(h('link', { rel: 'stylesheet', href: XTERM_CSS }));
    }
    const s = h('script', { src: XTERM_JS });
    s.addEventListener('load', () => {
      if (!window.Terminal) {
        reject(new Error('xterm.js did not define Terminal'));
        return;
      }
      const fit = window.XtermFit || window.fit;
      if (fit && !window.Terminal.prototype.fit) window.Terminal.applyAddon(fit);
      resolve(window.Terminal);
    });
    s.addEventListener('error', () => reject(new Error('xterm.js could not be loaded')));
    document.head.appendChild(s);
  });
  xtermLoading.catch(() => { xtermLoading = null; });
  return xtermLoading;
}

function wsUrl(path) {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;
}

/**
 * Mounts a terminal in container. opts: {scope, hostId, title, backHref}.
 * Returns {destroy}.
 */
export function mountTerminal(container, { scope, hostId, title = 'Terminal', backHref }) {
  let term = null;
  let ws = null;
  let sessionId = null; // the shell to resume; not a credential on its own
  let received = 0; // bytes of the shell's output written to the terminal
  let takenOver = false;
  let ready = false;
  let attempt = 0;
  let retryTimer = null;
  let destroyed = false;
  let exited = false;
  let resumeFailed = false;
  let everReady = false;
  const encoder = new TextEncoder();

  const statusText = h('span', { 'data-test': 'terminal-status' }, 'Connecting…');
  const statusIcon = h('span', { class: 'spinner spinner-xs' });
  const status = h('span', { class: 'conn-state', role: 'status', 'aria-live': 'polite' }, statusIcon, statusText);
  const termHost = h('div', { class: 'term-host' });
  const overlayText = h('p', { 'data-test': 'terminal-overlay-text' });
  const overlayBtn = h('button', { type: 'button', class: 'btn btn-primary', 'data-test': 'terminal-reconnect-now' }, 'Reconnect now');
  const overlay = h('div', { class: 'viewer-overlay', hidden: true, 'data-test': 'terminal-overlay' }, h('span', { class: 'spinner' }), overlayText, overlayBtn);
  const viewer = h('div', { class: 'viewer terminal-viewer', 'data-test': 'terminal-viewer', 'data-state': 'connecting' }, termHost, overlay);

  const btn = (label, ic, test, titleText) => h('button', { type: 'button', class: 'btn btn-secondary btn-sm', 'data-test': test, title: titleText || label, 'aria-label': label }, icon(ic), h('span', { class: 'label-text' }, label));
  const copyBtn = btn('Copy', 'copy', 'terminal-copy', 'Copy the selection (Ctrl+Shift+C)');
  const pasteBtn = btn('Paste', 'clipboard', 'terminal-paste', 'Paste (Ctrl+Shift+V)');
  const fullBtn = btn('Fullscreen', 'expand', 'terminal-fullscreen');
  const reconnectBtn = btn('Reconnect', 'refresh', 'terminal-reconnect');
  const newBtn = btn('New shell', 'plus', 'terminal-new', 'Close this shell and open a new one');

  const page = h('div', { class: 'viewer-page', 'data-test': 'terminal-page' },
    h('div', { class: 'viewer-bar' },
      backHref ? h('a', { href: backHref, class: 'btn btn-ghost btn-sm', 'data-test': 'terminal-back', 'aria-label': 'Back to the host' }, icon('back'), h('span', { class: 'label-text' }, 'Host')) : null,
      h('span', { class: 'title', 'data-test': 'terminal-title' }, title),
      status,
      h('span', { class: 'spacer' }),
      copyBtn, pasteBtn, fullBtn, reconnectBtn, newBtn),
    viewer);
  replace(container, page);

  function setState(state, text, { spin = false, overlayMsg = null, button = null } = {}) {
    viewer.dataset.state = state;
    page.dataset.state = state;
    statusText.textContent = text;
    statusIcon.className = spin ? 'spinner spinner-xs' : `dot-state dot-${state}`;
    if (overlayMsg) {
      overlay.hidden = false;
      overlayText.textContent = overlayMsg;
      overlay.querySelector('.spinner').hidden = !spin;
      overlayBtn.hidden = !button;
      if (button) overlayBtn.textContent = button;
    } else {
      overlay.hidden = true;
    }
  }

  function size() {
    return { cols: term ? term.cols : 80, rows: term ? term.rows : 24 };
  }

  function sendJson(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function fit() {
    if (!term) return;
    try {
      if (typeof term.fit === 'function') term.fit();
    } catch {
      /* not laid out yet */
    }
  }

  async function hostProblem() {
    try {
      const host = await get(`/v1/${scope}/hosts/${enc(hostId)}`);
      if (host.status !== 'running') return `The host is ${host.status}. Start it, then reconnect.`;
    } catch (err) {
      if (err.status === 404) return 'This host does not exist, or is not yours.';
    }
    return null;
  }

  function connect({ fresh = false } = {}) {
    if (destroyed) return;
    clearTimeout(retryTimer);
    if (fresh) {
      sessionId = null;
      received = 0;
    }
    exited = false;
    takenOver = false;
    ready = false;
    resumeFailed = false;
    const resuming = !!sessionId;
    setState('connecting', resuming ? 'Reconnecting…' : 'Connecting…', { spin: true, overlayMsg: attempt ? (resuming ? 'Connection lost. Resuming your shell…' : 'Connecting…') : null });
    let sock;
    try {
      sock = new WebSocket(wsUrl(`/v1/${scope}/hosts/${enc(hostId)}/terminal`), PROTOCOL);
    } catch (err) {
      setState('disconnected', `Cannot connect: ${err.message}`, { overlayMsg: `Cannot connect: ${err.message}`, button: 'Retry' });
      return;
    }
    sock.binaryType = 'arraybuffer';
    ws = sock;
    const decoder = new TextDecoder('utf-8');
    sock.addEventListener('open', () => {
      if (ws !== sock) return;
      const { cols, rows } = size();
      sock.send(JSON.stringify(resuming ? { type: 'resume', session: sessionId, offset: received, cols, rows } : { type: 'open', cols, rows }));
    });
    sock.addEventListener('message', (ev) => {
      if (ws !== sock) return;
      if (typeof ev.data === 'string') {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return;
        }
        onControl(msg, resuming);
        return;
      }
      received += ev.data.byteLength;
      const text = decoder.decode(new Uint8Array(ev.data), { stream: true });
      if (text && term) term.write(text);
    });
    sock.addEventListener('close', (ev) => {
      if (ws !== sock) return;
      ws = null;
      const wasReady = ready;
      ready = false;
      onClose(wasReady, ev);
    });
  }

  function onControl(msg, resuming) {
    switch (msg.type) {
      case 'ready':
        if (resuming && typeof msg.offset === 'number' && msg.offset > received && term) {
          term.write('\r\n\x1b[2m[some output was lost while disconnected]\x1b[0m\r\n');
        }
        if (typeof msg.offset === 'number') received = msg.offset;
        sessionId = msg.session || sessionId;
        ready = true;
        everReady = true;
        attempt = 0;
        setState('connected', 'Connected');
        viewer.dataset.session = 'open';
        // The size may have changed while away.
        sendJson({ type: 'resize', ...size() });
        if (term) term.focus();
        break;
      case 'exit':
        exited = true;
        sessionId = null;
        if (term) term.write(`\r\n\x1b[2m[the shell exited with status ${msg.status ?? '?'}]\x1b[0m\r\n`);
        setState('disconnected', `Shell exited (status ${msg.status ?? '?'})`, { overlayMsg: `The shell exited with status ${msg.status ?? '?'}.`, button: 'Start a new shell' });
        break;
      case 'error':
        if (msg.code === 'taken_over') {
          // Another window has this shell now; reconnecting on our own would take it back.
          takenOver = true;
          setState('disconnected', 'Opened in another window', { overlayMsg: 'This shell was opened in another window.', button: 'Use it here' });
          break;
        }
        if (resuming && !ready) {
          // The shell to resume is gone (expired, or the host restarted).
          resumeFailed = true;
          sessionId = null;
        }
        if (term && (ready || !resuming)) term.write(`\r\n\x1b[31m[${msg.message || msg.code || 'error'}]\x1b[0m\r\n`);
        statusText.textContent = msg.message || msg.code || 'Error';
        break;
      default:
        break;
    }
  }

  async function onClose(wasReady, ev) {
    if (destroyed || exited || takenOver) return;
    if (resumeFailed) {
      if (term) term.write('\r\n\x1b[2m[the previous shell is gone; starting a new one]\x1b[0m\r\n');
      attempt = 0;
      connect({ fresh: true });
      return;
    }
    if (!wasReady) {
      // Refused before the shell opened: is the host up at all?
      const problem = await hostProblem();
      if (destroyed) return;
      if (problem) {
        setState('disconnected', 'Disconnected', { overlayMsg: problem, button: 'Reconnect' });
        return;
      }
    }
    const delay = BACKOFF[Math.min(attempt, BACKOFF.length - 1)];
    attempt += 1;
    const why = ev && ev.reason ? ` (${ev.reason})` : '';
    const what = everReady ? 'Connection lost' : 'Cannot connect';
    setState('disconnected', `${what}${why}. Retrying in ${Math.ceil(delay / 1000)} s…`, {
      overlayMsg: `${what}${why}. ${sessionId ? 'Your shell keeps running; resuming' : 'Retrying'} in ${Math.ceil(delay / 1000)} s…`,
      button: 'Reconnect now',
    });
    retryTimer = setTimeout(() => connect(), delay);
  }

  function dropSocket() {
    const old = ws;
    ws = null;
    ready = false;
    if (old) {
      try {
        old.close(1000, 'client closing');
      } catch {
        /* closed */
      }
    }
  }

  overlayBtn.addEventListener('click', () => {
    attempt = 0;
    dropSocket();
    connect({ fresh: exited || !sessionId });
  });
  reconnectBtn.addEventListener('click', () => {
    attempt = 0;
    dropSocket();
    connect();
  });
  newBtn.addEventListener('click', () => {
    attempt = 0;
    dropSocket();
    if (term) term.reset();
    connect({ fresh: true });
  });
  const copySelection = async () => {
    const sel = term ? term.getSelection() : '';
    if (!sel) {
      toast('Select text in the terminal first.');
      return;
    }
    toast((await copyText(sel)) ? 'Copied.' : 'Copy failed.', 'ok');
    if (term) term.focus();
  };
  const pasteText = (text) => {
    if (!text || !ready || !ws) return;
    ws.send(encoder.encode(text.replace(/\r?\n/g, '\r')));
  };
  copyBtn.addEventListener('click', copySelection);
  pasteBtn.addEventListener('click', async () => {
    try {
      pasteText(await navigator.clipboard.readText());
    } catch {
      toast('The browser did not allow reading the clipboard. Use Ctrl+Shift+V in the terminal.', 'error');
    }
    if (term) term.focus();
  });
  fullBtn.addEventListener('click', () => {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else if (page.requestFullscreen) page.requestFullscreen().catch(() => {});
  });
  const onFs = () => {
    fullBtn.setAttribute('aria-pressed', String(document.fullscreenElement === page));
    setTimeout(fit, 50);
  };
  document.addEventListener('fullscreenchange', onFs);
  const refit = debounce(fit, 80);
  window.addEventListener('resize', refit);
  const ro = typeof ResizeObserver === 'function' ? new ResizeObserver(refit) : null;
  if (ro) ro.observe(termHost);

  setState('connecting', 'Loading the terminal…', { spin: true });
  loadXterm().then((Terminal) => {
    if (destroyed) return;
    // screenReaderMode keeps the visible rows as text for assistive technology (the canvas alone is
    // opaque to it).
    term = new Terminal({ cursorBlink: true, fontFamily: FONT, fontSize: 14, scrollback: 5000, screenReaderMode: true, theme: { background: '#101318', foreground: '#e6e9ef', cursor: '#93c5fd' } });
    term.open(termHost);
    fit();
    term.on('data', (data) => {
      if (ready && ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
    });
    term.on('resize', ({ cols, rows }) => {
      if (ready) sendJson({ type: 'resize', cols, rows });
    });
    term.attachCustomKeyEventHandler((ev) => {
      // Ctrl+Shift+C copies the selection; Ctrl+Shift+V is left to the
      // browser, whose paste event xterm.js turns into input.
      if (ev.type === 'keydown' && ev.ctrlKey && ev.shiftKey && (ev.key === 'C' || ev.key === 'c')) {
        ev.preventDefault();
        copySelection();
        return false;
      }
      if (ev.ctrlKey && ev.shiftKey && (ev.key === 'V' || ev.key === 'v')) return false;
      return true;
    });
    connect();
  }).catch((err) => {
    setState('disconnected', 'The terminal could not be loaded', { overlayMsg: `The terminal could not be loaded (${err.message}).`, button: null });
  });

  return {
    destroy() {
      destroyed = true;
      clearTimeout(retryTimer);
      refit.cancel();
      window.removeEventListener('resize', refit);
      document.removeEventListener('fullscreenchange', onFs);
      if (ro) ro.disconnect();
      if (document.fullscreenElement === page) document.exitFullscreen().catch(() => {});
      dropSocket();
      if (term) term.dispose();
      term = null;
    },
  };
}

/** Dashboard route: #/hosts/<id>/terminal */
export async function terminalPage(ctx) {
  const id = ctx.params.id;
  let name = id;
  try {
    const host = await get(`/v1/${ctx.scope}/hosts/${enc(id)}`);
    name = host.name || host.short_id;
  } catch (err) {
    if (err.status === 401) return;
  }
  ctx.setTitle(`Terminal · ${name}`);
  const t = mountTerminal(ctx.view, { scope: ctx.scope, hostId: id, title: `Terminal · ${name}`, backHref: `#/hosts/${enc(id)}` });
  ctx.onCleanup(() => t.destroy());
}
