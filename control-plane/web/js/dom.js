// DOM building blocks. Every piece of text goes through textContent or a text
// node, never through innerHTML, so values coming from the API cannot inject
// markup. Styles are classes; the few computed sizes use el.style (CSSOM),
// which the Content-Security-Policy allows.

const SVG_NS = 'http://www.w3.org/2000/svg';

const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'indeterminate', 'hidden', 'open', 'multiple', 'readOnly', 'required']);

function append(el, child) {
  if (child === null || child === undefined || child === false || child === true) return;
  if (Array.isArray(child)) {
    for (const c of child) append(el, c);
    return;
  }
  if (child instanceof Node) {
    el.appendChild(child);
    return;
  }
  el.appendChild(document.createTextNode(String(child)));
}

function applyAttrs(el, attrs) {
  if (!attrs) return;
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (key === 'style' && typeof value === 'object') {
      for (const [prop, v] of Object.entries(value)) el.style[prop] = v;
    } else if (key === 'style') {
      throw new Error('string styles are not allowed; use classes');
    } else if (key === 'on' && typeof value === 'object') {
      for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    } else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'ref' && typeof value === 'function') {
      value(el);
    } else if (PROPS.has(key)) {
      el[key] = value;
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
}

/** h('div', {class: 'x', 'data-test': 'y', onclick: fn}, 'text', child, [more]) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  applyAttrs(el, attrs);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

// ---- Icons: 24x24 stroke drawings, built as SVG elements. ----

const ICONS = {
  overview: ['M4 4h7v7H4z', 'M13 4h7v4h-7z', 'M13 10h7v10h-7z', 'M4 13h7v7H4z'],
  users: ['M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8z', 'M2 21v-1a6 6 0 0 1 6-6h2a6 6 0 0 1 6 6v1', 'M16 3.5a4 4 0 0 1 0 7.5', 'M22 21v-1a6 6 0 0 0-4-5.6'],
  hosts: ['M3 4h18v6H3z', 'M3 14h18v6H3z', 'M7 7h.01', 'M7 17h.01', 'M11 7h6', 'M11 17h6'],
  egress: ['M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z', 'M3 12h18', 'M12 3c2.5 2.6 3.8 5.6 3.8 9s-1.3 6.4-3.8 9', 'M12 3c-2.5 2.6-3.8 5.6-3.8 9s1.3 6.4 3.8 9'],
  link: ['M10 14a4 4 0 0 0 5.7 0l3-3a4 4 0 0 0-5.7-5.7l-1 1', 'M14 10a4 4 0 0 0-5.7 0l-3 3a4 4 0 0 0 5.7 5.7l1-1'],
  tasks: ['M9 6h11', 'M9 12h11', 'M9 18h11', 'M4 6l1 1 2-2', 'M4 12l1 1 2-2', 'M4 18l1 1 2-2'],
  events: ['M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z', 'M12 7v5l3 2'],
  key: ['M8 16a4 4 0 1 0 0-8 4 4 0 0 0 0 8z', 'M12 12h9', 'M18 12v3', 'M21 12v2'],
  nodes: ['M6 6h12v12H6z', 'M9 9h6v6H9z', 'M9 2v4', 'M15 2v4', 'M9 18v4', 'M15 18v4', 'M2 9h4', 'M2 15h4', 'M18 9h4', 'M18 15h4'],
  terminal: ['M3 5h18v14H3z', 'M7 10l3 2-3 2', 'M12 15h5'],
  desktop: ['M3 4h18v12H3z', 'M8 20h8', 'M12 16v4'],
  copy: ['M9 9h11v11H9z', 'M5 15H4V4h11v1'],
  check: ['M5 12l5 5 9-10'],
  x: ['M6 6l12 12', 'M18 6L6 18'],
  logout: ['M15 4h4v16h-4', 'M10 8l-4 4 4 4', 'M6 12h10'],
  menu: ['M4 6h16', 'M4 12h16', 'M4 18h16'],
  refresh: ['M20 11a8 8 0 0 0-14.6-4.5', 'M4 4v3h3', 'M4 13a8 8 0 0 0 14.6 4.5', 'M20 20v-3h-3'],
  plus: ['M12 5v14', 'M5 12h14'],
  trash: ['M4 7h16', 'M9 7V4h6v3', 'M6 7l1 13h10l1-13', 'M10 11v6', 'M14 11v6'],
  play: ['M7 5l12 7-12 7z'],
  stop: ['M6 6h12v12H6z'],
  rebuild: ['M4 12a8 8 0 0 1 13.7-5.7L20 8', 'M20 3v5h-5', 'M20 12a8 8 0 0 1-13.7 5.7L4 16', 'M4 21v-5h5'],
  lock: ['M5 11h14v10H5z', 'M8 11V7a4 4 0 0 1 8 0v4'],
  download: ['M12 4v11', 'M7 10l5 5 5-5', 'M4 20h16'],
  scale: ['M3 5h18v14H3z', 'M8 9l-2 3 2 3', 'M16 9l2 3-2 3', 'M6 12h12'],
  expand: ['M4 9V4h5', 'M20 9V4h-5', 'M4 15v5h5', 'M20 15v5h-5'],
  clipboard: ['M8 4h8v3H8z', 'M6 5H5v16h14V5h-1'],
  keyboard: ['M2 6h20v12H2z', 'M6 10h.01', 'M10 10h.01', 'M14 10h.01', 'M18 10h.01', 'M7 14h10'],
  test: ['M9 3h6', 'M10 3v6l-5 9a2 2 0 0 0 2 3h10a2 2 0 0 0 2-3l-5-9V3', 'M7.5 14h9'],
  edit: ['M4 20h4L19 9l-4-4L4 16z', 'M13 7l4 4'],
  back: ['M15 5l-7 7 7 7'],
  shield: ['M12 3l8 3v6c0 4.5-3.4 8.3-8 9-4.6-.7-8-4.5-8-9V6z'],
  alert: ['M12 3l10 18H2z', 'M12 10v5', 'M12 18h.01'],
};

export function icon(name, extraClass) {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.setAttribute('class', extraClass ? `icon ${extraClass}` : 'icon');
  for (const d of ICONS[name] || ICONS.alert) {
    const path = document.createElementNS(SVG_NS, 'path');
    path.setAttribute('d', d);
    svg.appendChild(path);
  }
  return svg;
}

// ---- Formatting ----

export function fmtTime(value) {
  if (!value) return '—';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** "Dec 05 10:16:51" (the year only when it is not this one). */
