//! Command-line and environment configuration of the SSH gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::admission::Caps;
use crate::proxy_protocol::{Cidr, Mode};

/// Settings of one SSH gateway. Every flag can also be given by the environment variable beside it.
#[derive(Clone, clap::Parser)]
#[command(
    name = "cloud-cli-proxy-ssh-proxy",
    version,
    about = "The cloud-cli-proxy SSH gateway"
)]
pub struct Config {
    /// Address the gateway listens on. `:PORT` means every IPv4 interface.
    #[arg(long, env = "SSH_PROXY_ADDR", default_value = ":2222", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Base URL of the control plane's API, e.g. `http://127.0.0.1:8080`.
    #[arg(long, env = "CONTROL_PLANE_URL", default_value = "http://127.0.0.1:8080")]
    pub control_plane_url: String,
    /// PEM file of further CA certificates to trust for an `https://` control plane (a private
    /// CA); the system's roots are trusted either way.
    #[arg(long, env = "CONTROL_PLANE_CA_FILE")]
    pub control_plane_ca_file: Option<PathBuf>,
    /// An enrolment key of kind `gateway` (from `POST /v1/admin/enrolment-keys`), used once: the
    /// gateway trades it for a credential of its own, kept in `<SSH_PROXY_STATE_DIR>/credential`
    /// (0600) and used from then on. Not needed once that file exists.
    #[arg(long, env = "ENROLMENT_KEY", hide_env_values = true)]
    pub enrolment_key: Option<String>,
    /// No longer used: set, the gateway refuses to start and says to use `ENROLMENT_KEY`.
    #[arg(long, env = "GATEWAY_TOKEN", hide = true, hide_env_values = true)]
    pub gateway_token: Option<String>,
    /// The credential handed over in process by a control plane that embeds the gateway.
    #[arg(skip)]
    pub credential: Option<String>,
    /// Where the gateway keeps its SSH host key and the client key it logs in to hosts with.
    #[arg(
        long,
        env = "SSH_PROXY_STATE_DIR",
        default_value = "/var/lib/cloud-cli-proxy/ssh-proxy"
    )]
    pub state_dir: PathBuf,
    /// Name of this gateway in the control plane (defaults to the machine's host name).
    /// Serve this gateway's Prometheus metrics, unauthenticated, at `http://ADDR/metrics` (e.g.
    /// `127.0.0.1:9103`). Off by default; keep it on loopback or a monitoring network. Not read
    /// when the gateway runs inside the control plane, whose `/metrics` shows its series.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    #[arg(long, env = "GATEWAY_NAME")]
    pub name: Option<String>,
    /// Seconds of silence after which the gateway probes a client, and a host's sshd, with a
    /// keepalive; four unanswered probes end the connection.
    #[arg(long, env = "SSH_KEEPALIVE_SECS", default_value_t = 30)]
    pub keepalive_secs: u64,
    /// How long reaching a host's sshd (TCP connect, key exchange, login) may take, in seconds.
    #[arg(long, env = "HOST_CONNECT_TIMEOUT_SECS", default_value_t = 15)]
    pub host_connect_timeout_secs: u64,
    /// Also offer ChaCha20-Poly1305 and AES-CTR to clients, for SSH clients too old for AES-GCM
    /// (OpenSSH before 6.2, PuTTY before 0.76). Off by default: OpenSSH prefers those when offered,
    /// and they cost the gateway several times as much CPU.
    #[arg(long, env = "SSH_COMPAT_CIPHERS", default_value_t = false, action = clap::ArgAction::Set)]
    pub compat_ciphers: bool,
    /// Port of sshd inside the hosts.
    #[arg(long, env = "HOST_SSH_PORT", default_value_t = 22)]
    pub host_ssh_port: u16,
    /// Seconds a client gets from connecting to logging in (its version line, key exchange and
    /// authentication), like OpenSSH's `LoginGraceTime`; then the connection is closed.
    #[arg(long, env = "SSH_LOGIN_GRACE_SECS", default_value_t = 30)]
    pub login_grace_secs: u64,
    /// Connections not logged in yet that one source (an IPv4 address, an IPv6 /64) may hold; more
    /// are closed at once.
    #[arg(long, env = "SSH_MAX_UNAUTHENTICATED_PER_SOURCE", default_value_t = 32)]
    pub max_unauthenticated_per_source: usize,
    /// Connections not logged in yet that the gateway holds in all; more are closed at once.
    #[arg(long, env = "SSH_MAX_UNAUTHENTICATED", default_value_t = 100)]
    pub max_unauthenticated: usize,
    /// Channels (sessions, forwarded connections, agent channels) one connection may have open.
    #[arg(long, env = "SSH_MAX_CHANNELS", default_value_t = 32)]
    pub max_channels: usize,
    /// PROXY protocol header expected before SSH on every connection: `off`, `v1`, `v2` or `any`
    /// (for a TCP load balancer in front; its header's client address is the one reported).
    #[arg(long, env = "SSH_PROXY_PROTOCOL", value_enum, default_value_t = Mode::Off)]
    pub proxy_protocol: Mode,
    /// Balancers allowed to send a PROXY header, as comma-separated networks (`10.0.0.0/8,fd00::1`);
    /// with the PROXY protocol on, connections from anywhere else are refused.
    #[arg(long, env = "SSH_PROXY_PROTOCOL_TRUSTED", value_delimiter = ',')]
    pub proxy_protocol_trusted: Vec<Cidr>,
    /// Seconds a balancer gets to send the PROXY header.
    #[arg(long, env = "SSH_PROXY_PROTOCOL_TIMEOUT_SECS", default_value_t = 5)]
    pub proxy_protocol_timeout_secs: u64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("control_plane_url", &self.control_plane_url)
            .field("control_plane_ca_file", &self.control_plane_ca_file)
            .field("state_dir", &self.state_dir)
            .field("name", &self.name)
            .field("keepalive_secs", &self.keepalive_secs)
            .field("host_connect_timeout_secs", &self.host_connect_timeout_secs)
            .field("host_ssh_port", &self.host_ssh_port)
            .field("compat_ciphers", &self.compat_ciphers)
            .field("login_grace_secs", &self.login_grace_secs)
            .field(
                "max_unauthenticated_per_source",
                &self.max_unauthenticated_per_source,
            )
            .field("max_unauthenticated", &self.max_unauthenticated)
            .field("max_channels", &self.max_channels)
            .field("proxy_protocol", &self.proxy_protocol)
            .field("proxy_protocol_trusted", &self.proxy_protocol_trusted)
            .field("proxy_protocol_timeout_secs", &self.proxy_protocol_timeout_secs)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The one line to print when the configuration cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.gateway_token.is_some() {
            return Err(
                "GATEWAY_TOKEN is no longer supported: unset it, create an enrolment key of kind \
                 `gateway` (POST /v1/admin/enrolment-keys) and start the gateway once with ENROLMENT_KEY"
                    .into(),
            );
        }
        if self.enrolment_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err("ENROLMENT_KEY must not be empty when set".into());
        }
        if !(self.control_plane_url.starts_with("http://") || self.control_plane_url.starts_with("https://"))
        {
            return Err(format!(
                "CONTROL_PLANE_URL `{}` must start with http:// or https://",
                self.control_plane_url
            ));
        }
        if self.keepalive_secs == 0 || self.host_connect_timeout_secs == 0 {
            return Err("SSH_KEEPALIVE_SECS and HOST_CONNECT_TIMEOUT_SECS must be positive".into());
        }
        if self.login_grace_secs == 0 || self.proxy_protocol_timeout_secs == 0 {
            return Err("SSH_LOGIN_GRACE_SECS and SSH_PROXY_PROTOCOL_TIMEOUT_SECS must be positive".into());
        }
        if self.max_unauthenticated_per_source == 0 || self.max_unauthenticated == 0 || self.max_channels == 0
        {
            return Err(
                "SSH_MAX_UNAUTHENTICATED_PER_SOURCE, SSH_MAX_UNAUTHENTICATED and SSH_MAX_CHANNELS must be positive"
                    .into(),
            );
        }
        if self.proxy_protocol != Mode::Off && self.proxy_protocol_trusted.is_empty() {
            return Err(
                "SSH_PROXY_PROTOCOL is on: list the balancers that may send headers in SSH_PROXY_PROTOCOL_TRUSTED".into(),
            );
        }
        Ok(())
    }

    pub fn login_grace(&self) -> Duration {
        Duration::from_secs(self.login_grace_secs)
    }

    pub fn proxy_protocol_timeout(&self) -> Duration {
        Duration::from_secs(self.proxy_protocol_timeout_secs)
    }

    pub fn unauthenticated_caps(&self) -> Caps {
        Caps {
            per_source: self.max_unauthenticated_per_source,
            total: self.max_unauthenticated,
        }
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs)
    }

    pub fn host_connect_timeout(&self) -> Duration {
        Duration::from_secs(self.host_connect_timeout_secs)
    }

    /// The gateway's name: the flag, else the machine's host name.
    pub fn gateway_name(&self) -> String {
        self.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "ssh-proxy".to_owned())
        })
    }
}

