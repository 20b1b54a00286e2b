// The web desktop: noVNC's RFB client on the control plane's VNC proxy
// WebSocket (the proxy has already logged in to the host's VNC server and
// offers security type None). A toolbar gives status, Ctrl-Alt-Del, a
// clipboard panel, scaling, session resize, fullscreen and reconnect.
//
// mount() is used by the dashboard route (#/hosts/<id>/desktop) and by the
// standalone page desktop.html.
//
// Diagnostic: the viewer element's data-frames is the number of framebuffer
// updates completed on the current connection (0 at each connect), written
// at most every 250 ms; `cloud-cli-proxy-bench dashboard` reads it to measure
// frames per second.

import { h, icon, replace } from './dom.js';
import { get, enc } from './api.js';
import { countFrames } from './frames.js';

const RFB_URL = '/ui/vendor/novnc/core/rfb.js';
const BACKOFF = [1000, 2000, 4000, 8000, 15000, 30000];

function wsUrl(path) {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;
}

function toggle(label, ic, pressed, test, title) {
  return h('button', { type: 'button', class: 'btn btn-secondary btn-sm', 'aria-pressed': String(!!pressed), 'data-test': test, title: title || label, 'aria-label': label },
    icon(ic), h('span', { class: 'label-text' }, label));
}

function tool(label, ic, test, title) {
  return h('button', { type: 'button', class: 'btn btn-secondary btn-sm', 'data-test': test, title: title || label, 'aria-label': label }, icon(ic), h('span', { class: 'label-text' }, label));
}

/**
 * Mounts the viewer in `container`. opts: {scope: 'admin'|'user', hostId,
 * backHref, backLabel, title, checkHost: bool}. Returns {destroy}.
 */
