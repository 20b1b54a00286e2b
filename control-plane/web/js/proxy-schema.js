// The fields of each sing-box outbound type a proxy egress IP accepts, as
// the server validates them (control-plane/src/egress/proxy_outbounds.rs and
// proxy_tls.rs). Each field's `path` is relative to proxy_config; inputs are
// named `proxy_config.<path>` so the server's error `field` finds them.
//
// kinds: text, int, secret, bool, select, list (comma-separated → array),
// lines (one per line → array), headers ("Name: value" lines → object), uot.

const NETWORK = { path: 'network', label: 'Network', kind: 'select', options: [['', 'TCP and UDP'], ['tcp', 'TCP only'], ['udp', 'UDP only']] };
const UOT = { path: 'udp_over_tcp', label: 'UDP over TCP', kind: 'uot', hint: 'Carry UDP inside the TCP connection (sing-box UoT).' };
const PACKET_ENCODING = { path: 'packet_encoding', label: 'Packet encoding', kind: 'select', options: [['', 'Default'], ['xudp', 'xudp'], ['packetaddr', 'packetaddr']] };

export const SS_METHODS = [
  '2022-blake3-aes-128-gcm', '2022-blake3-aes-256-gcm', '2022-blake3-chacha20-poly1305', 'aes-128-gcm', 'aes-192-gcm',
  'aes-256-gcm', 'chacha20-ietf-poly1305', 'xchacha20-ietf-poly1305', 'none', 'aes-128-ctr', 'aes-192-ctr', 'aes-256-ctr',
  'aes-128-cfb', 'aes-192-cfb', 'aes-256-cfb', 'rc4-md5', 'chacha20-ietf', 'xchacha20',
];

export const UTLS_FINGERPRINTS = ['chrome', 'chrome_psk', 'chrome_psk_shuffle', 'chrome_padding_psk_shuffle', 'chrome_pq', 'chrome_pq_psk', 'firefox', 'edge', 'safari', '360', 'qq', 'ios', 'android', 'random', 'randomized'];

const TLS_VERSIONS = [['', 'Default'], ['1.0', '1.0'], ['1.1', '1.1'], ['1.2', '1.2'], ['1.3', '1.3']];

export const TLS_FIELDS = [
  { path: 'tls.enabled', label: 'Use TLS', kind: 'bool' },
  { path: 'tls.server_name', label: 'Server name (SNI)', kind: 'text', placeholder: 'proxy.example.com' },
  { path: 'tls.insecure', label: 'Skip certificate verification (insecure)', kind: 'bool' },
  { path: 'tls.disable_sni', label: 'Do not send SNI', kind: 'bool' },
  { path: 'tls.alpn', label: 'ALPN', kind: 'list', placeholder: 'h2, http/1.1', hint: 'Comma-separated.' },
  { path: 'tls.min_version', label: 'Min TLS version', kind: 'select', options: TLS_VERSIONS },
  { path: 'tls.max_version', label: 'Max TLS version', kind: 'select', options: TLS_VERSIONS },
  { path: 'tls.certificate', label: 'Trusted certificate (PEM)', kind: 'lines', rows: 4, placeholder: '-----BEGIN CERTIFICATE-----', hint: 'Trusted instead of the system roots. Optional.', span: 2 },
  { path: 'tls.utls.enabled', label: 'uTLS (imitate a browser ClientHello)', kind: 'bool' },
  { path: 'tls.utls.fingerprint', label: 'uTLS fingerprint', kind: 'select', options: [['', 'Default'], ...UTLS_FINGERPRINTS.map((f) => [f, f])] },
  { path: 'tls.reality.enabled', label: 'REALITY', kind: 'bool', hint: 'Needs TLS and uTLS on.' },
  { path: 'tls.reality.public_key', label: 'REALITY public key', kind: 'text', mono: true, hint: '43 characters, unpadded URL-safe base64.' },
  { path: 'tls.reality.short_id', label: 'REALITY short id', kind: 'text', mono: true, hint: 'Hex, up to 16 digits.' },
];

export const TRANSPORT_TYPES = [['', 'None (plain TCP)'], ['ws', 'WebSocket'], ['http', 'HTTP'], ['grpc', 'gRPC'], ['httpupgrade', 'HTTPUpgrade'], ['quic', 'QUIC']];

