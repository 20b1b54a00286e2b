//! The node agent: runs on every Docker node (or inside the control plane's process on a single
//! machine), registers with the control plane, heartbeats what Docker holds, claims host tasks and
//! carries them out (containers, volumes, the per-host network namespace and its firewall), and
//! reconciles Docker with the control plane's list of hosts.
//!
//! Layout: [`config`] (flags), [`control_plane`] and [`docker`] (adapters), [`hosts`] (the actions),
//! [`firewall`] (the namespace ruleset), [`egress_runtime`] (the tunnel runtime inside each egress
//! container, its own binary), [`egress_check`] (the operator's egress tests, in warm namespaces),
//! [`conntrack`] (flushing a namespace's connection tracking), [`secrets`] (per-host files),
//! [`reconcile`] (drift repair), [`tasks`] (claim/progress/result loop), [`node`] (facts about the
//! machine), [`probe_client`] (the egress test's checks against the probe, whose server is the
//! `probe` crate), [`egress_health`] (the periodic check of each bound host's egress),
//! [`netns`] (running work inside a host's namespace), [`traffic`] (per-host byte counters),
//! [`enrol`] (the node's credential), [`metrics`] (its Prometheus metrics).

pub mod config;
pub mod conntrack;
pub mod control_plane;
pub mod docker;
pub mod egress_check;
pub mod egress_health;
pub mod egress_runtime;
pub mod enrol;
pub mod firewall;
pub mod hosts;
pub mod metrics;
pub mod netns;
pub mod node;
pub mod probe_client;
pub mod reconcile;
pub mod secrets;
pub mod tasks;
pub mod traffic;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::control_plane::ControlPlane;
use crate::hosts::{Hosts, Settings};
use crate::secrets::Store;

/// Why the agent could not start (once running, it retries instead of failing).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("control plane client: {0}")]
    ControlPlane(#[from] control_plane::Error),
    #[error("this node cannot firewall hosts: {0}")]
    Firewall(#[from] firewall::Error),
    #[error("enrolment: {0}")]
    Enrol(#[from] enrol::Error),
    #[error("metrics listener on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` completes: registers (retrying while the control plane is away),
/// then heartbeats and reconciles, and claims and runs tasks, all concurrently. Returns `Err` only
/// for problems no retry can fix (bad configuration, `nft`/`nsenter` missing on the node).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    config.validate()?;
    firewall::preflight(Duration::from_secs(10)).await?;
    let cancel = CancellationToken::new();
    if let Some(addr) = config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Metrics { addr, source })?;
        let mut registry = prometheus_client::registry::Registry::with_prefix("ccp");
        metrics::get().register(&mut registry);
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "metrics listener listening");
        let stop = cancel.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(e) = wire::metrics_listener::serve(listener, registry, stop).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    tokio::pin!(shutdown);
    let credential = tokio::select! {
        credential = enrol::credential(&config, &cancel) => credential?,
        () = &mut shutdown => return Ok(()),
    };
    let cp = ControlPlane::new(
        config.base_url(),
        &credential,
        config.control_plane_timeout(),
        config.control_plane_ca_file.as_deref(),
    )?;
    let agent = {
        let cancel = cancel.clone();
        async move {
            let Some(docker) = connect_docker(&config, &cancel).await else {
                return;
            };
            let hosts = Arc::new(Hosts::new(
                docker,
                Store::new(&config.state_dir, &config.node_name),
                settings(&config).await,
            ));
            // The control plane accepts host addresses only inside this network.
            let hosts_subnet = match hosts.ensure_network().await {
                Ok(bridge) => Some(bridge.subnet),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the hosts network; host addresses will be refused");
                    None
                }
            };
            let register = wire::Register {
                node_name: config.node_name.clone(),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                reach_address: config.reach_address.clone(),
                hosts_subnet,
            };
            let session = Arc::new(Session::new(cp, register, cancel.clone()));
            if !session.register_until_ok().await {
                return;
            }
            let inflight = Arc::new(tasks::Inflight::default());
            let heartbeat = heartbeat_loop(session.clone(), hosts.clone(), inflight.clone(), cancel.clone());
            let egress_tests = egress_check::run_loop(session.clone(), hosts.clone(), cancel.clone());
            let health = egress_health::run_loop(hosts.clone(), cancel.clone());
            let traffic = traffic::run_sampler(
                hosts.clone(),
                Duration::from_secs(config.traffic_sample_secs),
                cancel.clone(),
            );
            let task_loop = tasks::TaskLoop {
                session,
                hosts,
                inflight,
                max_tasks: config.max_tasks,
                cancel,
            };
            tokio::join!(heartbeat, egress_tests, health, traffic, task_loop.run());
        }
    };
    let agent = tokio::spawn(agent);
    shutdown.await;
    tracing::info!("agent shutting down");
    cancel.cancel();
    if let Err(e) = agent.await {
        tracing::error!(error = %e, "agent task ended abnormally");
    }
    Ok(())
}

