//! Test data: random secrets, real SSH and WireGuard keys, forged session tokens, the seed's egress
//! examples, and short-hands for the operator calls most tests make.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::{Rng, RngCore};
use serde_json::{Value, json};

use crate::api::Api;

pub fn random_alnum(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A random `ADMIN_JWT_SECRET` the control plane takes: drawn again when it happens to start or end
/// with a word the control plane refuses (`jwt`, `admin`, …; about 7 draws in 100,000 do).
pub fn jwt_secret() -> String {
    loop {
        let secret = random_alnum(48);
        if control_plane::config::weak_secret_reason(&secret).is_none() {
            return secret;
        }
    }
}

/// A unique, valid username or label with this prefix.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", random_alnum(8).to_lowercase())
}

/// A WireGuard key as the API takes it: base64 of 32 random bytes.
pub fn wg_key() -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// RFC 3339 in UTC with microseconds, the API's own format.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses a time the API returned, insisting on UTC.
#[track_caller]
pub fn parse_time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    assert!(s.ends_with('Z'), "API times are UTC with a `Z`: {s}");
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {s}"))
        .with_timezone(&Utc)
}

/// A key pair made by `ssh-keygen`.
#[derive(Debug, Clone)]
pub struct SshKeyPair {
    pub private_path: PathBuf,
    /// The one-line public key, `ssh-ed25519 AAAA… NAME`.
    pub public_line: String,
    /// `SHA256:…` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

/// `ssh-keygen -t ed25519 -N '' -f DIR/NAME -C NAME`.
pub fn ssh_keygen(dir: &Path, name: &str) -> SshKeyPair {
    let private_path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private_path)
        .output()
        .expect("run ssh-keygen (openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public_line = std::fs::read_to_string(private_path.with_extension("pub"))
        .expect("read the public key")
        .trim()
        .to_owned();
    let fingerprint = fingerprint_of(dir, &public_line);
    SshKeyPair {
        private_path,
        public_line,
        fingerprint,
    }
}

/// The SHA-256 fingerprint of a one-line public key, computed by `ssh-keygen -l`.
pub fn fingerprint_of(dir: &Path, public_line: &str) -> String {
    let file = dir.join(format!("fp-{}.pub", random_alnum(8)));
    std::fs::write(&file, format!("{public_line}\n")).expect("write public key");
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(&file)
        .output()
        .expect("ssh-keygen -l");
    assert!(
        out.status.success(),
        "ssh-keygen -l failed on {public_line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(1)
        .expect("fingerprint column")
        .to_owned()
}

/// The public key `ssh-keygen -y` derives from an OpenSSH private key (type and base64 only).
pub fn public_of_private(dir: &Path, private_pem: &str) -> String {
    let file = dir.join(format!("priv-{}", random_alnum(8)));
    std::fs::write(&file, private_pem).expect("write private key");
    set_owner_only(&file);
    let out = Command::new("ssh-keygen")
        .args(["-y", "-f"])
        .arg(&file)
        .output()
        .expect("ssh-keygen -y");
    assert!(
        out.status.success(),
        "ssh-keygen -y rejects the private key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    key_material(String::from_utf8_lossy(&out.stdout).trim())
}

/// `type base64` of a one-line public key, without its comment.
pub fn key_material(public_line: &str) -> String {
    public_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn set_owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// A session token signed like the control plane signs them (HS256 with `ADMIN_JWT_SECRET`).
pub fn forge_session(secret: &str, sub: &str, role: &str, ver: i64, iat: i64, exp: i64) -> String {
    let claims = json!({ "sub": sub, "role": role, "ver": ver, "iat": iat, "exp": exp });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign JWT")
}

/// The seed's egress examples, in the seed's order, plus a VLESS one. Placeholders that are not valid
/// values are replaced by realistic ones; each replacement is commented. The addresses are data only:
/// nothing in these tests connects to them.
pub fn seed_egress_examples() -> Vec<Value> {
    vec![
        seed_wireguard(),
        json!({
            "label": "jp-ss-01",
            "ip_address": "198.51.100.5",
            "tunnel_type": "proxy",
            "provider": "manual",
            "proxy_config": {
                "type": "shadowsocks",
                "server": "198.51.100.5",
                "server_port": 8388,
                "method": "aes-256-gcm",
                // "your-password" kept: any string is a valid aes-256-gcm password.
                "password": "your-password"
            }
        }),
        json!({
            "label": "us-vmess-01",
            "ip_address": "203.0.113.20",
            "tunnel_type": "proxy",
            "provider": "manual",
            "proxy_config": {
                "type": "vmess",
                "server": "203.0.113.20",
                "server_port": 443,
                // seed: "your-uuid", which is not a UUID.
                "uuid": "b831381d-6324-4d53-ad4f-8cda48b30811",
                "security": "auto",
                "alter_id": 0
            }
        }),
        json!({
            "label": "eu-socks-01",
            "ip_address": "192.0.2.50",
            "tunnel_type": "proxy",
            "provider": "manual",
            "proxy_config": {
                "type": "socks",
                "server": "192.0.2.50",
                "server_port": 1080,
                "username": "user",
                "password": "pass"
            }
        }),
        json!({
            "label": "sg-trojan-01",
            "ip_address": "203.0.113.30",
            "tunnel_type": "proxy",
            "provider": "manual",
            "proxy_config": {
                "type": "trojan",
                "server": "203.0.113.30",
                "server_port": 443,
                "password": "your-password",
                // "your-domain.com" kept: it is a well-formed server name.
                "tls": {"enabled": true, "server_name": "your-domain.com"}
            }
        }),
        json!({
            "label": "proxy-http-01",
            "ip_address": "192.0.2.100",
            "tunnel_type": "proxy",
            "provider": "manual",
            "proxy_config": {
                "type": "http",
                "server": "192.0.2.100",
                "server_port": 8080,
                "username": "user",
                "password": "pass"
            }
        }),
        // Not in the seed (its list of proxy types has vless): the same shape for a VLESS outbound.
        json!({
            "label": "de-vless-01",
            "ip_address": "203.0.113.40",
            "tunnel_type": "proxy",
            "provider": "manual",
            "proxy_config": {
                "type": "vless",
                "server": "203.0.113.40",
                "server_port": 443,
                "uuid": "2f9a4c1e-8d3b-4e7a-9c5f-1b2d3e4f5a6b",
                "flow": "xtls-rprx-vision",
                "tls": {"enabled": true, "server_name": "vless.example.com"}
            }
        }),
    ]
}

/// The seed's WireGuard example.
pub fn seed_wireguard() -> Value {
    json!({
        "label": "hk-wg-01",
        "ip_address": "203.0.113.10",
        "tunnel_type": "wireguard",
        "provider": "manual",
        "wg_endpoint": "vpn-provider.example.com:51820",
        // seed: "PeerPublicKeyBase64", which is not base64 of 32 bytes.
        "wg_public_key": wg_key(),
        // seed: "PresharedKeyBase64", same.
        "wg_preshared_key": wg_key(),
        "wg_allowed_ips": "0.0.0.0/0",
        "wg_dns_server": "1.1.1.1",
        "wg_peer_address": "10.0.0.2/32"
    })
}

/// A WireGuard egress IP with this label (for tests that need several).
pub fn wireguard_egress(label: &str) -> Value {
    let mut v = seed_wireguard();
    v["label"] = json!(label);
    v
}

/// Short-hands for what many tests do as the operator. Each asserts success.
impl Api {
    pub async fn create_user(&self, username: &str, password: &str) -> Value {
        let r = self
            .post(
                "/v1/admin/users",
                json!({ "username": username, "password": password }),
            )
            .await;
        r.expect(201).clone()
    }

    /// Creates a tenant and returns it with a client signed in as it.
    pub async fn tenant(&self, username: &str, password: &str) -> (Value, Api) {
        let user = self.create_user(username, password).await;
        let client = self.login_as(username, password).await;
        (user, client)
    }

    pub async fn create_host(&self, user_id: &str) -> Value {
        self.post("/v1/admin/hosts", json!({ "user_id": user_id }))
            .await
            .expect(201)
            .clone()
    }

    pub async fn create_egress(&self, body: Value) -> Value {
        self.post("/v1/admin/egress-ips", body).await.expect(201).clone()
    }

    /// `total_records` of a list.
    pub async fn count(&self, path: &str) -> i64 {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.get(&format!("{path}{sep}page_size=1")).await.total()
    }
}

/// `id` of an object.
#[track_caller]
pub fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}
