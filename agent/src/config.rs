//! The agent's configuration: one clap struct, every flag also an environment variable.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Parser};

/// The cloud-cli-proxy node agent: builds, starts, stops and deletes host containers on this Docker
/// node for the control plane, and keeps Docker in line with it.
#[derive(Clone, Parser)]
#[command(name = "cloud-cli-proxy-agent", version, about, long_about = None)]
pub struct Config {
    /// Base URL of the control plane, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "CONTROL_PLANE_URL")]
    pub control_plane_url: String,

    /// PEM file of further CA certificates to trust for an `https://` control plane (a private
    /// CA); the system's roots are trusted either way.
    #[arg(long, env = "CONTROL_PLANE_CA_FILE")]
    pub control_plane_ca_file: Option<PathBuf>,

    /// An enrolment key of kind `agent` (from `POST /v1/admin/enrolment-keys`), used once: the node
    /// trades it for a credential of its own, kept in `<AGENT_STATE_DIR>/<node>/credential` (0600)
    /// and used from then on. Not needed once that file exists.
    #[arg(long, env = "ENROLMENT_KEY", hide_env_values = true)]
    pub enrolment_key: Option<String>,

    /// No longer used: set, the agent refuses to start and says to use `ENROLMENT_KEY`.
    #[arg(long, env = "AGENT_TOKEN", hide = true, hide_env_values = true)]
    pub agent_token: Option<String>,

    /// The node's credential handed over in process by a control plane that embeds the agent
    /// (never a flag: it would show in the process list).
    #[arg(skip)]
    pub credential: Option<String>,

    /// Name of this node; two agents on one machine need two names. Default: the machine's hostname.
    #[arg(long, env = "NODE_NAME", default_value_t = default_node_name())]
    pub node_name: String,

    /// Serve this agent's Prometheus metrics, unauthenticated, at `http://ADDR/metrics` (e.g.
    /// `127.0.0.1:9102`). Off by default; keep it on loopback or a monitoring network. Not read
    /// when the agent runs inside the control plane, whose `/metrics` shows its series.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Where per-host files live (`<dir>/<node>/hosts/<host_id>/`); root-only.
    #[arg(
        long,
        env = "AGENT_STATE_DIR",
        default_value = "/var/lib/cloud-cli-proxy/agent"
    )]
    pub state_dir: PathBuf,

    /// Image of host containers (and of the egress containers that own their network namespaces).
    #[arg(long, env = "HOST_IMAGE", default_value = "cloud-cli-proxy/host:latest")]
    pub host_image: String,

    /// Docker bridge network of this node's hosts. Default: ccp-hosts-<node name>.
    #[arg(long, env = "HOSTS_NETWORK")]
    pub hosts_network: Option<String>,

    /// Whether hosts without an egress binding may go out directly through the node (to public
    /// addresses only); false: they get no outbound access at all.
    #[arg(long, env = "ALLOW_DIRECT_EGRESS", default_value_t = true, action = ArgAction::Set)]
    pub allow_direct_egress: bool,

    /// Upper bound of every single Docker call, in seconds.
    #[arg(long, env = "DOCKER_TIMEOUT_SECS", default_value_t = 120)]
    pub docker_timeout_secs: u64,

    /// Docker engine socket.
    #[arg(long, env = "DOCKER_SOCKET", default_value = "/var/run/docker.sock")]
    pub docker_socket: String,

    /// TCP port of the web VNC (noVNC) inside host containers.
    #[arg(long, env = "VNC_PORT", default_value_t = 6080)]
    pub vnc_port: u16,

    /// Seconds a host's desktop keeps running without a VNC session; it starts again on the next
    /// open. Passed to hosts as they are (re)created.
    #[arg(long, env = "DESKTOP_IDLE_SECS", default_value_t = 900)]
    pub desktop_idle_secs: u64,

    /// How long a started host may take until its sshd answers, in seconds.
    #[arg(long, env = "SSH_READY_TIMEOUT_SECS", default_value_t = 90)]
    pub ssh_ready_timeout_secs: u64,

    /// Tasks run at once on this node (always one at a time per host).
    #[arg(long, env = "AGENT_MAX_TASKS", default_value_t = 4)]
    pub max_tasks: usize,

    /// How often each running host's traffic counters are read, in seconds (the heartbeat sends
    /// the latest reading).
    #[arg(long, env = "TRAFFIC_SAMPLE_SECS", default_value_t = 15)]
    pub traffic_sample_secs: u64,

    /// Address the gateways use to reach this node's hosts, announced at registration (unset: the
    /// gateways run on this machine).
    #[arg(long, env = "REACH_ADDRESS")]
    pub reach_address: Option<String>,

    /// Upper bound of every request to the control plane except the claim long-poll, in seconds.
    #[arg(long, env = "CONTROL_PLANE_TIMEOUT_SECS", default_value_t = 30)]
    pub control_plane_timeout_secs: u64,

    /// The tunnel runtime binary mounted into bound hosts' egress containers (unset: the
    /// `cloud-cli-proxy-egress` next to this program, then on PATH).
    #[arg(long, env = "EGRESS_RUNTIME_BIN")]
    pub egress_runtime_bin: Option<PathBuf>,

    /// sing-box, for proxy egress (a name is looked up on PATH).
    #[arg(long, env = "SING_BOX_BIN", default_value = "sing-box")]
    pub sing_box_bin: PathBuf,

    /// This node's public IPv4 addresses, comma-separated: a DNS-leak check fails when the probe
    /// was asked by one of them. Unset: learnt by asking the IP probe directly from the node.
    #[arg(long, env = "NODE_PUBLIC_IPS", value_delimiter = ',')]
    pub node_public_ips: Vec<std::net::Ipv4Addr>,

    /// How long starting a bound host waits for its tunnel before going on without it (closed).
    #[arg(long, env = "TUNNEL_READY_TIMEOUT_SECS", default_value_t = 20)]
    pub tunnel_ready_timeout_secs: u64,
}