async fn settings(config: &Config) -> Settings {
    let blocked_hosts = node::control_plane_addresses(config.base_url(), Duration::from_secs(10)).await;
    let dns_servers = node::resolvers();
    tracing::info!(
        ?blocked_hosts,
        ?dns_servers,
        direct_egress = config.allow_direct_egress,
        "host firewall inputs"
    );
    let egress_runtime = config.egress_runtime();
    let sing_box = config.sing_box();
    tracing::info!(?egress_runtime, ?sing_box, "egress tunnel programs");
    Settings {
        node_name: config.node_name.clone(),
        host_image: config.host_image.clone(),
        hosts_network: config.hosts_network(),
        vnc_port: config.vnc_port,
        desktop_idle_secs: config.desktop_idle_secs,
        allow_direct_egress: config.allow_direct_egress,
        ssh_ready_timeout: Duration::from_secs(config.ssh_ready_timeout_secs),
        command_timeout: config.docker_timeout().min(Duration::from_secs(30)),
        blocked_hosts,
        dns_servers,
        egress_runtime,
        sing_box,
        tunnel_ready_timeout: Duration::from_secs(config.tunnel_ready_timeout_secs),
        node_public_ips: config.node_public_ips.clone(),
    }
}

/// Connects to Docker, retrying with backoff until it answers or we shut down.
async fn connect_docker(config: &Config, cancel: &CancellationToken) -> Option<docker::Docker> {
    let mut backoff = Backoff::new();
    loop {
        match docker::Docker::connect(&config.docker_socket, config.docker_timeout()).await {
            Ok(d) => match d.ping().await {
                Ok(()) => return Some(d),
                Err(e) => tracing::warn!(error = %e, "Docker does not answer"),
            },
            Err(e) => tracing::warn!(error = %e, socket = %config.docker_socket, "cannot connect to Docker"),
        }
        if !sleep_or_cancel(backoff.next_delay(), cancel).await {
            return None;
        }
    }
}

