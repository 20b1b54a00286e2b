//! Egress health of bound hosts: each running host with a tunnel is checked from inside its own
//! namespace (the path its processes take) soon after its tunnel comes up or changes state, and
//! again every [`RECHECK`]. The checks are the egress test's: connectivity, exit IP equal to the
//! declared one, and the resolver that reached the probe not being the node.
//! The result rides on the heartbeat to the control plane, which records it and an event when a
//! host's health changes.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wire::EgressHealth;

use crate::hosts::Hosts;
use crate::hosts::tunnel::RuntimeStatus;
use crate::probe::client;
use crate::sleep_or_cancel;

/// How often each bound host is checked when nothing changes.
pub const RECHECK: Duration = Duration::from_secs(60);
/// How often the loop looks for hosts whose tunnel changed state.
const TICK: Duration = Duration::from_secs(2);
/// Bound of each check.
const CHECK_BOUND: Duration = Duration::from_secs(8);

struct Last {
    at: Instant,
    tunnel: String,
    pid: i64,
    egress_ip_id: String,
}

pub(crate) async fn run_loop(hosts: Arc<Hosts>, cancel: CancellationToken) {
    let mut last: HashMap<String, Last> = HashMap::new();
    let mut node_ip: Option<(Instant, Option<Ipv4Addr>)> = None;
    loop {
        if !sleep_or_cancel(TICK, &cancel).await {
            return;
        }
        let Some(targets) = hosts.probe_targets() else {
            continue;
        };
        let ids = hosts.store().list().unwrap_or_default();
        last.retain(|id, _| ids.contains(id));
        for host_id in ids {
            let egress_ip_id = match hosts.runtime_config(&host_id) {
                Ok(Some(config)) => Some(config.spec.egress_ip_id),
                _ => None,
            };
            let bound = egress_ip_id.is_some();
            let egress_ip_id = egress_ip_id.unwrap_or_default();
            let pid = if bound {
                hosts.egress_pid(&host_id).await.ok().flatten()
            } else {
                None
            };
            let Some(pid) = pid.filter(|_| !hosts.store().is_stopped(&host_id)) else {
                last.remove(&host_id);
                hosts.set_egress_health(&host_id, None);
                continue;
            };
            let status = hosts.tunnel_status(&host_id);
            let state = status
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), RuntimeStatus::state_name);
            let due = last.get(&host_id).is_none_or(|l| {
                l.at.elapsed() >= RECHECK
                    || l.tunnel != state
                    || l.pid != pid
                    || l.egress_ip_id != egress_ip_id
            });
            if !due {
                continue;
            }
            let configured = &hosts.settings().node_public_ips;
            if configured.is_empty() && node_ip.is_none_or(|(at, _)| at.elapsed() >= RECHECK) {
                node_ip = Some((Instant::now(), direct_ip(&targets.ip_url).await));
            }
            let node_ips: Vec<Ipv4Addr> = if configured.is_empty() {
                node_ip.and_then(|(_, ip)| ip).into_iter().collect()
            } else {
                configured.clone()
            };
            let health = check(&hosts, &host_id, pid, &state, &targets, &node_ips).await;
            if let Some(health) = health {
                let changed = hosts
                    .egress_health(&host_id)
                    .is_none_or(|h| h.healthy != health.healthy);
                if changed {
                    tracing::info!(host_id, healthy = health.healthy, tunnel = %health.tunnel, exit_ip = ?health.exit_ip, "egress health");
                }
                hosts.set_egress_health(&host_id, Some(health));
            }
            last.insert(
                host_id,
                Last {
                    at: Instant::now(),
                    tunnel: state.clone(),
                    pid,
                    egress_ip_id,
                },
            );
        }
    }
}

async fn check(
    hosts: &Hosts,
    host_id: &str,
    pid: i64,
    state: &str,
    targets: &wire::ProbeTargets,
    node_ips: &[Ipv4Addr],
) -> Option<EgressHealth> {
    let config = hosts.runtime_config(host_id).ok()??;
    let dns_server: Ipv4Addr = config.spec.dns_server.parse().ok()?;
    let targets_owned = targets.clone();
    let observed = crate::netns::run_in(pid, move || async move {
        client::observe(&targets_owned, dns_server, CHECK_BOUND).await
    })
    .await;
    let checks = match observed {
        Ok(observed) => client::judge(observed, &config.spec.declared_ip, node_ips),
        Err(e) => {
            tracing::warn!(host_id, error = %e, "egress health check could not run");
            return None;
        }
    };
    let exit_ip = checks
        .iter()
        .find(|c| c.name == client::EXIT_IP)
        .and_then(|c| c.observed.clone());
    Some(EgressHealth {
        healthy: checks.iter().all(|c| c.passed),
        tunnel: state.to_owned(),
        exit_ip,
        checks,
        checked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// The node's own address as the IP probe sees it directly (what a DNS leak would show).
pub(crate) async fn direct_ip(url: &str) -> Option<Ipv4Addr> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .ok()?;
    let body = client.get(url).send().await.ok()?.text().await.ok()?;
    body.trim().parse().ok()
}
