// Reusable pieces: buttons, form fields with errors, dialogs, toasts, copy
// buttons, one-time secrets, tables, pagination and task progress.

import { h, icon, clear, replace, uid, debounce, badge } from './dom.js';
import { ApiError, get, watchTask, taskFinished } from './api.js';

// ---- Buttons ----

export function button(label, opts = {}) {
  const cls = ['btn', `btn-${opts.kind || 'secondary'}`, opts.small ? 'btn-sm' : '', opts.class || ''];
  return h('button', {
    type: opts.type || 'button',
    class: cls,
    'data-test': opts.test,
    title: opts.title,
    'aria-label': opts.ariaLabel,
    disabled: opts.disabled,
    onclick: opts.onClick,
  }, opts.icon ? icon(opts.icon) : null, label ? h('span', null, label) : null);
}

export function iconButton(name, label, onClick, opts = {}) {
  return h('button', {
    type: 'button', class: ['btn', 'btn-icon', opts.class || ''], title: label, 'aria-label': label,
    'data-test': opts.test, onclick: onClick, disabled: opts.disabled,
  }, icon(name));
}

/** Disables a button and shows a spinner while fn runs. */
export async function busy(btn, fn) {
  if (btn.disabled) return undefined;
  btn.disabled = true;
  btn.classList.add('is-busy');
  btn.setAttribute('aria-busy', 'true');
  const spin = h('span', { class: 'spinner spinner-xs', 'aria-hidden': 'true' });
  btn.prepend(spin);
  try {
    return await fn();
  } finally {
    spin.remove();
    btn.disabled = false;
    btn.classList.remove('is-busy');
    btn.removeAttribute('aria-busy');
  }
}

export function linkButton(label, href, opts = {}) {
  return h('a', { class: ['btn', `btn-${opts.kind || 'secondary'}`, opts.small ? 'btn-sm' : ''], href, 'data-test': opts.test },
    opts.icon ? icon(opts.icon) : null, h('span', null, label));
}

// ---- Form fields ----

/**
 * field({label, name, type, value, hint, required, options, placeholder, test})
 * The control gets name=<name> so an API error naming that field lands here.
 */
export function field(opts) {
  const id = opts.id || uid('f');
  const errId = `${id}-err`;
  const hintId = opts.hint ? `${id}-hint` : null;
  let control;
  const common = {
    id, name: opts.name, required: opts.required, placeholder: opts.placeholder,
    'data-test': opts.test, autocomplete: opts.autocomplete || 'off', 'aria-describedby': [hintId, errId].filter(Boolean).join(' '),
    disabled: opts.disabled, readOnly: opts.readOnly, spellcheck: opts.spellcheck === undefined ? undefined : String(opts.spellcheck),
  };
  if (opts.type === 'select') {
    control = h('select', common, (opts.options || []).map((o) => {
      const [value, label] = Array.isArray(o) ? o : [o, o];
      return h('option', { value, selected: String(opts.value ?? '') === String(value) }, label);
    }));
  } else if (opts.type === 'textarea') {
    control = h('textarea', { ...common, rows: opts.rows || 4, class: opts.monospace ? 'mono' : null });
    control.value = opts.value ?? '';
  } else if (opts.type === 'checkbox') {
    control = h('input', { ...common, type: 'checkbox', checked: !!opts.value });
    return h('div', { class: ['field', 'field-check', opts.class] },
      h('label', { for: id }, control, h('span', null, opts.label)),
      hintId ? h('p', { class: 'hint', id: hintId }, opts.hint) : null,
      h('p', { class: 'field-error', id: errId, 'data-test': `field-error-${opts.name}`, hidden: true }));
  } else {
    control = h('input', { ...common, type: opts.type || 'text', min: opts.min, max: opts.max, step: opts.step, inputmode: opts.inputmode, class: opts.monospace ? 'mono' : null });
    if (opts.value !== undefined && opts.value !== null) control.value = String(opts.value);
  }
  return h('div', { class: ['field', opts.class] },
    h('label', { for: id }, opts.label, opts.required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : (opts.optional ? h('span', { class: 'opt' }, ' (optional)') : null)),
    control,
    hintId ? h('p', { class: 'hint', id: hintId }, opts.hint) : null,
    h('p', { class: 'field-error', id: errId, 'data-test': `field-error-${opts.name}`, hidden: true }));
}

