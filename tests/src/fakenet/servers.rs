//! The tunnel servers of the fake internet: their kinds, addresses and credentials, the
//! configuration each runs (sing-box for the proxies, a `wg setconf` file or the `peer` lines of
//! `cloud-cli-proxy-fake-wg` for the WireGuard server), the `POST /v1/admin/egress-ips` body that points at it, and a
//! sing-box client configuration made from such a body. Rendering only: nothing here starts a
//! process.

use std::net::Ipv4Addr;

use serde_json::{Value, json};
use wire::proxy::ShadowsocksMethod;

/// One kind of tunnel server; each runs in its own namespace at its own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Wireguard,
    Socks,
    Http,
    Shadowsocks,
    Vmess,
    Vless,
    Trojan,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Wireguard,
        Kind::Socks,
        Kind::Http,
        Kind::Shadowsocks,
        Kind::Vmess,
        Kind::Vless,
        Kind::Trojan,
    ];

    /// The sing-box type name (also the `proxy_config.type` of the egress body).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Wireguard => "wireguard",
            Kind::Socks => "socks",
            Kind::Http => "http",
            Kind::Shadowsocks => "shadowsocks",
            Kind::Vmess => "vmess",
            Kind::Vless => "vless",
            Kind::Trojan => "trojan",
        }
    }

    /// Short role used in namespace names.
    pub(crate) fn role(self) -> &'static str {
        match self {
            Kind::Wireguard => "wg",
            Kind::Shadowsocks => "ss",
            other => other.name(),
        }
    }

    /// The declared egress IP of this kind's server.
    pub fn ip(self) -> Ipv4Addr {
        let host = match self {
            Kind::Wireguard => 10,
            Kind::Socks => 11,
            Kind::Http => 12,
            Kind::Shadowsocks => 13,
            Kind::Vmess => 14,
            Kind::Vless => 15,
            Kind::Trojan => 16,
        };
        Ipv4Addr::new(198, 18, 1, host)
    }

    fn port(self) -> u16 {
        match self {
            Kind::Wireguard => 51820,
            Kind::Socks => 1080,
            Kind::Http => 8080,
            Kind::Shadowsocks => 8388,
            Kind::Vmess => 10086,
            Kind::Vless => 10087,
            Kind::Trojan => 443,
        }
    }
}

/// The WireGuard side of the wireguard server: its keys, its tunnel address and the peers it knows.
/// The server is wireguard-go (configured with `wg`) or `cloud-cli-proxy-fake-wg` (told over
/// stdin), a userspace tun in the server's namespace either way; the namespace forwards what comes out of the tunnel and masquerades it to the server's own
/// address, so the probe sees the declared egress IP as the exit.
#[derive(Debug, Clone)]
pub struct WgServer {
    pub private_key: String,
    pub public_key: String,
    /// Shared with every peer (the egress body's `wg_preshared_key`).
    pub preshared_key: String,
    /// The server's own address inside the tunnel.
    pub address: String,
    /// What the egress body offers as `wg_peer_address`.
    pub peer_address: String,
    /// (public key, allowed CIDR) of each peer added so far.
    pub peers: Vec<(String, String)>,
}

impl WgServer {
    /// The server's configuration for `wg setconf` (listening on `port`). A CIDR claimed by two
    /// peers ends up with the one listed last, the most recently added, as `wg` moves it.
    pub fn setconf(&self, port: u16) -> String {
        let mut text = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {port}\n",
            self.private_key
        );
        for (key, cidr) in &self.peers {
            text.push_str(&self.peer_section(key, cidr));
        }
        text
    }

    /// One `peer` line for `cloud-cli-proxy-fake-wg`, the same peer as [`Self::peer_section`].
    pub fn peer_line(&self, public_key: &str, cidr: &str) -> String {
        format!("peer {public_key} {} {cidr}", self.preshared_key)
    }

    /// One `[Peer]` section (for `wg setconf` or `wg addconf`).
    pub fn peer_section(&self, public_key: &str, cidr: &str) -> String {
        format!(
            "\n[Peer]\nPublicKey = {public_key}\nPresharedKey = {}\nAllowedIPs = {cidr}\n",
            self.preshared_key
        )
    }
}

