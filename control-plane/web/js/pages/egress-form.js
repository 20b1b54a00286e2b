// Operator: create or edit an egress IP. WireGuard fields, or a proxy whose
// sub-form follows the sing-box outbound type and builds `proxy_config`.
// Secrets read back as ******** and are sent back unchanged (the server
// keeps the stored value) unless replaced.

import { h, replace, uid } from '../dom.js';
import { get, post, put, enc } from '../api.js';
import { pageHeader, card, button, field, formBanner, onSubmit, formValue, toast, busy, describeError, confirmDialog, copyLine, alert, dl } from '../ui.js';
import { TYPES, PROXY_TYPES, TLS_FIELDS, TRANSPORT_TYPES, TRANSPORT_FIELDS, MASK, getPath, setPath, toInput, fromInput, withRemovals } from '../proxy-schema.js';
import { runEgressTest, testResultBlock, deleteEgress, egressKind } from './egress.js';

const WG_FIELDS = [
  { name: 'wg_endpoint', label: 'Endpoint', placeholder: 'vpn.example.net:51820', hint: 'host:port of the provider\'s WireGuard server.' },
  { name: 'wg_public_key', label: 'Server public key', placeholder: 'base64, 44 characters', mono: true },
  { name: 'wg_peer_address', label: 'Our tunnel address', placeholder: '10.64.0.2/32', hint: 'The address the provider gave this peer, as a CIDR.', mono: true },
  { name: 'wg_preshared_key', label: 'Preshared key', secret: true, mono: true },
  { name: 'wg_allowed_ips', label: 'Allowed IPs', placeholder: '0.0.0.0/0, ::/0', hint: 'Default: 0.0.0.0/0, ::/0.' },
  { name: 'wg_dns_server', label: 'DNS server', placeholder: '10.64.0.1', hint: 'Resolver reached through the tunnel.' },
];

