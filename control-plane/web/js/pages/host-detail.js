// Operator: one host: state, access, actions with live task progress,
// recent tasks, and its egress binding and health.

import { h, replace, fmtTime, timeAgo, badge, shortId } from '../dom.js';
import { get, post, patch, del, enc, ApiError } from '../api.js';
import { pageHeader, card, button, dl, dialog, field, formBanner, onSubmit, formValue, toast, busy, describeError, confirmDialog, secretBox, table, errorBox, loading, copyLine, empty } from '../ui.js';
import { takeFlash } from '../flash.js';
import { accessBlock, healthBlock, runTask, followTask, openButtons, statusLine, lastError, TRANSITIONAL } from '../hostview.js';
import { trafficBlock } from '../traffic.js';

export async function hostDetailPage(ctx) {
  const id = ctx.params.id;
  const base = `/v1/admin/hosts/${enc(id)}`;
  let host = await get(base);
  ctx.setTitle(`Host ${host.name || host.short_id}`);
  const flash = takeFlash(`host:${id}`);

  const head = h('div');
  const errSlot = h('div');
  const secretSlot = h('div');
  const progress = h('div', { class: 'stack task-slot', 'data-test': 'task-slot' });
  const infoCard = h('div');
  const accessCard = h('div');
  const egressBody = h('div', null, loading());
  const tasksBody = h('div', null, loading());
  const stops = [];
  let poll = null;
  let gone = false;
  ctx.onCleanup(() => {
    clearTimeout(poll);
    for (const s of stops) s();
  });

  async function refresh() {
    clearTimeout(poll);
    try {
      host = await get(base);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        gone = true;
        replace(ctx.view, pageHeader('Host deleted', { back: '#/hosts' }), empty('This host no longer exists.', h('a', { href: '#/hosts' }, 'Back to hosts')));
        return;
      }
      schedule();
      return;
    }
    paint();
    loadTasks();
    schedule();
  }
  function schedule() {
    clearTimeout(poll);
    if (gone) return;
    const delay = TRANSITIONAL.has(host.status) ? 4000 : 20000;
    poll = setTimeout(() => {
      if (document.visibilityState === 'visible') refresh();
      else schedule();
    }, delay);
  }

  const after = () => {
    refresh();
  };
  const act = (btn, path, label, body) => runTask(btn, { scope: 'admin', url: `${base}/${path}`, body, slot: progress, label, onDone: after, stops, onStarted: () => refresh() });

  function paint() {
    const deleting = host.status === 'deleting';
    const start = button('Start', { icon: 'play', test: 'host-start', disabled: deleting || host.status === 'running' });
    start.addEventListener('click', () => act(start, 'start', 'Start'));
    const stop = button('Stop', { icon: 'stop', test: 'host-stop', disabled: deleting || host.status === 'stopped' });
    stop.addEventListener('click', () => act(stop, 'stop', 'Stop'));
    const rebuild = button('Rebuild', { icon: 'rebuild', test: 'host-rebuild', disabled: deleting });
    rebuild.addEventListener('click', async () => {
      const r = await confirmDialog({
        title: 'Rebuild host',
        message: 'The container is made again from the current image. The home volume is kept unless you wipe it.',
        confirmLabel: 'Rebuild',
        checkboxes: [{ name: 'wipe', label: 'Also wipe the home volume (all files in it are lost)' }],
      });
      if (!r) return;
      act(rebuild, 'rebuild', r.wipe ? 'Rebuild with wipe' : 'Rebuild', { wipe: !!r.wipe });
    });
    const rotate = button('Rotate SSH password', { icon: 'lock', test: 'host-rotate-ssh', disabled: deleting });
    rotate.addEventListener('click', async () => {
      const ok = await confirmDialog({ title: 'Rotate SSH password', message: 'Set a new SSH password for this host? The old one stops working when the task has run.', confirmLabel: 'Rotate' });
      if (!ok) return;
      runTask(rotate, {
        scope: 'admin', url: `${base}/rotate-ssh-password`, slot: progress, label: 'Rotate SSH password', onDone: after, stops,
        onStarted: (res) => {
          if (res && res.ssh_password) replace(secretSlot, secretBox('New SSH password', res.ssh_password, { test: 'ssh-password' }));
        },
      });
    });
    const remove = button('Delete', { kind: 'danger', icon: 'trash', test: 'host-delete', disabled: deleting });
    remove.addEventListener('click', async () => {
      const ok = await confirmDialog({
        title: 'Delete host',
        message: h('div', null, h('p', null, 'This removes the container and its home volume. It cannot be undone.')),
        confirmLabel: 'Delete host',
        danger: true,
        typeToConfirm: host.short_id || host.name,
      });
      if (!ok) return;
      await busy(remove, async () => {
        try {
          const task = await del(base);
          if (task && task.id) stops.push(followTask(progress, 'admin', task, 'Delete', after));
          refresh();
        } catch (err) {
          toast(describeError(err), 'error');
        }
      });
    });
    const hb = `#/hosts/${enc(id)}`;
    replace(head, pageHeader(host.name || host.short_id, {
      back: '#/hosts',
      subtitle: statusLine(host),
      actions: [...openButtons(host, hb)],
    }));
    replace(errSlot, h('div', null, lastError(host), h('div', { class: 'card', 'data-test': 'host-actions' }, h('div', { class: 'card-body actions-bar' }, start, stop, rebuild, rotate, remove))));
    replace(infoCard, card('Host', dl([
      ['Status', badge(host.status, { test: 'host-status-detail' })],
      ['Name', host.name || '—'],
      ['Short id', h('code', { class: 'mono' }, host.short_id)],
      ['Owner', host.user_id ? h('a', { href: `#/users/${enc(host.user_id)}` }, host.username || host.user_id) : '—'],
      ['Node', host.node_id ? shortId(host.node_id) : h('span', { class: 'muted' }, 'not placed')],
      ['Memory', host.memory_mb ? `${host.memory_mb} MB` : 'default'],
      ['CPU', host.cpu_millis ? `${host.cpu_millis} millicores` : 'default'],
      ['Processes', host.pids_limit ? String(host.pids_limit) : 'default'],
      ['Created', fmtTime(host.created_at)],
      ['Updated', h('span', null, timeAgo(host.updated_at))],
      ['ID', h('code', { class: 'mono' }, host.id)],
    ]), { test: 'host-info' }));
    replace(accessCard, card('Access', h('div', { class: 'stack' }, accessBlock(host), entryLinkControls()), { test: 'host-access' }));
    loadEgress();
  }

  /** The entry link's state and its switch, rotation and expiry. */
  function entryLinkControls() {
    const a = host.access || {};
    const expired = a.entry_expires_at && new Date(a.entry_expires_at).getTime() <= Date.now();
    const state = a.entry_disabled ? 'disabled' : expired ? 'expired' : 'active';
    const save = async (btn, body, done) => busy(btn, async () => {
      try {
        await patch(`${base}/entry-link`, body);
        toast(done);
        refresh();
      } catch (err) {
        toast(describeError(err), 'error');
      }
    });
    const toggle = button(a.entry_disabled ? 'Enable link' : 'Disable link', { small: true, test: 'entry-toggle' });
    toggle.addEventListener('click', () => save(toggle, { enabled: !!a.entry_disabled }, a.entry_disabled ? 'Entry link enabled.' : 'Entry link disabled.'));
    const rotate = button('Rotate link', { small: true, icon: 'refresh', test: 'entry-rotate' });
    rotate.addEventListener('click', async () => {
      const ok = await confirmDialog({ title: 'Rotate entry link', message: 'Issue a new entry link? The current one stops working at once.', confirmLabel: 'Rotate' });
      if (!ok) return;
      await busy(rotate, async () => {
        try {
          await post(`${base}/entry-link/rotate`);
          toast('New entry link issued.');
          refresh();
        } catch (err) {
          toast(describeError(err), 'error');
        }
      });
    });
    const expiry = button('Set expiry', { small: true, icon: 'events', test: 'entry-expiry' });
    expiry.addEventListener('click', () => {
      const form = h('form', { novalidate: true, 'data-test': 'entry-expiry-form' },
        formBanner(),
        field({ label: 'Link works until', name: 'expires_at', type: 'datetime-local', hint: 'Your local time. Leave empty for no expiry.', test: 'entry-expiry-at' }),
        h('div', { class: 'dialog-actions' },
          button('Cancel', { onClick: () => d.close() }),
          button('Save', { kind: 'primary', type: 'submit', test: 'entry-expiry-submit' })));
      onSubmit(form, async (fd) => {
        const raw = formValue(fd, 'expires_at');
        await patch(`${base}/entry-link`, { expires_at: raw ? new Date(raw).toISOString() : null });
        d.close();
        toast(raw ? 'Entry link expiry set.' : 'Entry link expiry removed.');
        refresh();
      });
      const d = dialog({ title: 'Entry link expiry', body: form, test: 'entry-expiry-dialog' });
    });
    return h('div', { class: 'stack', 'data-test': 'entry-link' },
      dl([
        ['Entry link', badge(state, { test: 'entry-state' })],
        ['Expires', a.entry_expires_at ? h('span', { title: fmtTime(a.entry_expires_at) }, fmtTime(a.entry_expires_at)) : 'never'],
      ]),
      h('div', { class: 'row' }, toggle, rotate, expiry));
  }

  async function loadTasks() {
    try {
      const page = await get('/v1/admin/tasks', { host_id: id, page_size: 8 });
      const rows = page.data || [];
      replace(tasksBody, table({
        rows,
        emptyText: 'No tasks for this host.',
        rowAttrs: (t) => ({ 'data-test': 'task-row', 'data-task-id': t.id }),
        columns: [
          { label: 'Kind', cell: (t) => h('span', { class: 'cell-main' }, t.kind.replace(/_/g, ' ')) },
          { label: 'Status', cell: (t) => badge(t.status === 'running' ? 'running' : t.status, { kind: t.status === 'running' ? 'busy' : undefined, spin: t.status === 'running' || t.status === 'queued' }) },
          { label: 'Progress', cell: (t) => h('span', { class: 'muted' }, `${t.progress ?? 0}%${t.stage ? ` · ${t.stage}` : ''}`) },
          { label: 'Error', cell: (t) => (t.error ? h('span', { class: 'details' }, t.error) : '') },
          { label: 'Created', class: 'nowrap', cell: (t) => timeAgo(t.created_at) },
        ],
      }));
      // Follow what runs now (not already shown above).
      for (const t of rows) {
        if ((t.status === 'running' || t.status === 'queued') && !progress.querySelector(`[data-task-id="${CSS.escape(t.id)}"]`)) {
          stops.push(followTask(progress, 'admin', t, t.kind.replace(/_/g, ' '), after));
        }
      }
    } catch (err) {
      if (err.status !== 401) replace(tasksBody, errorBox(err, loadTasks));
    }
  }

  async function loadEgress() {
    try {
      const page = await get('/v1/admin/bindings', { host_id: id });
      const binding = (page.data || [])[0] || null;
      let egress = null;
      if (binding) egress = await get(`/v1/admin/egress-ips/${enc(binding.egress_ip_id)}`).catch(() => null);
      paintEgress(binding, egress);
    } catch (err) {
      if (err.status !== 401) replace(egressBody, errorBox(err, loadEgress));
    }
  }

  function paintEgress(binding, egress) {
    if (!binding) {
      const bind = button('Bind to an egress IP', { kind: 'primary', icon: 'link', test: 'host-bind' });
      bind.addEventListener('click', () => bindDialog(id, () => {
        toast('Bound. It takes effect at the host\'s next start.');
        refresh();
      }));
      replace(egressBody, h('div', { class: 'stack' },
        h('p', { class: 'muted' }, 'Not bound: the host reaches the internet directly through its node.'),
        h('div', null, bind)));
      return;
    }
    const unbind = button('Unbind', { kind: 'danger-soft', icon: 'x', test: 'host-unbind' });
    unbind.addEventListener('click', async () => {
      const ok = await confirmDialog({ title: 'Unbind egress IP', message: 'Remove this binding? The host leaves directly through its node after its next start.', confirmLabel: 'Unbind', danger: true });
      if (!ok) return;
      await busy(unbind, async () => {
        try {
          await del(`/v1/admin/bindings/${enc(binding.id)}`);
          toast('Binding removed. It takes effect at the host\'s next start.');
          refresh();
        } catch (err) {
          toast(describeError(err), 'error');
        }
      });
    });
    const isWg = egress && egress.tunnel_type === 'wireguard';
    const rotate = isWg ? button('Rotate WireGuard key', { icon: 'refresh', test: 'binding-rotate-key' }) : null;
    if (rotate) {
      rotate.addEventListener('click', async () => {
        const ok = await confirmDialog({ title: 'Rotate the host\'s WireGuard key', message: 'A new key pair is made for this binding. Register the new public key with the provider; it is used from the host\'s next start.', confirmLabel: 'Rotate' });
        if (!ok) return;
        await busy(rotate, async () => {
          try {
            await post(`/v1/admin/bindings/${enc(binding.id)}/rotate-wg-key`);
            toast('New key made. Register it with the provider.');
            loadEgress();
          } catch (err) {
            toast(describeError(err), 'error');
          }
        });
      });
    }
    replace(egressBody, h('div', { class: 'stack', 'data-test': 'host-binding', 'data-binding-id': binding.id },
      dl([
        ['Egress IP', egress ? h('a', { href: `#/egress/${enc(egress.id)}` }, egress.label) : shortId(binding.egress_ip_id)],
        egress ? ['Declared exit', h('code', { class: 'mono' }, egress.ip_address)] : null,
        egress ? ['Type', egress.tunnel_type === 'proxy' && egress.proxy_config ? `proxy (${egress.proxy_config.type})` : egress.tunnel_type] : null,
        binding.wg_public_key ? ['Host public key', copyLine(binding.wg_public_key, { test: 'binding-public-key' })] : null,
        binding.wg_peer_address ? ['Peer address', h('code', { class: 'mono' }, binding.wg_peer_address)] : null,
        ['Bound', timeAgo(binding.created_at)],
      ]),
      h('div', { class: 'row' }, unbind, rotate),
      h('p', { class: 'hint' }, 'Binding changes and key rotations reach a running host at its next start.'),
      h('h3', null, 'Egress health'),
      healthBlock(host.egress_health)));
  }

  const traffic = trafficBlock('admin', host);
  ctx.view.append(head, errSlot, secretSlot, progress,
    h('div', { class: 'grid grid-2' }, infoCard, accessCard),
    card('Egress', egressBody, { test: 'host-egress' }),
    card('Traffic', traffic.el, { test: 'host-traffic-card' }),
    card('Recent tasks', tasksBody, { class: 'card-flush', test: 'host-tasks' }));
  paint();
  if (flash && flash.ssh_password) {
    replace(secretSlot, secretBox('SSH password', flash.ssh_password, { test: 'ssh-password', note: 'Shown only this once. The user can also sign in to SSH with their account password.' }));
  }
  if (flash && flash.task_id) {
    stops.push(followTask(progress, 'admin', { id: flash.task_id, kind: 'create', status: 'queued', progress: 0 }, 'Create', after));
  }
  loadTasks();
  schedule();
}