export function fmtTimeShort(value) {
  if (!value) return '—';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  const opts = { month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false };
  if (d.getFullYear() !== new Date().getFullYear()) opts.year = 'numeric';
  return d.toLocaleString(undefined, opts);
}

export function fmtAgo(value, now = Date.now()) {
  if (!value) return 'never';
  const t = new Date(value).getTime();
  if (Number.isNaN(t)) return String(value);
  let s = Math.round((now - t) / 1000);
  const future = s < 0;
  s = Math.abs(s);
  let text;
  if (s < 5) return future ? 'in a moment' : 'just now';
  if (s < 60) text = `${s} s`;
  else if (s < 3600) text = `${Math.floor(s / 60)} min`;
  else if (s < 86400) text = `${Math.floor(s / 3600)} h`;
  else text = `${Math.floor(s / 86400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}

/** A <time> showing "3 min ago" with the full date as its tooltip. */
export function timeAgo(value) {
  if (!value) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: String(value), title: fmtTime(value) }, fmtAgo(value));
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export function mono(text, cls) {
  return h('code', { class: cls ? `mono ${cls}` : 'mono' }, text ?? '—');
}

export function shortId(id) {
  if (!id) return '—';
  const s = String(id);
  return h('code', { class: 'mono id', title: s }, s.length > 12 ? `${s.slice(0, 8)}…` : s);
}

/** Status colours shared by hosts, tasks, users and checks. */
const STATUS_KIND = {
  running: 'ok', active: 'ok', succeeded: 'ok', pass: 'ok', connected: 'ok', up: 'ok', healthy: 'ok', success: 'ok',
  stopped: 'off', disabled: 'off', cancelled: 'off', idle: 'off', revoked: 'off', disconnected: 'off',
  error: 'bad', failed: 'bad', fail: 'bad', failure: 'bad', expired: 'bad', unhealthy: 'bad',
  creating: 'busy', pending: 'busy', queued: 'busy', starting: 'busy', restarting: 'busy',
  deleting: 'warn', cancel_requested: 'warn',
};
const SPINNING = new Set(['creating', 'pending', 'queued', 'running-task', 'starting', 'restarting', 'deleting']);

export function badge(status, opts = {}) {
  const s = String(status ?? 'unknown');
  const kind = opts.kind || STATUS_KIND[s] || 'off';
  const spin = opts.spin ?? SPINNING.has(s);
  return h('span', { class: `badge badge-${kind}`, 'data-test': opts.test, 'data-status': s },
    spin ? h('span', { class: 'spinner spinner-xs', 'aria-hidden': 'true' }) : h('span', { class: 'dot', 'aria-hidden': 'true' }),
    opts.label || s.replace(/_/g, ' '));
}

export function spinner(extra) {
  return h('span', { class: extra ? `spinner ${extra}` : 'spinner', role: 'presentation' });
}

export function debounce(fn, ms) {
  let t = null;
  const wrapped = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(t);
  return wrapped;
}

let idCounter = 0;
export function uid(prefix = 'id') {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}
