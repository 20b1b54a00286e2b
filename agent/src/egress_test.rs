//! Egress tests on this node: `POST /v1/admin/egress-ips/{id}/test` becomes a job the agent claims
//! (long poll, like tasks) and runs through the real tunnel, in a throwaway namespace built exactly
//! like a bound host's: an egress container running the tunnel runtime, the tunnel firewall, and
//! the runtime's configuration written only after the rules are in. The checks then run from inside
//! that namespace ([`crate::netns`]), the container and its files are removed, and the observations
//! are judged against the declared IP and the node's own public address.
//!
//! Everything happens within the job's budget (the control plane's 30 s bound, minus a margin):
//! the tunnel gets what is left after setup, the checks what is left after the tunnel.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use wire::{CheckResult, EgressTestJob};

use crate::hosts::tunnel::{self, RuntimeConfig, RuntimeStatus};
use crate::hosts::{Hosts, Names};
use crate::probe::client;
use crate::{Backoff, Session, control_plane, sleep_or_cancel};

/// How long the claim long-poll may wait for a job.
const CLAIM_WAIT_SECS: u64 = 20;

/// Time kept back from the budget for removing the namespace and reporting.
const MARGIN: Duration = Duration::from_secs(2);

/// The longest any single check may take.
const CHECK_BOUND: Duration = Duration::from_secs(10);

/// Claims egress tests and runs them, several at once, until cancelled.
pub(crate) async fn run_loop(session: Arc<Session>, hosts: Arc<Hosts>, cancel: CancellationToken) {
    sweep(&hosts).await;
    let mut running = tokio::task::JoinSet::new();
    let mut backoff = Backoff::new();
    loop {
        while running.try_join_next().is_some() {}
        let node_id = session.node_id().await;
        let claim = wire::EgressTestClaim {
            node_id: node_id.clone(),
            wait_secs: CLAIM_WAIT_SECS,
        };
        let asked = Instant::now();
        let claimed = tokio::select! {
            () = cancel.cancelled() => break,
            r = session.control_plane().claim_egress_test(&claim) => r,
        };
        match claimed {
            Ok(Some(job)) => {
                backoff.reset();
                let span = tracing::info_span!("egress_test", test_id = %job.test_id, egress_ip_id = %job.egress.egress_ip_id);
                let (session, hosts) = (session.clone(), hosts.clone());
                running.spawn(
                    async move {
                        let checks = run(&hosts, &job).await;
                        let passed = checks.iter().all(|c| c.passed);
                        tracing::info!(passed, "egress test done");
                        let report = wire::EgressTestReport { checks };
                        if let Err(e) = session
                            .control_plane()
                            .egress_test_result(&job.test_id, &report)
                            .await
                        {
                            tracing::warn!(error = %e, "egress test result not delivered");
                        }
                    }
                    .instrument(span),
                );
            }
            Ok(None) => {
                backoff.reset();
                if asked.elapsed() < Duration::from_secs(1)
                    && !sleep_or_cancel(Duration::from_secs(1), &cancel).await
                {
                    break;
                }
            }
            Err(control_plane::Error::NodeUnknown(_)) => {
                // The task loop registers again; wait for it.
                if !sleep_or_cancel(Duration::from_secs(2), &cancel).await {
                    break;
                }
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "egress test claim failed");
                if !sleep_or_cancel(delay, &cancel).await {
                    break;
                }
            }
        }
    }
    running.abort_all();
    while running.join_next().await.is_some() {}
    sweep(&hosts).await;
}

/// Runs one test; always answers three checks and always removes what it built.
pub async fn run(hosts: &Hosts, job: &EgressTestJob) -> Vec<CheckResult> {
    let deadline = Instant::now() + Duration::from_millis(job.budget_ms).saturating_sub(MARGIN);
    let name = container_name(hosts, &job.test_id);
    let dir = scratch_dir(hosts, &job.test_id);
    let checks =
        match tokio::time::timeout_at(deadline.into(), attempt(hosts, job, &name, &dir, deadline)).await {
            Ok(Ok(checks)) => checks,
            Ok(Err(error)) => CheckResult::all_failed(&error),
            Err(_) => CheckResult::all_failed("the egress test ran out of time"),
        };
    crate::metrics::get().egress_checks(crate::metrics::CheckSource::Test, &checks);
    if let Err(e) = hosts.docker().remove_container(&name).await {
        tracing::warn!(container = %name, error = %e, "egress test container not removed; the next sweep retries");
    }
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "egress test files not removed");
    }
    checks
}

