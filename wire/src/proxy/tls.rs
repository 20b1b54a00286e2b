//! TLS and V2Ray transport options shared by the sing-box proxy outbounds, with the value forms sing-box
//! accepts (a single string where it takes a list, Go durations) and their validation.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ConfigError, MASK, check_host, mask_error};

/// A list of strings that sing-box also accepts as one bare string (its `badoption.Listable`). Written back
/// as an array, which every sing-box version reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Listable(pub Vec<String>);

impl<'de> Deserialize<'de> for Listable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListableVisitor;

        impl<'de> Visitor<'de> for ListableVisitor {
            type Value = Listable;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Listable, E> {
                Ok(Listable(vec![v.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Listable, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(Listable(items))
            }
        }

        deserializer.deserialize_any(ListableVisitor)
    }
}

/// Extra HTTP headers, each with one or several values (sing-box's `badoption.HTTPHeader`).
pub type Headers = BTreeMap<String, Listable>;

/// Header names whose values are credentials: masked on read like passwords.
const SECRET_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// Outbound TLS (sing-box `tls` object, client side). Only the fields an operator needs to reach a proxy
/// server; file paths are left out because they would name files on the agent's machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_sni: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn: Option<Listable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_version: Option<TlsVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_version: Option<TlsVersion>,
    /// PEM lines of a certificate to trust instead of the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Listable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utls: Option<Utls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reality: Option<Reality>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "1.0")]
    V1_0,
    #[serde(rename = "1.1")]
    V1_1,
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Utls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<UtlsFingerprint>,
}

/// The ClientHello fingerprints sing-box 1.10 and later know (`uTLSClientHelloID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UtlsFingerprint {
    Chrome,
    ChromePsk,
    ChromePskShuffle,
    ChromePaddingPskShuffle,
    ChromePq,
    ChromePqPsk,
    Firefox,
    Edge,
    Safari,
    #[serde(rename = "360")]
    Browser360,
    Qq,
    Ios,
    Android,
    Random,
    Randomized,
}

/// REALITY client settings. Neither field is a secret: the public key and short id are what the server
/// operator hands out to every client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reality {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_id: Option<String>,
}

impl Tls {
    pub fn is_enabled(&self) -> bool {
        self.enabled == Some(true)
    }

    /// Checks the values; `field` is the path of this object, e.g. `proxy_config.tls`.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if let Some(name) = &self.server_name {
            check_host(&format!("{field}.server_name"), name)?;
        }
        if let Some(alpn) = &self.alpn {
            for (i, proto) in alpn.0.iter().enumerate() {
                // An ALPN protocol id is 1-255 bytes on the wire (RFC 7301).
                if proto.is_empty() || proto.len() > 255 || proto.chars().any(char::is_control) {
                    return Err(ConfigError::new(
                        format!("{field}.alpn[{i}]"),
                        "must be a protocol name of 1-255 characters, e.g. h2 or http/1.1",
                    ));
                }
            }
        }
        if let (Some(min), Some(max)) = (self.min_version, self.max_version)
            && min > max
        {
            return Err(ConfigError::new(
                format!("{field}.min_version"),
                "must not be above max_version",
            ));
        }
        if let Some(cert) = &self.certificate {
            let pem = cert.0.join("\n");
            if !pem.contains("-----BEGIN CERTIFICATE-----") || !pem.contains("-----END CERTIFICATE-----") {
                return Err(ConfigError::new(
                    format!("{field}.certificate"),
                    "must be a PEM certificate, from -----BEGIN CERTIFICATE----- \
                     to -----END CERTIFICATE-----",
                ));
            }
        }
        if let Some(reality) = &self.reality
            && reality.enabled == Some(true)
        {
            self.validate_reality(field, reality)?;
        }
        Ok(())
    }

    fn validate_reality(&self, field: &str, reality: &Reality) -> Result<(), ConfigError> {
        if !self.is_enabled() {
            return Err(ConfigError::new(
                format!("{field}.enabled"),
                "must be true when reality is enabled",
            ));
        }
        // sing-box refuses to start a REALITY client without uTLS ("uTLS is required by reality client").
        if self.utls.as_ref().is_none_or(|u| u.enabled != Some(true)) {
            return Err(ConfigError::new(
                format!("{field}.utls.enabled"),
                "must be true when reality is enabled",
            ));
        }
        let key_field = format!("{field}.reality.public_key");
        let Some(key) = reality.public_key.as_deref() else {
            return Err(ConfigError::new(key_field, "is required when reality is enabled"));
        };
        // sing-box decodes it as unpadded URL-safe base64, as `sing-box generate reality-keypair` prints it.
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key) {
            Ok(bytes) if bytes.len() == 32 => {}
            _ => {
                return Err(ConfigError::new(
                    key_field,
                    "must be an X25519 public key in unpadded URL-safe base64 (43 characters)",
                ));
            }
        }
        if let Some(short_id) = &reality.short_id {
            let hex_ok = short_id.len() <= 16
                && short_id.len() % 2 == 0
                && short_id.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex_ok {
                return Err(ConfigError::new(
                    format!("{field}.reality.short_id"),
                    "must be an even number of hex digits, at most 16",
                ));
            }
        }
        Ok(())
    }
}

