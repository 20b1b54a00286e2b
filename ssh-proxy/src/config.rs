//! Command-line and environment configuration of the SSH gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Secret shared with the control plane (its `GATEWAY_TOKEN`), at least 32 characters.
    #[arg(long, env = "GATEWAY_TOKEN", hide_env_values = true, default_value = "")]
    pub gateway_token: String,
    /// Where the gateway keeps its SSH host key and the client key it logs in to hosts with.
    #[arg(
        long,
        env = "SSH_PROXY_STATE_DIR",
        default_value = "/var/lib/cloud-cli-proxy/ssh-proxy"
    )]
    pub state_dir: PathBuf,
    /// Name of this gateway in the control plane (defaults to the machine's host name).
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
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The one line to print when the configuration cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.gateway_token.chars().count() < 32 {
            return Err(
                "GATEWAY_TOKEN must be set to the control plane's gateway token (32+ characters)".into(),
            );
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
        Ok(())
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
    fn token_is_required_and_hidden() {
        let weak = Config::try_parse_from(["x", "--gateway-token", "short"]).unwrap();
        assert!(weak.validate().is_err());
        let token = "t".repeat(40);
        let ok = Config::try_parse_from(["x", "--gateway-token", &token]).unwrap();
        assert!(ok.validate().is_ok());
        assert!(!format!("{ok:?}").contains(&token));
    }
}
