// Operator: the task queue, refreshed every few seconds while the page is
// visible, with filters and cancel.

import { h, timeAgo, badge, shortId } from '../dom.js';
import { get, post, enc } from '../api.js';
import { list, selectFilter } from '../list.js';
import { pageHeader, card, button, table, toast, busy, describeError, confirmDialog } from '../ui.js';

const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const KINDS = ['create', 'start', 'stop', 'rebuild', 'delete', 'rotate_ssh_password'];
const REFRESH_MS = 4000;

export function miniProgress(t) {
  const pct = Math.max(0, Math.min(100, Number(t.progress) || 0));
  const bar = h('div', { class: 'progress-bar' });
  bar.style.width = `${pct}%`;
  const finished = ['succeeded', 'failed', 'cancelled'].includes(t.status);
  return h('div', { class: ['mini-progress', t.status === 'succeeded' ? 'is-done' : '', t.status === 'failed' ? 'is-failed' : ''], 'data-test': 'task-progress-mini' },
    h('div', { class: 'progress', role: 'progressbar', 'aria-valuenow': String(pct), 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-label': 'Progress' }, bar),
    h('span', { class: 'muted nowrap' }, finished && !t.stage ? `${pct}%` : `${pct}%${t.stage ? ` · ${t.stage}` : ''}`));
}

export function taskStatus(t) {
  if (t.cancel_requested && t.status === 'running') return badge('cancel_requested', { label: 'cancelling', spin: true });
  if (t.status === 'running') return badge('running', { kind: 'busy', spin: true, test: 'task-status' });
  return badge(t.status, { test: 'task-status' });
}

export async function tasksPage(ctx) {
  ctx.setTitle('Tasks');
  let timer = null;
  const l = list({
    ctx,
    test: 'tasks-list',
    keys: { status: '', kind: '', host_id: '' },
    load: (s, signal) => get('/v1/admin/tasks', { status: s.status, kind: s.kind, host_id: s.host_id, page: s.page, page_size: s.page_size }, { signal }),
    render: (page) => {
      schedule();
      return table({
        test: 'tasks-table',
        caption: 'Tasks',
        emptyText: 'No tasks match.',
        rows: page.data || [],
        rowAttrs: (t) => ({ 'data-test': 'task-row', 'data-task-id': t.id, 'data-status': t.status }),
        columns: [
          { label: 'Kind', cell: (t) => h('span', { class: 'cell-main' }, t.kind.replace(/_/g, ' ')) },
          { label: 'Host', cell: (t) => (t.host_id ? h('a', { href: `#/hosts/${enc(t.host_id)}` }, shortId(t.host_id)) : '—') },
          { label: 'Status', cell: taskStatus },
          { label: 'Progress', cell: miniProgress },
          { label: 'Attempts', class: 'nowrap', cell: (t) => `${t.attempts ?? 0} / ${t.max_attempts ?? '—'}` },
          { label: 'Error', cell: (t) => (t.error ? h('span', { class: 'details' }, t.error) : '') },
          { label: 'Created', class: 'nowrap', cell: (t) => timeAgo(t.created_at) },
          {
            label: h('span', { class: 'sr-only' }, 'Actions'),
            class: 'col-actions',
            cell: (t) => {
              if (t.status !== 'queued' && t.status !== 'running') return '';
              const b = button('Cancel', { small: true, kind: 'danger-soft', test: 'task-cancel', disabled: !!t.cancel_requested });
              b.addEventListener('click', async () => {
                const ok = await confirmDialog({ title: 'Cancel task', message: t.status === 'queued' ? 'The task will not run.' : 'The task stops at its next safe point.', confirmLabel: 'Cancel task', danger: true });
                if (!ok) return;
                await busy(b, async () => {
                  try {
                    await post(`/v1/admin/tasks/${enc(t.id)}/cancel`);
                    toast('Cancel requested.');
                    l.reload({ quiet: true });
                  } catch (err) {
                    toast(describeError(err), 'error');
                  }
                });
              });
              return b;
            },
          },
        ],
      });
    },
  });

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(() => {
      // Only while visible, and not while a dialog is open over the list.
      if (document.visibilityState === 'visible' && !document.querySelector('dialog[open]')) l.reload({ quiet: true });
      else schedule();
    }, REFRESH_MS);
  }
  ctx.onCleanup(() => clearTimeout(timer));

  const cap = (s) => s[0].toUpperCase() + s.slice(1).replace(/_/g, ' ');
  ctx.view.append(
    pageHeader('Tasks', { subtitle: 'Host work queued for the agents. Refreshes every few seconds.' }),
    card(null, [
      h('div', { class: 'toolbar' },
        selectFilter(l, 'status', 'Status', [['', 'Any status'], ...STATUSES.map((s) => [s, cap(s)])], 'tasks-status-filter'),
        selectFilter(l, 'kind', 'Kind', [['', 'Any kind'], ...KINDS.map((s) => [s, cap(s)])], 'tasks-kind-filter'),
        l.state.host_id ? h('div', { class: 'field' }, h('span', { class: 'field-label' }, 'Host'), h('span', { class: 'row' }, shortId(l.state.host_id), button('Clear', { small: true, kind: 'ghost', onClick: () => ctx.navigate('#/tasks') }))) : null),
      l.el,
    ], { class: 'card-flush' }),
  );
  l.reload();
}
