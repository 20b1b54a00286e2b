//! A Docker node under test: a control plane on a temporary database with its node agent (embedded
//! in the control plane, or a standalone process), a node name of its own, a temporary state
//! directory, and a guard that removes every Docker object labelled with that node name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::api::{Api, eventually};
use crate::docker::{self, tail};
use crate::fixtures::random_alnum;
use crate::process::{AgentOptions, AgentProcess, ControlPlane, Options};

/// How long an agent may take to connect (register and heartbeat) after its start.
const AGENT_CONNECT: Duration = Duration::from_secs(90);

/// Where the node agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentMode {
    /// Inside the control plane (`EMBEDDED_AGENT=true`).
    Embedded,
    /// A `cloud-cli-proxy-agent` process enrolled with a key (`EMBEDDED_AGENT=false`).
    Standalone,
}

/// Removes every container, volume and network labelled with the node's name, also when the test
/// panicked. Runs after the agent and the control plane are gone (field order in [`Node`]).
#[derive(Debug)]
pub struct Cleanup {
    node: String,
}

impl Cleanup {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let removed = docker::remove_labelled(docker::NODE, &self.node);
        if !removed.is_empty() && !std::thread::panicking() {
            eprintln!(
                "cleanup of node {} removed what the test left: {}",
                self.node,
                removed.join(", ")
            );
        }
    }
}

/// One control plane with one node agent on the local Docker engine.
pub struct Node {
    // Drop order matters: the agent and the control plane stop before the cleanup removes their
    // objects (a running reconciler would bring them back), and the state directory goes last.
    pub agent: Option<AgentProcess>,
    pub cp: ControlPlane,
    pub admin: Api,
    pub mode: AgentMode,
    /// `NODE_NAME`: unique per test, in every object name and the `node` label.
    pub name: String,
    /// The node's hosts bridge (`ccp-hosts-<node>`).
    pub network: String,
    pub image: String,
    /// The enrolment key standalone agents of this node start with (several uses, so a test can
    /// start further agents under other names).
    pub enrolment_key: String,
    /// Logs of agent processes killed so far.
    dead_agent_logs: String,
    _cleanup: Cleanup,
    state_dir: TempDir,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("cp", &self.cp)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A control plane with the embedded agent; `env` adds or overrides control-plane variables.
    /// `CCP_E2E_AGENT=standalone` in the environment runs these suites against a standalone agent
    /// process instead (the same agent code, over HTTP).
    pub async fn embedded(env: &[(&str, &str)]) -> Self {
        Self::embedded_with(Options::new(), env).await
    }

    /// [`Node::embedded`] starting from `opts` (e.g. a TLS CA to trust).
    pub async fn embedded_with(opts: Options, env: &[(&str, &str)]) -> Self {
        let mode = match std::env::var("CCP_E2E_AGENT").as_deref() {
            Ok("standalone") => AgentMode::Standalone,
            Ok("embedded") | Ok("") | Err(_) => AgentMode::Embedded,
            Ok(other) => panic!("CCP_E2E_AGENT must be `embedded` or `standalone`, not `{other}`"),
        };
        Self::start_with(mode, opts, env).await
    }

    /// A control plane without an embedded agent, and a standalone agent process.
    pub async fn standalone(env: &[(&str, &str)]) -> Self {
        Self::start(AgentMode::Standalone, env).await
    }

    /// Checks Docker, builds the host image if needed, starts everything and waits until the agent
    /// is connected.
    pub async fn start(mode: AgentMode, env: &[(&str, &str)]) -> Self {
        Self::start_with(mode, Options::new(), env).await
    }

    /// [`Node::start`] starting from `opts`.
    pub async fn start_with(mode: AgentMode, mut opts: Options, env: &[(&str, &str)]) -> Self {
        docker::require_docker();
        require_tools();
        let image = tokio::task::spawn_blocking(docker::host_image)
            .await
            .expect("building the host image");
        let name = format!("t{}", random_alnum(9).to_lowercase());
        let cleanup = Cleanup::new(&name);
        let state_dir = tempfile::Builder::new()
            .prefix("ccp-agent-")
            .tempdir()
            .expect("agent state dir");
        match mode {
            AgentMode::Embedded => {
                opts = opts
                    .env("EMBEDDED_AGENT", "true")
                    .env("NODE_NAME", &name)
                    .env("AGENT_STATE_DIR", state_dir.path().display())
                    .env("HOST_IMAGE", &image);
            }
            AgentMode::Standalone => {
                opts = opts.env("EMBEDDED_AGENT", "false");
            }
        }
        for (k, v) in env {
            opts = opts.env(k, v);
        }
        let cp = ControlPlane::start(opts).await;
        let admin = cp.admin().await;
        let enrolment_key = match mode {
            AgentMode::Standalone => crate::enrolment::key(&admin, "agent", 10).await,
            AgentMode::Embedded => String::new(),
        };
        let mut node = Self {
            agent: None,
            cp,
            admin,
            mode,
            network: format!("ccp-hosts-{name}"),
            name,
            image,
            enrolment_key,
            dead_agent_logs: String::new(),
            _cleanup: cleanup,
            state_dir,
        };
        if mode == AgentMode::Standalone {
            node.start_agent();
        }
        node.wait_agent_connected().await;
        node
    }