export async function egressFormPage(ctx) {
  const id = ctx.params.id || null;
  let orig = id ? await get(`/v1/admin/egress-ips/${enc(id)}`) : null;
  ctx.setTitle(orig ? `Egress ${orig.label}` : 'New egress IP');

  const head = h('div');
  const extra = h('div');
  const testSlot = h('div', { 'data-test': 'egress-test-slot' });

  // ---- Top-level fields ----
  const typeName = uid('tt');
  const radio = (value, label) => h('label', null, h('input', { type: 'radio', name: 'tunnel_type', value, checked: (orig ? orig.tunnel_type : 'wireguard') === value, 'data-test': `tunnel-${value}` }), label);
  const tunnelSeg = h('div', { class: 'field' },
    h('span', { class: 'field-label', id: typeName }, 'Tunnel'),
    h('div', { class: 'segmented', role: 'radiogroup', 'aria-labelledby': typeName }, radio('wireguard', 'WireGuard'), radio('proxy', 'Proxy')),
    h('p', { class: 'field-error', id: `${typeName}-err`, hidden: true, 'data-test': 'field-error-tunnel_type' }));

  const wgSet = h('fieldset', { 'data-test': 'wg-fields' }, h('legend', null, 'WireGuard'),
    h('div', { class: 'form-grid' }, WG_FIELDS.map((f) => field({
      label: f.label, name: f.name, placeholder: f.placeholder, hint: f.secret && orig && orig[f.name] === MASK ? 'Stored. Leave ******** to keep it; clear to remove.' : f.hint,
      type: f.secret ? 'password' : 'text', monospace: f.mono, value: orig ? orig[f.name] ?? '' : '', test: `egress-${f.name}`, autocomplete: 'off', required: f.required,
    }))));

  // ---- Proxy sub-form ----
  const origCfg = orig && orig.proxy_config ? orig.proxy_config : null;
  let snapshot = new Map(); // path -> input value, kept across type switches
  let controls = []; // {path, kind, get, set, el}
  const typeField = field({ label: 'Outbound type', name: 'proxy_config.type', type: 'select', options: PROXY_TYPES, value: origCfg ? origCfg.type : 'socks', test: 'proxy-type' });
  const typeSelect = typeField.querySelector('select');
  const serverField = field({ label: 'Server', name: 'proxy_config.server', required: true, placeholder: 'proxy.example.com or 198.51.100.5', value: origCfg ? origCfg.server : '', test: 'proxy-server' });
  const portField = field({ label: 'Port', name: 'proxy_config.server_port', required: true, inputmode: 'numeric', placeholder: '1080', value: origCfg ? origCfg.server_port : '', test: 'proxy-server_port' });
  const typeBody = h('div');
  const dnsField = field({ label: 'DNS server', name: 'dns_server', optional: true, placeholder: '1.1.1.1', value: orig ? orig.dns_server ?? '' : '', hint: 'Resolver reached through the proxy; the server\'s default when empty.', test: 'egress-dns_server' });
  const proxySet = h('fieldset', { 'data-test': 'proxy-fields' }, h('legend', null, 'Proxy (sing-box outbound)'),
    h('div', { class: 'form-grid form-grid-3' }, typeField, serverField, portField),
    typeBody, dnsField);

  function controlFor(f, value) {
    const name = `proxy_config.${f.path}`;
    const test = `proxy-${f.path}`;
    let el;
    let getV;
    let setV;
    if (f.kind === 'bool') {
      el = field({ label: f.label, name, type: 'checkbox', value: !!value, hint: f.hint, test });
      const input = el.querySelector('input');
      getV = () => input.checked;
      setV = (v) => { input.checked = !!v; };
    } else if (f.kind === 'select') {
      el = field({ label: f.label, name, type: 'select', options: f.options, value: value ?? '', hint: f.hint, test });
      const sel = el.querySelector('select');
      getV = () => sel.value;
      setV = (v) => { sel.value = v ?? ''; };
    } else if (f.kind === 'uot') {
      const v = value || { enabled: false, version: '' };
      el = h('div', { class: 'field' },
        field({ label: f.label, name, type: 'checkbox', value: v.enabled, hint: f.hint, test }),
        field({ label: 'UoT version', name: `${name}.version`, type: 'select', options: [['', 'Default'], ['1', '1'], ['2', '2']], value: v.version, test: `${test}-version` }));
      const [cb, sel] = [el.querySelector('input'), el.querySelector('select')];
      getV = () => ({ enabled: cb.checked, version: sel.value });
      setV = (x) => { cb.checked = !!(x && x.enabled); sel.value = (x && x.version) || ''; };
    } else if (f.kind === 'headers' || f.kind === 'lines') {
      el = field({ label: f.label, name, type: 'textarea', rows: f.rows || 3, monospace: true, value: value ?? '', placeholder: f.kind === 'headers' ? 'Header-Name: value (one per line)' : f.placeholder, hint: f.hint || (f.kind === 'headers' ? 'One "Name: value" per line. Credential headers read back as ********.' : null), test, spellcheck: false });
      const ta = el.querySelector('textarea');
      getV = () => ta.value;
      setV = (v) => { ta.value = v ?? ''; };
    } else {
      const masked = f.kind === 'secret' && value === MASK;
      el = field({
        label: f.label, name, type: f.kind === 'secret' ? 'password' : 'text', value: value ?? '', placeholder: f.placeholder, monospace: f.mono, test,
        hint: masked ? 'Stored. Leave ******** to keep it, or type a new value.' : f.hint, required: f.required, inputmode: f.kind === 'int' ? 'numeric' : undefined,
        autocomplete: f.kind === 'secret' ? 'new-password' : 'off',
      });
      const input = el.querySelector('input');
      getV = () => input.value;
      setV = (v) => { input.value = v ?? ''; };
    }
    if (f.span === 2) el.classList.add('span-2');
    controls.push({ path: f.path, kind: f.kind, get: getV, set: setV, el });
    return el;
  }

  function initial(f) {
    const key = f.path;
    if (snapshot.has(key)) return snapshot.get(key);
    if (origCfg && origCfg.type === typeSelect.value) return toInput(f.kind, getPath(origCfg, key));
    return toInput(f.kind, undefined);
  }

  function paintType() {
    for (const c of controls) snapshot.set(c.path, c.get());
    controls = [];
    const t = TYPES[typeSelect.value] || TYPES.socks;
    // A stored secret cannot carry over to another type: clear its mask.
    if (origCfg && origCfg.type !== typeSelect.value) {
      for (const [k, v] of snapshot) if (v === MASK) snapshot.set(k, '');
    }
    const own = h('div', { class: 'form-grid' }, t.fields.map((f) => controlFor(f, initial(f))));
    let tlsSet = null;
    if (t.tls) {
      const [enabledF, ...rest] = TLS_FIELDS;
      const en = controlFor(enabledF, initial(enabledF));
      const more = h('div', { class: 'form-grid' }, rest.map((f) => controlFor(f, initial(f))));
      const cb = en.querySelector('input');
      const sync = () => { more.hidden = !cb.checked; };
      cb.addEventListener('change', sync);
      sync();
      tlsSet = h('fieldset', { 'data-test': 'proxy-tls' }, h('legend', null, 'TLS'), en, more);
    }
    let trSet = null;
    if (t.transport) {
      const trBody = h('div', { class: 'form-grid' });
      const trType = field({ label: 'Transport', name: 'proxy_config.transport.type', type: 'select', options: TRANSPORT_TYPES, value: snapshot.get('transport.type') ?? (origCfg && origCfg.type === typeSelect.value ? getPath(origCfg, 'transport.type') ?? '' : ''), test: 'proxy-transport-type' });
      const trSel = trType.querySelector('select');
      controls.push({ path: 'transport.type', kind: 'text', get: () => trSel.value, set: (v) => { trSel.value = v || ''; }, el: trType });
      const paintTr = () => {
        const keep = new Set(['transport.type']);
        controls = controls.filter((c) => !c.path.startsWith('transport.') || keep.has(c.path) || (snapshot.set(c.path, c.get()), false));
        replace(trBody, (TRANSPORT_FIELDS[trSel.value] || []).map((f) => controlFor(f, initial(f))));
      };
      trSel.addEventListener('change', paintTr);
      paintTr();
      trSet = h('fieldset', { 'data-test': 'proxy-transport' }, h('legend', null, 'Transport'), trType, trBody);
    }
    replace(typeBody, own, tlsSet, trSet);
  }
  typeSelect.addEventListener('change', paintType);
  paintType();

  function buildProxy() {
    const cfg = { type: typeSelect.value, server: serverField.querySelector('input').value.trim() };
    const port = fromInput('int', portField.querySelector('input').value);
    if (port !== undefined) cfg.server_port = port;
    const tlsOn = controls.some((c) => c.path === 'tls.enabled' && c.get());
    for (const c of controls) {
      if (c.path.startsWith('tls.') && !tlsOn) continue;
      if (c.path === 'transport.type') continue;
      if (c.path.startsWith('transport.') && !controls.some((x) => x.path === 'transport.type' && x.get())) continue;
      const v = fromInput(c.kind, c.get());
      if (v !== undefined) setPath(cfg, c.path, v);
    }
    const tr = controls.find((c) => c.path === 'transport.type');
    if (tr && tr.get()) cfg.transport = { type: tr.get(), ...(cfg.transport || {}) };
    if (cfg.tls && !cfg.tls.enabled && tlsOn) cfg.tls.enabled = true;
    return cfg;
  }

  const submitLabel = orig ? 'Save changes' : 'Create egress IP';
  const form = h('form', { novalidate: true, 'data-test': 'egress-form' },
    formBanner(),
    h('div', { class: 'form-grid form-grid-3' },
      field({ label: 'Label', name: 'label', required: true, value: orig ? orig.label : '', hint: '1-64 characters, unique.', test: 'egress-label' }),
      field({ label: 'Declared exit IP', name: 'ip_address', required: true, monospace: true, value: orig ? orig.ip_address : '', placeholder: '203.0.113.7', hint: 'The address traffic should leave from. Tests compare against it.', test: 'egress-ip_address' }),
      field({ label: 'Provider', name: 'provider', value: orig ? orig.provider : '', placeholder: 'manual', optional: true, test: 'egress-provider' })),
    tunnelSeg, wgSet, proxySet,
    h('div', { class: 'form-actions' },
      h('a', { href: '#/egress', class: 'btn btn-secondary' }, 'Cancel'),
      button(submitLabel, { kind: 'primary', type: 'submit', test: 'egress-submit' })));

  const tunnel = () => form.querySelector('input[name="tunnel_type"]:checked').value;
  const syncTunnel = () => {
    wgSet.hidden = tunnel() !== 'wireguard';
    proxySet.hidden = tunnel() !== 'proxy';
  };
  for (const r of form.querySelectorAll('input[name="tunnel_type"]')) r.addEventListener('change', syncTunnel);
  syncTunnel();

  onSubmit(form, async (fd) => {
    const tt = tunnel();
    const text = (k) => formValue(fd, k) ?? '';
    if (!orig) {
      const body = { label: text('label'), ip_address: text('ip_address'), tunnel_type: tt };
      if (text('provider')) body.provider = text('provider');
      if (tt === 'wireguard') {
        for (const f of WG_FIELDS) if (text(f.name)) body[f.name] = f.secret ? fd.get(f.name) : text(f.name);
      } else {
        body.proxy_config = buildProxy();
        if (text('dns_server')) body.dns_server = text('dns_server');
      }
      const created = await post('/v1/admin/egress-ips', body);
      toast(`Egress IP ${created.label} created.`);
      ctx.navigate(`#/egress/${enc(created.id)}`);
      return;
    }
    const body = {};
    const diff = (k, v, nullable) => {
      const before = orig[k] ?? '';
      if (v === before) return;
      body[k] = v === '' && nullable ? null : v;
    };
    diff('label', text('label'));
    diff('ip_address', text('ip_address'));
    diff('provider', text('provider') || 'manual');
    if (tt !== orig.tunnel_type) body.tunnel_type = tt;
    if (tt === 'wireguard') {
      for (const f of WG_FIELDS) diff(f.name, f.secret ? (fd.get(f.name) || '') : text(f.name), true);
    } else {
      const built = buildProxy();
      const sameType = origCfg && origCfg.type === built.type;
      const patch = sameType ? withRemovals(origCfg, built) : built;
      if (!sameType || JSON.stringify(built) !== JSON.stringify(origCfg)) body.proxy_config = patch;
      diff('dns_server', text('dns_server'), true);
    }
    if (!Object.keys(body).length) {
      toast('Nothing changed.');
      return;
    }
    orig = await put(`/v1/admin/egress-ips/${enc(orig.id)}`, body);
    toast('Saved. Bound hosts pick up the change at their next start.');
    ctx.refresh();
  });

  function paintHead() {
    if (!orig) {
      replace(head, pageHeader('New egress IP', { back: '#/egress', subtitle: 'A WireGuard peer or a proxy that bound hosts send all their traffic through.' }));
      return;
    }
    const test = button('Test', { icon: 'test', test: 'egress-test' });
    test.addEventListener('click', () => runEgressTest(test, orig, { slot: testSlot }));
    const actions = [test];
    if (orig.tunnel_type === 'wireguard') {
      const rotate = button('Rotate WireGuard key', { icon: 'refresh', test: 'egress-rotate-wg' });
      rotate.addEventListener('click', async () => {
        const ok = await confirmDialog({ title: 'Rotate WireGuard key', message: 'Make a new key pair for egress tests? Register the new public key with the provider. Bound hosts have their own keys (see Bindings).', confirmLabel: 'Rotate' });
        if (!ok) return;
        await busy(rotate, async () => {
          try {
            orig = await post(`/v1/admin/egress-ips/${enc(orig.id)}/rotate-wg-key`);
            toast('New key pair made.');
            paintExtra();
          } catch (err) {
            toast(describeError(err), 'error');
          }
        });
      });
      actions.push(rotate);
    }
    const remove = button('Delete', { kind: 'danger', icon: 'trash', test: 'egress-delete' });
    remove.addEventListener('click', () => deleteEgress(remove, orig, () => ctx.navigate('#/egress')));
    actions.push(remove);
    replace(head, pageHeader(orig.label, { back: '#/egress', subtitle: `${egressKind(orig)} · ${orig.bound_hosts ?? 0} bound host(s)`, actions }));
  }

  function paintExtra() {
    if (!orig) return;
    replace(extra, h('div', null,
      card('Keys and state', dl([
        orig.wg_client_public_key ? ['Our public key', copyLine(orig.wg_client_public_key, { test: 'wg-client-public-key' })] : null,
        orig.wg_client_public_key ? ['', h('span', { class: 'hint' }, 'Register this key with the provider; egress tests use it. Bound hosts have their own, shown on each binding.')] : null,
        ['Observed exit IP', orig.observed_ip ? h('code', { class: 'mono' }, orig.observed_ip) : '—'],
        ['Bound hosts', String(orig.bound_hosts ?? 0)],
      ]), { test: 'egress-keys' }),
      card('Test', testSlot, { test: 'egress-test-card' })));
    if (!testSlot.firstChild) {
      replace(testSlot, orig.last_test ? testResultBlock(orig.last_test) : h('p', { class: 'muted' }, 'Not tested yet. "Test" runs the three checks through the real tunnel on an agent (up to 30 s).'));
    }
  }

  paintHead();
  paintExtra();
  ctx.view.append(head, extra, card(orig ? 'Settings' : null, form, { test: 'egress-form-card' }));
  if (orig) ctx.view.append(alert('info', 'Changes reach bound hosts at their next start.'));
}
