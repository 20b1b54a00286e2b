//! The six sing-box outbound types a `proxy_config` may take, with the checks each needs beyond its types.

use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::tls::{Headers, Tls, Transport, check_tls_for_transport, validate_headers};
use super::{ConfigError, MASK, ROOT, Secret, field, mask_error};

/// The network an outbound carries; both when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocksVersion {
    #[serde(rename = "4")]
    V4,
    #[serde(rename = "4a")]
    V4a,
    #[serde(rename = "5")]
    V5,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocksConfig {
    pub server: String,
    pub server_port: u16,
    /// SOCKS5 when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<SocksVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_over_tcp: Option<UdpOverTcp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub server: String,
    pub server_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShadowsocksMethod {
    #[serde(rename = "2022-blake3-aes-128-gcm")]
    Blake3Aes128Gcm,
    #[serde(rename = "2022-blake3-aes-256-gcm")]
    Blake3Aes256Gcm,
    #[serde(rename = "2022-blake3-chacha20-poly1305")]
    Blake3Chacha20Poly1305,
    #[serde(rename = "none")]
    None,
    #[serde(rename = "aes-128-gcm")]
    Aes128Gcm,
    #[serde(rename = "aes-192-gcm")]
    Aes192Gcm,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    #[serde(rename = "chacha20-ietf-poly1305")]
    Chacha20IetfPoly1305,
    #[serde(rename = "xchacha20-ietf-poly1305")]
    Xchacha20IetfPoly1305,
    // Stream ciphers sing-box still lists as legacy methods, for old servers.
    #[serde(rename = "aes-128-ctr")]
    Aes128Ctr,
    #[serde(rename = "aes-192-ctr")]
    Aes192Ctr,
    #[serde(rename = "aes-256-ctr")]
    Aes256Ctr,
    #[serde(rename = "aes-128-cfb")]
    Aes128Cfb,
    #[serde(rename = "aes-192-cfb")]
    Aes192Cfb,
    #[serde(rename = "aes-256-cfb")]
    Aes256Cfb,
    #[serde(rename = "rc4-md5")]
    Rc4Md5,
    #[serde(rename = "chacha20-ietf")]
    Chacha20Ietf,
    #[serde(rename = "xchacha20")]
    Xchacha20,
}

impl ShadowsocksMethod {
    /// Key length of the Shadowsocks 2022 methods, whose password is base64 keys rather than a passphrase.
    pub fn key_len_2022(self) -> Option<usize> {
        match self {
            Self::Blake3Aes128Gcm => Some(16),
            Self::Blake3Aes256Gcm | Self::Blake3Chacha20Poly1305 => Some(32),
            _ => None,
        }
    }
}

/// The SIP003 plugins sing-box implements internally; it runs no external plugin binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShadowsocksPlugin {
    #[serde(rename = "obfs-local")]
    ObfsLocal,
    #[serde(rename = "v2ray-plugin")]
    V2rayPlugin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowsocksConfig {
    pub server: String,
    pub server_port: u16,
    pub method: ShadowsocksMethod,
    /// Required except with method `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<ShadowsocksPlugin>,
    /// Plugin options; treated as a secret since obfuscation hosts and keys live there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_opts: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_over_tcp: Option<UdpOverTcp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmessSecurity {
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "none")]
    None,
    #[serde(rename = "zero")]
    Zero,
    #[serde(rename = "aes-128-gcm")]
    Aes128Gcm,
    #[serde(rename = "chacha20-poly1305")]
    Chacha20Poly1305,
    /// The legacy cipher. sing-box's docs call it `aes-128-ctr`, but sing-vmess accepts only this name.
    #[serde(rename = "aes-128-cfb")]
    Aes128Cfb,
}

