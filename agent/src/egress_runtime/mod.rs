//! The per-host egress tunnel runtime: runs inside the egress container (the owner of a host's
//! network namespace) and keeps that namespace's one way out alive.
//!
//! The agent drops [`RuntimeConfig`] into `DIR/egress.json`; the [`supervisor`] watches that file,
//! starts the tunnel as a child process ([`wireguard`] in a re-executed copy of this binary, or
//! sing-box for proxies, configured by [`singbox`]), installs the policy routing ([`routes`]) that
//! sends every unmarked packet into the tunnel device and nowhere else, restarts the child when it
//! dies, and reports in `DIR/status.json` ([`Status`]). `docs/egress.md` describes the whole picture.

pub mod routes;
pub mod singbox;
pub mod supervisor;
pub mod wireguard;

use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use wire::{EgressSpec, Tunnel};

use crate::firewall::Ipv4Cidr;

/// The tunnel interface in the namespace, for WireGuard and sing-box alike.
pub const TUN_NAME: &str = "ccp-tun";
/// Firewall mark of the tunnel's own packets (its UDP/TCP to the server): they skip the tunnel table.
pub const FWMARK: u32 = 0xcc;
/// Routing table holding the tunnel route(s) and the unreachable fallback.
pub const TABLE: u32 = 2022;
/// MTU of the WireGuard tun device (1500 minus the WireGuard/UDP/IPv4 overhead, rounded as wg-quick).
pub const WG_MTU: u16 = 1420;
/// Persistent keepalive towards the WireGuard server, seconds.
pub const WG_KEEPALIVE_SECS: u16 = 25;
/// The config file the agent writes, in the runtime's directory.
pub const CONFIG_FILE: &str = "egress.json";
/// The status file the supervisor keeps, in the runtime's directory.
pub const STATUS_FILE: &str = "status.json";

/// What the agent hands the runtime: the host's egress, plus what only the node can know.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    pub spec: EgressSpec,
    /// The tunnel server's address, resolved by the agent on the node (the namespace has no DNS
    /// of its own before the tunnel is up).
    pub endpoint_ip: Ipv4Addr,
    /// Inode of the network namespace the agent secured with its firewall. A config for another
    /// namespace (the egress container was re-created) is ignored until the agent re-applies.
    #[serde(default)]
    pub netns_inode: Option<u64>,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // EgressSpec's own Debug already hides keys and passwords.
        f.debug_struct("RuntimeConfig")
            .field("spec", &self.spec)
            .field("endpoint_ip", &self.endpoint_ip)
            .field("netns_inode", &self.netns_inode)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid egress config: {0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what} failed: {stderr}")]
    Command { what: String, stderr: String },
    #[error(transparent)]
    Files(crate::secrets::Error),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

impl RuntimeConfig {
    /// Parses `egress.json`: unknown fields are refused (the format is ours).
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let cfg: Self = serde_json::from_slice(bytes).map_err(|e| Error::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what the tunnel needs before anything is started.
    pub fn validate(&self) -> Result<(), Error> {
        match &self.spec.tunnel {
            Tunnel::Wireguard(wg) => {
                wireguard::Settings::from_spec(wg, self.endpoint_ip)?;
            }
            // Its shape is its type; the control plane checked the rest before sending it.
            Tunnel::Proxy { .. } => {}
        }
        self.spec.dns_server.parse::<Ipv4Addr>().map_err(|_| {
            Error::Invalid(format!(
                "dns_server `{}` is not an IPv4 address",
                self.spec.dns_server
            ))
        })?;
        Ok(())
    }

    /// `wireguard` or `proxy/<type>`, as the status file shows it.
    pub fn tunnel_kind(&self) -> String {
        match &self.spec.tunnel {
            Tunnel::Wireguard(_) => "wireguard".to_owned(),
            Tunnel::Proxy { outbound } => format!("proxy/{}", outbound.kind()),
        }
    }

    /// Destinations routed into the tunnel: WireGuard's allowed IPs, everything for a proxy.
    pub fn routed(&self) -> Result<Vec<Ipv4Cidr>, Error> {
        match &self.spec.tunnel {
            Tunnel::Wireguard(wg) => parse_cidrs(&wg.allowed_ips),
            Tunnel::Proxy { .. } => Ok(vec![Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0)]),
        }
    }
}

/// IPv4 CIDRs of a list; IPv6 entries are skipped (IPv6 never leaves a host namespace).
pub(crate) fn parse_cidrs(list: &[String]) -> Result<Vec<Ipv4Cidr>, Error> {
    let mut out = Vec::new();
    for item in list {
        if item.contains(':') {
            continue;
        }
        out.push(
            item.parse::<Ipv4Cidr>()
                .map_err(|_| Error::Invalid(format!("`{item}` is not an IPv4 CIDR")))?,
        );
    }
    if out.is_empty() {
        return Err(Error::Invalid("no IPv4 allowed_ips".into()));
    }
    Ok(out)
}

