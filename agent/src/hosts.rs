//! Host actions on this node: create, start, stop, rebuild, delete and rotating the SSH password.
//! Every action is idempotent (a retried or recovered task just carries on) and reports progress at
//! each step, where the control plane may also cancel it.
//!
//! Per host there are four objects, all labelled with the node and host id:
//!
//! - the **egress container** `ccp-<node>-egress-<short_id>`: owns the network namespace (attached to
//!   the node's hosts bridge), runs nothing but `sleep` under tini as `nobody` with every capability
//!   dropped. Its namespace gets the nftables ruleset (see [`crate::firewall`]) from the node
//!   *before* the host container exists or starts, and again at every start and reconcile;
//! - the **host container** `ccp-<node>-host-<short_id>`: the user's machine, joined to that
//!   namespace (`network_mode: container:…`) without NET_ADMIN/NET_RAW, so nobody inside can change
//!   the firewall or routes. Its restart policy is `no` on purpose: after a Docker or node restart the
//!   egress container comes back (policy `unless-stopped`) with a fresh, empty namespace, and the
//!   reconciler installs the rules and only then starts the host. A Docker restart policy on the host
//!   would start tenant code (its desktop autostart, say) in that namespace before the rules exist;
//! - the **home volume** `ccp-<node>-home-<short_id>` at `/home`;
//! - the **secret files** under the agent's state directory (see [`crate::secrets`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use tokio::io::AsyncReadExt as _;
use wire::{ContainerState, HostSpec, ObservedHost, TaskKind};

mod containers;
pub mod tunnel;

pub use containers::{
    DEFAULT_CPU_MILLIS, DEFAULT_MEMORY_MB, DEFAULT_PIDS_LIMIT, HOST_CAPABILITIES, SECRETS_MOUNT, STOP_GRACE,
    host_limits, validate_spec,
};

use crate::docker::{self, Docker, Role, labels_for};
use crate::firewall::{self, Egress, FirewallSpec, Ipv4Cidr};
use crate::secrets::{HostSecrets, Store};
use tunnel::{RuntimeConfig, RuntimeStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The operator cancelled the task.
    Cancelled,
    /// The task's lease went to another attempt.
    LeaseLost,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid host spec: {0}")]
    InvalidSpec(String),
    #[error(transparent)]
    Docker(#[from] docker::Error),
    #[error("firewall: {0}")]
    Firewall(#[from] firewall::Error),
    #[error("secret files: {0}")]
    Secrets(#[from] crate::secrets::Error),
    #[error("{0} is not running")]
    NotRunning(String),
    #[error("{0} has no address on {1}")]
    NoAddress(String, String),
    #[error("the egress container restarted while the host was being set up")]
    NamespaceChanged,
    #[error("sshd did not answer on {addr} within {secs} s")]
    SshNotReady { addr: SocketAddr, secs: u64 },
    #[error("host-apply-secrets failed (exit {code}): {output}")]
    ApplySecrets { code: i64, output: String },
    #[error("interrupted: {0:?}")]
    Interrupted(Interrupt),
    #[error("egress tunnel server: {0}")]
    EgressResolve(String),
    #[error("this node cannot run egress tunnels: {0}")]
    EgressUnavailable(String),
}

impl Error {
    /// Whether another attempt of the task may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Docker(e) => e.retryable(),
            Error::Firewall(e) => !matches!(e, firewall::Error::Spawn { .. } | firewall::Error::BadCidr(_)),
            Error::NotRunning(_)
            | Error::NoAddress(..)
            | Error::NamespaceChanged
            | Error::SshNotReady { .. }
            | Error::EgressResolve(_) => true,
            Error::InvalidSpec(_)
            | Error::Secrets(_)
            | Error::ApplySecrets { .. }
            | Error::Interrupted(_)
            | Error::EgressUnavailable(_) => false,
        }
    }
}

/// Receives progress (percent + stage) and says whether to go on.
pub trait Progress: Send {
    fn step(&mut self, percent: u8, stage: &str) -> impl Future<Output = Result<(), Interrupt>> + Send;
}

/// Progress that goes nowhere (reconciler repairs, tests).
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    async fn step(&mut self, _percent: u8, _stage: &str) -> Result<(), Interrupt> {
        Ok(())
    }
}

/// Names of one host's Docker objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub egress: String,
    pub host: String,
    pub home: String,
}

impl Names {
    pub fn new(node: &str, short_id: &str) -> Self {
        Self {
            egress: format!("ccp-{node}-egress-{short_id}"),
            host: format!("ccp-{node}-host-{short_id}"),
            home: format!("ccp-{node}-home-{short_id}"),
        }
    }
}

