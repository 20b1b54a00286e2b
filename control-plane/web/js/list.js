// A paginated list bound to the address bar: filters and page live in the
// hash query (so Back and reload keep them), each change fetches one page
// from the server, and an older answer never overwrites a newer one.

import { h, replace, debounce } from './dom.js';
import { errorBox, loading, pager, field } from './ui.js';

/**
 * list({ctx, keys: {q: '', status: ''}, load: (state, signal) => page, render: (page, state, list) => node})
 * Returns {el, reload, set, state}.
 */
export function list({ ctx, keys, load, render, pageSize = 50, test }) {
  const state = { page: 1 };
  for (const [k, def] of Object.entries(keys)) state[k] = ctx.query.get(k) ?? def;
  state.page = Math.max(1, Number(ctx.query.get('page')) || 1);
  const body = h('div', { class: 'list-body', 'aria-live': 'polite', 'aria-busy': 'false' });
  const foot = h('div', { class: 'list-foot' });
  const el = h('div', { class: 'list', 'data-test': test }, body, foot);
  let controller = null;
  let seq = 0;
  let lastPage = null;

  async function reload({ quiet = false } = {}) {
    const mine = ++seq;
    if (controller) controller.abort();
    controller = new AbortController();
    body.setAttribute('aria-busy', 'true');
    if (!lastPage && !quiet) replace(body, loading());
    try {
      const page = await load({ ...state, page_size: pageSize }, controller.signal);
      if (mine !== seq) return;
      // A page past the end (after deletions): step back to the last one.
      if (page && page.total_pages && state.page > page.total_pages) {
        state.page = page.total_pages;
        ctx.setQuery(queryState());
        reload({ quiet });
        return;
      }
      lastPage = page;
      replace(body, render(page, state, api));
      replace(foot, pager(page, (p) => set({ page: p })));
    } catch (err) {
      if (mine !== seq || (err && err.name === 'AbortError')) return;
      if (err && err.status === 401) return;
      if (quiet && lastPage) return; // a background refresh failing keeps what is shown
      replace(body, errorBox(err, () => reload()));
      replace(foot);
    } finally {
      if (mine === seq) body.setAttribute('aria-busy', 'false');
    }
  }

  function queryState() {
    const q = {};
    for (const k of Object.keys(keys)) q[k] = state[k];
    q.page = state.page;
    return q;
  }

  function set(patch) {
    Object.assign(state, patch);
    if (!('page' in patch)) state.page = 1;
    ctx.setQuery(queryState());
    reload();
    if ('page' in patch) el.scrollIntoView({ block: 'nearest' });
  }

  ctx.onCleanup(() => {
    seq += 1;
    if (controller) controller.abort();
  });

  const api = { el, reload, set, state, get page() { return lastPage; } };
  return api;
}

/** A search box writing `q` after a short pause. */
export function searchField(listApi, { label = 'Search', placeholder = 'Search…', test = 'search' } = {}) {
  const f = field({ label, name: 'q', type: 'search', value: listApi.state.q, placeholder, test, class: 'field-grow' });
  const input = f.querySelector('input');
  const run = debounce(() => listApi.set({ q: input.value.trim() }), 300);
  input.addEventListener('input', run);
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') {
      ev.preventDefault();
      run.cancel();
      listApi.set({ q: input.value.trim() });
    }
  });
  return f;
}

/** A <select> filter writing one key. */
export function selectFilter(listApi, key, label, options, test) {
  const f = field({ label, name: key, type: 'select', value: listApi.state[key], options, test });
  f.querySelector('select').addEventListener('change', (ev) => listApi.set({ [key]: ev.target.value }));
  return f;
}
