//! The router's nftables ruleset: SNAT of the node to its public address, the switch that makes a
//! server unreachable, and the leak counters, with the parsing of what the counters hold.
//!
//! A leak is a packet arriving from the node (the root namespace) whose destination is not one of
//! the allowed endpoints (the tunnel servers of the test at hand). They are counted in prerouting,
//! before any routing or filtering, so a packet counts even when nothing answers it.

use std::net::Ipv4Addr;

/// Leaked packets by kind since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeakCount {
    pub udp53: u64,
    pub tcp53: u64,
    pub tcp853: u64,
    pub icmp: u64,
    /// Any other IPv4 packet.
    pub other: u64,
    /// Any IPv6 packet from the node (neighbour discovery and MLD aside).
    pub ipv6: u64,
}

impl LeakCount {
    pub fn total(&self) -> u64 {
        self.udp53 + self.tcp53 + self.tcp853 + self.icmp + self.other + self.ipv6
    }
}

/// nft table (family `ip`) holding the SNAT, the switches and the IPv4 counters.
pub const TABLE: &str = "fakenet";
/// nft table (family `ip6`) holding the IPv6 counter.
pub const TABLE6: &str = "fakenet6";
/// Set of destinations that are not leaks.
pub const ALLOWED: &str = "allowed";
/// Set of destinations the router drops (servers made unreachable).
pub const BLOCKED: &str = "blocked";

/// The ruleset for the router namespace: `node_if` is its interface towards the node.
pub fn ruleset(node_if: &str, node_public: Ipv4Addr) -> String {
    format!(
        r#"table ip {TABLE} {{
    set {ALLOWED} {{ type ipv4_addr; }}
    set {BLOCKED} {{ type ipv4_addr; }}
    counter leak_udp53 {{ }}
    counter leak_tcp53 {{ }}
    counter leak_tcp853 {{ }}
    counter leak_icmp {{ }}
    counter leak_other {{ }}
    chain leaks {{
        type filter hook prerouting priority raw; policy accept;
        iifname != "{node_if}" accept
        ip daddr @{ALLOWED} accept
        udp dport 53 counter name "leak_udp53" accept
        tcp dport 53 counter name "leak_tcp53" accept
        tcp dport 853 counter name "leak_tcp853" accept
        ip protocol icmp counter name "leak_icmp" accept
        counter name "leak_other" accept
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        ip daddr @{BLOCKED} drop
        ip saddr @{BLOCKED} drop
    }}
    chain node_snat {{
        type nat hook postrouting priority srcnat; policy accept;
        iifname "{node_if}" snat to {node_public}
    }}
}}
table ip6 {TABLE6} {{
    counter leak_ipv6 {{ }}
    chain leaks {{
        type filter hook prerouting priority raw; policy accept;
        iifname != "{node_if}" accept
        icmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report }} accept
        counter name "leak_ipv6" accept
    }}
}}
"#
    )
}

/// Reads the counters from `nft -j list counters` output (both tables).
pub fn parse_counters(json: &str) -> LeakCount {
    let mut count = LeakCount::default();
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    for item in value["nftables"].as_array().into_iter().flatten() {
        let counter = &item["counter"];
        let table = counter["table"].as_str();
        if table != Some(TABLE) && table != Some(TABLE6) {
            continue;
        }
        let packets = counter["packets"].as_u64().unwrap_or(0);
        match counter["name"].as_str() {
            Some("leak_udp53") => count.udp53 = packets,
            Some("leak_tcp53") => count.tcp53 = packets,
            Some("leak_tcp853") => count.tcp853 = packets,
            Some("leak_icmp") => count.icmp = packets,
            Some("leak_other") => count.other = packets,
            Some("leak_ipv6") => count.ipv6 = packets,
            _ => {}
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_name_from_our_tables_only() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
            {"counter":{"family":"ip","name":"leak_udp53","table":"fakenet","handle":1,"packets":3,"bytes":180}},
            {"counter":{"family":"ip","name":"leak_other","table":"fakenet","handle":5,"packets":7,"bytes":1}},
            {"counter":{"family":"ip6","name":"leak_ipv6","table":"fakenet6","handle":1,"packets":2,"bytes":1}},
            {"counter":{"family":"ip","name":"leak_icmp","table":"someone-else","handle":1,"packets":9,"bytes":1}}]}"#;
        let count = parse_counters(json);
        assert_eq!(
            count,
            LeakCount {
                udp53: 3,
                other: 7,
                ipv6: 2,
                ..LeakCount::default()
            }
        );
        assert_eq!(count.total(), 12);
        assert_eq!(parse_counters("not json"), LeakCount::default());
    }

    #[test]
    fn ruleset_names_the_node_side_and_public_address() {
        let rules = ruleset("node", Ipv4Addr::new(198, 18, 0, 10));
        assert!(rules.contains(r#"iifname "node" snat to 198.18.0.10"#));
        assert!(rules.contains(r#"iifname != "node" accept"#));
    }
}
