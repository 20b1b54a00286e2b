//! A bound host's egress tunnel as the agent drives it. The tunnel runtime
//! (`cloud-cli-proxy-egress run`) is the egress container's main process; the agent talks to it
//! through two files in the host's egress directory (see [`crate::secrets::Store::egress_dir`]):
//! it writes `egress.json` (the spec, the tunnel server's address resolved on the node, and the
//! inode of the namespace the firewall went into) and reads `status.json`.
//!
//! Order, always: the firewall of the namespace (default-deny, only the tunnel interface out, the
//! tunnel's own packets only to its server) is installed first, then `egress.json` is written with
//! that namespace's inode. The runtime ignores a configuration made for another namespace, so a
//! re-created egress container stays idle (and closed) until the agent has re-applied its rules.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use wire::EgressSpec;

use super::Error;
use crate::firewall::Egress;

/// Where the egress container sees its directory, the runtime binary and sing-box.
pub const EGRESS_MOUNT: &str = "/run/ccp-egress";
pub const RUNTIME_IN_CONTAINER: &str = "/opt/ccp/bin/cloud-cli-proxy-egress";
pub const SING_BOX_IN_CONTAINER: &str = "/opt/ccp/bin/sing-box";

/// How long name resolution of a tunnel server may take on the node.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

pub use crate::egress_runtime::{RuntimeConfig, State as TunnelState, Status as RuntimeStatus};

impl RuntimeConfig {
    /// The firewall rules that go with this configuration.
    pub fn firewall_egress(&self) -> Result<Egress, Error> {
        let (_, port) = server_of(&self.spec)?;
        Ok(Egress::Tunnel {
            endpoint: SocketAddrV4::new(self.endpoint_ip, port),
            dns_server: dns_server_of(&self.spec)?,
            kernel_stack: match self.spec.tunnel {
                wire::Tunnel::Proxy { .. } => Some(crate::egress_runtime::singbox::KERNEL_STACK),
                wire::Tunnel::Wireguard(_) => None,
            },
        })
    }
}

impl RuntimeStatus {
    pub fn is_up(&self) -> bool {
        self.state == TunnelState::Up
    }