/// Where the supervisor stands, as `status.json` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// No config (or one for another namespace): nothing runs.
    Idle,
    /// The tunnel process runs, its interface (or first handshake) is not there yet.
    Starting,
    Up,
    /// The tunnel process died and is being started again.
    Restarting,
    /// The config cannot be run (invalid, `sing-box check` refused it); waits for a new one.
    Failed,
}

/// The tunnel server of `spec`: host name or address, and port (a WireGuard `endpoint`, or a proxy
/// outbound's `server` and `server_port`).
pub fn server_of(spec: &EgressSpec) -> Result<(String, u16), Error> {
    let bad = |why: &str| Error::Invalid(why.to_owned());
    match &spec.tunnel {
        Tunnel::Wireguard(wg) => endpoint_of(&wg.endpoint),
        Tunnel::Proxy { outbound } => match outbound.server() {
            ("", _) => Err(bad("the proxy outbound has no server")),
            (_, 0) => Err(bad("the proxy outbound has no server_port")),
            (host, port) => Ok((host.to_owned(), port)),
        },
    }
}

/// A WireGuard `endpoint`, `host:port` or `[v6]:port`, split.
pub fn endpoint_of(endpoint: &str) -> Result<(String, u16), Error> {
    let bad = |why: &str| Error::Invalid(format!("endpoint `{endpoint}`: {why}"));
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("the port is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host.to_owned(), port))
}

/// `DIR/status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub state: State,
    /// `wireguard`, `proxy/<type>`, or none when idle.
    pub tunnel: Option<String>,
    /// How often the tunnel process was started again after dying (for this config).
    pub restarts: u64,
    pub last_error: Option<String>,
    /// The tunnel process.
    pub pid: Option<u32>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Reads `DIR/status.json` (for the agent and tests).
pub fn read_status(dir: &Path) -> Result<Status, Error> {
    let path = dir.join(STATUS_FILE);
    let bytes = std::fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Inode of this process's network namespace (`stat -L /proc/self/ns/net`).
pub fn current_netns_inode() -> Result<u64, Error> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(Error::io("stat /proc/self/ns/net"))
}

/// Writes `bytes` to `path` readable by its owner only, replacing it atomically.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    crate::secrets::write_private(path, bytes).map_err(Error::Files)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn wg_config() -> RuntimeConfig {
        RuntimeConfig {
            spec: EgressSpec {
                egress_ip_id: "e1".into(),
                declared_ip: "198.18.5.1".into(),
                dns_server: "198.18.5.53".into(),
                tunnel: Tunnel::Wireguard(wire::WireguardSpec {
                    endpoint: "wg.example.test:51820".into(),
                    peer_public_key: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=".into(),
                    preshared_key: Some("FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=".into()),
                    private_key: "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=".into(),
                    allowed_ips: vec!["0.0.0.0/0".into(), "::/0".into()],
                    address: "10.64.0.2/32".into(),
                }),
            },
            endpoint_ip: Ipv4Addr::new(198, 18, 5, 1),
            netns_inode: None,
        }
    }

    #[test]
    fn config_round_trips_and_refuses_unknown_fields() {
        let cfg = wg_config();
        let json = serde_json::to_vec(&cfg).unwrap();
        assert_eq!(RuntimeConfig::parse(&json).unwrap(), cfg);
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        value["extra"] = serde_json::json!(1);
        assert!(RuntimeConfig::parse(&serde_json::to_vec(&value).unwrap()).is_err());
        assert_eq!(cfg.tunnel_kind(), "wireguard");
        assert_eq!(cfg.routed().unwrap(), vec!["0.0.0.0/0".parse().unwrap()]);
    }

    #[test]
    fn debug_hides_keys() {
        let shown = format!("{:?}", wg_config());
        assert!(
            !shown.contains("yAnz5TF") && !shown.contains("FpCyhws"),
            "{shown}"
        );
    }

    #[test]
    fn bad_dns_or_allowed_ips_are_refused() {
        let mut cfg = wg_config();
        cfg.spec.dns_server = "resolver".into();
        assert!(cfg.validate().is_err());
        let mut cfg = wg_config();
        if let Tunnel::Wireguard(wg) = &mut cfg.spec.tunnel {
            wg.allowed_ips = vec!["::/0".into()];
        }
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn status_serialises_states_in_snake_case() {
        let status = Status {
            state: State::Restarting,
            tunnel: Some("proxy/vless".into()),
            restarts: 2,
            last_error: None,
            pid: Some(7),
            updated_at: chrono::Utc::now(),
        };
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["state"], "restarting");
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), status);
    }
}
