//! Policy routing of the host namespace, installed by the runtime itself over rtnetlink (no `ip`
//! process: under a per-container image mount such as `fuse-overlayfs`, iproute2 and the libraries
//! it loads would stay cached in every bound host's memory).
//!
//! - rule 99: `lookup main suppress_prefixlength 0`: connected routes (the hosts bridge) still work,
//!   so replies to inbound SSH/VNC from the node go back out the uplink; main's default route is
//!   suppressed;
//! - rule 100: `not fwmark 0xcc lookup 2022`: every other unmarked packet uses the tunnel table;
//! - table 2022: the tunnel route(s) via `ccp-tun`, and an `unreachable default` with the highest
//!   metric. The kernel drops routes of a device that disappears, so while the tunnel process is
//!   down only the unreachable route is left: packets fail with "network unreachable" instead of
//!   falling through to the next rule (an empty table would let the lookup continue to `main`).
//!
//! The tunnel's own sockets carry mark 0xcc and therefore use `main` (default via the uplink).
//! The messages are built by pure functions, so they are tested without a namespace; each request
//! waits for the kernel's answer, and a refusal is an error naming what was asked.

use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::{Error, FWMARK, TABLE};
use crate::firewall::Ipv4Cidr;

/// Metric of the unreachable fallback: loses to any tunnel route.
const FALLBACK_METRIC: u32 = u32::MAX;
/// The main routing table.
const MAIN: u8 = 254;
/// Room for the kernel's answer to one request (an ACK, or an error echoing the request).
const ANSWER: usize = 8192;

/// Rule 99 (IPv4 only: IPv6 has no uplink to keep) and rule 100 of `family`.
pub fn policy_rules(family: AddressFamily) -> Vec<RuleMessage> {
    let rule = |priority: u32, table: u8, flags: RuleFlags, attributes: Vec<RuleAttribute>| {
        let mut m = RuleMessage::default();
        m.header.family = family;
        m.header.table = table;
        m.header.action = RuleAction::ToTable;
        m.header.flags = flags;
        m.attributes = [RuleAttribute::Priority(priority)]
            .into_iter()
            .chain(attributes)
            .collect();
        m
    };
    let mut rules = Vec::new();
    if family == AddressFamily::Inet {
        rules.push(rule(
            99,
            MAIN,
            RuleFlags::empty(),
            vec![
                RuleAttribute::Table(MAIN.into()),
                RuleAttribute::SuppressPrefixLen(0),
            ],
        ));
    }
    rules.push(rule(
        100,
        0,
        RuleFlags::Invert,
        vec![
            RuleAttribute::FwMark(FWMARK),
            RuleAttribute::FwMask(u32::MAX),
            RuleAttribute::Table(TABLE),
        ],
    ));
    rules
}

/// The fallback that keeps table 2022 failing closed when the tunnel device is gone (IPv4 with the
/// highest metric; IPv6 has nothing else in that table).
pub fn fallback_route(family: AddressFamily) -> RouteMessage {
    let mut m = route_in_table(family, RouteType::Unreachable, RouteScope::Universe, 0);
    if family == AddressFamily::Inet {
        m.attributes.push(RouteAttribute::Priority(FALLBACK_METRIC));
    }
    m
}

/// Routes of `cidrs` via the device of index `device` in table 2022.
pub fn tunnel_routes(device: u32, cidrs: &[Ipv4Cidr]) -> Vec<RouteMessage> {
    cidrs
        .iter()
        .map(|c| {
            let mut m = route_in_table(
                AddressFamily::Inet,
                RouteType::Unicast,
                RouteScope::Link,
                c.prefix(),
            );
            if c.prefix() > 0 {
                m.attributes
                    .push(RouteAttribute::Destination(IpAddr::V4(c.addr()).into()));
            }
            m.attributes.push(RouteAttribute::Oif(device));
            m
        })
        .collect()
}

/// A route of `kind` to a destination of `prefix` bits in table 2022 (named by attribute: the
/// header's byte holds tables up to 255 only).
fn route_in_table(family: AddressFamily, kind: RouteType, scope: RouteScope, prefix: u8) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family;
    m.header.destination_prefix_length = prefix;
    m.header.table = 0;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = scope;
    m.header.kind = kind;
    m.attributes.push(RouteAttribute::Table(TABLE));
    m
}

