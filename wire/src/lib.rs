//! Wire types of the control plane ↔ agent link: registration, heartbeats, task assignment, progress
//! and results, and the host spec an agent needs to build a host. JSON over HTTP; the agent always
//! calls the control plane (pull), so nodes need no inbound port and replicas stay stateless.

use serde::{Deserialize, Serialize};

pub mod proxy;
pub mod secret;

pub use secret::Secret;

/// Header carrying the agent's node credential (issued once by `POST /v1/agent/enrol`); the control
/// plane stores only its hash and takes the node from it.
pub const AGENT_TOKEN_HEADER: &str = "x-agent-token";

/// `POST /v1/agent/enrol` and `POST /v1/gateway/enrol`: a node or gateway trades an enrolment key,
/// made by the operator, for a credential of its own. Sent once; the answer is never repeated.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Enrol {
    /// The enrolment key's secret.
    pub key: String,
    /// The node's (or gateway's) name, unique among enrolled ones: 1-64 letters, digits, `.`, `_`, `-`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,64}$"))]
    pub name: String,
}

impl std::fmt::Debug for Enrol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrol")
            .field("key", &"<redacted>")
            .field("name", &self.name)
            .finish()
    }
}

/// The answer to an enrolment: the credential to present from now on (in
/// [`AGENT_TOKEN_HEADER`] or [`GATEWAY_TOKEN_HEADER`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Enrolled {
    /// The node's id (agents) or the gateway's name (gateways).
    pub id: String,
    pub credential: String,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled")
            .field("id", &self.id)
            .field("credential", &"<redacted>")
            .finish()
    }
}

/// Labels put on every Docker object the agent creates.
pub mod labels {
    /// Marks an object as ours; the reconciler only ever touches objects with this label.
    pub const MANAGED: &str = "io.cloud-cli-proxy.managed";
    pub const HOST_ID: &str = "io.cloud-cli-proxy.host-id";
    pub const NODE: &str = "io.cloud-cli-proxy.node";
    /// `host` (the user's container), `egress` (the namespace owner), `home` (volume), `network`.
    pub const ROLE: &str = "io.cloud-cli-proxy.role";
}

/// `POST /v1/agent/register`: an agent announces itself (again after every restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// Stable per node; two agents on one machine use two names.
    pub node_name: String,
    pub agent_version: String,
    /// Address the SSH gateway and VNC proxy use to reach hosts on this node (`None`: same machine).
    pub reach_address: Option<String>,
    /// IPv4 subnet of the node's hosts network (`172.18.0.0/16`): the control plane accepts host
    /// addresses only inside it. Fixed at the first registration after enrolment.
    #[serde(default)]
    pub hosts_subnet: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    pub node_id: String,
    /// Seconds between heartbeats the control plane expects.
    pub heartbeat_secs: u64,
}

/// `POST /v1/agent/heartbeat`: liveness plus what Docker holds for us on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub node_id: String,
    pub observed: Vec<ObservedHost>,
}

/// What the agent saw of one host in Docker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedHost {
    pub host_id: String,
    pub state: ContainerState,
    /// IP of the host on the node's host network, for the gateways.
    pub address: Option<String>,
    /// The host sshd's key (OpenSSH public key line), made by the agent and kept across
    /// rebuilds; the control plane pins it and the gateways accept no other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_host_key: Option<String>,
    /// For a bound, running host: its egress as last checked from inside its namespace.
    #[serde(default)]
    pub egress: Option<EgressHealth>,
    /// For a running host: its namespace's traffic counters as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficCounters>,
}

/// The bytes a host exchanged with the world outside its node, as two counters in its network
/// namespace count them (tunnelled or direct; the tunnel's own packets and the node-local SSH and
/// VNC traffic left out). They only grow, except that they start again from zero whenever
/// `epoch` changes (a new namespace); the control plane folds each restart into its totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficCounters {
    /// Names the counters' lifetime: another value means they restarted from zero.
    pub epoch: String,
    /// Bytes received by the host.
    pub rx_bytes: u64,
    /// Bytes sent by the host.
    pub tx_bytes: u64,
}

