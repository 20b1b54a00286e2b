//! The `proxy_config` of an egress IP: a sing-box outbound of type socks, http, shadowsocks, vmess, vless or
//! trojan, as typed structs. Parsing with field paths in errors, validation, masking of secrets on read, and
//! merging of partial updates.
//!
//! Field names and value forms are those of sing-box 1.10 and later, so a parsed config serializes to a
//! valid outbound once the renderer adds its `tag`. Dial fields (`detour`, `bind_interface`, `routing_mark`,
//! ...) and `multiplex` are refused: routing belongs to the system, and letting an operator set it per
//! egress IP could steer traffic around the tunnel.

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

mod outbounds;
mod tls;

pub use outbounds::{
    HttpConfig, Network, PacketEncoding, ShadowsocksConfig, ShadowsocksMethod, ShadowsocksPlugin,
    SocksConfig, SocksVersion, TrojanConfig, UdpOverTcp, VlessConfig, VlessFlow, VmessConfig, VmessSecurity,
};
pub use tls::{
    GrpcTransport, Headers, HttpTransport, HttpUpgradeTransport, Listable, QuicTransport, Reality, Tls,
    TlsVersion, Transport, Utls, UtlsFingerprint, WsTransport,
};
use tls::{mask_headers, mask_transport};

/// What reads show in place of a secret; sent back in an update, it keeps the stored value.
pub const MASK: &str = "********";

/// The path of the config in API bodies, the root of every [`ConfigError::field`].
pub(super) const ROOT: &str = "proxy_config";

/// Keys holding credentials, in any outbound type.
const SECRET_FIELDS: [&str; 3] = ["password", "uuid", "plugin_opts"];

/// An invalid input: `field` is a dotted path such as `proxy_config.tls.server_name`. Messages never contain
/// secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub use crate::secret::Secret;

/// A sing-box outbound, tagged by `type` as in sing-box's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProxyConfig {
    Socks(SocksConfig),
    Http(HttpConfig),
    Shadowsocks(ShadowsocksConfig),
    Vmess(VmessConfig),
    Vless(VlessConfig),
    Trojan(TrojanConfig),
}

/// Deserializes and validates a `proxy_config` from an API body or the database.
pub fn parse(value: &Value) -> Result<ProxyConfig, ConfigError> {
    let config = deserialize(value)?;
    config.validate()?;
    Ok(config)
}

/// Dispatches on `type` by hand rather than through serde's tagged-enum support, which buffers the content
/// and so loses the path of any error inside it.
fn deserialize(value: &Value) -> Result<ProxyConfig, ConfigError> {
    let Value::Object(map) = value else {
        return Err(ConfigError::new(ROOT, "must be a JSON object"));
    };
    let kind = match map.get("type") {
        None => return Err(ConfigError::new(field("type"), "is required")),
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(ConfigError::new(field("type"), "must be a string")),
    };
    let mut fields = map.clone();
    fields.remove("type");
    let fields = Value::Object(fields);
    Ok(match kind {
        "socks" => ProxyConfig::Socks(from_fields(&fields)?),
        "http" => ProxyConfig::Http(from_fields(&fields)?),
        "shadowsocks" => ProxyConfig::Shadowsocks(from_fields(&fields)?),
        "vmess" => ProxyConfig::Vmess(from_fields(&fields)?),
        "vless" => ProxyConfig::Vless(from_fields(&fields)?),
        "trojan" => ProxyConfig::Trojan(from_fields(&fields)?),
        _ => {
            return Err(ConfigError::new(
                field("type"),
                "must be one of socks, http, shadowsocks, vmess, vless, trojan",
            ));
        }
    })
}

fn from_fields<T: DeserializeOwned>(fields: &Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(fields).map_err(|err| serde_error(&err))
}

