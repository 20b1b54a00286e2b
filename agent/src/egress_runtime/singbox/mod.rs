//! The sing-box configuration of a proxy egress, built from typed structs and rendered with
//! `serde_json` (sing-box 1.12+ formats; pinned by golden tests and `sing-box check`).
//!
//! One tun inbound (`ccp-tun`, no auto-route: the runtime owns the policy routing), the spec's
//! outbound (the typed [`ProxyConfig`] the control plane validated, which has no field that could
//! route around the tunnel) tagged `egress` with the server replaced by the address the agent
//! resolved and the tunnel mark added, DNS over TCP through `egress` to the egress's resolver, and
//! DNS packets that reach the tun hijacked into that resolver.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use serde::Serialize;
use wire::proxy::ProxyConfig;

use super::{Error, FWMARK, RuntimeConfig, TUN_NAME};
use crate::firewall::KernelStack;

/// Tag of the spec's outbound.
pub const EGRESS_TAG: &str = "egress";
/// The tun's own address: a /30 out of 100.64.0.0/10 that no tunnel server uses.
pub const TUN_ADDRESS: &str = "100.127.255.253/30";
/// The tun's MTU and stack, picked by measurement (docs/egress.md, "sing-box's tun inbound"):
/// `mixed` (TCP in the kernel's stack, UDP in gVisor's) at the largest MTU moved the most through a
/// shadowsocks tunnel, 1.3-1.6 times gVisor's stack at the same MTU.
const TUN_MTU: u32 = 65535;
const TUN_STACK: &str = "mixed";
/// Where the `mixed` stack's TCP goes: sing-box listens on the tun's address and rewrites each
/// connection to come from the next address of the /30 (sing-tun's `system` stack does so), through
/// the tun and back into the kernel. The namespace's firewall lets exactly that in.
pub const KERNEL_STACK: KernelStack = KernelStack {
    server: Ipv4Addr::new(100, 127, 255, 253),
    client: Ipv4Addr::new(100, 127, 255, 254),
};
const DNS_TAG: &str = "tunnel-dns";

#[derive(Debug, Serialize)]
pub struct Config {
    log: Log,
    dns: Dns,
    inbounds: Vec<TunInbound>,
    outbounds: Vec<EgressOutbound>,
    route: Route,
}

#[derive(Debug, Serialize)]
struct Log {
    level: &'static str,
    timestamp: bool,
}

#[derive(Debug, Serialize)]
struct Dns {
    servers: Vec<DnsServer>,
    #[serde(rename = "final")]
    final_server: &'static str,
    strategy: &'static str,
}

#[derive(Debug, Serialize)]
struct DnsServer {
    #[serde(rename = "type")]
    kind: &'static str,
    tag: &'static str,
    server: Ipv4Addr,
    server_port: u16,
    detour: &'static str,
}

#[derive(Debug, Serialize)]
struct TunInbound {
    #[serde(rename = "type")]
    kind: &'static str,
    tag: &'static str,
    interface_name: &'static str,
    address: Vec<&'static str>,
    mtu: u32,
    auto_route: bool,
    stack: &'static str,
}

/// The spec's outbound (its credentials are redacted in `Debug` by their own type) with our tag
/// and mark.
#[derive(Debug, Serialize)]
struct EgressOutbound {
    #[serde(flatten)]
    outbound: ProxyConfig,
    tag: &'static str,
    routing_mark: u32,
}

#[derive(Debug, Serialize)]
struct Route {
    rules: Vec<RouteRule>,
    #[serde(rename = "final")]
    final_outbound: &'static str,
}

#[derive(Debug, Serialize)]
struct RouteRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<&'static str>,
    action: &'static str,
}

/// Builds the sing-box config for a proxy egress (`Invalid` for a WireGuard one).
pub fn render(cfg: &RuntimeConfig) -> Result<Config, Error> {
    let wire::Tunnel::Proxy { outbound } = &cfg.spec.tunnel else {
        return Err(Error::Invalid("not a proxy egress".into()));
    };
    let dns_server: Ipv4Addr = cfg.spec.dns_server.parse().map_err(|_| {
        Error::Invalid(format!(
            "dns_server `{}` is not an IPv4 address",
            cfg.spec.dns_server
        ))
    })?;
    Ok(Config {
        log: Log {
            level: "warn",
            timestamp: false,
        },
        dns: Dns {
            servers: vec![DnsServer {
                kind: "tcp",
                tag: DNS_TAG,
                server: dns_server,
                server_port: 53,
                detour: EGRESS_TAG,
            }],
            final_server: DNS_TAG,
            strategy: "ipv4_only",
        },
        inbounds: vec![TunInbound {
            kind: "tun",
            tag: "tun-in",
            interface_name: TUN_NAME,
            address: vec![TUN_ADDRESS],
            mtu: TUN_MTU,
            auto_route: false,
            stack: TUN_STACK,
        }],
        outbounds: vec![EgressOutbound {
            outbound: outbound.with_server(cfg.endpoint_ip.to_string()),
            tag: EGRESS_TAG,
            routing_mark: FWMARK,
        }],
        route: Route {
            rules: vec![
                RouteRule {
                    protocol: None,
                    action: "sniff",
                },
                RouteRule {
                    protocol: Some("dns"),
                    action: "hijack-dns",
                },
            ],
            final_outbound: EGRESS_TAG,
        },
    })
}

/// The rendered JSON text (pretty, stable field order).
pub fn to_json(config: &Config) -> Result<Vec<u8>, Error> {
    serde_json::to_vec_pretty(config).map_err(|e| Error::Invalid(e.to_string()))
}

/// `sing-box check -c FILE`; the error carries sing-box's own message.
pub fn check(sing_box: &Path, file: &Path) -> Result<(), Error> {
    let what = format!("{} check", sing_box.display());
    let out = Command::new(sing_box)
        .arg("check")
        .arg("-c")
        .arg(file)
        .output()
        .map_err(Error::io(what.clone()))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr: String = String::from_utf8_lossy(&out.stderr)
            .trim()
            .chars()
            .take(600)
            .collect();
        Err(Error::Command { what, stderr })
    }
}

#[cfg(test)]
mod tests;