/// What the actions need to know about the node.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub host_image: String,
    pub hosts_network: String,
    pub vnc_port: u16,
    /// `DESKTOP_IDLE_SECS` of the host containers.
    pub desktop_idle_secs: u64,
    pub allow_direct_egress: bool,
    pub ssh_ready_timeout: Duration,
    /// Bound of each nsenter/nft/ip command.
    pub command_timeout: Duration,
    /// Addresses no host may reach besides the fixed ranges (the control plane's).
    pub blocked_hosts: Vec<Ipv4Addr>,
    /// Resolvers direct-egress hosts may query.
    pub dns_servers: Vec<Ipv4Addr>,
    /// The tunnel runtime (`cloud-cli-proxy-egress`) and sing-box on the node, bind-mounted into
    /// the egress containers of bound hosts; `None`: not found, bound hosts cannot start here.
    pub egress_runtime: Option<PathBuf>,
    pub sing_box: Option<PathBuf>,
    /// How long a start waits for a bound host's tunnel to come up before going on (closed).
    pub tunnel_ready_timeout: Duration,
    /// The node's public addresses as configured (`NODE_PUBLIC_IPS`); empty: ask the IP probe.
    pub node_public_ips: Vec<Ipv4Addr>,
}

/// One host's containers as listed by Docker.
#[derive(Debug, Default)]
struct Seen {
    host: Option<RunState>,
    egress: Option<RunState>,
    address: Option<String>,
}

/// Carries out host actions against Docker and the node.
#[derive(Debug, Clone)]
pub struct Hosts {
    docker: Docker,
    store: Store,
    settings: Settings,
    /// Bound hosts' egress health, by host id, as [`crate::egress_health`] last found it.
    health: Arc<std::sync::Mutex<HashMap<String, wire::EgressHealth>>>,
    /// Where health checks go, as the control plane last said.
    probe: Arc<std::sync::Mutex<Option<wire::ProbeTargets>>>,
    /// Running hosts' traffic counters, as [`crate::traffic::run_sampler`] last read them.
    traffic: crate::traffic::Samples,
    /// Hosts whose egress a traffic quota cut, as the control plane last said (heartbeat reply or
    /// task): their firewall lets nothing out.
    cut: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Coarse state of one container, from Docker's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    Exited,
    /// Paused, restarting, removing, dead.
    Other,
}

impl RunState {
    pub fn from_status(status: &str) -> Self {
        match status {
            "created" => RunState::Created,
            "running" => RunState::Running,
            "exited" => RunState::Exited,
            _ => RunState::Other,
        }
    }

    fn of(container: &ContainerInspectResponse) -> Self {
        let status = container.state.as_ref().and_then(|s| s.status);
        match status {
            Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
            Some(ContainerStateStatusEnum::RUNNING) => RunState::Running,
            Some(ContainerStateStatusEnum::EXITED) => RunState::Exited,
            _ => RunState::Other,
        }
    }
}

/// The host's state as the control plane sees it, from its two containers.
pub fn host_state(host: Option<RunState>, egress: Option<RunState>) -> ContainerState {
    use RunState::{Created, Exited, Running};
    match (host, egress) {
        (None, None) => ContainerState::Missing,
        (Some(Running), Some(Running)) => ContainerState::Running,
        (Some(Created), Some(_)) => ContainerState::Created,
        (Some(Exited), Some(Created | Running | Exited)) => ContainerState::Stopped,
        _ => ContainerState::Broken,
    }
}

impl Hosts {
    pub fn new(docker: Docker, store: Store, settings: Settings) -> Self {
        Self {
            docker,
            store,
            settings,
            health: Arc::default(),
            probe: Arc::default(),
            traffic: crate::traffic::Samples::default(),
            cut: Arc::default(),
        }
    }

    pub fn traffic(&self) -> &crate::traffic::Samples {
        &self.traffic
    }

    /// Whether a traffic quota cut the host's egress.
    pub fn egress_cut(&self, host_id: &str) -> bool {
        self.cut.lock().is_ok_and(|cut| cut.contains(host_id))
    }

    fn set_egress_cut(&self, host_id: &str, cut: bool) -> bool {
        let Ok(mut set) = self.cut.lock() else {
            return false;
        };
        if cut {
            set.insert(host_id.to_owned())
        } else {
            set.remove(host_id)
        }
    }

    /// Takes the cut flags of a heartbeat reply; returns the hosts whose flag changed, whose
    /// firewall must be installed again.
    pub fn update_egress_cuts(&self, desired: &[wire::DesiredHost]) -> Vec<String> {
        let Ok(mut set) = self.cut.lock() else {
            return Vec::new();
        };
        let wanted: std::collections::HashSet<String> = desired
            .iter()
            .filter(|d| d.egress_cut)
            .map(|d| d.host_id.clone())
            .collect();
        let changed = set.symmetric_difference(&wanted).cloned().collect();
        *set = wanted;
        changed
    }