export function formBanner() {
  return h('div', { class: 'alert alert-error', role: 'alert', 'data-test': 'form-error', hidden: true });
}

export function clearErrors(form) {
  for (const el of form.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute('aria-invalid');
  for (const el of form.querySelectorAll('.field-error')) {
    el.textContent = '';
    el.hidden = true;
  }
  const banner = form.querySelector('[data-test="form-error"]');
  if (banner) {
    banner.textContent = '';
    banner.hidden = true;
  }
}

function findControl(form, name) {
  for (const el of form.querySelectorAll('[data-field]')) if (el.dataset.field === name) return el;
  for (const el of form.querySelectorAll('[name]')) {
    if (el.getAttribute('name') === name && el.type !== 'hidden') return el;
  }
  return null;
}

/** Shows an API error next to the field it names, else in the form's banner. */
export function showError(form, err) {
  clearErrors(form);
  const message = err instanceof ApiError ? describeError(err) : (err && err.message) || String(err);
  let target = err && err.field ? findControl(form, err.field) : null;
  // A nested field (proxy_config.tls.alpn[1]) may belong to a parent input.
  if (!target && err && err.field) {
    let name = err.field.replace(/\[\d+\]$/, '');
    while (!target && name.includes('.')) {
      target = findControl(form, name);
      name = name.slice(0, name.lastIndexOf('.'));
    }
    if (!target) target = findControl(form, name);
  }
  if (target) {
    target.setAttribute('aria-invalid', 'true');
    const errEl = document.getElementById(`${target.id}-err`);
    if (errEl) {
      errEl.textContent = err.field && target.getAttribute('name') !== err.field ? `${err.field}: ${message}` : message;
      errEl.hidden = false;
    }
    target.focus();
    return;
  }
  const banner = form.querySelector('[data-test="form-error"]');
  if (banner) {
    banner.textContent = err && err.field ? `${err.field}: ${message}` : message;
    banner.hidden = false;
    banner.scrollIntoView({ block: 'nearest' });
  } else {
    toast(message, 'error');
  }
}

export function describeError(err) {
  if (!(err instanceof ApiError)) return (err && err.message) || String(err);
  if (err.code === 'rate_limited' && err.retryAfter) {
    return `${err.message} Try again in ${err.retryAfter} s.`;
  }
  return err.message;
}

/** Wires a form: Enter submits, errors are shown, the submit button is busy meanwhile. */
export function onSubmit(form, handler) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const submit = form.querySelector('button[type="submit"]');
    clearErrors(form);
    const run = async () => {
      try {
        // A number input holding text reads as empty: refuse it rather than drop it.
        for (const el of form.querySelectorAll('input[type="number"]')) {
          if (el.validity && el.validity.badInput) {
            throw Object.assign(new Error('Enter a whole number.'), { field: el.getAttribute('name') });
          }
        }
        await handler(new FormData(form));
      } catch (err) {
        if (err && err.name === 'AbortError') return;
        showError(form, err);
      }
    };
    if (submit) await busy(submit, run);
    else await run();
  });
  return form;
}

export function formValue(fd, name) {
  const v = fd.get(name);
  return typeof v === 'string' ? v.trim() : v;
}

// ---- Alerts, empty states, toasts ----

