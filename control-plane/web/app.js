// The dashboard's entry point: session check, hash router and the shell
// (dark sidebar, top bar). Pages live in js/pages/ and are loaded on demand.

import { h, icon, clear, replace } from './js/dom.js';
import { currentSession, signOut, setCsrf, setUnauthorizedHandler, ApiError } from './js/api.js';
import { loading, errorBox, toast } from './js/ui.js';

const app = document.getElementById('app');

const state = {
  session: null, // {user, csrf_token, expires_at}
  cleanups: [],
  renderSeq: 0,
  notice: null, // message for the sign-in page
};

// Navigation per role: [route, label, icon, data-test].
const NAV = {
  admin: [
    ['overview', 'Overview', 'overview', 'nav-overview'],
    ['users', 'Users', 'users', 'nav-users'],
    ['hosts', 'Hosts', 'hosts', 'nav-hosts'],
    ['egress', 'Egress IPs', 'egress', 'nav-egress'],
    ['bindings', 'Bindings', 'link', 'nav-bindings'],
    ['tasks', 'Tasks', 'tasks', 'nav-tasks'],
    ['events', 'Events', 'events', 'nav-events'],
    ['recordings', 'Recordings', 'play', 'nav-recordings'],
    ['tokens', 'API tokens', 'key', 'nav-tokens'],
    ['infra', 'Nodes & gateways', 'nodes', 'nav-infra'],
    ['security', 'Two-factor sign-in', 'lock', 'nav-security'],
  ],
  user: [
    ['hosts', 'My hosts', 'hosts', 'nav-hosts'],
    ['keys', 'SSH keys', 'key', 'nav-keys'],
    ['tokens', 'API tokens', 'shield', 'nav-tokens'],
    ['password', 'Change password', 'lock', 'nav-password'],
    ['security', 'Two-factor sign-in', 'shield', 'nav-security'],
  ],
};

// Routes: pattern segments (":x" captures), module, export name, options.
const ROUTES = {
  admin: [
    ['overview', 'overview.js', 'overviewPage'],
    ['users', 'users.js', 'usersPage'],
    ['users/:id', 'user-detail.js', 'userDetailPage'],
    ['hosts', 'hosts.js', 'hostsPage'],
    ['hosts/:id', 'host-detail.js', 'hostDetailPage'],
    ['hosts/:id/desktop', '../desktop.js', 'desktopPage', { full: true }],
    ['hosts/:id/terminal', '../terminal.js', 'terminalPage', { full: true }],
    ['egress', 'egress.js', 'egressPage'],
    ['egress/new', 'egress-form.js', 'egressFormPage'],
    ['egress/:id', 'egress-form.js', 'egressFormPage'],
    ['bindings', 'bindings.js', 'bindingsPage'],
    ['tasks', 'tasks.js', 'tasksPage'],
    ['events', 'events.js', 'eventsPage'],
    ['recordings', 'recordings.js', 'recordingsPage'],
    ['recordings/:id', 'recordings.js', 'recordingPlayerPage', { full: true }],
    ['tokens', 'tokens.js', 'tokensPage'],
    ['infra', 'infra.js', 'infraPage'],
    ['security', 'security.js', 'securityPage'],
  ],
  user: [
    ['hosts', 'portal.js', 'myHostsPage'],
    ['hosts/:id', 'portal.js', 'myHostPage'],
    ['hosts/:id/desktop', '../desktop.js', 'desktopPage', { full: true }],
    ['hosts/:id/terminal', '../terminal.js', 'terminalPage', { full: true }],
    ['keys', 'portal.js', 'myKeysPage'],
    ['tokens', 'tokens.js', 'tokensPage'],
    ['password', 'portal.js', 'passwordPage'],
    ['security', 'security.js', 'securityPage'],
  ],
};

const HOME = { admin: 'overview', user: 'hosts' };

function role() {
  return state.session && state.session.user && state.session.user.role === 'admin' ? 'admin' : 'user';
}

export function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, qs = ''] = raw.split('?');
  const segments = path.split('/').filter(Boolean).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  return { path: segments.join('/'), segments, query: new URLSearchParams(qs) };
}