    /// Installs the firewall of a running host again after its cut flag changed. Fails closed:
    /// a host that should be cut and whose rules could not be installed is stopped.
    pub async fn enforce_egress_cut(&self, host_id: &str) -> Result<(), Error> {
        let Some(short_id) = self.short_id_of(host_id).await? else {
            return Ok(());
        };
        let names = self.names(&short_id);
        let running = self
            .docker
            .inspect_container(&names.egress)
            .await?
            .is_some_and(|c| RunState::of(&c) == RunState::Running);
        if !running {
            return Ok(());
        }
        let cut = self.egress_cut(host_id);
        match self.repair(host_id, false).await {
            Ok(()) => {
                tracing::info!(host_id, cut, "egress cut changed; firewall installed");
                Ok(())
            }
            Err(e) if cut => {
                tracing::error!(host_id, error = %e, "cannot cut the host's egress; stopping the host");
                self.docker.stop_container(&names.host, STOP_GRACE).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The pids of the running egress containers (their namespaces), by host id.
    pub async fn running_egress_pids(&self) -> Result<Vec<(String, i64)>, Error> {
        let filters = [
            format!("{}=true", wire::labels::MANAGED),
            format!("{}={}", wire::labels::NODE, self.settings.node_name),
            format!("{}={}", wire::labels::ROLE, Role::Egress.as_str()),
        ];
        let mut pids = Vec::new();
        for c in self.docker.list_containers(&filters).await? {
            let running = c.state.is_some_and(|s| s.to_string() == "running");
            let host_id = c
                .labels
                .as_ref()
                .and_then(|l| l.get(wire::labels::HOST_ID))
                .cloned();
            let (Some(host_id), Some(id), true) = (host_id, c.id, running) else {
                continue;
            };
            if let Some(pid) = self
                .docker
                .inspect_container(&id)
                .await?
                .as_ref()
                .and_then(container_pid)
            {
                pids.push((host_id, pid));
            }
        }
        Ok(pids)
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The egress health last found for `host_id`.
    pub fn egress_health(&self, host_id: &str) -> Option<wire::EgressHealth> {
        self.health.lock().ok()?.get(host_id).cloned()
    }

    pub fn set_egress_health(&self, host_id: &str, health: Option<wire::EgressHealth>) {
        if let Ok(mut map) = self.health.lock() {
            match health {
                Some(h) => map.insert(host_id.to_owned(), h),
                None => map.remove(host_id),
            };
        }
    }

    pub fn probe_targets(&self) -> Option<wire::ProbeTargets> {
        self.probe.lock().ok()?.clone()
    }

    pub fn set_probe_targets(&self, targets: Option<wire::ProbeTargets>) {
        if let Ok(mut probe) = self.probe.lock() {
            *probe = targets;
        }
    }

    /// The pid of a host's running egress container (its namespace), by host id.
    pub async fn egress_pid(&self, host_id: &str) -> Result<Option<i64>, Error> {
        let Some(short_id) = self.short_id_of(host_id).await? else {
            return Ok(None);
        };
        let names = self.names(&short_id);
        Ok(self
            .docker
            .inspect_container(&names.egress)
            .await?
            .filter(|c| RunState::of(c) == RunState::Running)
            .and_then(|c| container_pid(&c)))
    }

    pub fn names(&self, short_id: &str) -> Names {
        Names::new(&self.settings.node_name, short_id)
    }

    /// Carries out one task; returns when the host is in the task's end state.
    pub async fn execute<P: Progress>(
        &self,
        kind: TaskKind,
        spec: &HostSpec,
        wipe: bool,
        progress: &mut P,
    ) -> Result<(), Error> {
        validate_spec(spec)?;
        match kind {
            TaskKind::Create => self.create(spec, progress).await,
            TaskKind::Start => self.start(spec, progress).await,
            TaskKind::Stop => self.stop(spec, progress).await,
            TaskKind::Rebuild => self.rebuild(spec, wipe, progress).await,
            TaskKind::Delete => self.delete(spec, progress).await,
            TaskKind::RotateSshPassword => self.apply_secrets(spec, progress, "password rotated").await,
            TaskKind::ApplySecrets => self.apply_secrets(spec, progress, "secrets applied").await,
        }
    }

    /// Builds every missing piece and brings the host up; done when its sshd answers.
    pub async fn create<P: Progress>(&self, spec: &HostSpec, progress: &mut P) -> Result<(), Error> {
        self.bring_up(spec, progress, "creating").await
    }

    /// Starts a stopped host (re-creating anything missing, as create does).
    pub async fn start<P: Progress>(&self, spec: &HostSpec, progress: &mut P) -> Result<(), Error> {
        self.bring_up(spec, progress, "starting").await
    }

    /// Stops the host, then its egress container.
    pub async fn stop<P: Progress>(&self, spec: &HostSpec, progress: &mut P) -> Result<(), Error> {
        let names = self.names(&spec.short_id);
        step(progress, 5, "stopping").await?;
        // First, so the reconciler does not bring the host back up meanwhile.
        self.store.set_stopped(&spec.host_id, true)?;
        self.set_egress_health(&spec.host_id, None);
        step(progress, 10, "stopping the host container").await?;
        self.docker.stop_container(&names.host, STOP_GRACE).await?;
        step(progress, 60, "stopping the egress container").await?;
        self.docker.stop_container(&names.egress, STOP_GRACE).await?;
        step(progress, 100, "stopped").await
    }

    /// Recreates both containers from the image, keeping the home volume unless `wipe`.
    pub async fn rebuild<P: Progress>(
        &self,
        spec: &HostSpec,
        wipe: bool,
        progress: &mut P,
    ) -> Result<(), Error> {
        let names = self.names(&spec.short_id);
        step(progress, 2, "rebuilding: checking the image").await?;
        self.docker.require_image(&self.settings.host_image).await?;
        step(progress, 5, "removing the host container").await?;
        self.docker.remove_container(&names.host).await?;
        step(progress, 10, "removing the egress container").await?;
        self.docker.remove_container(&names.egress).await?;
        if wipe {
            step(progress, 15, "wiping the home volume").await?;
            self.docker.remove_volume(&names.home).await?;
        }
        self.bring_up(spec, progress, "rebuilding").await
    }

    /// Removes everything the host had on this node: containers, home volume, files.
    pub async fn delete<P: Progress>(&self, spec: &HostSpec, progress: &mut P) -> Result<(), Error> {
        let names = self.names(&spec.short_id);
        step(progress, 5, "removing the host container").await?;
        self.docker.remove_container(&names.host).await?;
        step(progress, 30, "removing the egress container").await?;
        self.docker.remove_container(&names.egress).await?;
        step(progress, 55, "removing the home volume").await?;
        self.docker.remove_volume(&names.home).await?;
        step(progress, 80, "removing the host's files").await?;
        self.store.remove(&spec.host_id)?;
        step(progress, 100, "deleted").await
    }

    /// Rewrites the secret files and, if the host runs, applies them inside at once: a new password,
    /// or the gateways' keys as they are now (a removed gateway's key leaves the host).
    pub async fn apply_secrets<P: Progress>(
        &self,
        spec: &HostSpec,
        progress: &mut P,
        done: &str,
    ) -> Result<(), Error> {
        let names = self.names(&spec.short_id);
        step(progress, 10, "writing the new secrets").await?;
        self.store.write(&spec.host_id, &HostSecrets::from(spec))?;
        let running = self
            .docker
            .inspect_container(&names.host)
            .await?
            .is_some_and(|c| RunState::of(&c) == RunState::Running);
        if running {
            step(progress, 50, "applying the secrets in the running host").await?;
            let out = self
                .docker
                .exec(&names.host, &["/usr/local/sbin/host-apply-secrets"])
                .await?;
            if out.exit_code != 0 {
                return Err(Error::ApplySecrets {
                    code: out.exit_code,
                    output: out.output.trim().to_owned(),
                });
            }
        }
        step(progress, 100, done).await
    }

    /// Create, start and the second half of rebuild: ensure each piece in order, firewall before
    /// the host container, sshd answering last.
    async fn bring_up<P: Progress>(
        &self,
        spec: &HostSpec,
        progress: &mut P,
        verb: &str,
    ) -> Result<(), Error> {
        let names = self.names(&spec.short_id);
        let node = &self.settings.node_name;
        let host_id = spec.host_id.as_str();
        step(progress, 20, &format!("{verb}: checking the image")).await?;
        self.docker.require_image(&self.settings.host_image).await?;
        self.store.set_stopped(host_id, false)?;
        self.set_egress_cut(host_id, spec.egress_cut);

        step(progress, 25, "preparing the hosts network").await?;
        let bridge = self.ensure_network().await?;

        step(progress, 30, "preparing the home volume").await?;
        self.docker
            .ensure_volume(&names.home, &labels_for(node, Role::Home, Some(host_id)))
            .await?;

        step(progress, 35, "writing the host's secrets").await?;
        let secrets_dir = self.store.write(host_id, &HostSecrets::from(spec))?;
        self.store.ensure_host_key(host_id)?;
        let egress_dir = self.store.ensure_egress_dir(host_id)?;
        // Whatever was found before is about the old egress; checked again once this is up.
        self.set_egress_health(host_id, None);
        let runtime = match &spec.egress {
            Some(egress) => {
                self.require_tunnel_programs(egress)?;
                step(progress, 37, "resolving the egress tunnel server").await?;
                let endpoint = tunnel::resolve(egress).await?;
                Some(RuntimeConfig {
                    spec: egress.clone(),
                    endpoint_ip: *endpoint.ip(),
                    netns_inode: None,
                })
            }
            None => None,
        };

        step(progress, 40, "starting the egress container").await?;
        let body = containers::egress_body(&self.settings, spec, &egress_dir.to_string_lossy());
        self.replace_egress_of_other_shape(&names, &body).await?;
        self.docker.ensure_container(&names.egress, body).await?;
        self.docker.start_container(&names.egress).await?;

        step(progress, 50, "installing the firewall").await?;
        let cut = self.egress_cut(host_id);
        let pid = self
            .apply_firewall(&names, &bridge, runtime.as_ref(), cut)
            .await?;
        // Only now, for the namespace that has the rules, does the tunnel runtime get its work.
        self.write_runtime_config(host_id, runtime, pid)?;

        step(progress, 60, "creating the host container").await?;
        let body = containers::host_body(&self.settings, spec, &names, &secrets_dir.to_string_lossy());
        self.docker.ensure_container(&names.host, body).await?;

        step(progress, 70, "starting the host container").await?;
        self.start_host_in_namespace(&names, pid).await?;

        step(progress, 80, "waiting for sshd").await?;
        let address = self.egress_address(&names).await?;
        self.wait_for_sshd(address, progress).await?;
        if spec.egress.is_some() {
            step(progress, 90, "waiting for the egress tunnel").await?;
            match self.wait_for_tunnel(host_id).await {
                Some(status) if status.is_up() => {}
                status => {
                    // The host is usable (and closed) without its tunnel; the egress health shows it.
                    let why = status
                        .and_then(|s| s.last_error)
                        .unwrap_or_else(|| "no status".into());
                    tracing::warn!(host_id, error = %why, "egress tunnel not up yet");
                }
            }
        }
        step(progress, 100, "running").await
    }

    /// Checks that the programs a tunnel of this kind needs are on the node.
    pub fn require_tunnel_programs(&self, egress: &wire::EgressSpec) -> Result<(), Error> {
        if self.settings.egress_runtime.is_none() {
            return Err(Error::EgressUnavailable(format!(
                "{} not found (set EGRESS_RUNTIME_BIN)",
                crate::config::EGRESS_RUNTIME_NAME
            )));
        }
        if matches!(egress.tunnel, wire::Tunnel::Proxy { .. }) && self.settings.sing_box.is_none() {
            return Err(Error::EgressUnavailable(
                "sing-box not found (set SING_BOX_BIN)".into(),
            ));
        }
        Ok(())
    }

    /// The namespace owner of egress tests: a bound host's egress container, labelled as a test.
    pub fn egress_test_body(&self, dir: &str) -> bollard::models::ContainerCreateBody {
        containers::egress_test_body(&self.settings, dir)
    }

    /// An egress container made for another egress shape (plain or tunnel, another resolver) is
    /// removed, after the host container that lives in its namespace.
    async fn replace_egress_of_other_shape(
        &self,
        names: &Names,
        wanted: &bollard::models::ContainerCreateBody,
    ) -> Result<(), Error> {
        let Some(existing) = self.docker.inspect_container(&names.egress).await? else {
            return Ok(());
        };
        let label = |labels: Option<&HashMap<String, String>>| {
            labels
                .and_then(|l| l.get(containers::EGRESS_SHAPE_LABEL))
                .cloned()
        };
        let have = label(existing.config.as_ref().and_then(|c| c.labels.as_ref()));
        let want = label(wanted.labels.as_ref());
        if have == want {
            return Ok(());
        }
        tracing::info!(container = %names.egress, ?have, ?want, "egress changed shape; re-creating the namespace");
        // Docker ties the host container to the namespace owner's id: both are made anew (the home
        // volume and the secret files stay).
        self.docker.remove_container(&names.host).await?;
        self.docker.remove_container(&names.egress).await?;
        Ok(())
    }

    /// Writes (or withdraws) the tunnel runtime's configuration, tied to the namespace of `pid`.
    fn write_runtime_config(
        &self,
        host_id: &str,
        runtime: Option<RuntimeConfig>,
        pid: i64,
    ) -> Result<(), Error> {
        match runtime {
            Some(mut config) => {
                config.netns_inode = tunnel::netns_inode(pid);
                let bytes = serde_json::to_vec_pretty(&config)
                    .map_err(|e| Error::InvalidSpec(format!("egress configuration: {e}")))?;
                self.store.write_egress_config(host_id, Some(&bytes))?;
            }
            None => self.store.write_egress_config(host_id, None)?,
        }
        Ok(())
    }

    /// The tunnel runtime's configuration as last written for the host.
    pub fn runtime_config(&self, host_id: &str) -> Result<Option<RuntimeConfig>, Error> {
        let Some(bytes) = self.store.read_egress_config(host_id)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::InvalidSpec(format!("stored egress configuration: {e}")))
    }

    /// What the tunnel runtime last reported; `None` before its first report or without a tunnel.
    pub fn tunnel_status(&self, host_id: &str) -> Option<RuntimeStatus> {
        crate::egress::read_status(&self.store.egress_dir(host_id)).ok()
    }

    /// Polls the runtime's status until the tunnel is up or the wait is over.
    async fn wait_for_tunnel(&self, host_id: &str) -> Option<RuntimeStatus> {
        let until = Instant::now() + self.settings.tunnel_ready_timeout;
        tunnel::wait_up(&self.store.egress_dir(host_id), until).await
    }

    /// Starts the host container after the firewall went into the namespace of egress process
    /// `pid`, and checks that the namespace is still that one (the egress container did not restart
    /// in between) with the host inside it.
    async fn start_host_in_namespace(&self, names: &Names, pid: i64) -> Result<(), Error> {
        let host = self.docker.inspect_container(&names.host).await?;
        if let Some(host) = host.as_ref().filter(|h| RunState::of(h) == RunState::Running) {
            // Already running (a retried task): it must be in the egress namespace of now.
            if same_netns(pid, container_pid(host)) == Some(false) {
                tracing::warn!(container = %names.host, "host runs in a stale namespace; restarting it");
                self.docker.stop_container(&names.host, STOP_GRACE).await?;
            }
        }
        self.docker.start_container(&names.host).await?;
        let egress = self.require_running(&names.egress).await?;
        let host = self.require_running(&names.host).await?;
        if container_pid(&egress) != Some(pid) || same_netns(pid, container_pid(&host)) == Some(false) {
            self.docker.stop_container(&names.host, STOP_GRACE).await?;
            return Err(Error::NamespaceChanged);
        }
        Ok(())
    }

    async fn require_running(&self, name: &str) -> Result<ContainerInspectResponse, Error> {
        match self.docker.inspect_container(name).await? {
            Some(c) if RunState::of(&c) == RunState::Running => Ok(c),
            _ => Err(Error::NotRunning(name.to_owned())),
        }
    }

    /// The node's hosts bridge, created if missing. The reconciler removes it when the node has no
    /// host left; made again, it gets the subnet it first had, which the control plane holds the
    /// node to (host addresses outside it are refused). Should another network hold that subnet
    /// by then, creating fails and says so, rather than moving the hosts elsewhere.
    pub async fn ensure_network(&self) -> Result<docker::BridgeInfo, Error> {
        let labels = labels_for(&self.settings.node_name, Role::Network, None);
        let remembered = self
            .store
            .hosts_subnet()
            .map(|(subnet, gateway)| docker::BridgeInfo { subnet, gateway });
        let bridge = self
            .docker
            .ensure_network(&self.settings.hosts_network, &labels, remembered.as_ref())
            .await?;
        if remembered.is_none() {
            self.store
                .remember_hosts_subnet(&bridge.subnet, &bridge.gateway)?;
        }
        Ok(bridge)
    }

    /// Renders and installs the ruleset into the running egress container's namespace; returns the
    /// pid whose namespace got it. `cut`: a traffic quota cut the host's egress, nothing leaves.
    pub async fn apply_firewall(
        &self,
        names: &Names,
        bridge: &docker::BridgeInfo,
        runtime: Option<&RuntimeConfig>,
        cut: bool,
    ) -> Result<i64, Error> {
        let egress = self.require_running(&names.egress).await?;
        let pid = container_pid(&egress).ok_or_else(|| Error::NotRunning(names.egress.clone()))?;
        let mut spec = self.firewall_spec(bridge, runtime).await?;
        if cut {
            spec.egress = Egress::Deny;
        }
        firewall::apply(pid, &firewall::render(&spec), self.settings.command_timeout).await?;
        // The pid could have been recycled by a restart between inspect and nsenter.
        let again = self.require_running(&names.egress).await?;
        if container_pid(&again) != Some(pid) {
            return Err(Error::NamespaceChanged);
        }
        tracing::debug!(container = %names.egress, pid, "firewall installed");
        Ok(pid)
    }

    async fn firewall_spec(
        &self,
        bridge: &docker::BridgeInfo,
        runtime: Option<&RuntimeConfig>,
    ) -> Result<FirewallSpec, Error> {
        let bridge_subnet: Ipv4Cidr = bridge.subnet.parse()?;
        let gateway: Ipv4Addr = bridge
            .gateway
            .parse()
            .map_err(|_| firewall::Error::BadCidr(bridge.gateway.clone()))?;
        let mut blocked_hosts = crate::node::ipv4_addresses(self.settings.command_timeout).await;
        blocked_hosts.extend(&self.settings.blocked_hosts);
        let egress = if let Some(runtime) = runtime {
            runtime.firewall_egress()?
        } else if self.settings.allow_direct_egress {
            Egress::Direct {
                dns_servers: self.settings.dns_servers.clone(),
            }
        } else {
            Egress::Deny
        };
        Ok(FirewallSpec {
            bridge_subnet,
            gateway,
            ingress_ports: vec![22, self.settings.vnc_port],
            blocked_hosts,
            egress,
        })
    }

    /// Re-asserts the firewall of a host whose egress container runs and, if `start`, brings the
    /// host container up in that namespace (after the rules, never before). A host container left
    /// in a stale namespace (its egress container restarted under it) is restarted. Used by the
    /// reconciler; changes nothing the control plane records.
    pub async fn repair(&self, host_id: &str, start: bool) -> Result<(), Error> {
        let Some(short_id) = self.short_id_of(host_id).await? else {
            return Ok(());
        };
        let names = self.names(&short_id);
        if start {
            self.docker.start_container(&names.egress).await?;
        }
        let bridge = self.ensure_network().await?;
        let runtime = self.runtime_config(host_id)?;
        let inode = runtime.as_ref().and_then(|r| r.netns_inode);
        let cut = self.egress_cut(host_id);
        let pid = self
            .apply_firewall(&names, &bridge, runtime.as_ref(), cut)
            .await?;
        if runtime.is_some() && inode != tunnel::netns_inode(pid) {
            // A new namespace (the egress container restarted): it has its rules now, so the
            // runtime may bring the tunnel up in it.
            self.write_runtime_config(host_id, runtime, pid)?;
        }
        let host = self.docker.inspect_container(&names.host).await?;
        let host_running = host
            .as_ref()
            .is_some_and(|h| RunState::of(h) == RunState::Running);
        let stale = host
            .as_ref()
            .is_some_and(|h| host_running && same_netns(pid, container_pid(h)) == Some(false));
        if host.is_some() && (start || stale) {
            self.start_host_in_namespace(&names, pid).await?;
        }
        Ok(())
    }

    /// The short id of a host, from its egress or host container's name labels.
    async fn short_id_of(&self, host_id: &str) -> Result<Option<String>, Error> {
        let filters = [
            format!("{}=true", wire::labels::MANAGED),
            format!("{}={}", wire::labels::NODE, self.settings.node_name),
            format!("{}={host_id}", wire::labels::HOST_ID),
        ];
        let prefix = format!("ccp-{}-egress-", self.settings.node_name);
        let containers = self.docker.list_containers(&filters).await?;
        Ok(containers
            .iter()
            .flat_map(|c| c.names.iter().flatten())
            .find_map(|n| n.trim_start_matches('/').strip_prefix(&prefix).map(str::to_owned)))
    }

    /// The host's IP on the hosts bridge (the egress container's, chosen by network name).
    async fn egress_address(&self, names: &Names) -> Result<Ipv4Addr, Error> {
        let egress = self.require_running(&names.egress).await?;
        docker::address_on(&egress, &self.settings.hosts_network)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| Error::NoAddress(names.egress.clone(), self.settings.hosts_network.clone()))
    }

    /// Polls until sshd sends its banner on port 22, from the node (the source the firewall admits),
    /// renewing the task's lease with progress while waiting.
    async fn wait_for_sshd<P: Progress>(&self, ip: Ipv4Addr, progress: &mut P) -> Result<(), Error> {
        let addr = SocketAddr::from((ip, 22));
        let started = Instant::now();
        let deadline = started + self.settings.ssh_ready_timeout;
        let mut next_report = started + Duration::from_secs(5);
        loop {
            if ssh_banner(addr, Duration::from_secs(2)).await {
                tracing::info!(%addr, waited_ms = started.elapsed().as_millis() as u64, "sshd answers");
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::SshNotReady {
                    addr,
                    secs: self.settings.ssh_ready_timeout.as_secs(),
                });
            }
            if now >= next_report {
                next_report = now + Duration::from_secs(5);
                let stage = format!("waiting for sshd ({} s)", started.elapsed().as_secs());
                step(progress, 85, &stage).await?;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The host as Docker shows it now.
    pub async fn observe(&self, spec: &HostSpec) -> Result<ObservedHost, Error> {
        let names = self.names(&spec.short_id);
        let host = self.docker.inspect_container(&names.host).await?;
        let egress = self.docker.inspect_container(&names.egress).await?;
        let state = host_state(host.as_ref().map(RunState::of), egress.as_ref().map(RunState::of));
        let address = egress
            .as_ref()
            .filter(|e| RunState::of(e) == RunState::Running)
            .and_then(|e| docker::address_on(e, &self.settings.hosts_network));
        Ok(ObservedHost {
            host_id: spec.host_id.clone(),
            state,
            address,
            egress: self.egress_health(&spec.host_id),
            ssh_host_key: self.store.host_key(&spec.host_id),
            traffic: self.traffic.get(&spec.host_id),
        })
    }

    /// Every host this node holds in Docker, from the labels of its containers.
    pub async fn observe_all(&self) -> Result<Vec<ObservedHost>, Error> {
        let filters = [
            format!("{}=true", wire::labels::MANAGED),
            format!("{}={}", wire::labels::NODE, self.settings.node_name),
        ];
        let containers = self.docker.list_containers(&filters).await?;
        let mut by_host: HashMap<String, Seen> = HashMap::new();
        for c in &containers {
            let labels = c.labels.clone().unwrap_or_default();
            let (Some(host_id), Some(role)) =
                (labels.get(wire::labels::HOST_ID), labels.get(wire::labels::ROLE))
            else {
                continue;
            };
            let state = RunState::from_status(&c.state.map(|s| s.to_string()).unwrap_or_default());
            let seen = by_host.entry(host_id.clone()).or_default();
            match Role::parse(role) {
                Some(Role::Host) => seen.host = Some(state),
                Some(Role::Egress) => {
                    seen.egress = Some(state);
                    if state == RunState::Running {
                        seen.address = c
                            .network_settings
                            .as_ref()
                            .and_then(|s| s.networks.as_ref())
                            .and_then(|n| n.get(&self.settings.hosts_network))
                            .and_then(|e| e.ip_address.clone())
                            .filter(|ip| !ip.is_empty());
                    }
                }
                _ => {}
            }
        }
        let mut observed: Vec<ObservedHost> = by_host
            .into_iter()
            .map(|(host_id, seen)| ObservedHost {
                egress: self.egress_health(&host_id),
                ssh_host_key: self.store.host_key(&host_id),
                traffic: self.traffic.get(&host_id),
                host_id,
                state: host_state(seen.host, seen.egress),
                address: seen.address,
            })
            .collect();
        observed.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        Ok(observed)
    }
}

async fn step<P: Progress>(progress: &mut P, percent: u8, stage: &str) -> Result<(), Error> {
    progress.step(percent, stage).await.map_err(Error::Interrupted)
}

fn container_pid(c: &ContainerInspectResponse) -> Option<i64> {
    c.state.as_ref().and_then(|s| s.pid).filter(|p| *p > 0)
}

/// Whether process `other` lives in the network namespace of process `pid`, read from the node's
/// /proc (the agent runs as root in the node's PID namespace). `None` when that cannot be told (a
/// process gone, no access): callers act only on a definite `Some(false)`.
fn same_netns(pid: i64, other: Option<i64>) -> Option<bool> {
    let ns = |p: i64| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
    Some(ns(pid)? == ns(other?)?)
}

/// Whether something at `addr` sends an SSH banner within `timeout`.
pub async fn ssh_banner(addr: SocketAddr, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"SSH-")
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_scheme() {
        let n = Names::new("node1", "ab12cd");
        assert_eq!(n.egress, "ccp-node1-egress-ab12cd");
        assert_eq!(n.host, "ccp-node1-host-ab12cd");
        assert_eq!(n.home, "ccp-node1-home-ab12cd");
    }

    #[test]
    fn state_from_both_containers() {
        use RunState::*;
        assert_eq!(host_state(None, None), ContainerState::Missing);
        assert_eq!(host_state(Some(Running), Some(Running)), ContainerState::Running);
        assert_eq!(host_state(Some(Created), Some(Running)), ContainerState::Created);
        assert_eq!(host_state(Some(Exited), Some(Exited)), ContainerState::Stopped);
        assert_eq!(host_state(Some(Exited), Some(Running)), ContainerState::Stopped);
        assert_eq!(host_state(Some(Running), Some(Exited)), ContainerState::Broken);
        assert_eq!(host_state(None, Some(Running)), ContainerState::Broken);
        assert_eq!(host_state(Some(Running), None), ContainerState::Broken);
        assert_eq!(host_state(Some(Other), Some(Running)), ContainerState::Broken);
    }
}
