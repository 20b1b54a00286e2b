// The baseline of `cloud-cli-proxy-bench dashboard`: noVNC's RFB client straight to the host's
// websockify, logging in to its VNC server with the host's secret, in a page of the bench's own
// origin. Everything else is as in the dashboard's viewer (control-plane/web/js/desktop.js): the
// same options, the same size of the target element, and the same frame count in data-frames
// (control-plane/web/js/frames.js, served from disk).

import RFB from '/novnc/core/rfb.js';
import { countFrames } from '/frames.js';

const config = await (await fetch('/config.json', { cache: 'no-store' })).json();
const screen = document.getElementById('screen');
screen.style.width = `${config.width}px`;
screen.style.height = `${config.height}px`;

const rfb = new RFB(screen, config.url, {
  wsProtocols: ['binary'],
  shared: true,
  credentials: { password: config.password },
});
rfb.scaleViewport = false;
rfb.resizeSession = true;
rfb.focusOnClick = true;
rfb.viewOnly = false;

// Counted as the dashboard's viewer counts (the same module).
countFrames(rfb, screen);

rfb.addEventListener('connect', () => {
  screen.dataset.state = 'connected';
  rfb.focus();
});
rfb.addEventListener('disconnect', () => {
  screen.dataset.state = 'disconnected';
});
rfb.addEventListener('securityfailure', (ev) => {
  screen.dataset.failure = (ev.detail && ev.detail.reason) || 'refused';
});