/// A bound host's egress, checked from inside its namespace after start and periodically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressHealth {
    /// Connectivity and exit IP passed (and DNS did not leak).
    pub healthy: bool,
    /// The tunnel runtime's state: `idle`, `starting`, `up`, `restarting`, `failed`.
    pub tunnel: String,
    /// The exit address the probe saw.
    pub exit_ip: Option<String>,
    pub checks: Vec<CheckResult>,
    /// RFC 3339.
    pub checked_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Missing,
    Created,
    Running,
    Stopped,
    /// Restarting, paused, dead or half-built.
    Broken,
}

/// Reply to a heartbeat: the hosts the control plane has on this node, for the agent's reconciler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatReply {
    pub hosts: Vec<DesiredHost>,
    /// Where egress health checks go (the control plane's `EGRESS_PROBE_*`).
    #[serde(default)]
    pub probe: Option<ProbeTargets>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredHost {
    pub host_id: String,
    /// Whether a task on the host is queued or running: the reconciler leaves such hosts alone.
    pub busy: bool,
    /// A traffic quota cut the host's egress: nothing leaves its namespace but replies to the
    /// node's SSH and VNC connections, whatever its binding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub egress_cut: bool,
}

/// `POST /v1/agent/claim`: ask for the next task this node may run (long poll).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub node_id: String,
    /// Longest time the control plane may hold the request open waiting for work.
    pub wait_secs: u64,
}

/// A task handed to an agent. `lease` identifies this attempt: reports with an older lease are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub task_id: String,
    pub lease: String,
    pub kind: TaskKind,
    pub attempt: u32,
    pub host: HostSpec,
    /// Rebuild: also empty the home volume.
    #[serde(default)]
    pub wipe: bool,
}

/// What a host task does: one type for the control plane (its API and its database, as the
/// `snake_case` name) and the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Create,
    Start,
    Stop,
    Rebuild,
    Delete,
    RotateSshPassword,
    /// Rewrite the secret files (password, gateway keys, VNC) and apply them in the running host:
    /// how a removed gateway's key leaves hosts that are already up.
    ApplySecrets,
}

impl TaskKind {
    pub const ALL: [TaskKind; 7] = [
        Self::Create,
        Self::Start,
        Self::Stop,
        Self::Rebuild,
        Self::Delete,
        Self::RotateSshPassword,
        Self::ApplySecrets,
    ];

    /// The name in the API, the database and the agent link.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Rebuild => "rebuild",
            Self::Delete => "delete",
            Self::RotateSshPassword => "rotate_ssh_password",
            Self::ApplySecrets => "apply_secrets",
        }
    }
}

impl std::str::FromStr for TaskKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown task kind `{s}`"))
    }
}

impl TryFrom<String> for TaskKind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Everything the agent needs to build or change a host. Secrets travel only as hashes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub host_id: String,
    pub short_id: String,
    /// Account name inside the container.
    pub linux_user: String,
    pub memory_mb: u64,
    pub cpu_millis: u64,
    pub pids_limit: u64,
    /// crypt(3) SHA-512 hash of the host's SSH password.
    pub password_crypt: String,
    /// Public keys allowed to log in as `linux_user` (the SSH gateway's key).
    pub authorized_keys: Vec<String>,
    /// Secret of the in-container VNC server.
    pub vnc_secret: String,
    /// The egress IP the host is bound to; `None`: the node's direct path (when the node allows it).
    #[serde(default)]
    pub egress: Option<EgressSpec>,
    /// A traffic quota cut the host's egress (see [`DesiredHost::egress_cut`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub egress_cut: bool,
}

impl std::fmt::Debug for HostSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSpec")
            .field("host_id", &self.host_id)
            .field("short_id", &self.short_id)
            .field("linux_user", &self.linux_user)
            .field("memory_mb", &self.memory_mb)
            .field("cpu_millis", &self.cpu_millis)
            .field("pids_limit", &self.pids_limit)
            .field("egress", &self.egress)
            .field("egress_cut", &self.egress_cut)
            .finish_non_exhaustive()
    }
}

/// How a namespace leaves the internet: one egress IP, with everything its tunnel needs. Carries
/// secrets (keys, proxy passwords); the agent keeps it in files, never in container env or logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSpec {
    pub egress_ip_id: String,
    /// The declared exit address (what the exit-IP check compares with).
    pub declared_ip: String,
    /// The resolver every DNS query of the namespace is sent to, through the tunnel.
    pub dns_server: String,
    pub tunnel: Tunnel,
}

