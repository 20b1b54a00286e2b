//! The fake internet the egress tests run against, all inside 198.18.0.0/15 (set aside for
//! benchmarking): [`FakeInternet`] builds a router, tunnel servers and the probe in network
//! namespaces, counts leaks, and removes it all when dropped.
//!
//! How an egress test uses it (root needed; one fake internet per machine at a time):
//!
//! ```text
//! let mut net = FakeInternet::build("my-test")?;            // sweeps crashed runs, checks the range
//! let (connectivity, ip, dns) = net.probe_urls();            // EGRESS_PROBE_* of the control plane
//! let body = net.egress_body(Kind::Vmess, "vmess-1");        // POST /v1/admin/egress-ips
//! // wireguard: the created egress IP shows wg_client_public_key; let the server accept it:
//! net.add_wireguard_peer(&client_public_key, "198.19.77.2/32")?;   // the body's wg_peer_address
//! net.allow_endpoint(net.server(Kind::Vmess).ip)?;           // the tunnel endpoint is no leak
//! net.reset_leaks()?;
//! // … bind a host, run its checks, kill its tunnel …
//! assert_eq!(net.leaks()?.total(), 0);
//! net.set_reachable(Kind::Vmess, false)?;                    // or stop_server / start_server
//! ```
//!
//! Before anything is built, [`ensure_free`] checks that nothing on this machine already uses the
//! range: no route (other than a default route), no interface address and no resolver. The
//! documentation ranges carry the machine's own uplink here, so no test network may ever be put
//! on them.

use std::net::Ipv4Addr;
use std::process::Command;

mod client;
mod internet;
pub mod leaks;
pub mod netns;
pub mod servers;

pub use client::{Client, whoami};
pub use internet::{
    FakeInternet, LAN_GATEWAY, NODE_PUBLIC, NODE_SIDE, PROBE_DNS_NAME, PROBE_IP, ROUTER_SIDE,
    WG_PEER_ADDRESS, WG_SERVER_ADDRESS, WgServerProgram, fake_wg_bin, probe_bin, self_signed_certificate,
    sing_box, wg_keypair,
};
pub use leaks::LeakCount;
pub use netns::{curl_in, http_status_in, run_in, sweep_stale};
pub use servers::{Kind, Server, client_config, shadowsocks_method_name};

/// An IPv4 network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// Where the fake internet lives.
pub const RANGE: Net = Net {
    addr: Ipv4Addr::new(198, 18, 0, 0),
    prefix: 15,
};

impl Net {
    /// `a.b.c.d/n`, or `a.b.c.d` for a single address.
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, p.parse().ok()?),
            None => (text, 32),
        };
        let net = Self {
            addr: addr.parse().ok()?,
            prefix,
        };
        (prefix <= 32).then_some(net)
    }

    fn mask(self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0)
    }

    /// Whether the two networks share an address.
    pub fn overlaps(self, other: Net) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What of the machine overlaps `range`, from `ip -j -4 route show table all`, `ip -j -4 addr`
/// and resolv.conf. Default routes do not count: they cover everything without using anything.
pub fn collisions(range: Net, routes_json: &str, addrs_json: &str, resolv_conf: &str) -> Vec<String> {
    let mut found = Vec::new();
    let routes: Vec<serde_json::Value> = serde_json::from_str(routes_json).unwrap_or_default();
    for route in &routes {
        let Some(dst) = route["dst"].as_str() else {
            continue;
        };
        match Net::parse(dst) {
            Some(net) if net.prefix > 0 && net.overlaps(range) => {
                found.push(format!(
                    "route {dst} dev {}",
                    route["dev"].as_str().unwrap_or("?")
                ));
            }
            _ => {}
        }
    }
    let links: Vec<serde_json::Value> = serde_json::from_str(addrs_json).unwrap_or_default();
    for link in &links {
        for info in link["addr_info"].as_array().into_iter().flatten() {
            let (Some(local), Some(prefix)) = (info["local"].as_str(), info["prefixlen"].as_u64()) else {
                continue;
            };
            if let Some(net) = Net::parse(&format!("{local}/{prefix}"))
                && net.overlaps(range)
            {
                found.push(format!(
                    "address {net} on {}",
                    link["ifname"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver")
            && let Some(net) = words.next().and_then(Net::parse)
            && net.overlaps(range)
        {
            found.push(format!("resolver {}", net.addr));
        }
    }
    found
}

/// Refuses (with what collides) when `range` is in use on this machine.
pub fn ensure_free(range: Net) -> Result<(), String> {
    let found = in_use(range)?;
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!("{range} is in use on this machine: {}", found.join("; ")))
    }
}

/// What of this machine's routes, addresses and resolvers overlaps `range`.
pub fn in_use(range: Net) -> Result<Vec<String>, String> {
    let ip = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let routes = ip(&["-j", "-4", "route", "show", "table", "all"])?;
    let addrs = ip(&["-j", "-4", "addr"])?;
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    Ok(collisions(range, &routes, &addrs, &resolv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_rules() {
        let n = |s| Net::parse(s).unwrap();
        assert!(RANGE.overlaps(n("198.19.255.1")));
        assert!(RANGE.overlaps(n("198.0.0.0/8")));
        assert!(!RANGE.overlaps(n("198.20.0.0/16")));
        assert!(!RANGE.overlaps(n("192.0.2.0/24")));
        assert!(n("0.0.0.0/0").overlaps(RANGE));
        assert_eq!(Net::parse("1.2.3.4/33"), None);
        assert_eq!(Net::parse("default"), None);
    }

    #[test]
    fn finds_routes_addresses_and_resolvers_but_not_default_routes() {
        let routes = r#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0"},
            {"dst":"198.18.4.0/24","dev":"br-x"},{"dst":"172.17.0.0/16","dev":"docker0"}]"#;
        let addrs = r#"[{"ifname":"lo","addr_info":[{"local":"127.0.0.1","prefixlen":8}]},
            {"ifname":"veth0","addr_info":[{"local":"198.19.0.7","prefixlen":30}]}]"#;
        let resolv = "# comment\nnameserver 10.255.255.53\nnameserver 198.18.0.53\n";
        let found = collisions(RANGE, routes, addrs, resolv);
        assert_eq!(
            found,
            vec![
                "route 198.18.4.0/24 dev br-x".to_owned(),
                "address 198.19.0.7/30 on veth0".to_owned(),
                "resolver 198.18.0.53".to_owned(),
            ]
        );
        assert!(collisions(RANGE, r#"[{"dst":"default","dev":"eth0"}]"#, "[]", "").is_empty());
    }

    #[test]
    fn this_machine_leaves_the_range_free() {
        // The guard the fake internet runs first.
        ensure_free(RANGE).unwrap();
        // A positive control on real output: loopback is always routed and addressed.
        let loopback = in_use(Net::parse("127.0.0.0/8").unwrap()).unwrap();
        assert!(
            loopback.iter().any(|c| c.starts_with("route 127.")),
            "{loopback:?}"
        );
        assert!(
            loopback
                .iter()
                .any(|c| c.starts_with("address 127.0.0.1/8 on lo")),
            "{loopback:?}"
        );
    }
}