/// Sets the device of index `device` administratively up, leaving its other flags alone.
pub fn link_up_message(device: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = device;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m
}

/// Installs the two rules (when missing) and the unreachable fallback; safe to repeat.
pub fn install_policy() -> Result<(), Error> {
    let mut rtnl = Rtnl::open()?;
    for rule in policy_rules(AddressFamily::Inet) {
        rtnl.add_rule(rule, "add an IPv4 policy rule")?;
    }
    rtnl.replace_route(
        fallback_route(AddressFamily::Inet),
        "add the unreachable fallback route",
    )?;
    // IPv6 never leaves a host namespace (the firewall drops it); the same shape here makes that
    // hold without the firewall too. Kernels without IPv6 refuse these: nothing to protect then.
    for rule in policy_rules(AddressFamily::Inet6) {
        let _ = rtnl.add_rule(rule, "add the IPv6 policy rule");
    }
    let _ = rtnl.replace_route(
        fallback_route(AddressFamily::Inet6),
        "add the IPv6 fallback route",
    );
    Ok(())
}

/// Points `cidrs` at `device` in the tunnel table (after each start of the tunnel process: the
/// kernel removed the previous routes with the previous device).
pub fn install_tunnel(device: &str, cidrs: &[Ipv4Cidr]) -> Result<(), Error> {
    let index = index_of(device)?;
    let mut rtnl = Rtnl::open()?;
    for route in tunnel_routes(index, cidrs) {
        rtnl.replace_route(route, &format!("route tunnel traffic via {device}"))?;
    }
    Ok(())
}

/// Whether `device` exists and is administratively up (`IFF_UP` in sysfs flags).
pub fn link_up(device: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{device}/flags"))
        .ok()
        .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|flags| flags & 0x1 != 0)
}

/// Whether `device` exists at all.
pub fn link_exists(device: &str) -> bool {
    std::path::Path::new(&format!("/sys/class/net/{device}")).exists()
}

/// Sets `device` administratively up.
pub fn set_link_up(device: &str) -> Result<(), Error> {
    let index = index_of(device)?;
    Rtnl::open()?.request(
        RouteNetlinkMessage::SetLink(link_up_message(index)),
        0,
        &format!("set {device} up"),
    )
}

fn index_of(device: &str) -> Result<u32, Error> {
    nix::net::if_::if_nametoindex(device).map_err(|e| Error::io(format!("find device {device}"))(e.into()))
}

/// A route netlink socket of this namespace, one request at a time.
struct Rtnl {
    socket: Socket,
    sequence: u32,
}