function bindDialog(hostId, done) {
  const select = field({ label: 'Egress IP', name: 'egress_ip_id', type: 'select', required: true, options: [['', 'Loading…']], test: 'bind-egress' });
  const form = h('form', { novalidate: true, 'data-test': 'bind-form' },
    formBanner(),
    select,
    field({ label: 'Peer address', name: 'wg_peer_address', optional: true, monospace: true, placeholder: '10.64.0.7/32', hint: 'WireGuard only: this host\'s tunnel address when the provider gives each peer its own; else the egress IP\'s is used.', test: 'bind-peer' }),
    h('div', { class: 'dialog-actions' },
      button('Cancel', { onClick: () => d.close() }),
      button('Bind', { kind: 'primary', type: 'submit', test: 'bind-submit' })));
  const sel = select.querySelector('select');
  get('/v1/admin/egress-ips', { page_size: 200 }).then((page) => {
    replace(sel, h('option', { value: '' }, 'Choose…'), (page.data || []).map((e) => h('option', { value: e.id }, `${e.label} — ${e.ip_address} (${e.tunnel_type === 'proxy' && e.proxy_config ? e.proxy_config.type : e.tunnel_type})`)));
    if (!(page.data || []).length) replace(sel, h('option', { value: '' }, 'No egress IPs yet'));
  }).catch((err) => replace(sel, h('option', { value: '' }, describeError(err))));
  onSubmit(form, async (fd) => {
    const body = { host_id: hostId, egress_ip_id: fd.get('egress_ip_id') };
    if (!body.egress_ip_id) throw Object.assign(new Error('Choose an egress IP.'), { field: 'egress_ip_id' });
    const peer = formValue(fd, 'wg_peer_address');
    if (peer) body.wg_peer_address = peer;
    await post('/v1/admin/bindings', body);
    d.close();
    done();
  });
  const d = dialog({ title: 'Bind to an egress IP', body: form, test: 'bind-dialog' });
}