async fn attempt(
    hosts: &Hosts,
    job: &EgressTestJob,
    name: &str,
    dir: &Path,
    deadline: Instant,
) -> Result<Vec<CheckResult>, String> {
    let egress = &job.egress;
    hosts.require_tunnel_programs(egress).map_err(|e| e.to_string())?;
    let endpoint = tunnel::resolve(egress).await.map_err(|e| e.to_string())?;
    // Meanwhile the namespace is built: asking the probe directly may take its timeout.
    let node_ips = tokio::spawn({
        let configured = hosts.settings().node_public_ips.clone();
        let url = job.targets.ip_url.clone();
        async move { crate::egress_health::node_public_ips(&configured, &url).await }
    });

    crate::secrets::create_private_dir(dir).map_err(|e| e.to_string())?;
    let bridge = hosts.ensure_network().await.map_err(|e| e.to_string())?;
    let body = hosts.egress_test_body(egress, &dir.to_string_lossy());
    let docker = hosts.docker();
    docker
        .ensure_container(name, body)
        .await
        .map_err(|e| e.to_string())?;
    docker.start_container(name).await.map_err(|e| e.to_string())?;
    let names = Names {
        egress: name.to_owned(),
        host: String::new(),
        home: String::new(),
    };
    let mut runtime = RuntimeConfig {
        spec: egress.clone(),
        endpoint_ip: *endpoint.ip(),
        netns_inode: None,
    };
    let pid = hosts
        .apply_firewall(&names, &bridge, Some(&runtime), false)
        .await
        .map_err(|e| e.to_string())?;
    runtime.netns_inode = tunnel::netns_inode(pid);
    let bytes = serde_json::to_vec(&runtime).map_err(|e| e.to_string())?;
    crate::secrets::write_private(&dir.join(crate::secrets::EGRESS_CONFIG_FILE), &bytes)
        .map_err(|e| e.to_string())?;

    // The checks need time of their own: the tunnel may use what is left before that.
    let checks_need = CHECK_BOUND.min(deadline.saturating_duration_since(Instant::now()) / 2);
    let status = tunnel::wait_up(dir, deadline - checks_need).await;
    let each = deadline
        .saturating_duration_since(Instant::now())
        .min(CHECK_BOUND);
    let targets = job.targets.clone();
    let dns_server: Ipv4Addr = egress
        .dns_server
        .parse()
        .map_err(|_| format!("the DNS server `{}` is not an IPv4 address", egress.dns_server))?;
    let observed = crate::netns::run_in(pid, move || async move {
        client::observe(&targets, dns_server, each).await
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut checks = client::judge(observed, &egress.declared_ip, &node_ips.await.unwrap_or_default());
    if !status.as_ref().is_some_and(RuntimeStatus::is_up) {
        // Say why the tunnel was not there, where the operator looks first.
        let why = status
            .and_then(|s| s.last_error)
            .unwrap_or_else(|| "the tunnel did not come up in time".to_owned());
        if let Some(c) = checks
            .iter_mut()
            .find(|c| c.name == client::CONNECTIVITY && !c.passed)
        {
            c.error = Some(format!("{} (tunnel: {why})", c.error.clone().unwrap_or_default()));
        }
    }
    Ok(checks)
}

fn container_name(hosts: &Hosts, test_id: &str) -> String {
    let id: String = test_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("ccp-{}-etest-{id}", hosts.settings().node_name)
}

fn scratch_dir(hosts: &Hosts, test_id: &str) -> PathBuf {
    let id: String = test_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    hosts.store().egress_tests_dir().join(id)
}

/// Removes every test container and file of this node (left by a crash; called when no test runs).
pub(crate) async fn sweep(hosts: &Hosts) {
    let filters = [
        format!("{}=true", wire::labels::MANAGED),
        format!("{}={}", wire::labels::NODE, hosts.settings().node_name),
        format!(
            "{}={}",
            wire::labels::ROLE,
            crate::docker::Role::EgressTest.as_str()
        ),
    ];
    if let Ok(containers) = hosts.docker().list_containers(&filters).await {
        for name in containers.iter().flat_map(|c| c.names.iter().flatten()) {
            let _ = hosts
                .docker()
                .remove_container(name.trim_start_matches('/'))
                .await;
        }
    }
    let _ = std::fs::remove_dir_all(hosts.store().egress_tests_dir());
}
