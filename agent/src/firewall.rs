//! The nftables ruleset of a host's network namespace, and installing it from the node.
//!
//! Each host's namespace is owned by its egress container; the host container joins it without
//! NET_ADMIN/NET_RAW, so nothing inside can change what is rendered here. The ruleset is one `inet`
//! table with default-drop on input, output and forward, for IPv4 and IPv6 alike:
//!
//! - input: loopback, replies, and new TCP connections to SSH/VNC only from the node's address on the
//!   hosts bridge (where the SSH gateway and the VNC proxy connect from);
//! - output: loopback and replies; with direct egress, the public internet minus every private,
//!   shared, loopback, link-local (metadata), multicast and reserved range, the hosts bridge, the node's
//!   own addresses and the control plane's; DNS only to the node's resolvers (the upstreams of
//!   Docker's embedded DNS, whose forwarded queries leave from this namespace);
//! - output with a tunnel: nothing leaves by any interface but the tunnel's (`ccp-tun`) except the
//!   tunnel's own packets (firewall mark [`TUNNEL_MARK`]) to the tunnel server's address and port, and
//!   replies on the hosts bridge; these checks come before the conntrack shortcut, so a connection
//!   opened through the tunnel cannot continue on the bridge when the tunnel goes away. Through the
//!   tunnel: the egress DNS server, then the public internet minus the blocked ranges. Every DNS
//!   query to a non-loopback address is rewritten (DNAT) to the egress DNS server, so an edited
//!   `/etc/resolv.conf` still resolves through the tunnel; Docker's embedded resolver (127.0.0.11)
//!   is given that server as its upstream and forwards from this namespace, through the tunnel too;
//! - IPv6: dropped entirely except loopback.
//!
//! [`render`] is pure (golden-tested, checked with `nft -c` when available); [`apply`] loads it with
//! `nsenter --net=/proc/<pid>/ns/net nft -f -` as one atomic transaction (the table is replaced, never
//! flushed and refilled, so there is no window without rules) and reads it back to verify.

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Name of our table; `apply` replaces only it, never other tables in the namespace (Docker's NAT for
/// its embedded DNS lives there too).
pub const TABLE: &str = "ccp";

/// The tunnel interface the egress runtime creates in the namespace, and the firewall mark of the
/// tunnel's own packets (WireGuard's UDP, sing-box's connections to its server).
pub use crate::egress_runtime::{FWMARK as TUNNEL_MARK, TUN_NAME as TUNNEL_INTERFACE};

/// IPv4 ranges a host never reaches directly, whatever its egress: private, shared (CGNAT), loopback,
/// link-local (cloud metadata), multicast, reserved and "this network".
pub const BLOCKED_RANGES: [Ipv4Cidr; 10] = [
    Ipv4Cidr::new_const([0, 0, 0, 0], 8),
    Ipv4Cidr::new_const([10, 0, 0, 0], 8),
    Ipv4Cidr::new_const([100, 64, 0, 0], 10),
    Ipv4Cidr::new_const([127, 0, 0, 0], 8),
    Ipv4Cidr::new_const([169, 254, 0, 0], 16),
    Ipv4Cidr::new_const([172, 16, 0, 0], 12),
    Ipv4Cidr::new_const([192, 168, 0, 0], 16),
    Ipv4Cidr::new_const([192, 0, 0, 0], 24),
    Ipv4Cidr::new_const([224, 0, 0, 0], 4),
    Ipv4Cidr::new_const([240, 0, 0, 0], 4),
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{0}` is not an IPv4 CIDR")]
    BadCidr(String),
    #[error("could not run {program}: {source} (the node needs nftables and util-linux)")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("{what} failed: {stderr}")]
    Command { what: &'static str, stderr: String },
    #[error("{what} took longer than {secs} s")]
    Timeout { what: &'static str, secs: u64 },
    #[error("the ruleset read back from the namespace is not ours")]
    NotInstalled,
}

/// An IPv4 network, `a.b.c.d/len`, kept normalised (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// Normalises `addr` to its network; `prefix` is clamped to 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    const fn new_const(octets: [u8; 4], prefix: u8) -> Self {
        Self {
            addr: Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]),
            prefix,
        }
    }

    pub fn host(addr: Ipv4Addr) -> Self {
        Self { addr, prefix: 32 }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// Whether all of `other` lies inside `self`.
    pub fn covers(&self, other: &Ipv4Cidr) -> bool {
        self.prefix <= other.prefix && self.contains(other.addr)
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == 32 {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || Error::BadCidr(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad())?),
            None => (s, 32),
        };
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Self::new(addr.parse().map_err(|_| bad())?, prefix))
    }
}

/// Where a host's new outbound connections may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Egress {
    /// Nothing but replies to ingress.
    Deny,
    /// Straight out through the node's NAT, to public addresses only.
    Direct {
        /// The only destinations for DNS (TCP/UDP 53): the node's resolvers.
        dns_servers: Vec<Ipv4Addr>,
    },
    /// Only through the tunnel interface; the tunnel itself talks to its server and nothing else.
    Tunnel {
        /// The tunnel server (resolved on the node) and its port.
        endpoint: SocketAddrV4,
        /// The resolver behind the tunnel that every DNS query is sent to.
        dns_server: Ipv4Addr,
        /// Set when the tunnel program terminates the host's TCP in the kernel's stack.
        kernel_stack: Option<KernelStack>,
    },
}

/// A tunnel program that hands the host's TCP connections to the kernel's own stack (sing-box's
/// `system` and `mixed` stacks): it rewrites each packet it reads from the tun to go from `client`
/// to its listener on `server` (both addresses of the tun's own small network, which no other
/// packet carries) and writes it back into the tun; what comes back from the listener it rewrites
/// the other way. So the namespace must let new TCP connections in from the tun to that listener,
/// and the traffic counters must not count those rewritten packets a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelStack {
    /// The tun's address, where the program's listener is.
    pub server: Ipv4Addr,
    /// The address the program's rewritten connections come from.
    pub client: Ipv4Addr,
}

/// Everything the ruleset depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallSpec {
    /// The hosts bridge network (other hosts live there).
    pub bridge_subnet: Ipv4Cidr,
    /// The node's address on the bridge: the only source of ingress.
    pub gateway: Ipv4Addr,
    /// TCP ports open to the gateway (SSH and VNC).
    pub ingress_ports: Vec<u16>,
    /// Addresses of the node itself and of the control plane, never reachable from a host.
    pub blocked_hosts: Vec<Ipv4Addr>,
    pub egress: Egress,
}

/// Renders the nftables script for one host namespace. The output is deterministic: the same spec
/// always gives the same text, so it can be compared and golden-tested.
pub fn render(spec: &FirewallSpec) -> String {
    let mut ports = spec.ingress_ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");

    let mut out = String::new();
    // `writeln!` into a String cannot fail; the results are ignored through `line`.
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };
    line("#!/usr/sbin/nft -f");
    line("# cloud-cli-proxy host namespace firewall, rendered by the agent. Loaded as one transaction:");
    line("# the table is created if missing, deleted and re-created, so it is never seen half-built.");
    line(&format!("table inet {TABLE}"));
    line(&format!("delete table inet {TABLE}"));
    line(&format!("table inet {TABLE} {{"));
    line("\tchain input {");
    line("\t\ttype filter hook input priority filter; policy drop;");
    line("\t\tiif \"lo\" accept");
    if spec.egress == Egress::Deny {
        line(&format!("\t\tip saddr != {} drop", spec.bridge_subnet));
    }
    line("\t\tct state invalid drop");
    line("\t\tct state established,related accept");
    line("\t\tmeta nfproto ipv6 drop");
    if !ports.is_empty() {
        line(&format!(
            "\t\tip saddr {} tcp dport {{ {ports} }} ct state new accept",
            spec.gateway
        ));
    }
    if let Egress::Tunnel {
        kernel_stack: Some(stack),
        ..
    } = &spec.egress
    {
        // Only what the tunnel program itself wrote into the tun carries these two addresses.
        line(&format!(
            "\t\tiifname \"{TUNNEL_INTERFACE}\" ip saddr {} ip daddr {} tcp flags & (syn | ack) == syn ct state new accept",
            stack.client, stack.server
        ));
    }
    line("\t}");
    line("");
    line("\tchain forward {");
    line("\t\ttype filter hook forward priority filter; policy drop;");
    line("\t}");
    line("");
    line("\tchain output {");
    line("\t\ttype filter hook output priority filter; policy drop;");
    line("\t\toif \"lo\" accept");
    line("\t\tmeta nfproto ipv6 drop");
    if let Egress::Tunnel { endpoint, .. } = &spec.egress {
        let off_tunnel = format!("\t\toifname != \"{TUNNEL_INTERFACE}\"");
        line(&format!(
            "{off_tunnel} meta mark != {TUNNEL_MARK:#x} ip daddr != {} drop",
            spec.bridge_subnet
        ));
        line(&format!(
            "{off_tunnel} meta mark {TUNNEL_MARK:#x} ip daddr != {} drop",
            endpoint.ip()
        ));
        line(&format!(
            "{off_tunnel} meta mark {TUNNEL_MARK:#x} meta l4proto != {{ tcp, udp }} drop"
        ));
        line(&format!(
            "{off_tunnel} meta mark {TUNNEL_MARK:#x} th dport != {} drop",
            endpoint.port()
        ));
    }
    if spec.egress == Egress::Deny {
        // Before the conntrack shortcut, so a connection opened under an earlier egress (a quota
        // cut it, say) gets no further packet out.
        line(&format!("\t\tip daddr != {} drop", spec.bridge_subnet));
    }
    line("\t\tct state invalid drop");
    line("\t\tct state established,related accept");
    match &spec.egress {
        Egress::Deny => {}
        Egress::Direct { dns_servers } => {
            let mut dns = dns_servers.clone();
            dns.sort_unstable();
            dns.dedup();
            if !dns.is_empty() {
                let dns = dns.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(", ");
                line(&format!(
                    "\t\tip daddr {{ {dns} }} meta l4proto {{ tcp, udp }} th dport 53 accept"
                ));
            }
            line("\t\tmeta l4proto { tcp, udp } th dport { 53, 853 } drop");
            line(&format!("\t\tip daddr {{ {} }} drop", blocked_set(spec)));
            line("\t\tmeta nfproto ipv4 accept");
        }
        Egress::Tunnel {
            endpoint, dns_server, ..
        } => {
            line(&format!(
                "\t\tmeta mark {TUNNEL_MARK:#x} ip daddr {} meta l4proto {{ tcp, udp }} th dport {} accept",
                endpoint.ip(),
                endpoint.port()
            ));
            line(&format!("\t\toifname != \"{TUNNEL_INTERFACE}\" drop"));
            line(&format!(
                "\t\tip daddr {dns_server} meta l4proto {{ tcp, udp }} th dport 53 accept"
            ));
            line(&format!("\t\tip daddr {{ {} }} drop", blocked_set(spec)));
            line("\t\tmeta nfproto ipv4 accept");
        }
    }
    line("\t}");
    if let Egress::Tunnel { dns_server, .. } = &spec.egress {
        line("");
        line("\tchain dns {");
        line("\t\ttype nat hook output priority -110; policy accept;");
        line(&format!(
            "\t\tmeta mark != {TUNNEL_MARK:#x} ip daddr != 127.0.0.0/8 meta l4proto {{ tcp, udp }} th dport 53 dnat ip to {dns_server}"
        ));
        line("\t}");
    }
    line("}");
    let kernel_stack = match &spec.egress {
        Egress::Tunnel { kernel_stack, .. } => *kernel_stack,
        _ => None,
    };
    out.push_str(&crate::traffic::render(spec.bridge_subnet, kernel_stack));
    out
}

/// The blocked destinations, without overlaps (nft rejects overlapping intervals in one set): a range
/// covered by a wider one is left out.
fn blocked_set(spec: &FirewallSpec) -> String {
    let mut all: Vec<Ipv4Cidr> = BLOCKED_RANGES.to_vec();
    all.push(spec.bridge_subnet);
    all.push(Ipv4Cidr::host(spec.gateway));
    all.extend(spec.blocked_hosts.iter().copied().map(Ipv4Cidr::host));
    all.sort_unstable();
    all.dedup();
    let kept: Vec<Ipv4Cidr> = all
        .iter()
        .filter(|c| !all.iter().any(|other| other != *c && other.covers(c)))
        .copied()
        .collect();
    kept.iter()
        .map(Ipv4Cidr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loads `ruleset` into the network namespace of process `pid` and verifies it by reading our table
/// back. The agent runs as root on the node; `nsenter` and `nft` are the node's binaries, so nothing
/// in the (tenant-reachable) namespace is trusted to do it.
pub async fn apply(pid: i64, ruleset: &str, timeout: Duration) -> Result<(), Error> {
    let netns = format!("--net=/proc/{pid}/ns/net");
    run_nft(
        &[&netns, "nft", "-f", "-"],
        Some(ruleset),
        timeout,
        "nft -f (load ruleset)",
    )
    .await?;
    let listed = run_nft(
        &[&netns, "nft", "list", "table", "inet", TABLE],
        None,
        timeout,
        "nft list table (verify ruleset)",
    )
    .await?;
    if verify(&listed) {
        Ok(())
    } else {
        Err(Error::NotInstalled)
    }
}

/// Our table as the namespace of process `pid` holds it now (`nft list table inet ccp`).
pub async fn read(pid: i64, timeout: Duration) -> Result<String, Error> {
    let netns = format!("--net=/proc/{pid}/ns/net");
    run_nft(
        &[&netns, "nft", "list", "table", "inet", TABLE],
        None,
        timeout,
        "nft list table",
    )
    .await
}

/// Table `table` of the namespace of process `pid`, as `nft -j` lists it (JSON, counters included).
pub async fn list_json(pid: i64, table: &str, timeout: Duration) -> Result<String, Error> {
    let netns = format!("--net=/proc/{pid}/ns/net");
    run_nft(
        &[&netns, "nft", "-j", "list", "table", "inet", table],
        None,
        timeout,
        "nft -j list table",
    )
    .await
}

/// Whether `nft list table inet ccp` output shows our three chains with policy drop.
pub fn verify(listed: &str) -> bool {
    let header = format!("table inet {TABLE} {{");
    listed.contains(&header)
        && ["input", "forward", "output"].iter().all(|chain| {
            listed
                .split(&format!("chain {chain} {{"))
                .nth(1)
                .and_then(|rest| rest.lines().nth(1))
                .is_some_and(|hook| hook.contains(&format!("hook {chain}")) && hook.contains("policy drop;"))
        })
}

/// Checks that `nsenter` and `nft` can be run on this node.
pub async fn preflight(timeout: Duration) -> Result<(), Error> {
    for (program, what) in [("nft", "nft --version"), ("nsenter", "nsenter --version")] {
        exec(program, &["--version"], None, timeout, what).await?;
    }
    Ok(())
}

/// Syntax-checks a ruleset with `nft -c` (no namespace needed; used by tests and preflight).
pub async fn check(ruleset: &str, timeout: Duration) -> Result<(), Error> {
    exec("nft", &["-c", "-f", "-"], Some(ruleset), timeout, "nft -c")
        .await
        .map(drop)
}

async fn run_nft(
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
    what: &'static str,
) -> Result<String, Error> {
    exec("nsenter", args, stdin, timeout, what).await
}

async fn exec(
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
    what: &'static str,
) -> Result<String, Error> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn { program, source })?;
    let run = async {
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .map_err(|source| Error::Spawn { program, source })?;
            drop(pipe);
        }
        child
            .wait_with_output()
            .await
            .map_err(|source| Error::Spawn { program, source })
    };
    let output = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| Error::Timeout {
            what,
            secs: timeout.as_secs(),
        })??;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.is_empty() {
            let _ = write!(stderr, "exit status {}", output.status);
        }
        Err(Error::Command { what, stderr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(egress: Egress) -> FirewallSpec {
        FirewallSpec {
            bridge_subnet: "172.30.0.0/16".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 30, 0, 1),
            ingress_ports: vec![6080, 22, 22],
            blocked_hosts: vec![Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(10, 1, 2, 3)],
            egress,
        }
    }

    fn direct() -> Egress {
        Egress::Direct {
            dns_servers: vec![Ipv4Addr::new(10, 255, 255, 53), Ipv4Addr::new(9, 9, 9, 9)],
        }
    }

    #[test]
    fn cidr_parses_normalises_and_covers() {
        let c: Ipv4Cidr = "172.30.5.7/16".parse().unwrap();
        assert_eq!(c.to_string(), "172.30.0.0/16");
        assert!(c.contains(Ipv4Addr::new(172, 30, 255, 1)));
        assert!(!c.contains(Ipv4Addr::new(172, 31, 0, 1)));
        assert!(BLOCKED_RANGES[5].covers(&c));
        assert!(!c.covers(&BLOCKED_RANGES[5]));
        assert_eq!("1.2.3.4".parse::<Ipv4Cidr>().unwrap().to_string(), "1.2.3.4");
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().to_string(), "0.0.0.0/0");
        for bad in ["1.2.3.4/33", "1.2.3/8", "x", "1.2.3.4/"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    /// Compares with `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites the file instead.
    fn golden(name: &str, rendered: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, rendered).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            rendered,
            expected,
            "{} differs (UPDATE_GOLDEN=1 rewrites it)",
            path.display()
        );
    }

    #[test]
    fn direct_ruleset_matches_golden_file() {
        golden("firewall_direct.nft", &render(&spec(direct())));
    }

    fn tunnel() -> Egress {
        Egress::Tunnel {
            endpoint: SocketAddrV4::new(Ipv4Addr::new(198, 18, 3, 4), 51820),
            dns_server: Ipv4Addr::new(10, 64, 0, 1),
            kernel_stack: None,
        }
    }

    /// A proxy tunnel whose program (sing-box) uses the kernel's TCP stack.
    fn proxy_tunnel() -> Egress {
        Egress::Tunnel {
            endpoint: SocketAddrV4::new(Ipv4Addr::new(198, 18, 3, 5), 8388),
            dns_server: Ipv4Addr::new(10, 64, 0, 1),
            kernel_stack: Some(KernelStack {
                server: Ipv4Addr::new(100, 127, 255, 253),
                client: Ipv4Addr::new(100, 127, 255, 254),
            }),
        }
    }

    #[test]
    fn tunnel_ruleset_matches_golden_file() {
        golden("firewall_tunnel.nft", &render(&spec(tunnel())));
    }

    #[test]
    fn proxy_tunnel_ruleset_matches_golden_file() {
        golden("firewall_proxy_tunnel.nft", &render(&spec(proxy_tunnel())));
    }

    #[test]
    fn only_a_kernel_stack_tunnel_lets_connections_in_from_the_tun() {
        let input = |egress: Egress| {
            let rendered = render(&spec(egress));
            rendered
                .split("chain input {")
                .nth(1)
                .unwrap()
                .split("\n\t}")
                .next()
                .unwrap()
                .to_owned()
        };
        // WireGuard: what arrives through the tun is the far side's; nothing new may come in by it.
        assert!(!input(tunnel()).contains("ccp-tun"), "{}", input(tunnel()));
        let proxy = input(proxy_tunnel());
        let rule = proxy.lines().find(|l| l.contains("iifname \"ccp-tun\"")).unwrap();
        assert!(
            rule.contains("ip saddr 100.127.255.254 ip daddr 100.127.255.253")
                && rule.contains("tcp flags & (syn | ack) == syn ct state new accept"),
            "{rule}"
        );
        // The rewritten packets are not traffic of the host's: both counters skip them.
        let rendered = render(&spec(proxy_tunnel()));
        for chain in ["in", "out"] {
            assert!(
                rendered.contains(&format!(
                    "add rule inet ccp_acct {chain} ip saddr 100.127.255.254 ip daddr 100.127.255.253 return"
                )) && rendered.contains(&format!(
                    "add rule inet ccp_acct {chain} ip saddr 100.127.255.253 ip daddr 100.127.255.254 return"
                )),
                "{rendered}"
            );
        }
    }

    #[test]
    fn tunnel_checks_interface_and_mark_before_replies() {
        let rendered = render(&spec(tunnel()));
        let output = rendered.split("chain output {").nth(1).unwrap();
        let off_tunnel = output.find("oifname != \"ccp-tun\" meta mark != 0xcc").unwrap();
        let replies = output.find("ct state established,related accept").unwrap();
        assert!(off_tunnel < replies, "{output}");
        // The DNS server may sit in a private range behind the tunnel: allowed before the blocked set.
        assert!(output.find("ip daddr 10.64.0.1").unwrap() < output.find("10.0.0.0/8").unwrap());
        assert!(rendered.contains("dnat ip to 10.64.0.1"));
    }

    #[test]
    fn deny_ruleset_matches_golden_file() {
        golden("firewall_deny.nft", &render(&spec(Egress::Deny)));
    }

    #[test]
    fn blocked_set_has_no_overlaps_and_keeps_public_hosts() {
        let set = blocked_set(&spec(direct()));
        // The bridge, the gateway and 10.1.2.3 are inside wider blocked ranges; 192.0.2.2 is not.
        assert!(!set.contains("172.30.0.0/16") && !set.contains("172.30.0.1") && !set.contains("10.1.2.3"));
        assert!(set.contains("192.0.2.2") && set.contains("169.254.0.0/16") && set.contains("172.16.0.0/12"));
    }

    #[test]
    fn bridge_outside_private_ranges_is_still_blocked() {
        let mut s = spec(direct());
        s.bridge_subnet = "198.18.0.0/24".parse().unwrap();
        s.gateway = Ipv4Addr::new(198, 18, 0, 1);
        let set = blocked_set(&s);
        assert!(set.contains("198.18.0.0/24"));
        assert!(
            !set.contains("198.18.0.1,"),
            "gateway is covered by the bridge: {set}"
        );
    }

    #[test]
    fn deny_has_no_way_out_but_replies() {
        let rendered = render(&spec(Egress::Deny));
        let output = rendered.split("chain output {").nth(1).unwrap();
        assert!(!output.contains("meta nfproto ipv4 accept"));
        assert!(!output.contains("dport 53 accept"));
    }

    #[test]
    fn verify_recognises_listed_table() {
        let listed = "table inet ccp {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n\
                      \tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n\
                      \tchain output {\n\t\ttype filter hook output priority filter; policy drop;\n\t}\n}\n";
        assert!(verify(listed));
        assert!(!verify(&listed.replace(
            "output priority filter; policy drop",
            "output priority filter; policy accept"
        )));
        assert!(!verify(""));
    }

    /// `nft -c` parses and checks the ruleset against the kernel without loading it; skipped where the
    /// node lacks nft or the permission to talk netlink.
    #[tokio::test]
    async fn rendered_rulesets_pass_nft_check() {
        if let Err(e) = preflight(Duration::from_secs(10)).await {
            crate::skip_unless_required("CCP_REQUIRE_NETNS", &format!("no nft -c here: {e}"));
            return;
        }
        for egress in [direct(), Egress::Deny, tunnel()] {
            match check(&render(&spec(egress)), Duration::from_secs(10)).await {
                Ok(()) => {}
                Err(Error::Command { stderr, .. }) if stderr.contains("Operation not permitted") => {
                    crate::skip_unless_required("CCP_REQUIRE_NETNS", "nft -c is not permitted here");
                    return;
                }
                Err(e) => panic!("nft rejected the ruleset: {e}"),
            }
        }
    }
}
