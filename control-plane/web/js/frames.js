// The desktop viewer's frame count (control-plane/web/js/desktop.js), kept apart so that the
// dashboard benchmark's direct page counts exactly the same way.

const FRAMES_EVERY_MS = 250;

/**
 * Counts the framebuffer updates `rfb` completes into `el.dataset.frames`.
 * noVNC 1.3's RFB calls its display's flip() once at the end of each
 * FramebufferUpdate (the display itself calls it again only when its
 * viewport changes size). Returns a function that stops the counting.
 */
export function countFrames(rfb, el) {
  const display = rfb._display;
  if (!display || typeof display.flip !== 'function') return () => {};
  const flip = display.flip;
  let frames = 0;
  let shown = 0;
  display.flip = function countedFlip(...args) {
    frames += 1;
    return flip.apply(this, args);
  };
  el.dataset.frames = '0';
  const timer = setInterval(() => {
    if (frames === shown) return;
    shown = frames;
    el.dataset.frames = String(frames);
  }, FRAMES_EVERY_MS);
  return () => clearInterval(timer);
}