impl Rtnl {
    fn open() -> Result<Self, Error> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(Error::io("open a route netlink socket"))?;
        socket
            .bind_auto()
            .map_err(Error::io("bind the route netlink socket"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(Error::io("connect the route netlink socket"))?;
        Ok(Self { socket, sequence: 0 })
    }

    /// Adds `rule` unless the same rule is there (the kernel answers EEXIST to an exclusive add).
    fn add_rule(&mut self, rule: RuleMessage, what: &str) -> Result<(), Error> {
        match self.request(
            RouteNetlinkMessage::NewRule(rule),
            NLM_F_CREATE | NLM_F_EXCL,
            what,
        ) {
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(nix::libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    fn replace_route(&mut self, route: RouteMessage, what: &str) -> Result<(), Error> {
        self.request(
            RouteNetlinkMessage::NewRoute(route),
            NLM_F_CREATE | NLM_F_REPLACE,
            what,
        )
    }

    /// Sends `message` with `flags` and waits for the kernel's acknowledgement.
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16, what: &str) -> Result<(), Error> {
        self.sequence += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(Error::io(what))?;
        let mut answer = Vec::with_capacity(ANSWER);
        loop {
            answer.clear();
            self.socket.recv(&mut answer, 0).map_err(Error::io(what))?;
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer).map_err(|e| {
                Error::io(what)(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                ))
            })?;
            if reply.header.sequence_number != self.sequence {
                continue;
            }
            return match reply.payload {
                NetlinkPayload::Error(e) if e.code.is_some() => Err(Error::io(what)(e.to_io())),
                _ => Ok(()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_has_rules_99_and_100_and_ipv6_only_100() {
        let v4 = policy_rules(AddressFamily::Inet);
        assert_eq!(v4.len(), 2);
        let (main, tunnel) = (&v4[0], &v4[1]);
        assert_eq!(main.header.table, MAIN);
        assert_eq!(main.header.action, RuleAction::ToTable);
        assert!(main.header.flags.is_empty());
        assert_eq!(
            main.attributes,
            [
                RuleAttribute::Priority(99),
                RuleAttribute::Table(254),
                RuleAttribute::SuppressPrefixLen(0)
            ]
        );
        // `not fwmark 0xcc lookup 2022`: inverted, the table by attribute (it does not fit the byte).
        assert_eq!(tunnel.header.table, 0);
        assert_eq!(tunnel.header.flags, RuleFlags::Invert);
        assert_eq!(
            tunnel.attributes,
            [
                RuleAttribute::Priority(100),
                RuleAttribute::FwMark(0xcc),
                RuleAttribute::FwMask(u32::MAX),
                RuleAttribute::Table(2022)
            ]
        );
        let v6 = policy_rules(AddressFamily::Inet6);
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0].header.family, AddressFamily::Inet6);
        assert_eq!(v6[0].attributes, tunnel.attributes);
    }

    #[test]
    fn allowed_ips_become_table_routes_and_fallback_loses() {
        let cidrs: Vec<Ipv4Cidr> = vec!["0.0.0.0/0".parse().unwrap(), "198.18.7.0/24".parse().unwrap()];
        let routes = tunnel_routes(7, &cidrs);
        assert_eq!(routes.len(), 2);
        for (r, prefix) in routes.iter().zip([0, 24]) {
            assert_eq!(r.header.kind, RouteType::Unicast);
            assert_eq!(r.header.scope, RouteScope::Link);
            assert_eq!(r.header.destination_prefix_length, prefix);
            assert!(r.attributes.contains(&RouteAttribute::Table(2022)));
            assert!(r.attributes.contains(&RouteAttribute::Oif(7)));
        }
        assert!(
            !routes[0]
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
        assert!(routes[1].attributes.contains(&RouteAttribute::Destination(
            IpAddr::V4("198.18.7.0".parse().unwrap()).into()
        )));

        let fallback = fallback_route(AddressFamily::Inet);
        assert_eq!(fallback.header.kind, RouteType::Unreachable);
        assert_eq!(fallback.header.destination_prefix_length, 0);
        assert_eq!(
            fallback.attributes,
            [RouteAttribute::Table(2022), RouteAttribute::Priority(u32::MAX)]
        );
        let v6 = fallback_route(AddressFamily::Inet6);
        assert_eq!(v6.header.address_family, AddressFamily::Inet6);
        assert_eq!(v6.attributes, [RouteAttribute::Table(2022)]);
    }

    #[test]
    fn link_up_changes_the_up_flag_only() {
        let m = link_up_message(3);
        assert_eq!(m.header.index, 3);
        assert_eq!(m.header.flags, LinkFlags::Up);
        assert_eq!(m.header.change_mask, LinkFlags::Up);
    }

    /// Every message serializes into a netlink request the crate reads back the same.
    #[test]
    fn messages_survive_serialization() {
        let cidrs: Vec<Ipv4Cidr> = vec!["198.18.7.0/24".parse().unwrap()];
        let messages = policy_rules(AddressFamily::Inet)
            .into_iter()
            .map(RouteNetlinkMessage::NewRule)
            .chain(
                tunnel_routes(7, &cidrs)
                    .into_iter()
                    .map(RouteNetlinkMessage::NewRoute),
            )
            .chain([
                RouteNetlinkMessage::NewRoute(fallback_route(AddressFamily::Inet)),
                RouteNetlinkMessage::SetLink(link_up_message(3)),
            ]);
        for message in messages {
            let mut packet =
                NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message.clone()));
            packet.finalize();
            let mut buf = vec![0u8; packet.buffer_len()];
            packet.serialize(&mut buf);
            let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).unwrap();
            assert_eq!(back.payload, NetlinkPayload::InnerMessage(message));
        }
    }
}