/// V2Ray transport (sing-box `transport` object), tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Transport {
    #[serde(rename = "http")]
    Http(HttpTransport),
    #[serde(rename = "ws")]
    Ws(WsTransport),
    #[serde(rename = "quic")]
    Quic(QuicTransport),
    #[serde(rename = "grpc")]
    Grpc(GrpcTransport),
    #[serde(rename = "httpupgrade")]
    HttpUpgrade(HttpUpgradeTransport),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTransport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Listable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsTransport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_early_data: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_data_header_name: Option<String>,
}

/// QUIC takes no options of its own; TLS comes from the outbound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicTransport {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTransport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permit_without_stream: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpUpgradeTransport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

impl Transport {
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Http(_) => "http",
            Transport::Ws(_) => "ws",
            Transport::Quic(_) => "quic",
            Transport::Grpc(_) => "grpc",
            Transport::HttpUpgrade(_) => "httpupgrade",
        }
    }

    /// Checks the values; `field` is the path of this object, e.g. `proxy_config.transport`.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match self {
            Transport::Http(t) => {
                if let Some(hosts) = &t.host {
                    for (i, host) in hosts.0.iter().enumerate() {
                        check_host(&format!("{field}.host[{i}]"), host)?;
                    }
                }
                check_path(field, t.path.as_deref())?;
                if let Some(method) = &t.method
                    && !is_token(method)
                {
                    return Err(ConfigError::new(
                        format!("{field}.method"),
                        "must be an HTTP method, e.g. GET",
                    ));
                }
                validate_headers(field, t.headers.as_ref())?;
                check_duration(&format!("{field}.idle_timeout"), t.idle_timeout.as_deref())?;
                check_duration(&format!("{field}.ping_timeout"), t.ping_timeout.as_deref())
            }
            Transport::Ws(t) => {
                check_path(field, t.path.as_deref())?;
                validate_headers(field, t.headers.as_ref())?;
                if let Some(name) = &t.early_data_header_name
                    && !is_token(name)
                {
                    return Err(ConfigError::new(
                        format!("{field}.early_data_header_name"),
                        "must be an HTTP header name, e.g. Sec-WebSocket-Protocol",
                    ));
                }
                Ok(())
            }
            Transport::Quic(_) => Ok(()),
            Transport::Grpc(t) => {
                if let Some(name) = &t.service_name
                    && (name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()))
                {
                    return Err(ConfigError::new(
                        format!("{field}.service_name"),
                        "must be a non-empty name without spaces",
                    ));
                }
                check_duration(&format!("{field}.idle_timeout"), t.idle_timeout.as_deref())?;
                check_duration(&format!("{field}.ping_timeout"), t.ping_timeout.as_deref())
            }
            Transport::HttpUpgrade(t) => {
                if let Some(host) = &t.host {
                    check_host(&format!("{field}.host"), host)?;
                }
                check_path(field, t.path.as_deref())?;
                validate_headers(field, t.headers.as_ref())
            }
        }
    }
}