/// UDP packet encoding of VMess and VLESS; `""` turns it off (VLESS uses xudp when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PacketEncoding {
    #[serde(rename = "")]
    Disabled,
    #[serde(rename = "packetaddr")]
    Packetaddr,
    #[serde(rename = "xudp")]
    Xudp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmessConfig {
    pub server: String,
    pub server_port: u16,
    pub uuid: Secret,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<VmessSecurity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alter_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_padding: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authenticated_length: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_encoding: Option<PacketEncoding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VlessFlow {
    #[serde(rename = "")]
    None,
    #[serde(rename = "xtls-rprx-vision")]
    XtlsRprxVision,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlessConfig {
    pub server: String,
    pub server_port: u16,
    pub uuid: Secret,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<VlessFlow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_encoding: Option<PacketEncoding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrojanConfig {
    pub server: String,
    pub server_port: u16,
    pub password: Secret,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
}

/// sing-box's UDP-over-TCP setting: `true`/`false`, or `{"enabled", "version"}` to pick protocol 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpOverTcp {
    pub enabled: bool,
    pub version: Option<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UdpOverTcpObject {
    #[serde(default)]
    enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u8>,
}

impl Serialize for UdpOverTcp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.version {
            None => serializer.serialize_bool(self.enabled),
            Some(version) => UdpOverTcpObject {
                enabled: self.enabled,
                version: Some(version),
            }
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for UdpOverTcp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UotVisitor;

        impl<'de> Visitor<'de> for UotVisitor {
            type Value = UdpOverTcp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean or an object {\"enabled\", \"version\"}")
            }

            fn visit_bool<E: de::Error>(self, enabled: bool) -> Result<UdpOverTcp, E> {
                Ok(UdpOverTcp {
                    enabled,
                    version: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UdpOverTcp, A::Error> {
                let object = UdpOverTcpObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(UdpOverTcp {
                    enabled: object.enabled,
                    version: object.version,
                })
            }
        }

        deserializer.deserialize_any(UotVisitor)
    }
}

impl SocksConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(password) = &self.password {
            check_secret("password", password)?;
            // RFC 1929 carries each credential in a length byte.
            if password.expose().len() > 255 {
                return Err(ConfigError::new(field("password"), "must be at most 255 bytes"));
            }
            if matches!(self.version, Some(SocksVersion::V4 | SocksVersion::V4a)) {
                return Err(ConfigError::new(
                    field("password"),
                    "SOCKS4 has no password; use version 5",
                ));
            }
            if self.username.is_none() {
                return Err(ConfigError::new(field("username"), "is required with a password"));
            }
        }
        if let Some(username) = &self.username
            && (username.is_empty() || username.len() > 255)
        {
            return Err(ConfigError::new(field("username"), "must be 1-255 bytes"));
        }
        check_udp_over_tcp(self.udp_over_tcp)
    }
}

impl HttpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(password) = &self.password {
            check_secret("password", password)?;
            if self.username.is_none() {
                return Err(ConfigError::new(field("username"), "is required with a password"));
            }
        }
        // Basic authentication joins the two with a colon (RFC 7617), so the username cannot hold one.
        if let Some(username) = &self.username
            && (username.is_empty() || username.contains(':') || username.chars().any(char::is_control))
        {
            return Err(ConfigError::new(
                field("username"),
                "must be non-empty and contain no colon",
            ));
        }
        if let Some(path) = &self.path
            && path.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::new(field("path"), "must contain no spaces"));
        }
        validate_headers(ROOT, self.headers.as_ref())?;
        if let Some(tls) = &self.tls {
            tls.validate(&field("tls"))?;
        }
        Ok(())
    }
}

impl ShadowsocksConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match (&self.password, self.method) {
            (Some(password), method) => {
                check_secret("password", password)?;
                if let Some(key_len) = method.key_len_2022() {
                    check_2022_keys(method, key_len, password.expose())?;
                }
            }
            (None, ShadowsocksMethod::None) => {}
            (None, _) => return Err(ConfigError::new(field("password"), "is required by this method")),
        }
        if let Some(opts) = &self.plugin_opts {
            if self.plugin.is_none() {
                return Err(ConfigError::new(field("plugin"), "is required with plugin_opts"));
            }
            if opts.expose() == MASK {
                return Err(mask_error(field("plugin_opts")));
            }
        }
        check_udp_over_tcp(self.udp_over_tcp)
    }
}

/// A 2022 password is one base64 key, or identity keys and the user key joined by `:`; sing-box refuses a
/// key of the wrong length at start.
fn check_2022_keys(method: ShadowsocksMethod, key_len: usize, password: &str) -> Result<(), ConfigError> {
    let keys: Vec<&str> = password.split(':').collect();
    if method == ShadowsocksMethod::Blake3Chacha20Poly1305 && keys.len() > 1 {
        return Err(ConfigError::new(
            field("password"),
            "2022-blake3-chacha20-poly1305 takes a single key, without identity keys",
        ));
    }
    let engine = &base64::engine::general_purpose::STANDARD;
    if keys
        .iter()
        .any(|key| engine.decode(key).map(|k| k.len()) != Ok(key_len))
    {
        return Err(ConfigError::new(
            field("password"),
            format!(
                "this method needs a base64 key of {key_len} bytes, or several joined by ':' \
                 (`sing-box generate rand --base64 {key_len}` makes one)"
            ),
        ));
    }
    Ok(())
}

