//! Egress tests on this node: `POST /v1/admin/egress-ips/{id}/test` becomes a job the agent claims
//! (long poll, like tasks; the control plane wakes the poll when a test is queued) and runs through
//! the real tunnel, in a namespace built exactly like a bound host's: an egress container running
//! the tunnel runtime behind the tunnel firewall, the runtime's configuration written only after
//! the rules are in. The namespaces are kept warm between tests ([`warm`]); per test only the
//! ruleset and the runtime's configuration change, conntrack is flushed, and everything the test
//! left is cleared before the next one may use the namespace. The checks run from inside it
//! ([`crate::netns`]) and are judged against the declared IP and the node's own public address;
//! the answer is reported before the namespace is reset.
//!
//! A dead server is told quickly: a tunnel that is not up within [`UP_WAIT`] (for WireGuard: no
//! handshake) fails the test without running the checks, and for a proxy a TCP connect to its
//! server from the namespace (marked as the tunnel's own packets, which the ruleset lets through to
//! that server and nowhere else) runs beside the checks and ends them when it fails.
//!
//! Everything happens within the job's budget (the control plane's 30 s bound, minus a margin).

mod warm;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use wire::{CheckResult, EgressTestJob, Tunnel};

use crate::egress_runtime::State;
use crate::hosts::Hosts;
use crate::hosts::tunnel::{self, RuntimeConfig, RuntimeStatus};
use crate::probe_client as client;
use crate::{Backoff, Session, control_plane, sleep_or_cancel};

/// How long the claim long-poll may wait for a job.
const CLAIM_WAIT_SECS: u64 = 20;

/// Time kept back from the budget for reporting.
const MARGIN: Duration = Duration::from_secs(2);

/// The longest any single check may take.
const CHECK_BOUND: Duration = Duration::from_secs(10);

/// How long the tunnel may take to come up (WireGuard: its first handshake, which boringtun
/// sends at once; its retry would come only after 5 s) before the server counts as dead.
pub const UP_WAIT: Duration = Duration::from_millis(2500);

/// How long a TCP connect to a proxy server may take before the server counts as unreachable.
pub const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// How often the runtime's status is read while waiting for the tunnel.
const STATUS_POLL: Duration = Duration::from_millis(20);

