//! Traffic accounting: two nftables counters in each host's network namespace, and the sampler that
//! reads them for the heartbeat.
//!
//! The counters live in a table of their own, [`TABLE`], beside the firewall's. The firewall's table
//! is replaced whole at every start and reconcile; this one is only ever *added to* (`add counter`
//! keeps an existing counter's value, its chains are flushed and refilled in the same transaction),
//! so the counts survive every re-assertion of the rules and every restart of the tunnel runtime.
//! They start from zero only with a new namespace (the egress container restarted): the namespace's
//! inode and the table's handle make the [`wire::TrafficCounters::epoch`] the control plane folds
//! such restarts by.
//!
//! What is counted, at the IP layer, after the firewall let it through: everything a host exchanges
//! with addresses off the hosts bridge. Through a tunnel that is the inner traffic on the tunnel
//! interface; the tunnel's own packets (firewall mark [`crate::egress_runtime::FWMARK`], and the replies on
//! their connections, told by the connection mark set here) are left out, as are loopback and the
//! node's SSH and VNC connections on the bridge. A tunnel program that uses the kernel's TCP stack
//! sends each connection through the tun a second time, between two addresses of the tun's own
//! network ([`KernelStack`]); those packets are left out too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::egress_runtime::FWMARK;
use crate::firewall::{Ipv4Cidr, KernelStack};
use crate::hosts::Hosts;

/// Our accounting table (`inet`), never deleted by the agent.
pub const TABLE: &str = "ccp_acct";

/// The nft commands that create the counters if missing and (re)write the rules that feed them.
/// Idempotent: loading it again changes no count. Loaded in the same transaction as the firewall.
pub fn render(bridge_subnet: Ipv4Cidr, kernel_stack: Option<KernelStack>) -> String {
    let mark = format!("{FWMARK:#x}");
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(
        "# traffic accounting: counters kept across reloads (`add` leaves an existing one as it is)"
            .to_owned(),
    );
    line(format!("add table inet {TABLE}"));
    line(format!("add counter inet {TABLE} rx"));
    line(format!("add counter inet {TABLE} tx"));
    line(format!(
        "add chain inet {TABLE} in {{ type filter hook input priority filter + 10; policy accept; }}"
    ));
    line(format!("flush chain inet {TABLE} in"));
    line(format!("add rule inet {TABLE} in iif \"lo\" return"));
    line(format!(
        "add rule inet {TABLE} in ip saddr {bridge_subnet} return"
    ));
    line(format!("add rule inet {TABLE} in ct mark {mark} return"));
    skip_kernel_stack(&mut line, "in", kernel_stack);
    line(format!("add rule inet {TABLE} in counter name \"rx\""));
    line(format!(
        "add chain inet {TABLE} out {{ type filter hook output priority filter + 10; policy accept; }}"
    ));
    line(format!("flush chain inet {TABLE} out"));
    line(format!("add rule inet {TABLE} out oif \"lo\" return"));
    line(format!(
        "add rule inet {TABLE} out ip daddr {bridge_subnet} return"
    ));
    line(format!(
        "add rule inet {TABLE} out meta mark {mark} ct mark set {mark} return"
    ));
    skip_kernel_stack(&mut line, "out", kernel_stack);
    line(format!("add rule inet {TABLE} out counter name \"tx\""));
    out
}