impl std::fmt::Debug for EgressSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.tunnel {
            Tunnel::Wireguard(_) => "wireguard".to_owned(),
            Tunnel::Proxy { outbound } => format!("proxy/{}", outbound.kind()),
        };
        f.debug_struct("EgressSpec")
            .field("egress_ip_id", &self.egress_ip_id)
            .field("declared_ip", &self.declared_ip)
            .field("dns_server", &self.dns_server)
            .field("tunnel", &kind)
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Tunnel {
    Wireguard(WireguardSpec),
    /// A sing-box outbound (socks, http, shadowsocks, vmess, vless, trojan), typed and validated
    /// once by the control plane; the agent renders it with its own `tag`, `server` and
    /// `routing_mark`.
    Proxy {
        outbound: Box<proxy::ProxyConfig>,
    },
}

/// One WireGuard peer (the provider's server) and this side's interface.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireguardSpec {
    /// `host:port` or `ip:port`; the agent resolves names on the node.
    pub endpoint: String,
    /// Base64 X25519 keys.
    pub peer_public_key: String,
    pub preshared_key: Option<String>,
    /// This side's private key (per host; the egress IP's own key for tests).
    pub private_key: String,
    /// CIDRs routed into the tunnel, e.g. `["0.0.0.0/0"]`.
    pub allowed_ips: Vec<String>,
    /// This side's address inside the tunnel, e.g. `10.0.0.2/32`.
    pub address: String,
}

/// `POST /v1/agent/egress-tests` reply body pieces: one check of an egress test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    /// `connectivity`, `exit_ip` or `dns_leak`.
    pub name: String,
    pub passed: bool,
    pub latency_ms: Option<u64>,
    /// What was seen: the exit IP, the resolver IP, the HTTP status.
    pub observed: Option<String>,
    pub error: Option<String>,
}

impl CheckResult {
    /// The check `name` failed for `error`, with nothing observed.
    pub fn failed(name: &str, latency_ms: Option<u64>, error: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            passed: false,
            latency_ms,
            observed: None,
            error: Some(error.into()),
        }
    }

    /// Every check of an egress test failed for the same reason (no tunnel, out of time).
    pub fn all_failed(error: &str) -> Vec<Self> {
        checks::ALL
            .iter()
            .map(|name| Self::failed(name, None, error))
            .collect()
    }
}

/// The names of an egress test's checks, in the order they are reported.
pub mod checks {
    pub const CONNECTIVITY: &str = "connectivity";
    pub const EXIT_IP: &str = "exit_ip";
    pub const DNS_LEAK: &str = "dns_leak";
    pub const ALL: [&str; 3] = [CONNECTIVITY, EXIT_IP, DNS_LEAK];
}

/// Where an egress test sends its three checks (`EGRESS_PROBE_*` of the control plane).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTargets {
    /// Expects 204 or 200.
    pub connectivity_url: String,
    /// Answers the caller's IP as text.
    pub ip_url: String,
    /// Its `A` record is the address of the resolver that asked (whoami).
    pub dns_name: String,
}

/// `POST /v1/agent/egress-tests/claim`: long-polls for an egress test to run on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressTestClaim {
    pub node_id: String,
    /// How long the control plane may hold the request when there is no test, in seconds (≤ 25).
    pub wait_secs: u64,
}

/// An egress test for an agent: bring the tunnel up in a throwaway namespace and run the checks.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressTestJob {
    pub test_id: String,
    pub egress: EgressSpec,
    pub targets: ProbeTargets,
    /// Everything, tunnel included, must be done within this many milliseconds.
    pub budget_ms: u64,
}

impl std::fmt::Debug for EgressTestJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressTestJob")
            .field("test_id", &self.test_id)
            .field("egress", &self.egress)
            .field("targets", &self.targets)
            .field("budget_ms", &self.budget_ms)
            .finish()
    }
}

/// `POST /v1/agent/egress-tests/{test_id}/result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressTestReport {
    /// `connectivity`, `exit_ip`, `dns_leak`, in that order.
    pub checks: Vec<CheckResult>,
}