/// A running (or stoppable) tunnel server and everything a client needs to use it.
#[derive(Debug, Clone)]
pub struct Server {
    pub kind: Kind,
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Its network namespace.
    pub netns: String,
    /// socks and http.
    pub username: String,
    /// socks, http, trojan; the shadowsocks 2022 key (base64 of as many bytes as its method's key).
    pub password: String,
    /// shadowsocks: a 2022 method.
    pub method: ShadowsocksMethod,
    /// vmess and vless.
    pub uuid: String,
    /// TLS name of the trojan server, and its self-signed certificate (PEM).
    pub server_name: String,
    pub cert_pem: String,
    pub wg: Option<WgServer>,
}

pub const TROJAN_SERVER_NAME: &str = "trojan.fakenet.test";
/// The shadowsocks server's method unless `CCP_FAKENET_SS_METHOD` names another.
pub const SHADOWSOCKS_METHOD: ShadowsocksMethod = ShadowsocksMethod::Blake3Aes128Gcm;
/// The methods `CCP_FAKENET_SS_METHOD` may name: the 2022 ones, whose keys the server draws.
pub const SHADOWSOCKS_METHODS: [ShadowsocksMethod; 3] = [
    ShadowsocksMethod::Blake3Aes128Gcm,
    ShadowsocksMethod::Blake3Aes256Gcm,
    ShadowsocksMethod::Blake3Chacha20Poly1305,
];

/// `CCP_FAKENET_SS_METHOD` if set (one of [`SHADOWSOCKS_METHODS`]), else [`SHADOWSOCKS_METHOD`]: a
/// benchmark can then compare shadowsocks and WireGuard with the same cipher.
pub fn shadowsocks_method_from_env() -> anyhow::Result<ShadowsocksMethod> {
    match std::env::var("CCP_FAKENET_SS_METHOD").as_deref() {
        Err(_) | Ok("") => Ok(SHADOWSOCKS_METHOD),
        Ok(name) => SHADOWSOCKS_METHODS
            .into_iter()
            .find(|m| shadowsocks_method_name(*m) == name)
            .ok_or_else(|| {
                let known: Vec<String> = SHADOWSOCKS_METHODS.map(shadowsocks_method_name).into();
                anyhow::anyhow!(
                    "CCP_FAKENET_SS_METHOD is `{name}`, not one of {}",
                    known.join(", ")
                )
            }),
    }
}

/// The name of `method` as sing-box and the API spell it.
pub fn shadowsocks_method_name(method: ShadowsocksMethod) -> String {
    json!(method).as_str().unwrap_or_default().to_owned()
}