export function mount(container, { scope, hostId, backHref, backLabel = 'Back', title = 'Desktop', checkHost = true }) {
  let RFB = null;
  let rfb = null;
  let attempt = 0;
  let retryTimer = null;
  let countdown = null;
  let userClosed = false;
  let destroyed = false;
  let scale = false;
  let resize = true;
  let everConnected = false;
  let stopCounting = () => {};

  const statusText = h('span', { 'data-test': 'desktop-status' }, 'Connecting…');
  const statusIcon = h('span', { class: 'spinner spinner-xs' });
  const status = h('span', { class: 'conn-state', role: 'status', 'aria-live': 'polite' }, statusIcon, statusText);
  const screen = h('div', { class: 'screen' });
  const overlayText = h('p', { 'data-test': 'desktop-overlay-text' });
  const overlayBtn = h('button', { type: 'button', class: 'btn btn-primary', 'data-test': 'desktop-reconnect-now' }, 'Reconnect now');
  const overlay = h('div', { class: 'viewer-overlay', 'data-test': 'desktop-overlay' }, h('span', { class: 'spinner' }), overlayText, overlayBtn);
  const clipText = h('textarea', { 'aria-label': 'Clipboard text', 'data-test': 'desktop-clipboard', spellcheck: 'false', placeholder: 'Text copied on the host appears here. Type or paste here, then Send.' });
  const clipSend = h('button', { type: 'button', class: 'btn btn-primary btn-sm', 'data-test': 'desktop-clipboard-send' }, 'Send to host');
  const clipClose = h('button', { type: 'button', class: 'btn btn-secondary btn-sm' }, 'Close');
  const clipPanel = h('div', { class: 'clip-panel', 'data-test': 'desktop-clipboard-panel', hidden: true, role: 'dialog', 'aria-label': 'Clipboard' },
    h('strong', null, 'Clipboard'), h('p', { class: 'hint' }, 'Host → here automatically; here → host with Send.'), clipText, h('div', { class: 'row' }, clipClose, clipSend));
  const viewer = h('div', { class: 'viewer', 'data-test': 'desktop-viewer', 'data-state': 'connecting' }, screen, overlay, clipPanel);

  const cad = tool('Ctrl-Alt-Del', 'keyboard', 'desktop-cad', 'Send Ctrl-Alt-Del');
  const clipBtn = toggle('Clipboard', 'clipboard', false, 'desktop-clipboard-toggle');
  const scaleBtn = toggle('Scale to fit', 'scale', scale, 'desktop-scale', 'Scale the remote screen to the window');
  const resizeBtn = toggle('Resize to window', 'desktop', resize, 'desktop-resize', 'Resize the remote session to this window');
  const fullBtn = tool('Fullscreen', 'expand', 'desktop-fullscreen');
  const reconnectBtn = tool('Reconnect', 'refresh', 'desktop-reconnect');
  const disconnectBtn = tool('Disconnect', 'x', 'desktop-disconnect');

  const page = h('div', { class: 'viewer-page', 'data-test': 'desktop-page' },
    h('div', { class: 'viewer-bar' },
      backHref ? h('a', { href: backHref, class: 'btn btn-ghost btn-sm', 'data-test': 'desktop-back', 'aria-label': backLabel }, icon('back'), h('span', { class: 'label-text' }, backLabel)) : null,
      h('span', { class: 'title', 'data-test': 'desktop-title' }, title),
      status,
      h('span', { class: 'spacer' }),
      cad, clipBtn, scaleBtn, resizeBtn, fullBtn, reconnectBtn, disconnectBtn),
    viewer);
  replace(container, page);

  function setState(state, text, { spin = false, overlayMsg = null, showRetry = false } = {}) {
    viewer.dataset.state = state;
    page.dataset.state = state;
    statusText.textContent = text;
    replace(statusIcon);
    statusIcon.className = spin ? 'spinner spinner-xs' : `dot-state dot-${state}`;
    overlay.hidden = state === 'connected';
    overlayText.textContent = overlayMsg || text;
    overlay.querySelector('.spinner').hidden = !spin;
    overlayBtn.hidden = !showRetry;
    const live = state === 'connected';
    cad.disabled = !live;
    clipSend.disabled = !live;
    disconnectBtn.disabled = state === 'disconnected';
  }

  async function hostProblem() {
    if (!checkHost) return null;
    try {
      const host = await get(`/v1/${scope}/hosts/${enc(hostId)}`);
      if (host.status !== 'running') return `The host is ${host.status}. Start it, then reconnect.`;
    } catch (err) {
      if (err.status === 404) return 'This host does not exist, or is not yours.';
    }
    return null;
  }

  function connect() {
    if (destroyed) return;
    clearTimeout(retryTimer);
    clearInterval(countdown);
    userClosed = false;
    setState('connecting', attempt ? `Reconnecting (attempt ${attempt + 1})…` : 'Connecting…', { spin: true });
    try {
      rfb = new RFB(screen, wsUrl(`/v1/${scope}/hosts/${enc(hostId)}/vnc/websockify`), { wsProtocols: ['binary'], shared: true });
    } catch (err) {
      setState('disconnected', `Could not start the viewer: ${err.message}`, { showRetry: true });
      return;
    }
    const mine = rfb;
    stopCounting();
    stopCounting = countFrames(rfb, viewer);
    rfb.scaleViewport = scale;
    rfb.resizeSession = resize;
    rfb.focusOnClick = true;
    rfb.viewOnly = false;
    rfb.addEventListener('connect', () => {
      if (rfb !== mine) return;
      attempt = 0;
      everConnected = true;
      setState('connected', 'Connected');
      rfb.focus();
    });
    rfb.addEventListener('disconnect', (ev) => {
      // A connection replaced by a newer one ends quietly.
      if (rfb !== mine) return;
      onDisconnect(ev.detail && ev.detail.clean);
    });
    rfb.addEventListener('clipboard', (ev) => {
      clipText.value = ev.detail.text;
    });
    rfb.addEventListener('desktopname', (ev) => {
      if (ev.detail && ev.detail.name) page.querySelector('.title').textContent = `${title} · ${ev.detail.name}`;
    });
    rfb.addEventListener('securityfailure', (ev) => {
      statusText.textContent = `Refused by the server${ev.detail && ev.detail.reason ? `: ${ev.detail.reason}` : ''}`;
    });
  }

  async function onDisconnect(clean) {
    rfb = null;
    stopCounting();
    if (destroyed) return;
    if (userClosed) {
      setState('disconnected', 'Disconnected', { overlayMsg: 'You disconnected.', showRetry: true });
      overlayBtn.textContent = 'Connect';
      return;
    }
    const problem = await hostProblem();
    if (destroyed) return;
    if (problem) {
      setState('disconnected', 'Disconnected', { overlayMsg: problem, showRetry: true });
      overlayBtn.textContent = 'Reconnect';
      return;
    }
    const delay = BACKOFF[Math.min(attempt, BACKOFF.length - 1)];
    attempt += 1;
    let left = Math.ceil(delay / 1000);
    const what = !everConnected ? 'Cannot connect' : (clean ? 'The session ended' : 'Connection lost');
    const msg = () => `${what}. Retrying in ${left} s…`;
    setState('disconnected', msg(), { showRetry: true });
    overlayBtn.textContent = 'Reconnect now';
    countdown = setInterval(() => {
      left -= 1;
      if (left > 0) {
        statusText.textContent = msg();
        overlayText.textContent = msg();
      }
    }, 1000);
    retryTimer = setTimeout(() => {
      clearInterval(countdown);
      connect();
    }, delay);
  }

  function reconnectNow() {
    clearTimeout(retryTimer);
    clearInterval(countdown);
    if (rfb) {
      // Drop the current connection; its disconnect event must not schedule another.
      const old = rfb;
      rfb = null;
      try {
        old.disconnect();
      } catch {
        /* already closed */
      }
    }
    attempt = 0;
    setTimeout(connect, 50);
  }

  overlayBtn.addEventListener('click', reconnectNow);
  reconnectBtn.addEventListener('click', reconnectNow);
  disconnectBtn.addEventListener('click', () => {
    clearTimeout(retryTimer);
    clearInterval(countdown);
    userClosed = true;
    if (rfb) rfb.disconnect();
    else setState('disconnected', 'Disconnected', { overlayMsg: 'You disconnected.', showRetry: true });
  });
  cad.addEventListener('click', () => {
    if (rfb) {
      rfb.sendCtrlAltDel();
      rfb.focus();
    }
  });
  const setClip = (open) => {
    clipPanel.hidden = !open;
    clipBtn.setAttribute('aria-pressed', String(open));
    if (open) clipText.focus();
    else if (rfb) rfb.focus();
  };
  clipBtn.addEventListener('click', () => setClip(clipPanel.hidden));
  clipClose.addEventListener('click', () => setClip(false));
  clipPanel.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      ev.preventDefault();
      setClip(false);
      clipBtn.focus();
    }
  });
  clipSend.addEventListener('click', () => {
    if (!rfb) return;
    rfb.clipboardPasteFrom(clipText.value);
    clipSend.textContent = 'Sent';
    setTimeout(() => { clipSend.textContent = 'Send to host'; }, 1200);
  });
  scaleBtn.addEventListener('click', () => {
    scale = !scale;
    scaleBtn.setAttribute('aria-pressed', String(scale));
    if (rfb) rfb.scaleViewport = scale;
  });
  resizeBtn.addEventListener('click', () => {
    resize = !resize;
    resizeBtn.setAttribute('aria-pressed', String(resize));
    if (rfb) rfb.resizeSession = resize;
  });
  fullBtn.addEventListener('click', () => {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else if (page.requestFullscreen) page.requestFullscreen().catch(() => {});
  });
  const onFs = () => {
    const on = document.fullscreenElement === page;
    fullBtn.setAttribute('aria-pressed', String(on));
    fullBtn.querySelector('.label-text').textContent = on ? 'Exit fullscreen' : 'Fullscreen';
  };
  document.addEventListener('fullscreenchange', onFs);

  setState('connecting', 'Loading the viewer…', { spin: true });
  import(RFB_URL).then((mod) => {
    RFB = mod.default;
    connect();
  }).catch((err) => {
    setState('disconnected', 'The viewer could not be loaded', { overlayMsg: `The viewer could not be loaded (${err.message}).` });
  });

  return {
    destroy() {
      destroyed = true;
      stopCounting();
      clearTimeout(retryTimer);
      clearInterval(countdown);
      document.removeEventListener('fullscreenchange', onFs);
      if (document.fullscreenElement === page) document.exitFullscreen().catch(() => {});
      if (rfb) {
        try {
          rfb.disconnect();
        } catch {
          /* gone */
        }
      }
      rfb = null;
    },
  };
}

/** Dashboard route: #/hosts/<id>/desktop */
export async function desktopPage(ctx) {
  const id = ctx.params.id;
  let name = id;
  try {
    const host = await get(`/v1/${ctx.scope}/hosts/${enc(id)}`);
    name = host.name || host.short_id;
  } catch (err) {
    if (err.status === 401) return;
  }
  ctx.setTitle(`Desktop · ${name}`);
  const viewer = mount(ctx.view, { scope: ctx.scope, hostId: id, backHref: `#/hosts/${enc(id)}`, backLabel: 'Host', title: `Desktop · ${name}` });
  ctx.onCleanup(() => viewer.destroy());
}