/// `POST /v1/agent/tasks/{task_id}/progress`: also renews the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub lease: String,
    /// 0-100.
    pub percent: u8,
    pub stage: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressReply {
    /// The operator cancelled the task: stop at the next safe point and report `Cancelled`.
    pub cancel_requested: bool,
    /// The lease is no longer ours (it expired and the task went to another attempt): stop.
    pub lease_lost: bool,
}

/// `POST /v1/agent/tasks/{task_id}/result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskResult {
    pub lease: String,
    pub outcome: Outcome,
    /// The host as Docker shows it after the task.
    pub observed: Option<ObservedHost>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    Succeeded,
    /// `retryable`: worth another attempt (within the task's budget).
    Failed {
        error: String,
        retryable: bool,
    },
    Cancelled,
}

/// Header carrying an SSH gateway's credential (issued once by `POST /v1/gateway/enrol`).
pub const GATEWAY_TOKEN_HEADER: &str = "x-gateway-token";

/// The SSH gateway link: `/v1/gateway/…`, called by SSH gateways. Authentication and routing
/// decisions live in the control plane, so any number of gateways share one policy, one set of
/// rate limits and one audit log.
pub mod gateway {
    use serde::{Deserialize, Serialize};

    /// Seconds between a gateway's registrations, which are its heartbeat too.
    pub const HEARTBEAT_SECS: u64 = 30;