/// A fresh random key for a shadowsocks 2022 `method` (base64).
fn shadowsocks_key(method: ShadowsocksMethod) -> String {
    use base64::Engine as _;
    use rand::Rng as _;
    let len = method.key_len_2022().unwrap_or(16);
    let key: Vec<u8> = (0..len).map(|_| rand::thread_rng().r#gen()).collect();
    base64::engine::general_purpose::STANDARD.encode(key)
}

impl Server {
    /// A server of `kind` with fresh random credentials (`wg`: the keys for a wireguard server).
    pub fn new(kind: Kind, netns: String, wg: Option<WgServer>) -> Self {
        use rand::Rng as _;
        let mut rng = rand::thread_rng();
        let word = |rng: &mut rand::rngs::ThreadRng| -> String {
            (0..16)
                .map(|_| char::from(rng.sample(rand::distributions::Alphanumeric)))
                .collect()
        };
        let password = if kind == Kind::Shadowsocks {
            shadowsocks_key(SHADOWSOCKS_METHOD)
        } else {
            word(&mut rng)
        };
        Self {
            kind,
            ip: kind.ip(),
            port: kind.port(),
            netns,
            username: format!("u{}", word(&mut rng)),
            password,
            method: SHADOWSOCKS_METHOD,
            uuid: uuid::Uuid::new_v4().to_string(),
            server_name: TROJAN_SERVER_NAME.to_owned(),
            cert_pem: String::new(),
            wg,
        }
    }

    /// The same server with shadowsocks `method` (a 2022 one) and a fresh key for it; other kinds
    /// are unchanged.
    #[must_use]
    pub fn with_shadowsocks_method(mut self, method: ShadowsocksMethod) -> Self {
        if self.kind == Kind::Shadowsocks {
            self.method = method;
            self.password = shadowsocks_key(method);
        }
        self
    }

    /// The sing-box configuration of a proxy server: one inbound on its address, and a direct
    /// outbound, so what it relays leaves with the server's own address. `tls`: the certificate and
    /// key files of the trojan server. The WireGuard server runs no sing-box: `None`.
    pub fn config(&self, tls: Option<(&str, &str)>) -> Option<Value> {
        let listen = self.ip.to_string();
        let user = json!({"username": self.username, "password": self.password});
        let mut config = json!({
            "log": {"level": "warn", "timestamp": true},
            "outbounds": [{"type": "direct", "tag": "direct"}],
            "route": {"final": "direct"},
        });
        let inbound = match self.kind {
            Kind::Wireguard => return None,
            Kind::Socks | Kind::Http => json!({"users": [user]}),
            Kind::Shadowsocks => json!({"method": self.method, "password": self.password}),
            Kind::Vmess => json!({"users": [{"name": "fakenet", "uuid": self.uuid, "alterId": 0}]}),
            Kind::Vless => json!({"users": [{"name": "fakenet", "uuid": self.uuid}]}),
            Kind::Trojan => {
                let (cert, key) = tls.unwrap_or_default();
                json!({"users": [{"name": "fakenet", "password": self.password}],
                    "tls": {"enabled": true, "server_name": self.server_name,
                        "certificate_path": cert, "key_path": key}})
            }
        };
        let mut inbound = inbound;
        inbound["type"] = json!(self.kind.name());
        inbound["tag"] = json!("in");
        inbound["listen"] = json!(listen);
        inbound["listen_port"] = json!(self.port);
        config["inbounds"] = json!([inbound]);
        Some(config)
    }

    /// The body of `POST /v1/admin/egress-ips` declaring this server's address as an egress IP,
    /// with `dns` as its resolver (`wg_dns_server` or `dns_server`).
    pub fn egress_body(&self, label: &str, dns: Ipv4Addr) -> Value {
        let ip = self.ip.to_string();
        if let Some(wg) = &self.wg {
            return json!({
                "label": label, "ip_address": ip, "tunnel_type": "wireguard", "provider": "fakenet",
                "wg_endpoint": format!("{ip}:{}", self.port),
                "wg_public_key": wg.public_key,
                "wg_preshared_key": wg.preshared_key,
                "wg_allowed_ips": "0.0.0.0/0",
                "wg_dns_server": dns.to_string(),
                "wg_peer_address": wg.peer_address,
            });
        }
        let mut outbound = json!({"type": self.kind.name(), "server": ip, "server_port": self.port});
        let extra = match self.kind {
            Kind::Socks | Kind::Http => json!({"username": self.username, "password": self.password}),
            Kind::Shadowsocks => json!({"method": self.method, "password": self.password}),
            Kind::Vmess => json!({"uuid": self.uuid, "security": "auto", "alter_id": 0}),
            Kind::Vless => json!({"uuid": self.uuid}),
            Kind::Trojan => json!({"password": self.password,
                "tls": {"enabled": true, "server_name": self.server_name,
                    "certificate": [self.cert_pem]}}),
            Kind::Wireguard => json!({}),
        };
        if let (Some(out), Some(extra)) = (outbound.as_object_mut(), extra.as_object()) {
            out.extend(extra.clone());
        }
        json!({
            "label": label, "ip_address": ip, "tunnel_type": "proxy", "provider": "fakenet",
            "proxy_config": outbound,
            "dns_server": dns.to_string(),
        })
    }
}

/// A sing-box client made from an egress body: a `mixed` (SOCKS5 and HTTP proxy) inbound on
/// `127.0.0.1:port` whose traffic all goes through the egress IP's tunnel, and, with `dns_port`, a
/// UDP port on 127.0.0.1 relayed through the tunnel to the body's resolver (port 53). A wireguard
/// body needs the client's private key (the control plane generates it; the body carries none).
pub fn client_config(body: &Value, wg_private_key: Option<&str>, port: u16, dns_port: Option<u16>) -> Value {
    let mut config = json!({
        "log": {"level": "warn", "timestamp": true},
        "inbounds": [{"type": "mixed", "tag": "in", "listen": "127.0.0.1", "listen_port": port}],
        "route": {"final": "out"},
    });
    let resolver = body["dns_server"].as_str().or(body["wg_dns_server"].as_str());
    if let (Some(dns_port), Some(resolver)) = (dns_port, resolver) {
        config["inbounds"]
            .as_array_mut()
            .into_iter()
            .for_each(|inbounds| {
                inbounds.push(json!({"type": "direct", "tag": "dns-in", "listen": "127.0.0.1",
                "listen_port": dns_port, "network": "udp"}));
            });
        config["route"]["rules"] = json!([{"inbound": "dns-in", "action": "route", "outbound": "out",
            "override_address": resolver, "override_port": 53}]);
    }
    if body["tunnel_type"] == "wireguard" {
        let endpoint = body["wg_endpoint"].as_str().unwrap_or_default();
        let (host, port) = endpoint.rsplit_once(':').unwrap_or((endpoint, "51820"));
        let allowed: Vec<&str> = body["wg_allowed_ips"]
            .as_str()
            .unwrap_or("0.0.0.0/0")
            .split(',')
            .map(str::trim)
            .collect();
        let mut peer = json!({
            "address": host, "port": port.parse::<u16>().unwrap_or(51820),
            "public_key": body["wg_public_key"], "allowed_ips": allowed,
        });
        if let Some(psk) = body["wg_preshared_key"].as_str() {
            peer["pre_shared_key"] = json!(psk);
        }
        config["endpoints"] = json!([{
            "type": "wireguard", "tag": "out",
            "address": [body["wg_peer_address"]],
            "private_key": wg_private_key.unwrap_or_default(),
            "peers": [peer],
        }]);
    } else {
        let mut outbound = body["proxy_config"].clone();
        outbound["tag"] = json!("out");
        config["outbounds"] = json!([outbound]);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wg() -> WgServer {
        WgServer {
            private_key: "KOizr1H1iQbq5SuIJvhmiF5dpZ0P2f0kR8pRGEq5TG8=".to_owned(),
            public_key: "x9Bq3UeTTOP5cq7VjCTUcB/rPFcRk7+vQ3qLK2vXyEE=".to_owned(),
            preshared_key: "cHJlc2hhcmVkLWtleS1mb3ItdGhlLWZha2UtbmV0ISE=".to_owned(),
            address: "198.19.77.1/24".to_owned(),
            peer_address: "198.19.77.2/32".to_owned(),
            peers: vec![(
                "x9Bq3UeTTOP5cq7VjCTUcB/rPFcRk7+vQ3qLK2vXyEE=".to_owned(),
                "198.19.77.2/32".to_owned(),
            )],
        }
    }

    fn server(kind: Kind) -> Server {
        let mut s = Server::new(kind, "ns".to_owned(), (kind == Kind::Wireguard).then(wg));
        s.cert_pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_owned();
        s
    }

    #[test]
    fn every_server_has_its_own_address_in_the_range() {
        let ips: std::collections::HashSet<_> = Kind::ALL.iter().map(|k| k.ip()).collect();
        assert_eq!(ips.len(), Kind::ALL.len());
        for kind in Kind::ALL {
            let ip = kind.ip();
            assert!(
                super::super::RANGE.overlaps(super::super::Net { addr: ip, prefix: 32 }),
                "{ip}"
            );
        }
    }

    #[test]
    fn bodies_carry_the_server_address_and_the_resolver() {
        let dns = Ipv4Addr::new(198, 18, 1, 53);
        for kind in Kind::ALL {
            let s = server(kind);
            let body = s.egress_body("l", dns);
            assert_eq!(body["ip_address"], s.ip.to_string(), "{kind:?}");
            if kind == Kind::Wireguard {
                assert_eq!(body["tunnel_type"], "wireguard");
                assert_eq!(body["wg_dns_server"], "198.18.1.53");
                assert_eq!(body["wg_endpoint"], "198.18.1.10:51820");
                assert!(body.get("dns_server").is_none());
            } else {
                assert_eq!(body["tunnel_type"], "proxy");
                assert_eq!(body["dns_server"], "198.18.1.53");
                assert_eq!(body["proxy_config"]["type"], kind.name());
                assert_eq!(body["proxy_config"]["server"], s.ip.to_string());
                assert_eq!(body["proxy_config"]["server_port"], s.port);
            }
        }
        let trojan = server(Kind::Trojan).egress_body("t", dns);
        assert_eq!(trojan["proxy_config"]["tls"]["server_name"], TROJAN_SERVER_NAME);
        assert!(
            trojan["proxy_config"]["tls"]["certificate"][0]
                .as_str()
                .is_some_and(|p| p.starts_with("-----BEGIN CERTIFICATE-----"))
        );
    }

    #[test]
    fn the_wireguard_server_config_lists_every_peer_in_order() {
        let mut server = wg();
        server.peers.push((
            "bmV3ZXItcGVlci1rZXktZm9yLXRoZS1mYWtlLW5ldCE=".to_owned(),
            "198.19.77.2/32".to_owned(),
        ));
        let text = server.setconf(51820);
        assert!(text.starts_with("[Interface]\nPrivateKey = KOizr1H1"), "{text}");
        assert!(text.contains("ListenPort = 51820\n"), "{text}");
        assert_eq!(text.matches("[Peer]").count(), 2, "{text}");
        assert_eq!(text.matches("PresharedKey = cHJlc2hhcmVk").count(), 2, "{text}");
        // The newer peer comes last, so it is the one `wg` leaves holding the shared CIDR.
        let older = text.find("PublicKey = x9Bq3U").unwrap();
        let newer = text.find("PublicKey = bmV3ZXIt").unwrap();
        assert!(older < newer, "{text}");
    }

    /// Every shadowsocks method the fake server can take gets a key of its length, in the server's
    /// config and in the egress body alike, and sing-box takes both ends with it.
    #[test]
    fn each_shadowsocks_method_gets_a_key_of_its_length() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let dns = Ipv4Addr::new(198, 18, 1, 53);
        for (method, len) in SHADOWSOCKS_METHODS.into_iter().zip([16, 32, 32]) {
            let s = server(Kind::Shadowsocks).with_shadowsocks_method(method);
            let name = shadowsocks_method_name(method);
            assert!(name.starts_with("2022-blake3-"), "{name}");
            let key = base64::engine::general_purpose::STANDARD
                .decode(&s.password)
                .unwrap();
            assert_eq!(key.len(), len, "{name}");
            let config = s.config(None).unwrap();
            let body = s.egress_body("l", dns);
            assert_eq!(config["inbounds"][0]["method"], name.as_str());
            assert_eq!(config["inbounds"][0]["password"], s.password);
            assert_eq!(body["proxy_config"]["method"], name.as_str());
            assert_eq!(body["proxy_config"]["password"], s.password);
            let client = client_config(&body, None, 1080, None);
            for (end, config) in [("server", config), ("client", client)] {
                sing_box_check(dir.path(), &format!("{method:?}-{end}"), &config);
            }
        }
        // Other kinds keep what they had.
        let socks = server(Kind::Socks);
        let password = socks.password.clone();
        assert_eq!(
            socks
                .with_shadowsocks_method(ShadowsocksMethod::Blake3Chacha20Poly1305)
                .password,
            password
        );
    }

    /// `sing-box check` accepts every server config and the client made from every body (the
    /// trojan ones aside: they need real certificate files, checked when the fake internet starts).
    #[test]
    fn sing_box_accepts_the_configs() {
        let dir = tempfile::tempdir().unwrap();
        let dns = Ipv4Addr::new(198, 18, 1, 53);
        for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::Trojan) {
            let s = server(kind);
            let body = s.egress_body("l", dns);
            let client = client_config(&body, Some(&wg().private_key), 1080, Some(1081));
            let server = s.config(None).map(|c| ("server", c));
            for (name, config) in server.into_iter().chain([("client", client)]) {
                sing_box_check(dir.path(), &format!("{}-{name}", kind.name()), &config);
            }
        }
    }

    /// `sing-box check` of `config`, written to `dir` as `name.json`; a refusal fails the test.
    fn sing_box_check(dir: &std::path::Path, name: &str, config: &Value) {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec(config).unwrap()).unwrap();
        let out = std::process::Command::new(crate::fakenet::sing_box())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .expect("sing-box is installed");
        assert!(
            out.status.success(),
            "{name}: {}\n{config:#}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