/// `HOST:PORT`, `[V6]:PORT`, or `:PORT` for every IPv4 interface.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse()
        .map_err(|_| format!("`{s}` is not a listen address (expected HOST:PORT or :PORT)"))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen(":2222").unwrap().to_string(), "0.0.0.0:2222");
        assert_eq!(parse_listen("[::1]:22").unwrap().port(), 22);
        assert!(parse_listen("2222").is_err());
    }

    #[test]
    fn the_old_token_is_refused_and_the_key_hidden() {
        let old = Config::try_parse_from(["x", "--gateway-token", &"t".repeat(40)]).unwrap();
        assert!(old.validate().unwrap_err().contains("ENROLMENT_KEY"));
        let key = "ccpk_secretsecret";
        let ok = Config::try_parse_from(["x", "--enrolment-key", key]).unwrap();
        assert!(ok.validate().is_ok());
        assert!(!format!("{ok:?}").contains(key));
        let empty = Config::try_parse_from(["x", "--enrolment-key", " "]).unwrap();
        assert!(empty.validate().is_err());
    }

    #[test]
    fn proxy_protocol_needs_trusted_balancers() {
        let base = ["x"];
        let on = Config::try_parse_from(base.iter().copied().chain(["--proxy-protocol", "v2"])).unwrap();
        assert!(on.validate().unwrap_err().contains("SSH_PROXY_PROTOCOL_TRUSTED"));
        let trusted = Config::try_parse_from(base.iter().copied().chain([
            "--proxy-protocol",
            "any",
            "--proxy-protocol-trusted",
            "10.0.0.0/8,fd00::1",
        ]))
        .unwrap();
        assert!(trusted.validate().is_ok());
        assert_eq!(trusted.proxy_protocol_trusted.len(), 2);
        assert!(
            Config::try_parse_from(
                base.iter()
                    .copied()
                    .chain(["--proxy-protocol-trusted", "10.0.0.1/8"])
            )
            .is_err()
        );
        let zero = Config::try_parse_from(base.iter().copied().chain(["--max-channels", "0"])).unwrap();
        assert!(zero.validate().is_err());
    }
}