/// Claims egress tests and runs them, several at once, until cancelled.
pub(crate) async fn run_loop(session: Arc<Session>, hosts: Arc<Hosts>, cancel: CancellationToken) {
    sweep(&hosts).await;
    let pool = Arc::new(warm::Pool::new());
    let mut running = tokio::task::JoinSet::new();
    let mut backoff = Backoff::new();
    loop {
        while running.try_join_next().is_some() {}
        pool.expire(&hosts).await;
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
                let (session, hosts, pool) = (session.clone(), hosts.clone(), pool.clone());
                running.spawn(
                    async move {
                        let started = Instant::now();
                        let (checks, lease) = run(&pool, &hosts, &job).await;
                        let passed = checks.iter().all(|c| c.passed);
                        let report = wire::EgressTestReport { checks };
                        if let Err(e) = session
                            .control_plane()
                            .egress_test_result(&job.test_id, &report)
                            .await
                        {
                            tracing::warn!(error = %e, "egress test result not delivered");
                        }
                        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                        tracing::info!(passed, ms, "egress test done");
                        if let Some(lease) = lease {
                            pool.release(&hosts, lease).await;
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
    pool.clear();
    sweep(&hosts).await;
}

/// Runs one test; always answers three checks. The namespace it ran in is handed back for
/// release (after the answer is reported).
async fn run(
    pool: &warm::Pool,
    hosts: &Hosts,
    job: &EgressTestJob,
) -> (Vec<CheckResult>, Option<warm::Lease>) {
    let deadline = Instant::now() + Duration::from_millis(job.budget_ms).saturating_sub(MARGIN);
    let mut lease = None;
    let outcome =
        tokio::time::timeout_at(deadline.into(), attempt(pool, hosts, job, &mut lease, deadline)).await;
    let checks = match outcome {
        Ok(Ok(checks)) => checks,
        Ok(Err(error)) => CheckResult::all_failed(&error),
        Err(_) => {
            // Work of this test may still run inside: the namespace is not used again.
            if let Some(lease) = lease.as_mut() {
                lease.reusable = false;
            }
            CheckResult::all_failed("the egress test ran out of time")
        }
    };
    crate::metrics::get().egress_checks(crate::metrics::CheckSource::Test, &checks);
    (checks, lease)
}

async fn attempt(
    pool: &warm::Pool,
    hosts: &Hosts,
    job: &EgressTestJob,
    lease: &mut Option<warm::Lease>,
    deadline: Instant,
) -> Result<Vec<CheckResult>, String> {
    let egress = &job.egress;
    hosts.require_tunnel_programs(egress).map_err(|e| e.to_string())?;
    let endpoint = tunnel::resolve(egress).await.map_err(|e| e.to_string())?;
    let dns_server: Ipv4Addr = egress
        .dns_server
        .parse()
        .map_err(|_| format!("the DNS server `{}` is not an IPv4 address", egress.dns_server))?;
    // Meanwhile the namespace is made ready: asking the probe directly may take its timeout.
    let node_ips = tokio::spawn({
        let configured = hosts.settings().node_public_ips.clone();
        let url = job.targets.ip_url.clone();
        async move { crate::egress_health::node_public_ips(&configured, &url).await }
    });

    let lease = lease.insert(pool.acquire(hosts).await?);
    let runtime = RuntimeConfig {
        spec: egress.clone(),
        endpoint_ip: *endpoint.ip(),
        netns_inode: None,
    };
    lease.ns.configure(hosts, runtime).await?;
    let pid = lease.ns.pid;
    let reach = tcp_server(egress).then(|| tokio::spawn(reach(pid, endpoint)));

    let status = wait_settled(&lease.ns.dir, Instant::now() + UP_WAIT).await;
    let outcome = match &status {
        Some(s) if s.is_up() => {
            let each = deadline
                .saturating_duration_since(Instant::now())
                .min(CHECK_BOUND);
            observe(pid, job, dns_server, each, reach).await
        }
        _ => {
            if let Some(reach) = reach {
                let _ = reach.await;
            }
            Observed::Dead(not_up(status.as_ref(), egress))
        }
    };
    // The runtime answered this configuration, and nothing of the test runs inside any more: the
    // namespace may serve the next test once reset.
    lease.reusable = status.is_some_and(|s| s.state != State::Idle);
    let checks = match outcome {
        Observed::Checks(observed) => {
            client::judge(observed, &egress.declared_ip, &node_ips.await.unwrap_or_default())
        }
        Observed::Dead(why) => CheckResult::all_failed(&why),
    };
    Ok(checks)
}

enum Observed {
    Checks(Vec<CheckResult>),
    /// The tunnel or its server is not there: why.
    Dead(String),
}

/// Runs the checks inside the namespace; a failed connect to a proxy's server ends them early.
/// Returns only once nothing of the checks runs inside the namespace any more.
async fn observe(
    pid: i64,
    job: &EgressTestJob,
    dns_server: Ipv4Addr,
    each: Duration,
    reach: Option<tokio::task::JoinHandle<Result<(), String>>>,
) -> Observed {
    let stop = CancellationToken::new();
    let targets = job.targets.clone();
    let inside = {
        let stop = stop.clone();
        crate::netns::run_in(pid, move || async move {
            tokio::select! {
                checks = client::observe(&targets, dns_server, each) => Some(checks),
                () = stop.cancelled() => None,
            }
        })
    };
    tokio::pin!(inside);
    let server_gone = async {
        match reach {
            Some(handle) => match handle.await {
                Ok(Err(why)) => Some(why),
                _ => None,
            },
            None => None,
        }
    };
    tokio::pin!(server_gone);
    let mut gone: Option<String> = None;
    let mut reach_done = false;
    let checks = loop {
        tokio::select! {
            done = &mut inside => break done,
            why = &mut server_gone, if !reach_done => {
                reach_done = true;
                if let Some(why) = why {
                    stop.cancel();
                    gone = Some(why);
                }
            }
        }
    };
    if !reach_done {
        gone = server_gone.await;
    }
    match checks {
        Ok(Some(mut checks)) => {
            // Finished before the connect failed: the checks stand, and say what else was seen.
            if let Some(why) = gone
                && let Some(c) = checks
                    .iter_mut()
                    .find(|c| c.name == client::CONNECTIVITY && !c.passed)
            {
                c.error = Some(format!("{} ({why})", c.error.clone().unwrap_or_default()));
            }
            Observed::Checks(checks)
        }
        Ok(None) => Observed::Dead(gone.unwrap_or_else(|| "the checks were stopped".to_owned())),
        Err(e) => Observed::Dead(gone.unwrap_or_else(|| e.to_string())),
    }
}

/// Whether the tunnel talks TCP to its server, so a TCP connect tells whether the server is there:
/// every proxy outbound but one restricted to UDP or carried over QUIC. (WireGuard is told by its
/// handshake.)
fn tcp_server(egress: &wire::EgressSpec) -> bool {
    match &egress.tunnel {
        Tunnel::Wireguard(_) => false,
        Tunnel::Proxy { outbound } => outbound.dials_tcp(),
    }
}

/// A TCP connect to the tunnel server from inside the namespace of `pid`, marked as the tunnel's
/// own packets: the ruleset lets exactly these through to the server's address and port.
async fn reach(pid: i64, server: SocketAddrV4) -> Result<(), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let connected = crate::netns::run_in(pid, move || async move {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_mark(crate::egress_runtime::FWMARK)?;
        socket.connect_timeout(&SocketAddr::V4(server).into(), CONNECT_WAIT)
    })
    .await
    .map_err(|e| e.to_string())?;
    connected.map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::TimedOut {
            format!("no answer within {} s", CONNECT_WAIT.as_secs())
        } else {
            e.to_string()
        };
        format!("the tunnel server {server} cannot be reached: {why}")
    })
}

/// Polls the runtime's status until the tunnel is up, the configuration failed, or `until`; the
/// last status read.
async fn wait_settled(dir: &Path, until: Instant) -> Option<RuntimeStatus> {
    loop {
        let status = crate::egress_runtime::read_status(dir).ok();
        let settled = status
            .as_ref()
            .is_some_and(|s| s.is_up() || s.state == State::Failed);
        if settled || Instant::now() >= until {
            return status;
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}

/// Why the tunnel is not up, as the operator should read it.
fn not_up(status: Option<&RuntimeStatus>, egress: &wire::EgressSpec) -> String {
    let waited = format!("{:.1} s", UP_WAIT.as_secs_f64());
    let why = match status {
        Some(s) if s.state == State::Failed => s
            .last_error
            .clone()
            .unwrap_or_else(|| "the runtime refused the configuration".to_owned()),
        Some(s) if s.state == State::Starting && matches!(egress.tunnel, Tunnel::Wireguard(_)) => {
            format!("no WireGuard handshake within {waited} (server unreachable, or keys that do not match?)")
        }
        Some(s) => s
            .last_error
            .clone()
            .unwrap_or_else(|| format!("not up within {waited} (state {})", s.state_name())),
        None => format!("the tunnel runtime did not answer within {waited}"),
    };
    format!("the tunnel did not come up: {why}")
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