/// Checks that TLS and transport fit together; `field` is the outbound's path.
pub(super) fn check_tls_for_transport(
    field: &str,
    tls: Option<&Tls>,
    transport: Option<&Transport>,
) -> Result<(), ConfigError> {
    let tls_on = tls.is_some_and(Tls::is_enabled);
    // sing-box's QUIC transport has no plaintext mode and fails at start without TLS.
    if matches!(transport, Some(Transport::Quic(_))) && !tls_on {
        return Err(ConfigError::new(
            format!("{field}.tls.enabled"),
            "must be true with the quic transport",
        ));
    }
    Ok(())
}

/// Checks header names (RFC 9110 tokens) and values; a CR or LF in a value would let it inject headers.
pub(super) fn validate_headers(field: &str, headers: Option<&Headers>) -> Result<(), ConfigError> {
    let Some(headers) = headers else {
        return Ok(());
    };
    for (name, values) in headers {
        let header_field = format!("{field}.headers.{name}");
        if !is_token(name) {
            return Err(ConfigError::new(header_field, "header names must be HTTP tokens"));
        }
        if values
            .0
            .iter()
            .any(|v| v.chars().any(|c| c.is_control() && c != '\t'))
        {
            return Err(ConfigError::new(
                header_field,
                "header values must not contain control characters",
            ));
        }
        if is_secret_header(name) && values.0.iter().any(|v| v == MASK) {
            return Err(mask_error(header_field));
        }
    }
    Ok(())
}

/// Replaces the values of credential headers in a serialized `headers` object.
pub(super) fn mask_headers(headers: &mut Value) {
    if let Value::Object(map) = headers {
        for (name, value) in map.iter_mut() {
            if is_secret_header(name) {
                *value = Value::String(MASK.to_owned());
            }
        }
    }
}

fn is_secret_header(name: &str) -> bool {
    SECRET_HEADERS.iter().any(|s| name.eq_ignore_ascii_case(s))
}

/// Masks credential headers in a serialized `transport` object.
pub(super) fn mask_transport(transport: &mut Value) {
    if let Some(headers) = transport.get_mut("headers") {
        mask_headers(headers);
    }
}

fn check_path(field: &str, path: Option<&str>) -> Result<(), ConfigError> {
    match path {
        Some(p)
            if !p.is_empty()
                && (!p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control())) =>
        {
            Err(ConfigError::new(
                format!("{field}.path"),
                "must start with / and contain no spaces",
            ))
        }
        _ => Ok(()),
    }
}

/// An HTTP token (RFC 9110 §5.6.2), the syntax of header names and methods.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_duration(field: &str, value: Option<&str>) -> Result<(), ConfigError> {
    match value {
        Some(v) if !is_duration(v) => Err(ConfigError::new(
            field,
            "must be a duration such as 15s, 1m30s or 500ms (units ns, us, ms, s, m, h, d)",
        )),
        _ => Ok(()),
    }
}