fn serde_error(err: &serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let mut path = ROOT.to_owned();
    let mut last_key: Option<String> = None;
    for segment in err.path().iter() {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                path.push('.');
                path.push_str(key);
                last_key = Some(key.clone());
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    let mut message = err.inner().to_string();
    // A missing field, or an unknown one inside the tagged `transport`, is named only in the message.
    let named =
        quoted_after(&message, "unknown field `").or_else(|| quoted_after(&message, "missing field `"));
    if let Some(name) = named
        && last_key.as_deref() != Some(name)
    {
        path.push('.');
        path.push_str(name);
        last_key = Some(name.to_owned());
    }
    match last_key.as_deref() {
        // serde quotes the rejected value; for a credential that would echo it back.
        Some(key) if SECRET_FIELDS.contains(&key) && message.starts_with("invalid") => {
            message = "must be a string".to_owned();
        }
        Some("server_port") if message.starts_with("invalid") => {
            message = "must be an integer from 1 to 65535".to_owned();
        }
        _ => {}
    }
    ConfigError::new(path, message)
}

fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(name, _)| name)
}

pub(super) fn field(name: &str) -> String {
    format!("{ROOT}.{name}")
}

/// The error for a [`MASK`] with no stored secret behind it: storing it would make the placeholder the
/// real credential.
pub(super) fn mask_error(field: impl Into<String>) -> ConfigError {
    ConfigError::new(
        field,
        format!("\"{MASK}\" stands for a stored secret and none is stored; send the value"),
    )
}

impl ProxyConfig {
    /// The sing-box outbound type.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Socks(_) => "socks",
            Self::Http(_) => "http",
            Self::Shadowsocks(_) => "shadowsocks",
            Self::Vmess(_) => "vmess",
            Self::Vless(_) => "vless",
            Self::Trojan(_) => "trojan",
        }
    }

    /// The proxy server this outbound dials.
    pub fn server(&self) -> (&str, u16) {
        match self {
            Self::Socks(c) => (&c.server, c.server_port),
            Self::Http(c) => (&c.server, c.server_port),
            Self::Shadowsocks(c) => (&c.server, c.server_port),
            Self::Vmess(c) => (&c.server, c.server_port),
            Self::Vless(c) => (&c.server, c.server_port),
            Self::Trojan(c) => (&c.server, c.server_port),
        }
    }

    /// Whether the outbound reaches its server over TCP, so that a TCP connect tells whether the
    /// server is there: all but one restricted to UDP or carried over QUIC.
    pub fn dials_tcp(&self) -> bool {
        let (network, transport) = match self {
            Self::Socks(c) => (c.network, None),
            Self::Http(_) => (None, None),
            Self::Shadowsocks(c) => (c.network, None),
            Self::Vmess(c) => (c.network, c.transport.as_ref()),
            Self::Vless(c) => (c.network, c.transport.as_ref()),
            Self::Trojan(c) => (c.network, c.transport.as_ref()),
        };
        network != Some(Network::Udp) && !matches!(transport, Some(Transport::Quic(_)))
    }

    /// The same outbound dialling `server` instead (the agent puts in the address it resolved).
    #[must_use]
    pub fn with_server(&self, server: String) -> Self {
        let mut config = self.clone();
        let slot = match &mut config {
            Self::Socks(c) => &mut c.server,
            Self::Http(c) => &mut c.server,
            Self::Shadowsocks(c) => &mut c.server,
            Self::Vmess(c) => &mut c.server,
            Self::Vless(c) => &mut c.server,
            Self::Trojan(c) => &mut c.server,
        };
        *slot = server;
        config
    }

    /// Checks what the types alone cannot: addresses, credentials, key forms and combinations sing-box
    /// would refuse at start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (server, port) = self.server();
        check_dial_host(&field("server"), server)?;
        if port == 0 {
            return Err(ConfigError::new(
                field("server_port"),
                "must be an integer from 1 to 65535",
            ));
        }
        match self {
            Self::Socks(c) => c.validate(),
            Self::Http(c) => c.validate(),
            Self::Shadowsocks(c) => c.validate(),
            Self::Vmess(c) => c.validate(),
            Self::Vless(c) => c.validate(),
            Self::Trojan(c) => c.validate(),
        }
    }

    /// The config as JSON with every credential replaced by [`MASK`], for read answers.
    pub fn masked(&self) -> Value {
        // Serializing these types cannot fail: every map key is a string.
        mask_value(&serde_json::to_value(self).unwrap_or_default())
    }
}