function match(routes, segments) {
  for (const [pattern, module, exp, opts] of routes) {
    const parts = pattern.split('/');
    if (parts.length !== segments.length) continue;
    const params = {};
    let ok = true;
    for (let i = 0; i < parts.length; i += 1) {
      if (parts[i].startsWith(':')) params[parts[i].slice(1)] = segments[i];
      else if (parts[i] !== segments[i]) {
        ok = false;
        break;
      }
    }
    if (ok) return { module, exp, params, opts: opts || {}, key: parts[0] };
  }
  return null;
}

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function runCleanups() {
  const list = state.cleanups;
  state.cleanups = [];
  for (const fn of list) {
    try {
      fn();
    } catch {
      /* keep cleaning */
    }
  }
}

// ---- Session ----

function setSession(session) {
  state.session = session;
  setCsrf(session ? session.csrf_token : null);
}

setUnauthorizedHandler(() => {
  if (!state.session) return;
  setSession(null);
  state.notice = 'Your session has ended. Sign in again.';
  const { path, query } = parseHash();
  const next = path && path !== 'login' ? `#/${path}${query.toString() ? `?${query}` : ''}` : '';
  location.hash = next ? `#/login?next=${encodeURIComponent(next)}` : '#/login';
});

async function doSignOut(btn) {
  btn.disabled = true;
  try {
    await signOut();
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) {
      toast(err.message, 'error');
      btn.disabled = false;
      return;
    }
  }
  setSession(null);
  state.notice = 'You have signed out.';
  navigate('#/login');
}

// ---- Shell ----

let shell = null;

function buildShell() {
  const r = role();
  const user = state.session.user;
  const navList = h('ul', { class: 'nav-list' }, NAV[r].map(([key, label, ic, test]) => h('li', null,
    h('a', { href: `#/${key}`, class: 'nav-link', 'data-test': test, 'data-nav': key }, icon(ic), h('span', null, label)))));
  const sidebar = h('aside', { class: 'sidebar', id: 'sidebar', 'data-test': 'sidebar' },
    h('div', { class: 'brand' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, icon('hosts')),
      h('span', { class: 'brand-text' }, h('strong', null, 'Cloud CLI'), h('span', null, r === 'admin' ? 'Operator console' : 'Host portal'))),
    h('nav', { 'aria-label': 'Main' }, navList));
  const menuBtn = h('button', { type: 'button', class: 'btn btn-icon menu-toggle', 'aria-label': 'Menu', 'aria-controls': 'sidebar', 'aria-expanded': 'false', 'data-test': 'nav-toggle' }, icon('menu'));
  const scrim = h('div', { class: 'scrim', hidden: true });
  const setOpen = (open) => {
    document.body.classList.toggle('nav-open', open);
    menuBtn.setAttribute('aria-expanded', String(open));
    scrim.hidden = !open;
  };
  menuBtn.addEventListener('click', () => setOpen(!document.body.classList.contains('nav-open')));
  scrim.addEventListener('click', () => setOpen(false));
  sidebar.addEventListener('click', (ev) => {
    if (ev.target.closest('a')) setOpen(false);
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && document.body.classList.contains('nav-open')) {
      setOpen(false);
      menuBtn.focus();
    }
  });
  const signout = h('button', { type: 'button', class: 'btn btn-ghost btn-sm', 'data-test': 'signout' }, icon('logout'), h('span', null, 'Sign out'));
  signout.addEventListener('click', () => doSignOut(signout));
  const topbar = h('header', { class: 'topbar' },
    menuBtn,
    h('div', { class: 'topbar-title', 'data-test': 'topbar-title' }),
    h('div', { class: 'topbar-user' },
      h('span', { class: 'avatar', 'aria-hidden': 'true' }, (user.username || '?').slice(0, 1).toUpperCase()),
      h('span', { class: 'who' }, h('strong', { 'data-test': 'current-user' }, user.username), h('span', { class: 'role', 'data-test': 'current-role' }, r === 'admin' ? 'operator' : 'tenant')),
      signout));
  const main = h('main', { id: 'main', class: 'main', tabindex: '-1', 'data-test': 'main' });
  const root = h('div', { class: 'shell', 'data-role': r },
    h('a', { class: 'skip-link', href: '#main', onclick: (ev) => { ev.preventDefault(); main.focus(); } }, 'Skip to content'),
    sidebar, scrim, h('div', { class: 'main-col' }, topbar, main));
  replace(app, root);
  shell = { root, main, topbar, title: topbar.querySelector('.topbar-title'), nav: navList, role: r, user: user.id };
}