/// Heartbeats every `heartbeat_secs` with what Docker holds, then reconciles against the reply.
/// Removal needs a host to be missing from two replies in a row (on top of the busy flag and the
/// local task record), so a reply racing a create never costs a host its containers.
async fn heartbeat_loop(
    session: Arc<Session>,
    hosts: Arc<Hosts>,
    inflight: Arc<tasks::Inflight>,
    cancel: CancellationToken,
) {
    let mut previous: Option<Vec<wire::DesiredHost>> = None;
    let mut backoff = Backoff::new();
    loop {
        let sent_at = Instant::now();
        let mut delay = session.heartbeat_interval().await;
        match hosts.observe_all().await {
            Err(e) => {
                tracing::warn!(error = %e, "cannot observe Docker; skipping this heartbeat");
                delay = backoff.next_delay();
            }
            Ok(observed) => {
                let node_id = session.node_id().await;
                let beat = wire::Heartbeat {
                    node_id: node_id.clone(),
                    observed,
                };
                match session.control_plane().heartbeat(&beat).await {
                    Ok(reply) => {
                        backoff.reset();
                        hosts.set_probe_targets(reply.probe.clone());
                        let protected = inflight.protected(sent_at);
                        for host_id in hosts.update_egress_cuts(&reply.hosts) {
                            let busy = reply.hosts.iter().any(|d| d.host_id == host_id && d.busy);
                            // A task on the host installs the rules itself, from its spec.
                            if busy || protected.contains(&host_id) {
                                continue;
                            }
                            if let Err(e) = hosts.enforce_egress_cut(&host_id).await {
                                tracing::warn!(host_id = %host_id, error = %e, "applying an egress cut failed");
                            }
                        }
                        if let Some(prev) = previous.replace(reply.hosts.clone()) {
                            let desired = merge_desired(&reply.hosts, &prev);
                            let protected = inflight.protected(sent_at);
                            if let Err(e) = reconcile::run_once(&hosts, &desired, &protected).await {
                                tracing::warn!(error = %e, "reconcile failed");
                            }
                        }
                    }
                    Err(control_plane::Error::NodeUnknown(status)) => {
                        tracing::warn!(%status, "heartbeat: node unknown to the control plane; registering again");
                        session.reregister(&node_id).await;
                        previous = None;
                        continue;
                    }
                    Err(e) => {
                        delay = backoff.next_delay().min(delay);
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
            }
        }
        if !sleep_or_cancel(delay, &cancel).await {
            return;
        }
    }
}

/// Union of two heartbeat replies; a host busy in either counts as busy.
fn merge_desired(now: &[wire::DesiredHost], before: &[wire::DesiredHost]) -> Vec<wire::DesiredHost> {
    let mut merged: Vec<wire::DesiredHost> = now.to_vec();
    for b in before {
        match merged.iter_mut().find(|m| m.host_id == b.host_id) {
            Some(m) => m.busy |= b.busy,
            None => merged.push(b.clone()),
        }
    }
    merged
}

/// The agent's registration with the control plane, renewed when the control plane forgets it.
pub(crate) struct Session {
    cp: ControlPlane,
    register: wire::Register,
    registered: RwLock<wire::Registered>,
    reregistering: Mutex<()>,
    cancel: CancellationToken,
}

impl Session {
    fn new(cp: ControlPlane, register: wire::Register, cancel: CancellationToken) -> Self {
        Self {
            cp,
            register,
            registered: RwLock::new(wire::Registered {
                node_id: String::new(),
                heartbeat_secs: 15,
            }),
            reregistering: Mutex::new(()),
            cancel,
        }
    }

    pub(crate) fn control_plane(&self) -> &ControlPlane {
        &self.cp
    }

    pub(crate) async fn node_id(&self) -> String {
        self.registered.read().await.node_id.clone()
    }

    async fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.registered.read().await.heartbeat_secs.clamp(1, 300))
    }

    /// Registers, retrying with capped backoff; false if shut down first.
    async fn register_until_ok(&self) -> bool {
        let mut backoff = Backoff::new();
        loop {
            match self.cp.register(&self.register).await {
                Ok(registered) => {
                    tracing::info!(node_id = %registered.node_id, node = %self.register.node_name, "registered");
                    *self.registered.write().await = registered;
                    return true;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "registration failed");
                    if !sleep_or_cancel(delay, &self.cancel).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Registers again unless someone already did since `stale_id` was read.
    pub(crate) async fn reregister(&self, stale_id: &str) {
        let _one = self.reregistering.lock().await;
        if self.node_id().await == stale_id {
            self.register_until_ok().await;
        }
    }
}

/// Capped exponential backoff: 0.5 s doubling to 30 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Sleeps for `d`; false if cancelled first.
pub(crate) async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// For tests: one that cannot run here (`why`) is skipped, unless the environment variable `require`
/// is `1` (as `tests/run.sh` sets it, where everything is installed), which makes that a failure.
#[cfg(test)]
pub(crate) fn skip_unless_required(require: &str, why: &str) {
    assert!(
        std::env::var(require).as_deref() != Ok("1"),
        "{require}=1 but {why}"
    );
    eprintln!("skipping: {why}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..9).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[test]
    fn merged_replies_keep_hosts_seen_in_either_and_or_busy() {
        let d = |id: &str, busy| wire::DesiredHost {
            host_id: id.into(),
            busy,
            egress_cut: false,
        };
        let merged = merge_desired(&[d("a", false), d("b", false)], &[d("b", true), d("c", false)]);
        assert_eq!(merged, [d("a", false), d("b", true), d("c", false)]);
    }
}
