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
//!
//! This module holds the types and the [`Hosts`] handle; its methods are spread by concern:
//! `actions` (the task actions and the steps they share), `ruleset` (the bridge, the firewall of a
//! namespace and the pure choice of its egress rules, quota cuts), `observe` (what Docker and the
//! tunnel runtime report), `containers` (the container bodies) and [`tunnel`] (the runtime's files).

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use tokio::io::AsyncReadExt as _;
use wire::{ContainerState, HostSpec, ObservedHost, TaskKind};

mod actions;
mod containers;
mod observe;
mod ruleset;
pub mod tunnel;

pub use actions::ssh_banner;

pub use containers::{
    DEFAULT_CPU_MILLIS, DEFAULT_MEMORY_MB, DEFAULT_PIDS_LIMIT, HOST_CAPABILITIES, SECRETS_MOUNT, STOP_GRACE,
    host_limits, validate_spec,
};
use observe::{container_pid, same_netns};

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

    pub fn names(&self, short_id: &str) -> Names {
        Names::new(&self.settings.node_name, short_id)
    }
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
