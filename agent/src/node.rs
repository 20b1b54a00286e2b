//! Facts about the machine the agent runs on that the host firewall needs: the node's own IPv4
//! addresses (a host must not reach services the node binds on them) and its DNS resolvers (the
//! upstreams Docker's embedded DNS forwards a host's queries to, from the host's namespace).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// The node's IPv4 addresses, from `ip -json -4 addr show`. Empty if `ip` fails: the firewall then
/// still blocks every private range, and the failure is logged.
pub async fn ipv4_addresses(timeout: Duration) -> Vec<Ipv4Addr> {
    let output = Command::new("ip")
        .args(["-json", "-4", "addr", "show"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, output).await {
        Ok(Ok(out)) if out.status.success() => parse_ip_json(&String::from_utf8_lossy(&out.stdout)),
        other => {
            tracing::warn!(result = ?other.map(|r| r.map(|o| o.status)), "could not list the node's addresses");
            Vec::new()
        }
    }
}

/// Extracts every `addr_info[].local` IPv4 address from `ip -json addr` output.
pub fn parse_ip_json(json: &str) -> Vec<Ipv4Addr> {
    let Ok(serde_json::Value::Array(links)) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut out: Vec<Ipv4Addr> = links
        .iter()
        .filter_map(|link| link.get("addr_info").and_then(|a| a.as_array()))
        .flatten()
        .filter_map(|info| info.get("local").and_then(|l| l.as_str()))
        .filter_map(|s| s.parse().ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The node's IPv4 resolvers, as Docker picks them: `/etc/resolv.conf`, or systemd-resolved's
/// upstream list when that file only names the local stub.
pub fn resolvers() -> Vec<Ipv4Addr> {
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let found = parse_resolv_conf(&main);
    if found.is_empty() && main.contains("127.0.0.53") {
        let upstream = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").unwrap_or_default();
        return parse_resolv_conf(&upstream);
    }
    found
}

/// Non-loopback IPv4 `nameserver` entries (a loopback resolver is the node's own, unreachable from a
/// host's namespace anyway).
pub fn parse_resolv_conf(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|addr| addr.parse::<IpAddr>().ok())
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
            _ => None,
        })
        .collect()
}

/// IPv4 addresses of the control plane (resolved from its URL), so hosts can be kept away from it.
pub async fn control_plane_addresses(url: &str, timeout: Duration) -> Vec<Ipv4Addr> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Vec::new();
    };
    let Some(host) = parsed.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()) else {
        return Vec::new();
    };
    let port = parsed.port_or_known_default().unwrap_or(80);
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port))).await {
        Ok(Ok(addrs)) => {
            let mut v: Vec<Ipv4Addr> = addrs
                .filter_map(|a| match a.ip() {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        _ => {
            tracing::warn!(%host, "could not resolve the control plane's address");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json() {
        let json = r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
            {"ifname":"eth0","addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24},
            {"family":"inet","local":"192.0.2.9"}]},{"ifname":"ifb0","addr_info":[]}]"#;
        assert_eq!(
            parse_ip_json(json),
            [
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(192, 0, 2, 2),
                Ipv4Addr::new(192, 0, 2, 9)
            ]
        );
        assert!(parse_ip_json("not json").is_empty());
    }

    #[test]
    fn parses_resolv_conf() {
        let text = "# comment\nnameserver 10.255.255.53\nnameserver 127.0.0.53\nnameserver ::1\n\
                    search example\nnameserver  9.9.9.9 \n";
        assert_eq!(
            parse_resolv_conf(text),
            [Ipv4Addr::new(10, 255, 255, 53), Ipv4Addr::new(9, 9, 9, 9)]
        );
    }

    #[tokio::test]
    async fn resolves_literal_control_plane_address() {
        let addrs = control_plane_addresses("http://127.0.0.1:8080", Duration::from_secs(5)).await;
        assert_eq!(addrs, [Ipv4Addr::LOCALHOST]);
        assert!(
            control_plane_addresses("nonsense", Duration::from_secs(1))
                .await
                .is_empty()
        );
    }
}