impl VmessConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_uuid(&self.uuid)?;
        validate_tls_and_transport(self.tls.as_ref(), self.transport.as_ref())
    }
}

impl VlessConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_uuid(&self.uuid)?;
        if self.flow == Some(VlessFlow::XtlsRprxVision) {
            // Vision splices the inner TLS stream and so needs TLS directly over TCP.
            if !self.tls.as_ref().is_some_and(Tls::is_enabled) {
                return Err(ConfigError::new(
                    field("tls.enabled"),
                    "must be true with flow xtls-rprx-vision",
                ));
            }
            if self.transport.is_some() {
                return Err(ConfigError::new(
                    field("transport"),
                    "must be absent with flow xtls-rprx-vision",
                ));
            }
        }
        validate_tls_and_transport(self.tls.as_ref(), self.transport.as_ref())
    }
}

impl TrojanConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_secret("password", &self.password)?;
        validate_tls_and_transport(self.tls.as_ref(), self.transport.as_ref())
    }
}

fn validate_tls_and_transport(tls: Option<&Tls>, transport: Option<&Transport>) -> Result<(), ConfigError> {
    if let Some(tls) = tls {
        tls.validate(&field("tls"))?;
    }
    if let Some(transport) = transport {
        transport.validate(&field("transport"))?;
    }
    check_tls_for_transport(ROOT, tls, transport)
}

fn check_uuid(uuid: &Secret) -> Result<(), ConfigError> {
    check_secret("uuid", uuid)?;
    if uuid::Uuid::try_parse(uuid.expose()).is_err() {
        return Err(ConfigError::new(
            field("uuid"),
            "must be a UUID such as bf000d23-0752-40b4-affe-68f7707a9661",
        ));
    }
    Ok(())
}

/// A credential must be non-empty, and never the mask itself: storing it would turn the placeholder into
/// the real password.
fn check_secret(name: &str, secret: &Secret) -> Result<(), ConfigError> {
    if secret.expose().is_empty() {
        return Err(ConfigError::new(field(name), "must not be empty"));
    }
    if secret.expose() == MASK {
        return Err(mask_error(field(name)));
    }
    Ok(())
}