    /// Options of the standalone agent of this node.
    pub fn agent_options(&self) -> AgentOptions {
        let mut env = vec![("HOST_IMAGE".into(), self.image.clone())];
        if let Some(ca) = &self.cp.options().tls_ca_file {
            env.push(("CONTROL_PLANE_CA_FILE".into(), ca.display().to_string()));
        }
        AgentOptions {
            control_plane_url: self.cp.base_url(),
            enrolment_key: self.enrolment_key.clone(),
            node_name: self.name.clone(),
            state_dir: self.state_dir.path().to_path_buf(),
            env,
        }
    }

    /// Starts (another) standalone agent process with this node's name and state directory.
    pub fn start_agent(&mut self) {
        assert_eq!(
            self.mode,
            AgentMode::Standalone,
            "the embedded agent runs in the control plane"
        );
        assert!(
            self.agent.is_none(),
            "an agent process is already running: kill it first"
        );
        self.agent = Some(AgentProcess::start(&self.agent_options()));
    }

    /// `kill -9` of the standalone agent.
    pub fn kill_agent(&mut self) {
        let mut agent = self.agent.take().expect("no agent process to kill");
        agent.kill();
        // Its logs stay readable in failure messages.
        self.dead_agent_logs.push_str(&agent.logs());
    }

    /// Polls `/healthz` until it reports a connected agent.
    pub async fn wait_agent_connected(&mut self) {
        let api = self.admin.clone();
        let deadline = tokio::time::Instant::now() + AGENT_CONNECT;
        loop {
            let r = api.get("/healthz").await;
            if r.body["checks"]["agent"] == "ok" {
                return;
            }
            if let Some(agent) = self.agent.as_mut()
                && let Some(status) = agent.exited()
            {
                panic!(
                    "the agent exited with {status} before connecting; its logs:\n{}",
                    tail(&agent.logs(), 60)
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agent connected within {AGENT_CONNECT:?} ({:?} agent; /healthz says {}).\n{}",
                self.mode,
                r.text,
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last lines of every log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = format!(
            "--- control plane logs (last 80 lines):\n{}",
            tail(&self.cp.logs(), 80)
        );
        if !self.dead_agent_logs.is_empty() {
            out.push_str(&format!(
                "\n--- killed agents' logs (last 60 lines):\n{}",
                tail(&self.dead_agent_logs, 60)
            ));
        }
        if let Some(agent) = &self.agent {
            out.push_str(&format!(
                "\n--- agent logs (last 80 lines):\n{}",
                tail(&agent.logs(), 80)
            ));
        }
        out
    }

    pub fn state_dir(&self) -> &Path {
        self.state_dir.path()
    }

    /// `<state>/<node>/hosts/<host_id>`: the agent's files of one host.
    pub fn host_files(&self, host_id: &str) -> PathBuf {
        self.state_dir.path().join(&self.name).join("hosts").join(host_id)
    }

    pub fn host_container(&self, short_id: &str) -> String {
        format!("ccp-{}-host-{short_id}", self.name)
    }

    pub fn egress_container(&self, short_id: &str) -> String {
        format!("ccp-{}-egress-{short_id}", self.name)
    }

    pub fn home_volume(&self, short_id: &str) -> String {
        format!("ccp-{}-home-{short_id}", self.name)
    }

    /// The host's address on the hosts network (its egress container owns the namespace).
    pub async fn host_ip(&self, short_id: &str) -> std::net::Ipv4Addr {
        let egress = self.egress_container(short_id);
        let network = self.network.clone();
        eventually(
            Duration::from_secs(30),
            &format!("an address of {egress} on {network}"),
            || docker::ip_on(&egress, &network),
        )
        .await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("node {} failed; {}", self.name, self.diagnostics());
        }
    }
}

/// The programs the Docker suites call on the node.
fn require_tools() {
    for (tool, package) in [
        ("ssh", "openssh-client"),
        ("sshpass", "sshpass"),
        ("flock", "util-linux"),
        ("nsenter", "util-linux"),
        ("nft", "nftables"),
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        assert!(
            found,
            "`{tool}` is missing: install {package} (`tests/run.sh deps` does)"
        );
    }
}