/// A non-negative duration in the syntax of sing-box's `badoption.Duration`: Go's `time.ParseDuration`
/// plus the unit `d`.
fn is_duration(s: &str) -> bool {
    // Two-letter units first so that "ms" is not read as "m" followed by garbage.
    const UNITS: [&str; 9] = ["ns", "us", "µs", "μs", "ms", "s", "m", "h", "d"];
    if s == "0" {
        return true;
    }
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        rest = &rest[int_len..];
        let mut frac_len = 0;
        if let Some(after_dot) = rest.strip_prefix('.') {
            frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            rest = &after_dot[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return false;
        }
        match UNITS.iter().find(|unit| rest.starts_with(*unit)) {
            Some(unit) => rest = &rest[unit.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tls(v: Value) -> Tls {
        serde_json::from_value(v).unwrap()
    }

    const REALITY_KEY: &str = "jNXHt1yRo0vDuchQlIP6Z0ZvjT3KtzVI-T4E7RoLJS0";

    #[test]
    fn listable_accepts_a_string_or_an_array_and_writes_an_array() {
        let one: Listable = serde_json::from_value(json!("h2")).unwrap();
        let many: Listable = serde_json::from_value(json!(["h2", "http/1.1"])).unwrap();
        assert_eq!(one.0, ["h2"]);
        assert_eq!(many.0, ["h2", "http/1.1"]);
        assert_eq!(serde_json::to_value(&one).unwrap(), json!(["h2"]));
        assert!(serde_json::from_value::<Listable>(json!(5)).is_err());
        assert!(serde_json::from_value::<Listable>(json!([1])).is_err());
    }

    #[test]
    fn tls_round_trips_without_adding_fields() {
        let input = json!({"enabled": true, "server_name": "example.com", "alpn": ["h2"],
            "utls": {"enabled": true, "fingerprint": "360"}});
        let parsed = tls(input.clone());
        parsed.validate("tls").unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), input);
    }

    #[test]
    fn tls_rejects_bad_values() {
        let cases = [
            (
                json!({"enabled": true, "server_name": "bad name"}),
                "tls.server_name",
            ),
            (json!({"enabled": true, "alpn": [""]}), "tls.alpn[0]"),
            (
                json!({"enabled": true, "min_version": "1.3", "max_version": "1.2"}),
                "tls.min_version",
            ),
            (
                json!({"enabled": true, "certificate": "not pem"}),
                "tls.certificate",
            ),
            (
                json!({"enabled": true, "utls": {"enabled": true}, "reality": {"enabled": true}}),
                "tls.reality.public_key",
            ),
            (
                json!({"enabled": true, "utls": {"enabled": true},
                "reality": {"enabled": true, "public_key": "c2hvcnQ"}}),
                "tls.reality.public_key",
            ),
            (
                json!({"enabled": true, "utls": {"enabled": true},
                "reality": {"enabled": true, "public_key": REALITY_KEY, "short_id": "xyz"}}),
                "tls.reality.short_id",
            ),
            (
                json!({"enabled": true, "reality": {"enabled": true, "public_key": REALITY_KEY}}),
                "tls.utls.enabled",
            ),
            (
                json!({"utls": {"enabled": true}, "reality": {"enabled": true, "public_key": REALITY_KEY}}),
                "tls.enabled",
            ),
        ];
        for (input, field) in cases {
            let err = tls(input.clone()).validate("tls").unwrap_err();
            assert_eq!(err.field, field, "{input}");
        }
    }

    #[test]
    fn reality_with_key_and_short_id_is_accepted() {
        let t = tls(json!({"enabled": true, "server_name": "www.example.com",
            "utls": {"enabled": true, "fingerprint": "chrome"},
            "reality": {"enabled": true, "public_key": REALITY_KEY, "short_id": "0123456789abcdef"}}));
        t.validate("tls").unwrap();
        // A disabled reality block is not checked, as sing-box ignores it.
        tls(json!({"enabled": true, "reality": {"enabled": false}}))
            .validate("tls")
            .unwrap();
    }

    #[test]
    fn unknown_tls_enum_values_and_fields_are_refused() {
        assert!(serde_json::from_value::<Tls>(json!({"min_version": "1.4"})).is_err());
        assert!(serde_json::from_value::<Tls>(json!({"utls": {"fingerprint": "netscape"}})).is_err());
        assert!(serde_json::from_value::<Tls>(json!({"certificate_path": "/etc/x.pem"})).is_err());
    }

    #[test]
    fn transports_parse_and_validate() {
        let ok = [
            json!({"type": "http", "host": "cdn.example.com", "path": "/x", "method": "GET",
                "headers": {"X-A": "1"}, "idle_timeout": "15s", "ping_timeout": "1m30s"}),
            json!({"type": "ws", "path": "/ray?ed=2048", "headers": {"Host": ["a.example.com"]},
                "max_early_data": 2048, "early_data_header_name": "Sec-WebSocket-Protocol"}),
            json!({"type": "quic"}),
            json!({"type": "grpc", "service_name": "TunService", "idle_timeout": "500ms",
                "permit_without_stream": true}),
            json!({"type": "httpupgrade", "host": "a.example.com", "path": "/up"}),
        ];
        for input in ok {
            let t: Transport = serde_json::from_value(input.clone()).unwrap();
            t.validate("transport").unwrap();
            let mut expected = input.clone();
            // Single strings come back as one-element arrays.
            if let Some(h) = expected.get_mut("host").filter(|_| t.kind() == "http") {
                *h = json!([h.as_str().unwrap()]);
            }
            if let Some(Value::Object(headers)) = expected.get_mut("headers") {
                for v in headers.values_mut() {
                    if let Value::String(s) = v {
                        *v = json!([s.clone()]);
                    }
                }
            }
            assert_eq!(serde_json::to_value(&t).unwrap(), expected);
        }
    }

    #[test]
    fn transports_reject_bad_values() {
        let cases = [
            (json!({"type": "http", "path": "no-slash"}), "transport.path"),
            (json!({"type": "http", "method": "GE T"}), "transport.method"),
            (
                json!({"type": "http", "idle_timeout": "15"}),
                "transport.idle_timeout",
            ),
            (
                json!({"type": "ws", "headers": {"X-A": "a\r\nX-B: b"}}),
                "transport.headers.X-A",
            ),
            (
                json!({"type": "ws", "headers": {"Bad Name": "a"}}),
                "transport.headers.Bad Name",
            ),
            (
                json!({"type": "grpc", "service_name": ""}),
                "transport.service_name",
            ),
            (json!({"type": "httpupgrade", "host": "a b"}), "transport.host"),
        ];
        for (input, field) in cases {
            let t: Transport = serde_json::from_value(input.clone()).unwrap();
            assert_eq!(t.validate("transport").unwrap_err().field, field, "{input}");
        }
        assert!(serde_json::from_value::<Transport>(json!({"type": "quic", "path": "/"})).is_err());
        assert!(serde_json::from_value::<Transport>(json!({"type": "kcp"})).is_err());
    }

    #[test]
    fn quic_needs_tls() {
        let quic: Transport = serde_json::from_value(json!({"type": "quic"})).unwrap();
        let on = tls(json!({"enabled": true}));
        let off = tls(json!({"enabled": false, "server_name": "example.com"}));
        assert_eq!(
            check_tls_for_transport("p", None, Some(&quic)).unwrap_err().field,
            "p.tls.enabled"
        );
        assert_eq!(
            check_tls_for_transport("p", Some(&off), Some(&quic))
                .unwrap_err()
                .field,
            "p.tls.enabled"
        );
        check_tls_for_transport("p", Some(&on), Some(&quic)).unwrap();
        check_tls_for_transport("p", None, None).unwrap();
    }

    #[test]
    fn durations_follow_sing_box_syntax() {
        for ok in ["0", "15s", "1m30s", "500ms", "1.5h", "2d", "10µs", ".5s"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["", "15", "s", "-1s", "1x", "1s ", "1 s", "1.s."] {
            assert!(!is_duration(bad), "{bad}");
        }
    }

    #[test]
    fn only_credential_headers_are_masked() {
        let mut headers = json!({"Authorization": ["Basic dTpw"], "cookie": "a=b", "X-Trace": ["1"]});
        mask_headers(&mut headers);
        assert_eq!(
            headers,
            json!({"Authorization": MASK, "cookie": MASK, "X-Trace": ["1"]})
        );
    }
}