/// Masks the credentials of a serialized outbound without parsing it, e.g. a stored config that no longer
/// parses after a schema change.
pub fn mask_value(value: &Value) -> Value {
    let mut out = value.clone();
    if let Value::Object(map) = &mut out {
        for key in SECRET_FIELDS {
            if let Some(v) = map.get_mut(key)
                && !v.is_null()
            {
                *v = Value::String(MASK.to_owned());
            }
        }
        if let Some(headers) = map.get_mut("headers") {
            mask_headers(headers);
        }
        if let Some(transport) = map.get_mut("transport") {
            mask_transport(transport);
        }
    }
    out
}

/// Applies an update to a stored `proxy_config`. A patch whose `type` differs from the stored one replaces
/// it; otherwise patch keys overwrite stored keys, recursively for objects (`transport` is again replaced
/// when its `type` changes), `null` removes a key and a string equal to [`MASK`] keeps the stored value.
/// A mask with nothing stored behind it stays in place so that validation rejects it by name.
pub fn merge(stored: &Value, patch: &Value) -> Value {
    match (stored, patch) {
        (Value::Object(stored_map), Value::Object(patch_map)) => {
            if let Some(kind) = patch_map.get("type")
                && stored_map.get("type") != Some(kind)
            {
                return patch.clone();
            }
            Value::Object(merge_objects(stored_map, patch_map))
        }
        _ => patch.clone(),
    }
}

