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
use crate::hosts::tunnel::RuntimeConfig;
use crate::probe_client as client;
use crate::sleep_or_cancel;

/// How often each bound host is checked when nothing changes.
pub const RECHECK: Duration = Duration::from_secs(60);
/// How often the loop looks for hosts whose tunnel changed state.
const TICK: Duration = Duration::from_secs(2);
/// Bound of each check.
const CHECK_BOUND: Duration = Duration::from_secs(8);

/// When a host was last checked, and what it looked like then: a change of any of it makes the
/// next check due at once. Read from the agent's files only, so idle ticks cost no Docker call.
struct Last {
    at: Instant,
    seen: Seen,
}

/// The tunnel's state, the egress IP and the namespace (its inode) of a bound host.
type Seen = (String, String, Option<u64>);

pub(crate) async fn run_loop(hosts: Arc<Hosts>, cancel: CancellationToken) {
    let mut last: HashMap<String, Last> = HashMap::new();
    // Each host's tunnel restart count as last read, for the restarts metric.
    let mut restarts: HashMap<String, u64> = HashMap::new();
    let mut node_ips: Option<(Instant, Vec<Ipv4Addr>)> = None;
    loop {
        if !sleep_or_cancel(TICK, &cancel).await {
            return;
        }
        let Some(targets) = hosts.probe_targets() else {
            continue;
        };
        let ids = hosts.store().list().unwrap_or_default();
        last.retain(|id, _| ids.contains(id));
        restarts.retain(|id, _| ids.contains(id));
        for host_id in ids {
            let forget = |last: &mut HashMap<String, Last>| {
                last.remove(&host_id);
                hosts.set_egress_health(&host_id, None);
            };
            let config = match hosts.runtime_config(&host_id) {
                Ok(Some(config)) if !hosts.store().is_stopped(&host_id) => config,
                _ => {
                    forget(&mut last);
                    continue;
                }
            };
            if let Some(status) = hosts.tunnel_status(&host_id) {
                let before = restarts.insert(host_id.clone(), status.restarts);
                crate::metrics::get().tunnel_restarted(restarts_since(before, status.restarts));
            }
            let state = || {
                hosts
                    .tunnel_status(&host_id)
                    .map_or_else(|| "unknown".to_owned(), |s| s.state_name())
            };
            let seen: Seen = (state(), config.spec.egress_ip_id.clone(), config.netns_inode);
            if last
                .get(&host_id)
                .is_some_and(|l| l.at.elapsed() < RECHECK && l.seen == seen)
            {
                continue;
            }
            let Ok(Some(pid)) = hosts.egress_pid(&host_id).await else {
                forget(&mut last);
                continue;
            };
            if node_ips.as_ref().is_none_or(|(at, _)| at.elapsed() >= RECHECK) {
                let ips = node_public_ips(&hosts.settings().node_public_ips, &targets.ip_url).await;
                node_ips = Some((Instant::now(), ips));
            }
            let known = node_ips
                .as_ref()
                .map(|(_, ips)| ips.as_slice())
                .unwrap_or_default();
            // The health shows the state as the checks end (a tunnel that came up while they ran
            // is `up`); `seen` keeps the state that set them off, so that such a change brings
            // another check on the next tick.
            if let Some(health) = check(&host_id, pid, &config, &targets, known, state).await {
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
                    seen,
                },
            );
        }
    }
}

/// Restarts to count when a tunnel's restart count goes from `before` (`None`: not read yet, so
/// its past restarts are not this process's to count) to `now`. The count starts again from zero
/// with each new tunnel configuration.
fn restarts_since(before: Option<u64>, now: u64) -> u64 {
    match before {
        None => 0,
        Some(b) if now >= b => now - b,
        Some(_) => now,
    }
}

async fn check(
    host_id: &str,
    pid: i64,
    config: &RuntimeConfig,
    targets: &wire::ProbeTargets,
    node_ips: &[Ipv4Addr],
    tunnel_state: impl FnOnce() -> String,
) -> Option<EgressHealth> {
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
    crate::metrics::get().egress_checks(crate::metrics::CheckSource::Health, &checks);
    let exit_ip = checks
        .iter()
        .find(|c| c.name == client::EXIT_IP)
        .and_then(|c| c.observed.clone());
    Some(EgressHealth {
        healthy: checks.iter().all(|c| c.passed),
        tunnel: tunnel_state(),
        exit_ip,
        checks,
        checked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// The node's own public addresses: as configured (`NODE_PUBLIC_IPS`), else as the IP probe at
/// `ip_url` sees the node directly, not through any tunnel: what a leaking resolver would show.
pub(crate) async fn node_public_ips(configured: &[Ipv4Addr], ip_url: &str) -> Vec<Ipv4Addr> {
    if configured.is_empty() {
        direct_ip(ip_url).await.into_iter().collect()
    } else {
        configured.to_vec()
    }
}

async fn direct_ip(url: &str) -> Option<Ipv4Addr> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .ok()?;
    let body = client.get(url).send().await.ok()?.text().await.ok()?;
    body.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn restarts_are_counted_once_and_across_resets() {
        use super::restarts_since;
        assert_eq!(restarts_since(None, 5), 0);
        assert_eq!(restarts_since(Some(5), 5), 0);
        assert_eq!(restarts_since(Some(5), 7), 2);
        assert_eq!(restarts_since(Some(7), 1), 1);
    }
}