function markNav(key) {
  for (const a of shell.nav.querySelectorAll('a')) {
    if (a.dataset.nav === key) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

// ---- Router ----

async function route() {
  const seq = ++state.renderSeq;
  runCleanups();
  const { segments, query } = parseHash();

  if (segments[0] === 'login' || !state.session) {
    if (state.session && segments[0] === 'login') {
      navigate(`#/${HOME[role()]}`);
      return;
    }
    shell = null;
    document.body.classList.remove('page-full');
    const { loginPage } = await import('./js/pages/login.js');
    if (seq !== state.renderSeq) return;
    const notice = state.notice;
    state.notice = null;
    loginPage(app, {
      notice,
      onSignedIn: (session) => {
        setSession(session);
        const next = parseHash().query.get('next');
        navigate(next && next.startsWith('#/') && !next.startsWith('#/login') ? next : `#/${HOME[role()]}`);
      },
    });
    if (segments[0] !== 'login') history.replaceState(null, '', `#/login${segments.length ? `?next=${encodeURIComponent(location.hash)}` : ''}`);
    return;
  }

  const r = role();
  if (!shell || shell.role !== r || shell.user !== state.session.user.id) buildShell();
  if (!segments.length) {
    history.replaceState(null, '', `#/${HOME[r]}`);
    return route();
  }
  const m = match(ROUTES[r], segments);
  const view = h('div', { class: 'view' });
  replace(shell.main, view);
  shell.main.classList.toggle('main-full', !!(m && m.opts.full));
  document.body.classList.toggle('page-full', !!(m && m.opts.full));
  markNav(m ? m.key : segments[0]);
  if (!m) {
    setTitle('Not found');
    view.appendChild(h('div', { class: 'empty' }, h('h1', null, 'Page not found'), h('p', null, 'Nothing lives at this address. '), h('a', { href: `#/${HOME[r]}` }, 'Go to the start page')));
    return;
  }
  view.appendChild(loading());
  let mod;
  try {
    mod = await import(`./js/pages/${m.module}`);
  } catch (err) {
    if (seq !== state.renderSeq) return;
    replace(view, errorBox(new Error(`This page could not be loaded (${err.message}).`), () => route()));
    return;
  }
  if (seq !== state.renderSeq) return;
  clear(view);
  const ctx = {
    view,
    params: m.params,
    query,
    session: state.session,
    user: state.session.user,
    scope: r === 'admin' ? 'admin' : 'user',
    isAdmin: r === 'admin',
    alive: () => seq === state.renderSeq,
    onCleanup: (fn) => {
      if (seq === state.renderSeq) state.cleanups.push(fn);
      else fn();
    },
    setTitle,
    navigate,
    setQuery: (obj) => setQuery(m, obj),
    refresh: () => route(),
    endSession: (notice) => {
      setSession(null);
      state.notice = notice || null;
      navigate('#/login');
    },
  };
  try {
    await mod[m.exp](ctx);
  } catch (err) {
    if (seq !== state.renderSeq) return;
    if (err instanceof ApiError && err.status === 401) return;
    replace(view, errorBox(err, () => route()));
  }
  if (seq === state.renderSeq && !m.opts.full) {
    const h1 = view.querySelector('h1');
    if (h1 && document.activeElement === document.body) h1.focus({ preventScroll: true });
  }
}

function setTitle(text) {
  document.title = text ? `${text} · Cloud CLI Proxy` : 'Cloud CLI Proxy';
  if (shell) shell.title.textContent = text || '';
}

/** Writes list state into the address without re-rendering the page. */
function setQuery(m, obj) {
  const { segments } = parseHash();
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null || v === '' || v === false) continue;
    if (k === 'page' && Number(v) === 1) continue;
    sp.set(k, String(v));
  }
  const qs = sp.toString();
  const hash = `#/${segments.map(encodeURIComponent).join('/')}${qs ? `?${qs}` : ''}`;
  if (location.hash !== hash) history.replaceState(null, '', hash);
}

window.addEventListener('hashchange', () => route());

async function start() {
  replace(app, h('div', { class: 'boot' }, loading('Starting…')));
  try {
    const s = await currentSession();
    if (s) setSession(s);
  } catch (err) {
    replace(app, h('div', { class: 'boot' }, errorBox(err, () => start())));
    return;
  }
  route();
}

start();