    /// `POST /v1/gateway/register`: a gateway announces the public key it logs in to hosts with,
    /// at start and then every `HEARTBEAT_SECS`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Register {
        /// Stable per gateway process (its host name by default).
        pub name: String,
        /// OpenSSH public key line of the gateway's client key.
        pub client_key: String,
        /// OpenSSH public key line of the key the gateway answers SSH clients with: the control
        /// plane's terminal logs in only through a gateway presenting a registered one.
        #[serde(default)]
        pub host_key: Option<String>,
    }

    /// `POST /v1/gateway/auth`: may this login, with this credential, open a session?
    #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct AuthRequest {
        /// The SSH login name as typed: `user` or `user+shortid`.
        pub login: String,
        /// The client's address as the gateway sees it.
        pub client_ip: String,
        /// Identifies the connection in the events.
        pub connection_id: String,
        pub credential: Credential,
    }

    impl std::fmt::Debug for AuthRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AuthRequest")
                .field("login", &self.login)
                .field("client_ip", &self.client_ip)
                .field("connection_id", &self.connection_id)
                .finish_non_exhaustive()
        }
    }

    #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
    pub enum Credential {
        Password {
            password: String,
        },
        /// `verified`: the client proved it holds the key (a signature checked by the gateway);
        /// false for the offer that only asks whether the key would be accepted.
        PublicKey {
            public_key: String,
            verified: bool,
        },
    }

    /// The decision. Refusals carry a machine reason for the gateway's logs; the SSH client is
    /// only ever told "permission denied".
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "decision", rename_all = "snake_case", deny_unknown_fields)]
    pub enum AuthReply {
        Allowed(Box<Target>),
        Denied { reason: String },
        RateLimited { retry_after_secs: u64 },
    }

    /// The host a login resolved to, and how to reach it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Target {
        pub user_id: String,
        pub username: String,
        pub host_id: String,
        pub short_id: String,
        /// The account inside the container.
        pub linux_user: String,
        /// The host's status (`running`, `stopped`, …); only a running host can be reached.
        pub status: String,
        /// `ip:port` of the host's sshd, when known.
        pub address: Option<String>,
        /// The host sshd's pinned key (OpenSSH public key line): the gateway refuses a host that
        /// presents another. `None` for a host no agent has reported a key for yet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub host_key: Option<String>,
        /// Set when the control plane logged in for the dashboard's terminal: the session is a web
        /// session, and its events name the browser rather than the control plane.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub web: Option<WebLogin>,
        /// Set when this login's pty sessions are to be recorded (`SESSION_RECORDING` and the
        /// user's and host's overrides); absent, nothing is recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub recording: Option<RecordingPolicy>,
    }

    /// How the gateway records a login's pty sessions.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RecordingPolicy {
        /// What to do when the recording cannot be stored (`RECORDING_FAILURE`).
        pub on_failure: RecordingFailure,
    }

    /// `RECORDING_FAILURE`: a session whose recording cannot be opened or written is ended
    /// (`refuse`), or goes on unrecorded (`continue`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum RecordingFailure {
        Refuse,
        Continue,
    }

    /// `POST /v1/gateway/recordings`: a pty session begins to be recorded. The answer is a
    /// [`RecordingOpened`]; the asciicast header is made from these fields.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RecordingOpen {
        pub connection_id: String,
        pub user_id: String,
        pub host_id: String,
        /// The terminal's size when the pty was asked for.
        pub width: u32,
        pub height: u32,
        /// `TERM` of the pty request.
        pub term: String,
        /// A session of the dashboard's terminal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub web: Option<WebLogin>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RecordingOpened {
        pub id: String,
    }

    /// Largest chunk body the control plane takes (`POST /v1/gateway/recordings/{id}/chunks/{seq}`,
    /// gzip of asciicast v2 event lines).
    pub const RECORDING_CHUNK_MAX_BYTES: usize = 1 << 20;

    /// `POST /v1/gateway/recordings/{id}/end`: the recorded session ended (or its recording
    /// stopped, with `error`).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RecordingEnd {
        pub duration_ms: u64,
        /// Why the recording stopped before the session ended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub error: Option<String>,
    }

    /// A login the control plane made on behalf of a browser (the dashboard's terminal).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct WebLogin {
        /// The browser's address.
        pub client_ip: Option<String>,
        /// The account that opened the terminal: the host's owner, or an operator.
        pub opened_by: String,
    }

    /// `POST /v1/gateway/events`: sessions, for the audit log.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SessionEvent {
        pub kind: SessionEventKind,
        pub connection_id: String,
        pub user_id: String,
        pub host_id: String,
        pub client_ip: String,
        /// Bytes from the client to the host and back, so far.
        #[serde(default)]
        pub bytes_in: u64,
        #[serde(default)]
        pub bytes_out: u64,
        #[serde(default)]
        pub duration_ms: u64,
        /// Why a session could not start or ended abnormally.
        #[serde(default)]
        pub error: Option<String>,
        /// A session of the dashboard's terminal (from the login's `Target::web`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub web: Option<WebLogin>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum SessionEventKind {
        Started,
        Ended,
        /// Authenticated, but the host could not be reached (stopped, or its sshd refused us).
        Failed,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn task_kind_names_are_their_serde_names() {
        for kind in super::TaskKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(kind.as_str().parse::<super::TaskKind>(), Ok(kind));
        }
        assert!("reboot".parse::<super::TaskKind>().is_err());
    }

    use super::*;

    #[test]
    fn outcome_is_tagged_by_status() {
        let o = Outcome::Failed {
            error: "boom".into(),
            retryable: true,
        };
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"status": "failed", "error": "boom", "retryable": true})
        );
        let back: Outcome = serde_json::from_value(serde_json::json!({"status": "succeeded"})).unwrap();
        assert_eq!(back, Outcome::Succeeded);
    }

    #[test]
    fn host_spec_debug_hides_secrets() {
        let spec = HostSpec {
            host_id: "h".into(),
            short_id: "s".into(),
            linux_user: "u".into(),
            memory_mb: 1,
            cpu_millis: 1,
            pids_limit: 1,
            password_crypt: "$6$salt$hash".into(),
            authorized_keys: vec![],
            vnc_secret: "vnc-secret".into(),
            egress: Some(EgressSpec {
                egress_ip_id: "e".into(),
                declared_ip: "198.18.0.10".into(),
                dns_server: "198.18.0.53".into(),
                tunnel: Tunnel::Wireguard(WireguardSpec {
                    endpoint: "198.18.0.10:51820".into(),
                    peer_public_key: "peer".into(),
                    preshared_key: Some("psk-secret".into()),
                    private_key: "private-secret".into(),
                    allowed_ips: vec!["0.0.0.0/0".into()],
                    address: "10.0.0.2/32".into(),
                }),
            }),
            egress_cut: false,
        };
        let shown = format!("{spec:?}");
        assert!(!shown.contains("$6$") && !shown.contains("vnc-secret"));
        let egress = format!("{:?}", spec.egress);
        assert!(!egress.contains("secret"), "{egress}");
        assert!(egress.contains("wireguard"));
    }
}

#[cfg(feature = "metrics-listener")]
pub mod metrics_listener;