fn merge_objects(stored: &Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    let mut out = stored.clone();
    for (key, value) in patch {
        match value {
            Value::Null => {
                out.remove(key);
            }
            Value::String(s) if s == MASK => {
                if !out.contains_key(key) {
                    out.insert(key.clone(), value.clone());
                }
            }
            Value::Object(patch_child) => {
                let merged = match out.get(key) {
                    Some(stored_child @ Value::Object(_)) if key == "transport" => merge(stored_child, value),
                    Some(Value::Object(stored_child)) => {
                        Value::Object(merge_objects(stored_child, patch_child))
                    }
                    _ => Value::Object(merge_objects(&Map::new(), patch_child)),
                };
                out.insert(key.clone(), merged);
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    out
}

/// Checks a hostname or IP address (no brackets, no port), as a proxy server, TLS server name or WireGuard
/// endpoint host.
pub(super) fn check_host(field: &str, host: &str) -> Result<(), ConfigError> {
    if host.is_empty() {
        return Err(ConfigError::new(field, "must not be empty"));
    }
    if host.len() > 253 {
        return Err(ConfigError::new(field, "must be at most 253 characters"));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(ConfigError::new(
            field,
            "must be a hostname or IP address, without spaces or slashes",
        ));
    }
    if !is_dns_name(host) {
        return Err(ConfigError::new(field, "must be an IP address or a DNS name"));
    }
    Ok(())
}

/// Checks a host to connect to: [`check_host`], and not an address no server can have (`0.0.0.0` means
/// this machine to a dialer).
pub fn check_dial_host(field: &str, host: &str) -> Result<(), ConfigError> {
    check_host(field, host)?;
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
            Err(ConfigError::new(field, "must be a unicast address"))
        }
        _ => Ok(()),
    }
}

/// Letters, digits and inner hyphens in labels of 1-63 characters. A name whose last label is all digits
/// is refused: it is a mistyped IPv4 address, not a host.
fn is_dns_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    name.split('.').all(label_ok)
        && name
            .rsplit('.')
            .next()
            .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UUID: &str = "bf000d23-0752-40b4-affe-68f7707a9661";

    /// The proxy_config examples of the seed API guide, with a real UUID for VMess.
    fn seed_examples() -> Vec<Value> {
        vec![
            json!({"type": "shadowsocks", "server": "198.51.100.5", "server_port": 8388,
                "method": "aes-256-gcm", "password": "your-password"}),
            json!({"type": "vmess", "server": "203.0.113.20", "server_port": 443,
                "uuid": UUID, "security": "auto", "alter_id": 0}),
            json!({"type": "socks", "server": "192.0.2.50", "server_port": 1080,
                "username": "user", "password": "pass"}),
            json!({"type": "trojan", "server": "203.0.113.30", "server_port": 443,
                "password": "your-password", "tls": {"enabled": true, "server_name": "your-domain.com"}}),
            json!({"type": "http", "server": "192.0.2.100", "server_port": 8080,
                "username": "user", "password": "pass"}),
        ]
    }

    #[test]
    fn tcp_dialling_is_told_by_network_and_transport() {
        let dials = |v: Value| parse(&v).unwrap().dials_tcp();
        for example in seed_examples() {
            assert!(dials(example.clone()), "{example}");
        }
        assert!(!dials(
            json!({"type": "socks", "server": "198.18.0.9", "server_port": 1080,
            "network": "udp"})
        ));
        assert!(dials(
            json!({"type": "socks", "server": "198.18.0.9", "server_port": 1080,
            "network": "tcp"})
        ));
        assert!(!dials(
            json!({"type": "vless", "server": "198.18.0.9", "server_port": 443,
            "uuid": UUID, "tls": {"enabled": true, "server_name": "a.test"},
            "transport": {"type": "quic"}})
        ));
        assert!(dials(
            json!({"type": "vless", "server": "198.18.0.9", "server_port": 443,
            "uuid": UUID, "transport": {"type": "ws", "path": "/x"}})
        ));
    }

    #[test]
    fn with_server_replaces_only_the_server() {
        for example in seed_examples() {
            let config = parse(&example).unwrap();
            let moved = config.with_server("198.18.0.9".into());
            assert_eq!(moved.server(), ("198.18.0.9", config.server().1));
            assert_eq!(moved.with_server(config.server().0.into()), config);
        }
    }

    /// One fully loaded config per type, exercising every secret.
    fn full_examples() -> Vec<Value> {
        vec![
            json!({"type": "socks", "server": "socks.example.com", "server_port": 1080, "version": "5",
                "username": "u", "password": "socks-secret", "network": "tcp", "udp_over_tcp": true}),
            json!({"type": "http", "server": "192.0.2.100", "server_port": 3128, "username": "u",
                "password": "http-secret", "path": "/",
                "headers": {"Proxy-Authorization": ["Basic aHR0cC1zZWNyZXQ="], "X-Client": ["ccp"]},
                "tls": {"enabled": true, "server_name": "proxy.example.com"}}),
            json!({"type": "shadowsocks", "server": "2001:db8::5", "server_port": 8388,
                "method": "2022-blake3-aes-128-gcm", "password": "8JCsPssfgS8tiRwiMlhARg==",
                "plugin": "obfs-local", "plugin_opts": "obfs=http;obfs-host=secret.example.com",
                "network": "udp", "udp_over_tcp": {"enabled": true, "version": 1}}),
            json!({"type": "vmess", "server": "203.0.113.20", "server_port": 443, "uuid": UUID,
                "security": "aes-128-gcm", "alter_id": 0, "global_padding": true,
                "authenticated_length": true, "tls": {"enabled": true, "server_name": "v.example.com"},
                "packet_encoding": "packetaddr",
                "transport": {"type": "ws", "path": "/ray",
                    "headers": {"Authorization": ["Bearer ws-secret"]}}}),
            json!({"type": "vless", "server": "203.0.113.40", "server_port": 443, "uuid": UUID,
                "flow": "xtls-rprx-vision", "tls": {"enabled": true, "server_name": "www.example.com",
                "utls": {"enabled": true, "fingerprint": "chrome"},
                "reality": {"enabled": true, "public_key": "jNXHt1yRo0vDuchQlIP6Z0ZvjT3KtzVI-T4E7RoLJS0",
                "short_id": "0123456789abcdef"}}, "packet_encoding": "xudp"}),
            json!({"type": "trojan", "server": "trojan.example.com", "server_port": 443,
                "password": "trojan-secret", "network": "tcp",
                "tls": {"enabled": true, "alpn": ["h2", "http/1.1"], "min_version": "1.2"},
                "transport": {"type": "grpc", "service_name": "TunService"}}),
        ]
    }

    #[test]
    fn seed_examples_parse_and_round_trip() {
        for example in seed_examples() {
            let config = parse(&example).unwrap_or_else(|e| panic!("{example}: {e}"));
            assert_eq!(serde_json::to_value(&config).unwrap(), example);
            // The derived tagged deserializer, used when reading the database, agrees with `parse`.
            assert_eq!(
                serde_json::from_value::<ProxyConfig>(example.clone()).unwrap(),
                config
            );
        }
    }

    #[test]
    fn full_examples_parse_and_round_trip() {
        for example in full_examples() {
            let config = parse(&example).unwrap_or_else(|e| panic!("{example}: {e}"));
            assert_eq!(serde_json::to_value(&config).unwrap(), example);
        }
    }

    #[test]
    fn kind_and_server() {
        let kinds: Vec<_> = full_examples().iter().map(|v| parse(v).unwrap().kind()).collect();
        assert_eq!(
            kinds,
            ["socks", "http", "shadowsocks", "vmess", "vless", "trojan"]
        );
        let config = parse(&seed_examples()[0]).unwrap();
        assert_eq!(config.server(), ("198.51.100.5", 8388));
    }

    fn error_of(value: Value) -> ConfigError {
        parse(&value).expect_err(&value.to_string())
    }

    #[test]
    fn type_problems_name_the_type_field() {
        assert_eq!(error_of(json!("socks")).field, "proxy_config");
        assert_eq!(
            error_of(json!({"server": "a.example", "server_port": 1})).field,
            "proxy_config.type"
        );
        assert_eq!(error_of(json!({"type": 5})).field, "proxy_config.type");
        let err = error_of(json!({"type": "wireguard", "server": "a.example", "server_port": 1}));
        assert_eq!(err.field, "proxy_config.type");
        assert!(err.message.contains("socks, http"), "{}", err.message);
    }

    #[test]
    fn serde_errors_carry_the_path() {
        let base = json!({"type": "trojan", "server": "t.example.com", "server_port": 443, "password": "p"});
        let with = |key: &str, value: Value| {
            let mut v = base.clone();
            v[key] = value;
            v
        };
        let cases = [
            (with("foo", json!(1)), "proxy_config.foo"),
            (with("server_port", json!("443")), "proxy_config.server_port"),
            (with("server_port", json!(70000)), "proxy_config.server_port"),
            (with("tls", json!({"enabled": "yes"})), "proxy_config.tls.enabled"),
            (with("tls", json!({"bogus": true})), "proxy_config.tls.bogus"),
            (
                with("tls", json!({"alpn": ["h2", 3]})),
                "proxy_config.tls.alpn[1]",
            ),
            (
                with("transport", json!({"type": "ws", "bogus": 1})),
                "proxy_config.transport.bogus",
            ),
            (
                with("transport", json!({"type": "carrier-pigeon"})),
                "proxy_config.transport.type",
            ),
            (with("network", json!("sctp")), "proxy_config.network"),
        ];
        for (input, field) in cases {
            let err = error_of(input.clone());
            assert_eq!(err.field, field, "{input}: {err}");
        }
        let mut missing = base.clone();
        missing.as_object_mut().unwrap().remove("password");
        assert_eq!(error_of(missing).field, "proxy_config.password");
        assert_eq!(
            error_of(with("server_port", json!(0))).message,
            "must be an integer from 1 to 65535"
        );
    }

    #[test]
    fn errors_never_echo_secrets() {
        let err = error_of(
            json!({"type": "trojan", "server": "t.example.com", "server_port": 443,
            "password": 918273645}),
        );
        assert_eq!(err.field, "proxy_config.password");
        assert!(!err.to_string().contains("918273645"), "{err}");
        let err = error_of(
            json!({"type": "shadowsocks", "server": "s.example.com", "server_port": 1,
            "method": "2022-blake3-aes-256-gcm", "password": "hunter2-hunter2"}),
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn server_must_be_a_host_or_ip() {
        for bad in [
            "",
            "a b.example",
            "http://x.example",
            "x.example/",
            "[2001:db8::1]",
            "-a.example",
            "a..example",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "1.2.3.999",
            "exa_mple.com",
        ] {
            let err = error_of(json!({"type": "socks", "server": bad, "server_port": 1080}));
            assert_eq!(err.field, "proxy_config.server", "{bad:?}");
        }
        let long = format!("{}.example", "a".repeat(250));
        assert_eq!(
            error_of(json!({"type": "socks", "server": long, "server_port": 1})).field,
            "proxy_config.server"
        );
        for ok in [
            "192.0.2.1",
            "2001:db8::1",
            "proxy.example.com",
            "localhost",
            "xn--bcher-kva.example",
        ] {
            parse(&json!({"type": "socks", "server": ok, "server_port": 1080})).unwrap();
        }
    }

    #[test]
    fn mask_hides_every_secret_and_nothing_else() {
        let secrets = [
            "socks-secret",
            "http-secret",
            "aHR0cC1zZWNyZXQ",
            "8JCsPssfgS8tiRwiMlhARg",
            "secret.example.com",
            UUID,
            "ws-secret",
            "trojan-secret",
        ];
        for example in full_examples() {
            let config = parse(&example).unwrap();
            let masked = config.masked();
            let text = masked.to_string();
            for secret in secrets {
                assert!(!text.contains(secret), "{secret} leaked in {text}");
            }
            // Undo exactly the expected replacements: what remains must equal the input.
            let mut expected = example.clone();
            for key in SECRET_FIELDS {
                if expected.get(key).is_some() {
                    expected[key] = json!(MASK);
                }
            }
            if expected.get("headers").is_some() {
                expected["headers"]["Proxy-Authorization"] = json!(MASK);
            }
            if expected.pointer("/transport/headers").is_some() {
                expected["transport"]["headers"]["Authorization"] = json!(MASK);
            }
            assert_eq!(masked, expected);
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let config = parse(&full_examples()[5]).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("trojan-secret"), "{debug}");
        assert!(debug.contains(MASK));
    }

    #[test]
    fn merge_partial_update_keeps_other_fields() {
        let stored = full_examples()[5].clone();
        let merged = merge(
            &stored,
            &json!({"server_port": 8443, "tls": {"server_name": "new.example.com"}}),
        );
        assert_eq!(merged["server_port"], 8443);
        assert_eq!(merged["tls"]["server_name"], "new.example.com");
        assert_eq!(merged["tls"]["alpn"], json!(["h2", "http/1.1"]));
        assert_eq!(merged["password"], "trojan-secret");
        parse(&merged).unwrap();
    }

    #[test]
    fn merge_same_type_is_a_merge() {
        let stored = seed_examples()[2].clone();
        let merged = merge(&stored, &json!({"type": "socks", "server_port": 1081}));
        assert_eq!(merged["password"], "pass");
        assert_eq!(merged["server_port"], 1081);
    }

    #[test]
    fn merge_type_change_replaces() {
        let stored = full_examples()[5].clone();
        let patch = json!({"type": "socks", "server": "192.0.2.9", "server_port": 1080});
        assert_eq!(merge(&stored, &patch), patch);
        // A mask cannot carry a secret across types: it stays and validation names it.
        let patch = json!({"type": "shadowsocks", "server": "192.0.2.9", "server_port": 8388,
            "method": "aes-128-gcm", "password": MASK});
        let err = parse(&merge(&stored, &patch)).unwrap_err();
        assert_eq!(err.field, "proxy_config.password");
    }

    #[test]
    fn merge_mask_keeps_the_stored_secret() {
        let stored = full_examples()[3].clone();
        let masked = parse(&stored).unwrap().masked();
        // Sending a read answer back unchanged is a no-op.
        assert_eq!(merge(&stored, &masked), stored);
        let merged = merge(&stored, &json!({"uuid": MASK, "security": "none"}));
        assert_eq!(merged["uuid"], UUID);
        assert_eq!(merged["security"], "none");
        // A mask with nothing stored behind it is refused, not stored as the password.
        let merged = merge(
            &seed_examples()[1],
            &json!({"tls": {"enabled": true}, "password": MASK}),
        );
        assert!(parse(&merged).is_err());
        let socks = merge(
            &json!({"type": "socks", "server": "a.example", "server_port": 1}),
            &json!({"username": "u", "password": MASK}),
        );
        assert_eq!(parse(&socks).unwrap_err(), mask_error(field("password")));
    }

    #[test]
    fn merge_null_removes() {
        let stored = full_examples()[0].clone();
        let merged = merge(
            &stored,
            &json!({"username": null, "password": null, "udp_over_tcp": null}),
        );
        assert!(merged.get("username").is_none());
        assert!(merged.get("password").is_none());
        assert!(merged.get("udp_over_tcp").is_none());
        parse(&merged).unwrap();
        // Nested too, and nulls inside a new object are dropped.
        let stored = full_examples()[5].clone();
        let merged = merge(&stored, &json!({"tls": {"alpn": null}, "transport": null}));
        assert!(merged["tls"].get("alpn").is_none());
        assert!(merged.get("transport").is_none());
        let merged = merge(
            &seed_examples()[2],
            &json!({"udp_over_tcp": {"enabled": true, "version": null}}),
        );
        assert_eq!(merged["udp_over_tcp"], json!({"enabled": true}));
    }

    #[test]
    fn merge_transport_type_change_replaces_the_transport() {
        let stored = full_examples()[3].clone();
        let merged = merge(
            &stored,
            &json!({"transport": {"type": "grpc", "service_name": "svc"}}),
        );
        assert_eq!(
            merged["transport"],
            json!({"type": "grpc", "service_name": "svc"})
        );
        parse(&merged).unwrap();
        let merged = merge(&stored, &json!({"transport": {"path": "/other"}}));
        assert_eq!(merged["transport"]["type"], "ws");
        assert_eq!(merged["transport"]["path"], "/other");
        assert_eq!(
            merged["transport"]["headers"]["Authorization"],
            json!(["Bearer ws-secret"])
        );
        // A masked credential header cannot survive a transport type change as a literal value.
        let merged = merge(
            &stored,
            &json!({"transport": {"type": "httpupgrade", "headers": {"Authorization": MASK}}}),
        );
        assert_eq!(
            parse(&merged).unwrap_err().field,
            "proxy_config.transport.headers.Authorization"
        );
    }

    #[test]
    fn merge_of_non_objects_takes_the_patch() {
        assert_eq!(
            merge(&Value::Null, &json!({"type": "socks"})),
            json!({"type": "socks"})
        );
        assert_eq!(merge(&json!({"type": "socks"}), &json!(5)), json!(5));
    }
}
