// The baseline of `cloud-cli-proxy-bench dashboard`: noVNC's RFB client straight to the host's
// websockify, logging in to its VNC server with the host's secret, in a page of the bench's own
// origin. Everything else is as in the dashboard's viewer (control-plane/web/js/desktop.js): the
// same options, the same size of the target element, and the same frame count in data-frames.

import RFB from '/novnc/core/rfb.js';

const FRAMES_EVERY_MS = 250;

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

// As desktop.js counts: one display.flip() per completed FramebufferUpdate.
const display = rfb._display;
const flip = display.flip;
let frames = 0;
let shown = 0;
display.flip = function countedFlip(...args) {
  frames += 1;
  return flip.apply(this, args);
};
screen.dataset.frames = '0';
setInterval(() => {
  if (frames === shown) return;
  shown = frames;
  screen.dataset.frames = String(frames);
}, FRAMES_EVERY_MS);

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