export const TRANSPORT_FIELDS = {
  ws: [
    { path: 'transport.path', label: 'Path', kind: 'text', placeholder: '/ray' },
    { path: 'transport.max_early_data', label: 'Max early data', kind: 'int' },
    { path: 'transport.early_data_header_name', label: 'Early data header', kind: 'text', placeholder: 'Sec-WebSocket-Protocol' },
    { path: 'transport.headers', label: 'Headers', kind: 'headers', span: 2 },
  ],
  http: [
    { path: 'transport.host', label: 'Hosts', kind: 'list', hint: 'Comma-separated.' },
    { path: 'transport.path', label: 'Path', kind: 'text' },
    { path: 'transport.method', label: 'Method', kind: 'text', placeholder: 'PUT' },
    { path: 'transport.idle_timeout', label: 'Idle timeout', kind: 'text', placeholder: '15s' },
    { path: 'transport.ping_timeout', label: 'Ping timeout', kind: 'text', placeholder: '15s' },
    { path: 'transport.headers', label: 'Headers', kind: 'headers', span: 2 },
  ],
  grpc: [
    { path: 'transport.service_name', label: 'Service name', kind: 'text' },
    { path: 'transport.idle_timeout', label: 'Idle timeout', kind: 'text', placeholder: '15s' },
    { path: 'transport.ping_timeout', label: 'Ping timeout', kind: 'text', placeholder: '15s' },
    { path: 'transport.permit_without_stream', label: 'Keepalive without streams', kind: 'bool' },
  ],
  httpupgrade: [
    { path: 'transport.host', label: 'Host', kind: 'text' },
    { path: 'transport.path', label: 'Path', kind: 'text' },
    { path: 'transport.headers', label: 'Headers', kind: 'headers', span: 2 },
  ],
  quic: [],
};

export const PROXY_TYPES = [['socks', 'SOCKS'], ['http', 'HTTP'], ['shadowsocks', 'Shadowsocks'], ['vmess', 'VMess'], ['vless', 'VLESS'], ['trojan', 'Trojan']];

/** Per type: its own fields (after server and port), and whether it takes tls / transport. */
export const TYPES = {
  socks: {
    fields: [
      { path: 'version', label: 'Version', kind: 'select', options: [['', '5 (default)'], ['5', '5'], ['4a', '4a'], ['4', '4']] },
      NETWORK,
      { path: 'username', label: 'Username', kind: 'text', autocomplete: 'off' },
      { path: 'password', label: 'Password', kind: 'secret' },
      UOT,
    ],
  },
  http: {
    fields: [
      { path: 'username', label: 'Username', kind: 'text' },
      { path: 'password', label: 'Password', kind: 'secret' },
      { path: 'path', label: 'Path', kind: 'text', placeholder: '/' },
      { path: 'headers', label: 'Headers', kind: 'headers', span: 2 },
    ],
    tls: true,
  },
  shadowsocks: {
    fields: [
      { path: 'method', label: 'Method', kind: 'select', required: true, options: SS_METHODS.map((m) => [m, m]) },
      { path: 'password', label: 'Password', kind: 'secret', hint: '2022 methods take a base64 key of the method\'s length.' },
      { path: 'plugin', label: 'Plugin', kind: 'select', options: [['', 'None'], ['obfs-local', 'obfs-local'], ['v2ray-plugin', 'v2ray-plugin']] },
      { path: 'plugin_opts', label: 'Plugin options', kind: 'secret', placeholder: 'obfs=http;obfs-host=…' },
      NETWORK,
      UOT,
    ],
  },
  vmess: {
    fields: [
      { path: 'uuid', label: 'UUID', kind: 'secret', required: true, mono: true },
      { path: 'security', label: 'Security', kind: 'select', options: [['', 'auto (default)'], ['auto', 'auto'], ['none', 'none'], ['zero', 'zero'], ['aes-128-gcm', 'aes-128-gcm'], ['chacha20-poly1305', 'chacha20-poly1305'], ['aes-128-cfb', 'aes-128-cfb']] },
      { path: 'alter_id', label: 'Alter ID', kind: 'int', placeholder: '0' },
      NETWORK,
      PACKET_ENCODING,
      { path: 'global_padding', label: 'Global padding', kind: 'bool' },
      { path: 'authenticated_length', label: 'Authenticated length', kind: 'bool' },
    ],
    tls: true,
    transport: true,
  },
  vless: {
    fields: [
      { path: 'uuid', label: 'UUID', kind: 'secret', required: true, mono: true },
      { path: 'flow', label: 'Flow', kind: 'select', options: [['', 'None'], ['xtls-rprx-vision', 'xtls-rprx-vision']], hint: 'Vision needs TLS and no transport.' },
      NETWORK,
      PACKET_ENCODING,
    ],
    tls: true,
    transport: true,
  },
  trojan: {
    fields: [
      { path: 'password', label: 'Password', kind: 'secret', required: true },
      NETWORK,
    ],
    tls: true,
    transport: true,
  },
};