    /// The state as `status.json` spells it.
    pub fn state_name(&self) -> String {
        serde_json::to_value(self.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Polls the runtime's status in `dir` until the tunnel is up or `until`; the last status read.
pub async fn wait_up(dir: &std::path::Path, until: std::time::Instant) -> Option<RuntimeStatus> {
    loop {
        let status = crate::egress_runtime::read_status(dir).ok();
        if status.as_ref().is_some_and(RuntimeStatus::is_up) || std::time::Instant::now() >= until {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The tunnel server's host name or address and port, from the spec.
pub fn server_of(spec: &EgressSpec) -> Result<(String, u16), Error> {
    crate::egress_runtime::server_of(spec)
        .map_err(|e| Error::InvalidSpec(format!("egress {}: {e}", spec.egress_ip_id)))
}

fn dns_server_of(spec: &EgressSpec) -> Result<Ipv4Addr, Error> {
    spec.dns_server.parse().map_err(|_| {
        Error::InvalidSpec(format!(
            "egress {}: the DNS server `{}` is not an IPv4 address",
            spec.egress_ip_id, spec.dns_server
        ))
    })
}

/// Resolves the tunnel server on the node (IPv4 only: the namespace has no IPv6 way out).
pub async fn resolve(spec: &EgressSpec) -> Result<SocketAddrV4, Error> {
    let (host, port) = server_of(spec)?;
    dns_server_of(spec)?;
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(SocketAddrV4::new(ip, port));
    }
    let lookup = tokio::net::lookup_host((host.as_str(), port));
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| Error::EgressResolve(format!("resolving {host} took longer than 10 s")))?
        .map_err(|e| Error::EgressResolve(format!("resolving {host}: {e}")))?;
    found
        .into_iter()
        .find_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| Error::EgressResolve(format!("{host} has no IPv4 address")))
}

/// The inode of the network namespace of process `pid` (what the runtime compares with its own).
pub fn netns_inode(pid: i64) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// The value of the egress container's shape label: a change means the container must be made
/// anew (its process, capabilities and resolver are fixed at creation).
pub fn shape(spec: Option<&EgressSpec>) -> String {
    match spec {
        None => "plain".to_owned(),
        // The number counts changes of how a tunnel container is made, so older ones are replaced.
        Some(e) => format!("tunnel/2 dns={}", e.dns_server),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::{Tunnel, WireguardSpec};

    fn wg(endpoint: &str) -> EgressSpec {
        EgressSpec {
            egress_ip_id: "e1".into(),
            declared_ip: "198.18.5.5".into(),
            dns_server: "10.64.0.1".into(),
            tunnel: Tunnel::Wireguard(WireguardSpec {
                endpoint: endpoint.into(),
                peer_public_key: "k".into(),
                preshared_key: None,
                private_key: "p".into(),
                allowed_ips: vec!["0.0.0.0/0".into()],
                address: "10.64.0.2/32".into(),
            }),
        }
    }

    fn proxy(outbound: serde_json::Value) -> EgressSpec {
        EgressSpec {
            tunnel: Tunnel::Proxy {
                outbound: serde_json::from_value(outbound).unwrap(),
            },
            ..wg("x:1")
        }
    }

    #[test]
    fn server_comes_from_either_tunnel_kind() {
        assert_eq!(
            server_of(&wg("198.18.5.5:51820")).unwrap(),
            ("198.18.5.5".into(), 51820)
        );
        assert_eq!(server_of(&wg("vpn.test:443")).unwrap(), ("vpn.test".into(), 443));
        let p = proxy(serde_json::json!({"type": "socks", "server": "198.18.6.6", "server_port": 1080}));
        assert_eq!(server_of(&p).unwrap(), ("198.18.6.6".into(), 1080));
        for bad in [wg("nohost"), wg(":51820"), wg("h:0"), wg("h:70000")] {
            assert!(server_of(&bad).is_err());
        }
        // A port of 0 cannot come from the control plane (it refuses it), nor through here.
        let p = proxy(serde_json::json!({"type": "socks", "server": "h", "server_port": 0}));
        assert!(server_of(&p).is_err());
        let p = proxy(serde_json::json!({"type": "socks", "server": "", "server_port": 1080}));
        assert!(server_of(&p).is_err());
    }

    #[tokio::test]
    async fn literal_addresses_need_no_lookup_and_give_the_firewall_its_endpoint() {
        let spec = wg("198.18.5.5:51820");
        let endpoint = resolve(&spec).await.unwrap();
        assert_eq!(endpoint, SocketAddrV4::new(Ipv4Addr::new(198, 18, 5, 5), 51820));
        let config = RuntimeConfig {
            spec,
            endpoint_ip: *endpoint.ip(),
            netns_inode: Some(7),
        };
        assert_eq!(
            config.firewall_egress().unwrap(),
            Egress::Tunnel {
                endpoint,
                dns_server: Ipv4Addr::new(10, 64, 0, 1),
                kernel_stack: None,
            }
        );
        let mut bad_dns = wg("198.18.5.5:51820");
        bad_dns.dns_server = "resolver.test".into();
        assert!(resolve(&bad_dns).await.is_err());
    }

    #[test]
    fn status_reads_what_the_runtime_writes() {
        let status: RuntimeStatus = serde_json::from_str(
            r#"{"state":"up","tunnel":"wireguard","restarts":2,"last_error":null,"pid":42,"updated_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert!(status.is_up());
        assert_eq!(status.state_name(), "up");
    }

    #[test]
    fn own_namespace_has_an_inode() {
        assert!(netns_inode(i64::from(std::process::id())).is_some());
        assert_ne!(shape(None), shape(Some(&wg("h:1"))));
    }
}