/// Rules that let the packets between a kernel-stack tunnel program's two tun addresses pass
/// `chain` uncounted, either way.
fn skip_kernel_stack(line: &mut impl FnMut(String), chain: &str, kernel_stack: Option<KernelStack>) {
    if let Some(KernelStack { server, client }) = kernel_stack {
        line(format!(
            "add rule inet {TABLE} {chain} ip saddr {client} ip daddr {server} return"
        ));
        line(format!(
            "add rule inet {TABLE} {chain} ip saddr {server} ip daddr {client} return"
        ));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nft(#[from] crate::firewall::Error),
    #[error("the accounting table's listing is not what nft prints: {0}")]
    Listing(String),
    #[error("cannot read the namespace of process {0}")]
    Namespace(i64),
}

/// The counters from `nft -j list table inet ccp_acct` of the namespace whose inode is `netns`.
pub fn parse(listed: &str, netns: u64) -> Result<wire::TrafficCounters, Error> {
    let listing: serde_json::Value =
        serde_json::from_str(listed).map_err(|e| Error::Listing(e.to_string()))?;
    let items = listing["nftables"]
        .as_array()
        .ok_or_else(|| Error::Listing("no `nftables` array".into()))?;
    let mut handle = None;
    let (mut rx, mut tx) = (None, None);
    for item in items {
        if let Some(table) = item.get("table").filter(|t| t["name"] == TABLE) {
            handle = table["handle"].as_u64();
        }
        if let Some(counter) = item.get("counter").filter(|c| c["table"] == TABLE) {
            match counter["name"].as_str() {
                Some("rx") => rx = counter["bytes"].as_u64(),
                Some("tx") => tx = counter["bytes"].as_u64(),
                _ => {}
            }
        }
    }
    match (handle, rx, tx) {
        (Some(handle), Some(rx_bytes), Some(tx_bytes)) => Ok(wire::TrafficCounters {
            epoch: format!("{netns}.{handle}"),
            rx_bytes,
            tx_bytes,
        }),
        _ => Err(Error::Listing("no table with both counters".into())),
    }
}

/// Reads the counters of the namespace of process `pid`.
pub async fn read(pid: i64, timeout: Duration) -> Result<wire::TrafficCounters, Error> {
    let netns = crate::hosts::tunnel::netns_inode(pid).ok_or(Error::Namespace(pid))?;
    let listed = crate::firewall::list_json(pid, TABLE, timeout).await?;
    parse(&listed, netns)
}

/// The latest counters of each running host, by host id.
#[derive(Debug, Clone, Default)]
pub struct Samples(Arc<Mutex<HashMap<String, wire::TrafficCounters>>>);

impl Samples {
    pub fn get(&self, host_id: &str) -> Option<wire::TrafficCounters> {
        self.0.lock().ok()?.get(host_id).cloned()
    }

    fn replace(&self, all: HashMap<String, wire::TrafficCounters>) {
        if let Ok(mut map) = self.0.lock() {
            *map = all;
        }
    }
}

/// Reads every running host's counters each `interval` until `cancel`; the heartbeat sends the
/// latest. A host whose counters cannot be read keeps none until the next pass (the control plane
/// keeps its totals).
pub async fn run_sampler(hosts: Arc<Hosts>, interval: Duration, cancel: CancellationToken) {
    loop {
        match hosts.running_egress_pids().await {
            Ok(pids) => {
                let mut all = HashMap::with_capacity(pids.len());
                for (host_id, pid) in pids {
                    match read(pid, hosts.settings().command_timeout).await {
                        Ok(counters) => {
                            all.insert(host_id, counters);
                        }
                        Err(e) => tracing::debug!(host_id = %host_id, error = %e, "traffic counters unread"),
                    }
                }
                hosts.traffic().replace(all);
            }
            Err(e) => tracing::warn!(error = %e, "cannot list hosts for traffic accounting"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_epoch_come_from_the_listing() {
        let listed = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "ccp_acct", "handle": 7}},
            {"counter": {"family": "inet", "name": "rx", "table": "ccp_acct", "handle": 1, "packets": 2, "bytes": 118}},
            {"counter": {"family": "inet", "name": "tx", "table": "ccp_acct", "handle": 2, "packets": 3, "bytes": 286}},
            {"chain": {"family": "inet", "table": "ccp_acct", "name": "in", "handle": 3}}]}"#;
        let c = parse(listed, 4026532000).unwrap();
        assert_eq!(c.rx_bytes, 118);
        assert_eq!(c.tx_bytes, 286);
        assert_eq!(c.epoch, "4026532000.7");
        assert!(parse(r#"{"nftables": []}"#, 1).is_err());
        assert!(parse("not json", 1).is_err());
    }

    #[test]
    fn the_script_adds_and_never_deletes() {
        let script = render("172.30.0.0/16".parse().unwrap(), None);
        assert!(!script.contains("delete"), "{script}");
        assert!(script.contains("add counter inet ccp_acct rx"));
        assert!(script.contains("ip daddr 172.30.0.0/16 return"));
        assert!(script.contains("meta mark 0xcc ct mark set 0xcc return"));
    }
}