export function alert(kind, ...content) {
  return h('div', { class: `alert alert-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, content);
}

export function errorBox(err, retry) {
  return h('div', { class: 'alert alert-error', role: 'alert', 'data-test': 'page-error' },
    h('span', null, describeError(err)),
    retry ? button('Retry', { small: true, onClick: retry, icon: 'refresh' }) : null);
}

export function empty(text, extra) {
  return h('div', { class: 'empty' }, h('p', null, text), extra || null);
}

export function loading(text = 'Loading…') {
  return h('div', { class: 'loading', role: 'status' }, h('span', { class: 'spinner' }), h('span', null, text));
}

let toastHost = null;
export function toast(message, kind = 'ok') {
  if (!toastHost) {
    toastHost = h('div', { class: 'toasts', 'aria-live': 'polite', 'data-test': 'toasts' });
    document.body.appendChild(toastHost);
  }
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    icon(kind === 'error' ? 'alert' : 'check'), h('span', null, message));
  toastHost.appendChild(el);
  setTimeout(() => el.classList.add('toast-out'), 4200);
  setTimeout(() => el.remove(), 4600);
}

// ---- Copy ----

export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    /* fall back below */
  }
  const ta = h('textarea', { class: 'offscreen', readonly: true });
  ta.value = text;
  document.body.appendChild(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  ta.remove();
  return ok;
}

export function copyButton(getText, opts = {}) {
  const label = opts.label || 'Copy';
  const btn = h('button', { type: 'button', class: ['btn', 'btn-secondary', 'btn-sm', 'btn-copy', opts.iconOnly ? 'btn-icon-only' : ''], 'data-test': opts.test || 'copy', title: label, 'aria-label': opts.ariaLabel || label },
    icon('copy'), opts.iconOnly ? null : h('span', null, label));
  btn.addEventListener('click', async () => {
    const ok = await copyText(typeof getText === 'function' ? getText() : getText);
    const span = btn.querySelector('span');
    btn.classList.toggle('copied', ok);
    if (span && !opts.iconOnly) span.textContent = ok ? 'Copied' : 'Copy failed';
    setTimeout(() => {
      btn.classList.remove('copied');
      if (span && !opts.iconOnly) span.textContent = label;
    }, 1600);
  });
  return btn;
}

/** A command or value in monospace with a copy button. */
export function copyLine(value, opts = {}) {
  return h('div', { class: 'copyline', 'data-test': opts.test },
    h('code', { class: 'mono copyline-text' }, value ?? '—'),
    value ? copyButton(value, { test: opts.test ? `${opts.test}-copy` : 'copy' }) : null);
}

/** A secret shown once, with a warning and a copy button. */
export function secretBox(title, value, opts = {}) {
  return h('div', { class: 'secret', 'data-test': opts.test || 'secret' },
    h('div', { class: 'secret-head' }, icon('lock'), h('strong', null, title)),
    h('p', { class: 'secret-note' }, opts.note || 'Shown only this once. Copy it now: it cannot be read again.'),
    h('div', { class: 'copyline' },
      h('code', { class: 'mono copyline-text secret-value', 'data-test': `${opts.test || 'secret'}-value` }, value),
      copyButton(value, { test: `${opts.test || 'secret'}-copy` })),
    opts.extra || null);
}

// ---- Dialogs ----

/**
 * Opens a modal <dialog>: focus stays inside, Escape closes it, focus goes
 * back to what had it. Returns {el, close, body}.
 */
export function dialog({ title, body, actions = [], onClose, wide = false, test }) {
  const previous = document.activeElement;
  const titleId = uid('dlg');
  const closeBtn = iconButton('x', 'Close', () => close());
  const el = h('dialog', { class: ['dialog', wide ? 'dialog-wide' : ''], 'aria-labelledby': titleId, 'data-test': test || 'dialog' },
    h('div', { class: 'dialog-head' }, h('h2', { id: titleId }, title), closeBtn),
    h('div', { class: 'dialog-body' }, body),
    actions.length ? h('div', { class: 'dialog-actions' }, actions) : null);
  let closed = false;
  function close(result) {
    if (closed) return;
    closed = true;
    if (el.open) el.close();
    el.remove();
    if (previous && typeof previous.focus === 'function' && document.contains(previous)) previous.focus();
    if (onClose) onClose(result);
  }
  el.addEventListener('cancel', (ev) => {
    ev.preventDefault();
    close();
  });
  el.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      ev.preventDefault();
      close();
    } else if (ev.key === 'Tab') {
      trapTab(el, ev);
    }
  });
  el.addEventListener('click', (ev) => {
    if (ev.target === el) close();
  });
  document.body.appendChild(el);
  el.showModal();
  const first = el.querySelector('[autofocus]') || el.querySelector('.dialog-body input, .dialog-body select, .dialog-body textarea') || el.querySelector('.dialog-actions .btn-primary, .dialog-actions .btn-danger') || closeBtn;
  first.focus();
  return { el, close };
}

function focusables(root) {
  return [...root.querySelectorAll('a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])')]
    .filter((e) => !e.disabled && !e.hidden && e.offsetParent !== null);
}

export function trapTab(root, ev) {
  const items = focusables(root);
  if (!items.length) return;
  const first = items[0];
  const last = items[items.length - 1];
  if (ev.shiftKey && document.activeElement === first) {
    ev.preventDefault();
    last.focus();
  } else if (!ev.shiftKey && document.activeElement === last) {
    ev.preventDefault();
    first.focus();
  }
}

/**
 * Asks for confirmation. Resolves to false, or to true (or the values of
 * `extra` checkboxes, when given: {wipe: true}).
 */
export function confirmDialog({ title, message, confirmLabel = 'Confirm', danger = false, checkboxes = [], typeToConfirm = null }) {
  return new Promise((resolve) => {
    let result = false;
    const boxes = checkboxes.map((c) => h('input', { type: 'checkbox', name: c.name, id: uid('cb'), 'data-test': `confirm-${c.name}` }));
    const typed = typeToConfirm ? h('input', { type: 'text', autocomplete: 'off', 'data-test': 'confirm-type', 'aria-label': `Type ${typeToConfirm} to confirm` }) : null;
    const ok = button(confirmLabel, { kind: danger ? 'danger' : 'primary', test: 'confirm-ok', type: 'submit' });
    if (typed) {
      ok.disabled = true;
      typed.addEventListener('input', () => {
        ok.disabled = typed.value.trim() !== typeToConfirm;
      });
    }
    const form = h('form', { class: 'confirm-form' },
      h('div', { class: 'confirm-message' }, message),
      checkboxes.map((c, i) => h('div', { class: 'field field-check' },
        h('label', { for: boxes[i].id }, boxes[i], h('span', null, c.label)),
        c.hint ? h('p', { class: 'hint' }, c.hint) : null)),
      typed ? h('div', { class: 'field' }, h('label', null, 'Type ', h('code', { class: 'mono' }, typeToConfirm), ' to confirm'), typed) : null,
      h('div', { class: 'dialog-actions' }, button('Cancel', { test: 'confirm-cancel', onClick: () => d.close() }), ok));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      if (ok.disabled) return;
      result = checkboxes.length ? Object.fromEntries(boxes.map((b) => [b.name, b.checked])) : true;
      d.close();
    });
    const d = dialog({ title, body: form, onClose: () => resolve(result), test: 'confirm-dialog' });
    if (!checkboxes.length && !typed) ok.focus();
  });
}

// ---- Tables and pagination ----

/**
 * table({columns: [{label, cell: row => node, class}], rows, rowAttrs: row => attrs, empty})
 */
export function table({ columns, rows, rowAttrs, emptyText = 'Nothing here yet.', test, caption, cards = true }) {
  if (!rows.length) return empty(emptyText);
  return h('div', { class: 'table-wrap' },
    h('table', { class: cards ? 'table table-cards' : 'table', 'data-test': test },
      caption ? h('caption', { class: 'sr-only' }, caption) : null,
      h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
      h('tbody', null, rows.map((row) => h('tr', rowAttrs ? rowAttrs(row) : null,
        columns.map((c) => h('td', { class: c.class, 'data-label': typeof c.label === 'string' ? c.label : null }, c.cell(row))))))));
}

export function pager(page, onPage) {
  if (!page || !page.total_pages || page.total_pages <= 1) {
    return h('div', { class: 'pager', 'data-test': 'pager' }, h('span', { class: 'muted' }, countText(page)));
  }
  const cur = page.page;
  const last = page.total_pages;
  const go = (p) => () => onPage(p);
  return h('nav', { class: 'pager', 'aria-label': 'Pagination', 'data-test': 'pager' },
    h('span', { class: 'muted' }, countText(page)),
    h('div', { class: 'pager-buttons' },
      button('First', { small: true, disabled: cur <= 1, onClick: go(1), test: 'page-first' }),
      button('Previous', { small: true, disabled: cur <= 1, onClick: go(cur - 1), test: 'page-prev' }),
      h('span', { class: 'pager-pos', 'data-test': 'page-current' }, `Page ${cur} of ${last}`),
      button('Next', { small: true, disabled: cur >= last, onClick: go(cur + 1), test: 'page-next' }),
      button('Last', { small: true, disabled: cur >= last, onClick: go(last), test: 'page-last' })));
}

function countText(page) {
  if (!page) return '';
  const n = page.total_records ?? (page.data ? page.data.length : 0);
  return `${n} ${n === 1 ? 'record' : 'records'}`;
}

// ---- Task progress ----

/**
 * A progress bar that follows a task over SSE. Calls onDone(task) once it
 * finishes. Returns {el, stop}.
 */
export function taskProgress(scope, task, { onDone, label } = {}) {
  const bar = h('div', { class: 'progress-bar' });
  const track = h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': '0' }, bar);
  const text = h('span', { class: 'progress-text' });
  const status = h('span', { class: 'progress-status' });
  const err = h('p', { class: 'progress-error', hidden: true });
  const el = h('div', { class: 'task-progress', 'data-test': 'task-progress', 'data-task-id': task.id, 'data-status': task.status || 'queued' },
    h('div', { class: 'progress-head' }, h('strong', null, label || `Task: ${task.kind || 'action'}`), status), track, text, err);
  const render = (t) => {
    const pct = Math.max(0, Math.min(100, Number(t.progress) || 0));
    bar.style.width = `${pct}%`;
    track.setAttribute('aria-valuenow', String(pct));
    el.dataset.status = t.status || '';
    replace(status, badge(t.status === 'running' ? 'running-task' : t.status, { label: t.status, kind: t.status === 'running' ? 'busy' : undefined }));
    text.textContent = `${pct}%${t.stage ? ` · ${t.stage}` : ''}`;
    el.classList.toggle('is-failed', t.status === 'failed');
    el.classList.toggle('is-done', t.status === 'succeeded');
    if (t.error) {
      err.textContent = t.error;
      err.hidden = false;
    }
  };
  render(task);
  let done = taskFinished(task);
  const stop = done ? () => {} : watchTask(scope, task.id, (t) => {
    render(t);
    if (taskFinished(t) && !done) {
      done = true;
      if (onDone) onDone(t);
    }
  });
  return { el, stop };
}

// ---- Pickers: a combobox searching the server as one types ----

export function userPicker(opts = {}) {
  return searchPicker({
    name: 'user_id', label: 'User', test: 'user-picker', placeholder: 'Search by username…', noneText: 'No matching user',
    search: async (q) => (await get('/v1/admin/users', { q, page_size: 8 })).data || [],
    text: (u) => u.username,
    sub: (u) => u.status,
    ...opts,
  });
}

export function hostPicker(opts = {}) {
  return searchPicker({
    name: 'host_id', label: 'Host', test: 'host-picker', placeholder: 'Search by name, user or short id…', noneText: 'No matching host',
    search: async (q) => (await get('/v1/admin/hosts', { q, page_size: 8 })).data || [],
    text: (x) => `${x.name || x.short_id} (${x.username || 'no user'})`,
    sub: (x) => `${x.short_id} · ${x.status}`,
    ...opts,
  });
}

export function searchPicker({ name, label, required = false, test, initial = null, onChange, hint, placeholder, noneText, search: searchFn, text, sub }) {
  const id = uid('up');
  const listId = `${id}-list`;
  const hidden = h('input', { type: 'hidden', name });
  const input = h('input', {
    id, type: 'text', role: 'combobox', 'aria-autocomplete': 'list', 'aria-expanded': 'false', 'aria-controls': listId,
    autocomplete: 'off', placeholder, 'data-test': test, required,
    'aria-describedby': `${id}-err`, 'data-field': name,
  });
  const list = h('ul', { id: listId, role: 'listbox', class: 'combo-list', hidden: true });
  let items = [];
  let active = -1;
  let seq = 0;
  const select = (item) => {
    hidden.value = item ? item.id : '';
    input.value = item ? text(item) : '';
    close();
    if (onChange) onChange(item);
  };
  if (initial) {
    hidden.value = initial.id;
    input.value = text(initial) || initial.id;
  }
  const close = () => {
    list.hidden = true;
    input.setAttribute('aria-expanded', 'false');
    input.removeAttribute('aria-activedescendant');
    active = -1;
  };
  const paint = () => {
    clear(list);
    items.forEach((u, i) => {
      const li = h('li', { id: `${listId}-${i}`, role: 'option', class: i === active ? 'active' : null, 'aria-selected': String(i === active), 'data-test': `${test}-option` },
        h('span', null, text(u)), h('span', { class: 'muted' }, ` ${sub(u)}`));
      li.addEventListener('mousedown', (ev) => {
        ev.preventDefault();
        select(u);
      });
      list.appendChild(li);
    });
    if (!items.length) list.appendChild(h('li', { class: 'muted combo-none' }, noneText));
    list.hidden = false;
    input.setAttribute('aria-expanded', 'true');
    if (active >= 0) input.setAttribute('aria-activedescendant', `${listId}-${active}`);
  };
  const search = debounce(async () => {
    const mine = ++seq;
    try {
      const found = await searchFn(input.value.trim());
      if (mine !== seq) return;
      items = found;
      active = items.length ? 0 : -1;
      if (document.activeElement === input) paint();
    } catch {
      /* the list just stays closed */
    }
  }, 200);
  input.addEventListener('input', () => {
    hidden.value = '';
    if (!input.value.trim()) {
      close();
      if (onChange) onChange(null);
      return;
    }
    search();
  });
  input.addEventListener('focus', () => {
    if (input.value.trim() && !hidden.value) search();
  });
  input.addEventListener('blur', () => setTimeout(close, 100));
  input.addEventListener('keydown', (ev) => {
    if (list.hidden) {
      if (ev.key === 'ArrowDown') search();
      return;
    }
    if (ev.key === 'ArrowDown') {
      ev.preventDefault();
      active = Math.min(items.length - 1, active + 1);
      paint();
    } else if (ev.key === 'ArrowUp') {
      ev.preventDefault();
      active = Math.max(0, active - 1);
      paint();
    } else if (ev.key === 'Enter') {
      if (active >= 0 && items[active]) {
        ev.preventDefault();
        select(items[active]);
      }
    } else if (ev.key === 'Escape') {
      ev.preventDefault();
      ev.stopPropagation();
      close();
    }
  });
  const wrap = h('div', { class: 'field combo' },
    h('label', { for: id }, label, required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null),
    h('div', { class: 'combo-box' }, input, list), hidden,
    hint ? h('p', { class: 'hint' }, hint) : null,
    h('p', { class: 'field-error', id: `${id}-err`, 'data-test': `field-error-${name}`, hidden: true }));
  return { el: wrap, input, hidden, select };
}

// ---- Page chrome ----

export function pageHeader(title, { subtitle, actions, back } = {}) {
  return h('div', { class: 'page-head' },
    h('div', { class: 'page-title' },
      back ? h('a', { class: 'back', href: back, 'aria-label': 'Back' }, icon('back')) : null,
      h('div', null, h('h1', { 'data-test': 'page-title', tabindex: '-1' }, title), subtitle ? h('p', { class: 'subtitle' }, subtitle) : null)),
    actions ? h('div', { class: 'page-actions' }, actions) : null);
}

export function card(title, content, opts = {}) {
  return h('section', { class: ['card', opts.class], 'data-test': opts.test, 'aria-label': typeof title === 'string' ? title : null },
    title || opts.actions ? h('div', { class: 'card-head' }, h('h2', null, title), opts.actions ? h('div', { class: 'card-actions' }, opts.actions) : null) : null,
    h('div', { class: 'card-body' }, content));
}

/** A definition list from [label, value] pairs. */
export function dl(pairs) {
  return h('dl', { class: 'dl' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', null, k), h('dd', null, v ?? '—')]));
}