/// File name of the tunnel runtime binary.
pub const EGRESS_RUNTIME_NAME: &str = "cloud-cli-proxy-egress";

/// `path` itself when it names a file (absolute or relative), else a bare name looked up on PATH.
fn find_program(path: &Path) -> Option<PathBuf> {
    if path.components().count() > 1 || path.is_absolute() {
        return path.is_file().then(|| path.to_owned());
    }
    std::env::var_os("PATH").and_then(|dirs| {
        std::env::split_paths(&dirs)
            .map(|dir| dir.join(path))
            .find(|candidate| candidate.is_file())
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl Config {
    /// A configuration with every default, for embedding the agent (and for tests).
    pub fn new(control_plane_url: impl Into<String>) -> Self {
        Self {
            control_plane_url: control_plane_url.into(),
            enrolment_key: None,
            agent_token: None,
            credential: None,
            control_plane_ca_file: None,
            node_name: default_node_name(),
            state_dir: PathBuf::from("/var/lib/cloud-cli-proxy/agent"),
            host_image: "cloud-cli-proxy/host:latest".into(),
            hosts_network: None,
            allow_direct_egress: true,
            docker_timeout_secs: 120,
            docker_socket: "/var/run/docker.sock".into(),
            vnc_port: 6080,
            desktop_idle_secs: 900,
            ssh_ready_timeout_secs: 90,
            max_tasks: 4,
            traffic_sample_secs: 15,
            reach_address: None,
            control_plane_timeout_secs: 30,
            egress_runtime_bin: None,
            node_public_ips: Vec::new(),
            sing_box_bin: PathBuf::from("sing-box"),
            tunnel_ready_timeout_secs: 20,
            metrics_addr: None,
        }
    }

    /// The hosts network name, defaulted from the node name so two agents on one machine don't clash.
    pub fn hosts_network(&self) -> String {
        self.hosts_network
            .clone()
            .unwrap_or_else(|| format!("ccp-hosts-{}", self.node_name))
    }

    pub fn docker_timeout(&self) -> Duration {
        Duration::from_secs(self.docker_timeout_secs)
    }

    pub fn control_plane_timeout(&self) -> Duration {
        Duration::from_secs(self.control_plane_timeout_secs)
    }

    /// The tunnel runtime's path on this node, if it is there.
    pub fn egress_runtime(&self) -> Option<PathBuf> {
        match &self.egress_runtime_bin {
            Some(path) => find_program(path),
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join(EGRESS_RUNTIME_NAME)))
                .filter(|p| p.is_file())
                .or_else(|| find_program(Path::new(EGRESS_RUNTIME_NAME))),
        }
    }

    /// sing-box's path on this node, if it is there.
    pub fn sing_box(&self) -> Option<PathBuf> {
        find_program(&self.sing_box_bin)
    }

    /// Where the node keeps the credential it got at enrolment.
    pub fn credential_file(&self) -> PathBuf {
        self.state_dir.join(&self.node_name).join("credential")
    }

    /// The control plane URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.control_plane_url.trim_end_matches('/')
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = reqwest::Url::parse(&self.control_plane_url)
            .map_err(|e| invalid("CONTROL_PLANE_URL", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(
                "CONTROL_PLANE_URL",
                "must be an http:// or https:// URL with a host",
            ));
        }
        if self.agent_token.is_some() {
            return Err(invalid(
                "AGENT_TOKEN",
                "is no longer supported: unset it, create an enrolment key of kind `agent` \
                 (POST /v1/admin/enrolment-keys) and start the agent once with ENROLMENT_KEY",
            ));
        }
        if self.enrolment_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err(invalid("ENROLMENT_KEY", "must not be empty when set"));
        }
        if !is_docker_name(&self.node_name) || self.node_name.len() > 40 {
            return Err(invalid(
                "NODE_NAME",
                "1-40 characters from a-z, A-Z, 0-9, '.', '_', '-', starting with a letter or digit",
            ));
        }
        if !is_docker_name(&self.hosts_network()) {
            return Err(invalid("HOSTS_NETWORK", "not a valid Docker network name"));
        }
        if self.host_image.trim().is_empty() {
            return Err(invalid("HOST_IMAGE", "must not be empty"));
        }
        for (field, value) in [
            ("DOCKER_TIMEOUT_SECS", self.docker_timeout_secs),
            ("SSH_READY_TIMEOUT_SECS", self.ssh_ready_timeout_secs),
            ("CONTROL_PLANE_TIMEOUT_SECS", self.control_plane_timeout_secs),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if self.vnc_port == 0 || self.vnc_port == 22 {
            return Err(invalid("VNC_PORT", "must be a TCP port other than 22"));
        }
        if self.desktop_idle_secs == 0 || self.desktop_idle_secs > 9_999_999 {
            return Err(invalid("DESKTOP_IDLE_SECS", "must be 1 to 9999999"));
        }
        if self.traffic_sample_secs == 0 || self.traffic_sample_secs > 3600 {
            return Err(invalid("TRAFFIC_SAMPLE_SECS", "must be 1 to 3600"));
        }
        if self.max_tasks == 0 {
            return Err(invalid("AGENT_MAX_TASKS", "must be at least 1"));
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("control_plane_url", &self.control_plane_url)
            .field("control_plane_ca_file", &self.control_plane_ca_file)
            .field(
                "enrolment_key",
                &self.enrolment_key.as_ref().map(|_| "<redacted>"),
            )
            .field("credential", &self.credential.as_ref().map(|_| "<redacted>"))
            .field("node_name", &self.node_name)
            .field("state_dir", &self.state_dir)
            .field("host_image", &self.host_image)
            .field("hosts_network", &self.hosts_network())
            .field("allow_direct_egress", &self.allow_direct_egress)
            .field("docker_timeout_secs", &self.docker_timeout_secs)
            .field("docker_socket", &self.docker_socket)
            .field("vnc_port", &self.vnc_port)
            .field("desktop_idle_secs", &self.desktop_idle_secs)
            .field("ssh_ready_timeout_secs", &self.ssh_ready_timeout_secs)
            .field("max_tasks", &self.max_tasks)
            .field("traffic_sample_secs", &self.traffic_sample_secs)
            .field("reach_address", &self.reach_address)
            .field("control_plane_timeout_secs", &self.control_plane_timeout_secs)
            .field("egress_runtime_bin", &self.egress_runtime_bin)
            .field("node_public_ips", &self.node_public_ips)
            .field("sing_box_bin", &self.sing_box_bin)
            .field("tunnel_ready_timeout_secs", &self.tunnel_ready_timeout_secs)
            .field("metrics_addr", &self.metrics_addr)
            .finish()
    }
}

/// Docker object names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(crate) fn is_docker_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The kernel's hostname, lower-cased and trimmed to what a Docker name allows.
fn default_node_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if is_docker_name(&name) {
        name
    } else {
        "node".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_and_derived_names() {
        let c = parse(&[
            "--control-plane-url",
            "http://127.0.0.1:8080/",
            "--enrolment-key",
            "k",
            "--node-name",
            "n1",
        ])
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.hosts_network(), "ccp-hosts-n1");
        assert_eq!(c.base_url(), "http://127.0.0.1:8080");
        assert!(c.allow_direct_egress);
        assert_eq!(c.docker_timeout(), Duration::from_secs(120));
        assert_eq!(c.vnc_port, 6080);
        assert_eq!(c.desktop_idle_secs, 900);
        assert_eq!(c.host_image, "cloud-cli-proxy/host:latest");
        assert_eq!(
            c.credential_file(),
            PathBuf::from("/var/lib/cloud-cli-proxy/agent/n1/credential")
        );
        let n = Config::new("http://127.0.0.1:8080");
        assert_eq!(
            (n.max_tasks, n.vnc_port, n.docker_timeout_secs),
            (c.max_tasks, c.vnc_port, 120)
        );
        assert!(is_docker_name(&n.node_name), "{}", n.node_name);
    }

    #[test]
    fn direct_egress_can_be_denied() {
        let c = parse(&[
            "--control-plane-url",
            "http://h",
            "--allow-direct-egress",
            "false",
        ])
        .unwrap();
        assert!(!c.allow_direct_egress);
    }

    #[test]
    fn debug_redacts_the_secrets() {
        let mut c = Config::new("http://h:1");
        c.enrolment_key = Some("super-secret-token".into());
        c.credential = Some("super-secret-token".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("super-secret-token") && shown.contains("<redacted>"));
    }

    #[test]
    fn validation_names_the_field() {
        let ok = Config::new("http://127.0.0.1:8080");
        let cases: Vec<(&str, Config)> = vec![
            (
                "CONTROL_PLANE_URL",
                Config {
                    control_plane_url: "ftp://x".into(),
                    ..ok.clone()
                },
            ),
            (
                "CONTROL_PLANE_URL",
                Config {
                    control_plane_url: "not a url".into(),
                    ..ok.clone()
                },
            ),
            (
                "AGENT_TOKEN",
                Config {
                    agent_token: Some("an-old-shared-token".into()),
                    ..ok.clone()
                },
            ),
            (
                "ENROLMENT_KEY",
                Config {
                    enrolment_key: Some(" ".into()),
                    ..ok.clone()
                },
            ),
            (
                "NODE_NAME",
                Config {
                    node_name: "-bad".into(),
                    ..ok.clone()
                },
            ),
            (
                "NODE_NAME",
                Config {
                    node_name: "a/b".into(),
                    ..ok.clone()
                },
            ),
            (
                "HOSTS_NETWORK",
                Config {
                    hosts_network: Some("bad name".into()),
                    ..ok.clone()
                },
            ),
            (
                "DOCKER_TIMEOUT_SECS",
                Config {
                    docker_timeout_secs: 0,
                    ..ok.clone()
                },
            ),
            (
                "VNC_PORT",
                Config {
                    vnc_port: 22,
                    ..ok.clone()
                },
            ),
            (
                "DESKTOP_IDLE_SECS",
                Config {
                    desktop_idle_secs: 0,
                    ..ok.clone()
                },
            ),
            (
                "AGENT_MAX_TASKS",
                Config {
                    max_tasks: 0,
                    ..ok.clone()
                },
            ),
        ];
        for (field, config) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.starts_with(field), "{field}: {err}");
        }
    }
}