fn check_udp_over_tcp(uot: Option<UdpOverTcp>) -> Result<(), ConfigError> {
    match uot.and_then(|u| u.version) {
        Some(version) if version != 1 && version != 2 => {
            Err(ConfigError::new(field("udp_over_tcp.version"), "must be 1 or 2"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::proxy::parse;

    const UUID: &str = "bf000d23-0752-40b4-affe-68f7707a9661";

    /// `base` with `changes` applied (a null removes the key).
    fn with(base: &Value, changes: Value) -> Value {
        let mut out = base.clone();
        for (key, value) in changes.as_object().unwrap() {
            if value.is_null() {
                out.as_object_mut().unwrap().remove(key);
            } else {
                out[key] = value.clone();
            }
        }
        out
    }

    fn assert_rejected(base: &Value, cases: &[(Value, &str)]) {
        parse(base).unwrap();
        for (changes, field) in cases {
            let input = with(base, changes.clone());
            let err = parse(&input).expect_err(&input.to_string());
            assert_eq!(err.field, *field, "{input}: {err}");
        }
    }

    #[test]
    fn socks_rejects() {
        let base = json!({"type": "socks", "server": "192.0.2.50", "server_port": 1080,
            "username": "user", "password": "pass"});
        assert_rejected(
            &base,
            &[
                (json!({"version": "6"}), "proxy_config.version"),
                (json!({"version": 5}), "proxy_config.version"),
                (json!({"version": "4"}), "proxy_config.password"),
                (json!({"username": null}), "proxy_config.username"),
                (json!({"username": ""}), "proxy_config.username"),
                (json!({"password": "x".repeat(256)}), "proxy_config.password"),
                (json!({"server_port": -1}), "proxy_config.server_port"),
                (
                    json!({"udp_over_tcp": {"enabled": true, "version": 3}}),
                    "proxy_config.udp_over_tcp.version",
                ),
                (
                    json!({"udp_over_tcp": {"enabled": true, "mode": 1}}),
                    "proxy_config.udp_over_tcp.mode",
                ),
                (json!({"users": []}), "proxy_config.users"),
            ],
        );
        // SOCKS4 with a user id only, and no authentication at all, are fine.
        parse(&with(&base, json!({"version": "4a", "password": null}))).unwrap();
        parse(&with(&base, json!({"username": null, "password": null}))).unwrap();
    }

    #[test]
    fn http_rejects() {
        let base = json!({"type": "http", "server": "192.0.2.100", "server_port": 8080,
            "username": "user", "password": "pass"});
        assert_rejected(
            &base,
            &[
                (json!({"password": ""}), "proxy_config.password"),
                (json!({"username": "a:b"}), "proxy_config.username"),
                (json!({"headers": {"X-A": "1\n2"}}), "proxy_config.headers.X-A"),
                (json!({"headers": {"X-A": 1}}), "proxy_config.headers.X-A"),
                (
                    json!({"tls": {"enabled": true, "server_name": "a b"}}),
                    "proxy_config.tls.server_name",
                ),
                (json!({"path": "/a b"}), "proxy_config.path"),
                (json!({"tag": "out"}), "proxy_config.tag"),
            ],
        );
    }

    #[test]
    fn shadowsocks_rejects() {
        let base = json!({"type": "shadowsocks", "server": "198.51.100.5", "server_port": 8388,
            "method": "aes-256-gcm", "password": "your-password"});
        let key16 = "8JCsPssfgS8tiRwiMlhARg==";
        let key32 = "UuMBgl7MXTPx9inmQp2UC7Jcnwc6XYbwDNebonM+FCc=";
        assert_rejected(
            &base,
            &[
                (json!({"method": "aes-256-cfb8"}), "proxy_config.method"),
                (json!({"method": null}), "proxy_config.method"),
                (json!({"password": null}), "proxy_config.password"),
                (
                    json!({"method": "2022-blake3-aes-128-gcm"}),
                    "proxy_config.password",
                ),
                (
                    json!({"method": "2022-blake3-aes-256-gcm", "password": key16}),
                    "proxy_config.password",
                ),
                (
                    json!({"method": "2022-blake3-chacha20-poly1305",
                        "password": format!("{key32}:{key32}")}),
                    "proxy_config.password",
                ),
                (json!({"plugin": "simple-obfs"}), "proxy_config.plugin"),
                (json!({"plugin_opts": "obfs=http"}), "proxy_config.plugin"),
                (json!({"multiplex": {"enabled": true}}), "proxy_config.multiplex"),
            ],
        );
        for ok in [
            json!({"method": "none", "password": null}),
            json!({"method": "2022-blake3-aes-128-gcm", "password": key16}),
            json!({"method": "2022-blake3-aes-128-gcm", "password": format!("{key16}:{key16}")}),
            json!({"method": "2022-blake3-chacha20-poly1305", "password": key32}),
            json!({"method": "rc4-md5"}),
            json!({"plugin": "v2ray-plugin", "plugin_opts": "mode=websocket;host=a.example"}),
        ] {
            parse(&with(&base, ok)).unwrap();
        }
    }

    #[test]
    fn vmess_rejects() {
        let base = json!({"type": "vmess", "server": "203.0.113.20", "server_port": 443,
            "uuid": UUID, "security": "auto", "alter_id": 0});
        assert_rejected(
            &base,
            &[
                (json!({"uuid": "your-uuid"}), "proxy_config.uuid"),
                (json!({"uuid": null}), "proxy_config.uuid"),
                (json!({"security": "aes-256-gcm"}), "proxy_config.security"),
                (json!({"alter_id": -1}), "proxy_config.alter_id"),
                (json!({"packet_encoding": "raw"}), "proxy_config.packet_encoding"),
                (json!({"transport": {"type": "quic"}}), "proxy_config.tls.enabled"),
                (
                    json!({"transport": {"type": "ws", "path": "ray"}}),
                    "proxy_config.transport.path",
                ),
            ],
        );
    }

    #[test]
    fn vless_rejects() {
        let base = json!({"type": "vless", "server": "203.0.113.40", "server_port": 443, "uuid": UUID,
            "flow": "xtls-rprx-vision", "tls": {"enabled": true, "server_name": "vless.example.com"}});
        assert_rejected(
            &base,
            &[
                (json!({"flow": "xtls-rprx-direct"}), "proxy_config.flow"),
                (json!({"tls": null}), "proxy_config.tls.enabled"),
                (json!({"transport": {"type": "grpc"}}), "proxy_config.transport"),
                (json!({"uuid": "bf000d23-0752-40b4-affe"}), "proxy_config.uuid"),
                (json!({"detour": "direct"}), "proxy_config.detour"),
                (
                    json!({"tls": {"enabled": true, "reality": {"enabled": true}}}),
                    "proxy_config.tls.utls.enabled",
                ),
            ],
        );
        parse(&with(
            &base,
            json!({"flow": "", "tls": null, "transport": {"type": "ws"},
            "packet_encoding": ""}),
        ))
        .unwrap();
    }

    #[test]
    fn trojan_rejects() {
        let base = json!({"type": "trojan", "server": "203.0.113.30", "server_port": 443,
            "password": "your-password", "tls": {"enabled": true, "server_name": "your-domain.com"}});
        assert_rejected(
            &base,
            &[
                (json!({"password": ""}), "proxy_config.password"),
                (json!({"password": null}), "proxy_config.password"),
                (json!({"tls": true}), "proxy_config.tls"),
                (
                    json!({"tls": null, "transport": {"type": "quic"}}),
                    "proxy_config.tls.enabled",
                ),
                (json!({"bind_interface": "eth0"}), "proxy_config.bind_interface"),
                (json!({"server": "203.0.113.30:443"}), "proxy_config.server"),
            ],
        );
    }

    #[test]
    fn enum_names_are_sing_box_names() {
        let names = |values: Vec<Value>| {
            values
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        use ShadowsocksMethod as M;
        let methods = [
            M::Blake3Aes128Gcm,
            M::Blake3Aes256Gcm,
            M::Blake3Chacha20Poly1305,
            M::None,
            M::Aes128Gcm,
            M::Aes192Gcm,
            M::Aes256Gcm,
            M::Chacha20IetfPoly1305,
            M::Xchacha20IetfPoly1305,
            M::Aes128Ctr,
            M::Aes192Ctr,
            M::Aes256Ctr,
            M::Aes128Cfb,
            M::Aes192Cfb,
            M::Aes256Cfb,
            M::Rc4Md5,
            M::Chacha20Ietf,
            M::Xchacha20,
        ];
        assert_eq!(
            names(methods.iter().map(|m| serde_json::to_value(m).unwrap()).collect()),
            [
                "2022-blake3-aes-128-gcm",
                "2022-blake3-aes-256-gcm",
                "2022-blake3-chacha20-poly1305",
                "none",
                "aes-128-gcm",
                "aes-192-gcm",
                "aes-256-gcm",
                "chacha20-ietf-poly1305",
                "xchacha20-ietf-poly1305",
                "aes-128-ctr",
                "aes-192-ctr",
                "aes-256-ctr",
                "aes-128-cfb",
                "aes-192-cfb",
                "aes-256-cfb",
                "rc4-md5",
                "chacha20-ietf",
                "xchacha20"
            ]
        );
        use VmessSecurity as S;
        let securities = [
            S::Auto,
            S::None,
            S::Zero,
            S::Aes128Gcm,
            S::Chacha20Poly1305,
            S::Aes128Cfb,
        ];
        assert_eq!(
            names(
                securities
                    .iter()
                    .map(|s| serde_json::to_value(s).unwrap())
                    .collect()
            ),
            [
                "auto",
                "none",
                "zero",
                "aes-128-gcm",
                "chacha20-poly1305",
                "aes-128-cfb"
            ]
        );
        let plugins = [ShadowsocksPlugin::ObfsLocal, ShadowsocksPlugin::V2rayPlugin];
        assert_eq!(
            names(plugins.iter().map(|p| serde_json::to_value(p).unwrap()).collect()),
            ["obfs-local", "v2ray-plugin"]
        );
    }

    #[test]
    fn udp_over_tcp_takes_both_forms() {
        let bool_form: UdpOverTcp = serde_json::from_value(json!(true)).unwrap();
        assert_eq!(
            bool_form,
            UdpOverTcp {
                enabled: true,
                version: None
            }
        );
        assert_eq!(serde_json::to_value(bool_form).unwrap(), json!(true));
        let object_form: UdpOverTcp = serde_json::from_value(json!({"enabled": true, "version": 1})).unwrap();
        assert_eq!(
            serde_json::to_value(object_form).unwrap(),
            json!({"enabled": true, "version": 1})
        );
        assert!(serde_json::from_value::<UdpOverTcp>(json!("yes")).is_err());
    }
}