export const MASK = '********';
const SECRET_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie']);

// ---- Reading values from a config, writing them into one ----

export function getPath(obj, path) {
  let cur = obj;
  for (const part of path.split('.')) {
    if (cur === null || cur === undefined || typeof cur !== 'object') return undefined;
    cur = cur[part];
  }
  return cur;
}

export function setPath(obj, path, value) {
  const parts = path.split('.');
  let cur = obj;
  for (let i = 0; i < parts.length - 1; i += 1) {
    if (typeof cur[parts[i]] !== 'object' || cur[parts[i]] === null) cur[parts[i]] = {};
    cur = cur[parts[i]];
  }
  cur[parts[parts.length - 1]] = value;
}

/** A config value → the text or boolean its input shows. */
export function toInput(kind, value) {
  if (value === undefined || value === null) return kind === 'bool' ? false : '';
  switch (kind) {
    case 'bool': return !!value;
    case 'list': return Array.isArray(value) ? value.join(', ') : String(value);
    case 'lines': return Array.isArray(value) ? value.join('\n') : String(value);
    case 'headers': return headersToText(value);
    case 'uot': return typeof value === 'object' ? { enabled: !!value.enabled, version: value.version ? String(value.version) : '' } : { enabled: !!value, version: '' };
    default: return String(value);
  }
}

/** An input's text → the config value, or undefined to leave it out. */
export function fromInput(kind, raw) {
  switch (kind) {
    case 'bool': return raw ? true : undefined;
    case 'int': {
      const s = String(raw ?? '').trim();
      if (!s) return undefined;
      return /^-?\d+$/.test(s) ? Number(s) : s;
    }
    case 'list': {
      const items = String(raw ?? '').split(',').map((x) => x.trim()).filter(Boolean);
      return items.length ? items : undefined;
    }
    case 'lines': {
      const items = String(raw ?? '').split(/\r?\n/).map((x) => x.trimEnd()).filter((x) => x.trim());
      return items.length ? items : undefined;
    }
    case 'headers': return textToHeaders(raw);
    case 'uot': {
      if (!raw || !raw.enabled) return undefined;
      return raw.version ? { enabled: true, version: Number(raw.version) } : true;
    }
    case 'secret': {
      const s = String(raw ?? '');
      return s === '' ? undefined : s;
    }
    default: {
      const s = String(raw ?? '').trim();
      return s === '' ? undefined : s;
    }
  }
}

function headersToText(headers) {
  if (!headers || typeof headers !== 'object') return '';
  const lines = [];
  for (const [name, values] of Object.entries(headers)) {
    const list = Array.isArray(values) ? values : [values];
    for (const v of list) lines.push(`${name}: ${v}`);
  }
  return lines.join('\n');
}

function textToHeaders(text) {
  const out = {};
  for (const line of String(text ?? '').split(/\r?\n/)) {
    if (!line.trim()) continue;
    const i = line.indexOf(':');
    const name = (i < 0 ? line : line.slice(0, i)).trim();
    const value = i < 0 ? '' : line.slice(i + 1).trim();
    (out[name] ||= []).push(value);
  }
  for (const [name, values] of Object.entries(out)) {
    // A masked credential header goes back as the bare mask, which the
    // server reads as "keep the stored value".
    if (SECRET_HEADERS.has(name.toLowerCase()) && values.length === 1 && values[0] === MASK) out[name] = MASK;
  }
  return Object.keys(out).length ? out : undefined;
}

/**
 * For an update of a config of the same type: adds `null` for every key the
 * stored (masked) config has and the new one lacks, so the server's merge
 * removes them.
 */
export function withRemovals(stored, next) {
  if (!stored || typeof stored !== 'object' || Array.isArray(stored)) return next;
  const out = { ...next };
  for (const [k, v] of Object.entries(stored)) {
    if (!(k in out)) out[k] = null;
    else if (v && typeof v === 'object' && !Array.isArray(v) && out[k] && typeof out[k] === 'object' && !Array.isArray(out[k])) {
      // A transport whose type changes is replaced whole by the server.
      if (k === 'transport' && v.type !== out[k].type) continue;
      out[k] = withRemovals(v, out[k]);
    }
  }
  return out;
}
