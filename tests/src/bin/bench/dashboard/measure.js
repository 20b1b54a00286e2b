// Times one action in a page of `cloud-cli-proxy-bench dashboard`: the body of a function run by
// WebDriver's executeAsyncScript. Arguments: the action {kind: submit|click|hash|enter, css, value}; what the
// page must then show, as [[css, fewest matches, most matches, exact text of the first or null], …];
// and WebDriver's callback, which gets {start, ready, painted} in performance.now() milliseconds or
// {error}. `start` is the action (for a sign-in, the form's submit event); `ready` is when a
// MutationObserver, installed before it, sees what is awaited; `painted` is a task queued from the
// next requestAnimationFrame callback, so it runs once the frame showing it has been produced.
const [action, want, done] = arguments;
const met = () => want.every(([css, fewest, most, text]) => {
  const found = document.querySelectorAll(css);
  if (found.length < fewest || found.length > most) return false;
  return text === null || found[0].textContent.trim() === text;
});
if (met()) {
  done({ error: 'the page shows what is awaited before the action' });
  return;
}
const times = { start: null, ready: null, painted: null };
const observer = new MutationObserver(() => {
  if (times.start === null || times.ready !== null || !met()) return;
  times.ready = performance.now();
  observer.disconnect();
  requestAnimationFrame(() => setTimeout(() => {
    times.painted = performance.now();
    done(times);
  }, 0));
});
observer.observe(document.body, { childList: true, subtree: true, characterData: true });
const el = action.css ? document.querySelector(action.css) : null;
if (action.css && !el) {
  observer.disconnect();
  done({ error: `nothing matches ${action.css}` });
  return;
}
if (action.kind === 'submit') {
  document.addEventListener('submit', () => { times.start = performance.now(); }, { capture: true, once: true });
  el.click();
} else if (action.kind === 'click') {
  times.start = performance.now();
  el.click();
} else if (action.kind === 'hash') {
  times.start = performance.now();
  location.hash = action.value;
} else if (action.kind === 'enter') {
  el.value = action.value;
  times.start = performance.now();
  el.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true, cancelable: true }));
}
