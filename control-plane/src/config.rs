//! Command-line and environment configuration of the control plane.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// The whole configuration of `cloud-cli-proxy-control-plane`. Every flag can also be given by the
/// environment variable named beside it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "cloud-cli-proxy-control-plane",
    version,
    about = "cloud-cli-proxy control plane"
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Database URL: `sqlite://PATH` (created if missing, WAL mode), or `postgres://USER:PASSWORD@HOST/DB`
    /// (also `postgresql://`) for a database server that several control-plane replicas share.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://cloud-cli-proxy.db")]
    pub database_url: String,

    /// File holding the key that seals secrets in the database (32 random bytes, mode 0600). Created
    /// on the first start when missing. Defaults to `secrets.key` beside the SQLite database; required
    /// with PostgreSQL, where every replica must be given the same file. Back it up with the
    /// database: without it the stored tunnel keys and passwords cannot be opened.
    #[arg(long, env = "SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<std::path::PathBuf>,

    /// Days audit events are kept; older ones are deleted by the scheduler (0 keeps them forever).
    #[arg(long, env = "EVENT_RETENTION_DAYS", default_value_t = 90)]
    pub event_retention_days: u32,

    /// Days hosts' hourly traffic is kept; older hours are deleted by the scheduler (0 keeps them
    /// forever). Quotas look back at most a month, so keep at least 31.
    #[arg(long, env = "TRAFFIC_RETENTION_DAYS", default_value_t = 400)]
    pub traffic_retention_days: u32,

    /// How often the traffic quotas are checked against the traffic, in seconds (1-3600).
    #[arg(long, env = "TRAFFIC_QUOTA_CHECK_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub traffic_quota_check_secs: u64,
    /// Whether pty sessions (SSH through the gateway and the dashboard's terminal) are recorded:
    /// `off` or `all`. Operators override it per user and per host in the API.
    #[arg(long, env = "SESSION_RECORDING", value_enum, default_value_t = SessionRecording::Off)]
    pub session_recording: SessionRecording,

    /// What happens to a recorded session whose recording cannot be stored: `refuse` ends it (a pty
    /// is never given unrecorded), `continue` lets it go on unrecorded (and logs an event).
    #[arg(long, env = "RECORDING_FAILURE", value_enum, default_value_t = RecordingFailure::Refuse)]
    pub recording_failure: RecordingFailure,

    /// Days session recordings are kept; older ones are deleted by the scheduler (0 keeps them
    /// forever).
    #[arg(long, env = "RECORDING_RETENTION_DAYS", default_value_t = 30)]
    pub recording_retention_days: u32,

    /// Whether tenants may list and play the recordings of their own sessions
    /// (`/v1/user/recordings`). Off by default: recordings are the operator's.
    #[arg(long, env = "RECORDINGS_TENANT_ACCESS", default_value_t = false)]
    pub recordings_tenant_access: bool,

    /// Username of the operator account.
    #[arg(long, env = "ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,

    /// Password of the operator account. Required on the first start; when set later it replaces the
    /// stored one (and ends the admin's sessions if it changed).
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<Secret>,

    /// HMAC secret for session tokens (at least 32 characters, not guessable). Changing it ends every
    /// session and every API token.
    #[arg(long, env = "ADMIN_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Address of the HTTP API. `:PORT` means every IPv4 interface.
    #[arg(long, env = "CONTROL_PLANE_ADDR", default_value = ":8080")]
    pub listen: ListenAddr,

    /// Address of the SSH gateway.
    #[arg(long, env = "SSH_PROXY_ADDR", default_value = ":2222")]
    pub ssh_proxy_addr: ListenAddr,

    /// Base URL users reach the API at; used in the access commands the API hands out. Defaults to
    /// `http://<this machine's hostname>:<API port>`, or `https://…` when serving TLS.
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// PEM file of the certificate chain (leaf first) the API serves HTTPS with; needs
    /// `TLS_KEY_FILE`. Both files are read again on SIGHUP.
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<std::path::PathBuf>,

    /// PEM file of the private key of `TLS_CERT_FILE` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<std::path::PathBuf>,

    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (`info`, `debug`, or a full `tracing` directive such as `control_plane=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Lifetime of a session token issued by login, in seconds.
    #[arg(long, env = "TOKEN_TTL_SECS", default_value_t = 12 * 3600)]
    pub token_ttl_secs: u64,

    /// Failed sign-ins allowed per client address (IPv6: per /64) within the window, whatever the
    /// account, before further attempts from it get 429.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_IP", default_value_t = 30)]
    pub login_max_failures_per_ip: u32,

    /// Failed sign-ins allowed per account from one client address within the window, before that
    /// address gets 429 for that account.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_ACCOUNT", default_value_t = 5)]
    pub login_max_failures_per_account: u32,

    /// Failed sign-ins allowed per account from all the clients it does not know, within the
    /// window; past it, only clients the account signed in from before (their address, or a
    /// browser's device cookie) may still try.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_ACCOUNT_TOTAL", default_value_t = 20)]
    pub login_max_failures_per_account_total: u32,

    /// Password checks (argon2id, 19 MiB each) run at once; further sign-ins wait up to 5 s in a
    /// queue of 32 per slot, then get 429. 0: one per CPU.
    #[arg(long, env = "PASSWORD_CHECK_SLOTS", default_value_t = 0)]
    pub password_check_slots: usize,

    /// Desktop and terminal WebSockets and task-progress event streams one account holds open at
    /// once in this process; past it, 429 `too_many_connections`.
    #[arg(long, env = "MAX_LIVE_CONNECTIONS_PER_USER", default_value_t = 32)]
    pub max_live_connections_per_user: usize,

    /// Length of the login rate-limit window, in seconds.
    #[arg(long, env = "LOGIN_WINDOW_SECS", default_value_t = 900)]
    pub login_window_secs: u64,

    /// Take the client IP from `X-Forwarded-For` (only behind a reverse proxy you run).
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,

    /// No longer used: each node agent enrols with a key from `POST /v1/admin/enrolment-keys`.
    /// The control plane refuses to start while it is set, so a forgotten shared secret is noticed.
    #[arg(long, env = "AGENT_TOKEN", hide = true, hide_env_values = true)]
    pub agent_token: Option<Secret>,

    /// Run a node agent inside this process for the local Docker engine. Turn off when agents run
    /// on the Docker nodes themselves.
    #[arg(long, env = "EMBEDDED_AGENT", default_value_t = true, action = clap::ArgAction::Set)]
    pub embedded_agent: bool,

    /// No longer used: each SSH gateway enrols with a key from `POST /v1/admin/enrolment-keys`.
    /// The control plane refuses to start while it is set.
    #[arg(long, env = "GATEWAY_TOKEN", hide = true, hide_env_values = true)]
    pub gateway_token: Option<Secret>,
    /// Run the SSH gateway inside this process on `SSH_PROXY_ADDR`. Turn off when gateways run as
    /// their own processes (`cloud-cli-proxy-ssh-proxy`).
    #[arg(long, env = "EMBEDDED_SSH_PROXY", default_value_t = true, action = clap::ArgAction::Set)]
    pub embedded_ssh_proxy: bool,
    /// Where the embedded SSH gateway keeps its host key and client key.
    #[arg(
        long,
        env = "SSH_PROXY_STATE_DIR",
        default_value = "/var/lib/cloud-cli-proxy/ssh-proxy"
    )]
    pub ssh_proxy_state_dir: std::path::PathBuf,
    /// Lifetime of the single-use SSH secrets the bootstrap and entry routes hand out, in seconds
    /// (10-3600).
    #[arg(long, env = "HANDOFF_TTL_SECS", default_value_t = 120)]
    pub handoff_ttl_secs: u64,

    /// `host:port` of the SSH gateway the dashboard's terminal logs in through. Defaults to the
    /// embedded gateway; without one and without this, the terminal is off.
    #[arg(long, env = "TERMINAL_GATEWAY_ADDR")]
    pub terminal_gateway_addr: Option<String>,
    /// How long a terminal's shell waits for its browser to come back after the connection drops,
    /// in seconds (10-3600).
    #[arg(long, env = "TERMINAL_RESUME_SECS", default_value_t = 300)]
    pub terminal_resume_secs: u64,

    /// Extra listener for the access routes only (`/entry/{short_id}`, `/v1/entry/…`,
    /// `/v1/bootstrap/…`), e.g. `:80` so short links work without a port. Off when unset.
    #[arg(long, env = "ENTRY_ADDR")]
    pub entry_addr: Option<ListenAddr>,

    /// Extra listener serving `GET /metrics` alone, without a credential (plain HTTP), e.g.
    /// `127.0.0.1:9101` for a Prometheus server on this machine. Off when unset: the API's own
    /// `/metrics` asks for the operator or a `metrics` token. Keep it on loopback or a monitoring
    /// network.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<ListenAddr>,

    /// Serve the dashboard's files from this folder (holding `index.html`) instead of the copy built
    /// into the binary; for working on the dashboard without rebuilding.
    #[arg(long, env = "WEB_DIR")]
    pub web_dir: Option<std::path::PathBuf>,

    /// TCP port of the web VNC (noVNC and websockify) inside host containers, where the VNC proxy
    /// connects; the same variable sets the embedded agent's port, and separate agents must agree.
    #[arg(long, env = "VNC_PORT", default_value_t = 6080, value_parser = clap::value_parser!(u16).range(1..))]
    pub vnc_port: u16,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Resolver reached through the tunnel for proxy egress IPs that name no `dns_server` (and
    /// WireGuard ones without `wg_dns_server`).
    #[arg(long, env = "EGRESS_DNS_SERVER", default_value = "1.1.1.1")]
    pub egress_dns_server: std::net::Ipv4Addr,

    /// Egress test, connectivity: a plain-HTTP URL answering 204 or 200 (`cloud-cli-proxy-probe`'s
    /// `/generate_204`, or a public one).
    #[arg(
        long,
        env = "EGRESS_PROBE_CONNECTIVITY_URL",
        default_value = "http://connectivitycheck.gstatic.com/generate_204"
    )]
    pub egress_probe_connectivity_url: String,

    /// Egress test, exit IP: a plain-HTTP URL whose body is the caller's IP as text.
    #[arg(long, env = "EGRESS_PROBE_IP_URL", default_value = "http://api.ipify.org/")]
    pub egress_probe_ip_url: String,

    /// Egress test, DNS leak: a name whose `A` record is the address of the resolver that asked its
    /// authoritative server (whoami); names under it must answer the same.
    #[arg(long, env = "EGRESS_PROBE_DNS_NAME", default_value = "whoami.akamai.net")]
    pub egress_probe_dns_name: String,
}

/// One-off maintenance commands; without one the server runs.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Seal every stored secret under a new key and replace the key file with it. Stop the control
    /// plane first; it reads `DATABASE_URL` and `SECRETS_KEY_FILE` like the server.
    RotateSecretsKey,
    /// Copy an SQLite installation's data into an empty PostgreSQL database, in one transaction,
    /// checked before it commits. Stop the control plane first. Exit status: 0 copied, 1 failed
    /// (nothing committed), 2 bad arguments, 3 the target already holds rows, 4 the two schemas
    /// differ, 5 a control plane is running on the source.
    CopyDatabase(CopyDatabase),
}

/// The arguments of `copy-database`.
#[derive(Debug, Clone, clap::Args)]
pub struct CopyDatabase {
    /// The SQLite database to copy (`sqlite://PATH`); pending migrations are applied to it first,
    /// as a start of this version would.
    #[arg(long, env = "COPY_FROM_URL")]
    pub from: String,
    /// The PostgreSQL database to fill (`postgres://USER@HOST/DB`); it must hold none of our rows.
    /// Give the password by `PGPASSWORD` or `~/.pgpass` (or this variable) rather than on the
    /// command line, where other users can read it.
    #[arg(long, env = "COPY_TO_URL")]
    pub to: String,
    /// Rows per statement, read and written.
    #[arg(long, env = "COPY_BATCH_ROWS", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_rows: u32,
    /// Rows per table compared column by column after the copy.
    #[arg(long, env = "COPY_SAMPLE_ROWS", default_value_t = 100)]
    pub sample_rows: u64,
}

impl Config {
    /// The secrets key file: `SECRETS_KEY_FILE`, else `secrets.key` in the SQLite database's folder.
    /// The database URL after its check; `Err` carries the one line to print.
    pub fn check_database(&self) -> Result<(), String> {
        match crate::db::backend_of(&self.database_url) {
            None => Err(format!(
                "DATABASE_URL `{}` names no supported database: use sqlite://PATH or postgres://…",
                crate::db::redact_url(&self.database_url)
            )),
            Some(crate::db::Backend::Postgres) if self.secrets_key_file.is_none() => Err(
                "SECRETS_KEY_FILE is not set: with PostgreSQL every control-plane replica must read \
                 the same secrets key file (created on the first start when missing)"
                    .into(),
            ),
            Some(_) => Ok(()),
        }
    }

    pub fn secrets_key_path(&self) -> std::path::PathBuf {
        if let Some(path) = &self.secrets_key_file {
            return path.clone();
        }
        let url = &self.database_url;
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let path = path.split('?').next().unwrap_or_default();
        let dir = match std::path::Path::new(path).parent() {
            Some(dir) if !path.is_empty() && path != ":memory:" => dir.to_path_buf(),
            _ => std::path::PathBuf::new(),
        };
        dir.join("secrets.key")
    }

    /// The egress probe targets after their checks; `Err` carries the one line to print.
    pub fn egress_probe(&self) -> Result<wire::ProbeTargets, String> {
        for (name, url) in [
            (
                "EGRESS_PROBE_CONNECTIVITY_URL",
                &self.egress_probe_connectivity_url,
            ),
            ("EGRESS_PROBE_IP_URL", &self.egress_probe_ip_url),
        ] {
            match reqwest::Url::parse(url) {
                Ok(u) if u.scheme() == "http" && u.host().is_some() => {}
                _ => return Err(format!("{name} must be an http:// URL, got `{url}`")),
            }
        }
        if !probe::valid_name(&self.egress_probe_dns_name) {
            return Err(format!(
                "EGRESS_PROBE_DNS_NAME must be a DNS name, got `{}`",
                self.egress_probe_dns_name
            ));
        }
        Ok(wire::ProbeTargets {
            connectivity_url: self.egress_probe_connectivity_url.clone(),
            ip_url: self.egress_probe_ip_url.clone(),
            dns_name: self.egress_probe_dns_name.trim_end_matches('.').to_owned(),
        })
    }

    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.token_ttl_secs)
    }

    /// The SSH secret lifetime after its range check; `Err` carries the one line to print.
    pub fn checked_handoff_ttl(&self) -> Result<Duration, String> {
        if (10..=3600).contains(&self.handoff_ttl_secs) {
            Ok(Duration::from_secs(self.handoff_ttl_secs))
        } else {
            Err(format!(
                "HANDOFF_TTL_SECS must be 10 to 3600 seconds, not {}",
                self.handoff_ttl_secs
            ))
        }
    }

    /// The terminal's resume time after its range check; `Err` carries the one line to print.
    pub fn checked_terminal_resume(&self) -> Result<Duration, String> {
        if (10..=3600).contains(&self.terminal_resume_secs) {
            Ok(Duration::from_secs(self.terminal_resume_secs))
        } else {
            Err(format!(
                "TERMINAL_RESUME_SECS must be 10 to 3600 seconds, not {}",
                self.terminal_resume_secs
            ))
        }
    }

    /// The JWT secret after the strength check; `Err` carries the one line to print.
    /// Refuses the shared machine secrets of earlier versions, naming what replaced them.
    pub fn check_no_shared_tokens(&self) -> Result<(), String> {
        for (set, variable) in [
            (self.agent_token.is_some(), "AGENT_TOKEN"),
            (self.gateway_token.is_some(), "GATEWAY_TOKEN"),
        ] {
            if set {
                return Err(format!(
                    "{variable} is no longer supported: unset it, create an enrolment key \
                     (POST /v1/admin/enrolment-keys or the dashboard's Nodes page) and start each \
                     separate agent or gateway with ENROLMENT_KEY"
                ));
            }
        }
        Ok(())
    }

    pub fn checked_jwt_secret(&self) -> Result<&Secret, String> {
        let Some(secret) = &self.jwt_secret else {
            return Err(
                "ADMIN_JWT_SECRET is not set: generate one with `head -c 48 /dev/urandom | base64`".into(),
            );
        };
        weak_secret_reason(secret.expose()).map_or(Ok(secret), |why| {
            Err(format!("ADMIN_JWT_SECRET is too weak: {why}"))
        })
    }

    /// The certificate and key files when HTTPS is on; `Err` carries the one line to print when
    /// only one of the two is given.
    pub fn tls_files(&self) -> Result<Option<crate::tls::Files>, String> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::Files {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err("TLS_CERT_FILE is set without TLS_KEY_FILE: HTTPS needs both".into()),
            (None, Some(_)) => Err("TLS_KEY_FILE is set without TLS_CERT_FILE: HTTPS needs both".into()),
        }
    }

    /// The URL printed in access commands, without a trailing slash.
    pub fn public_base_url(&self, bound_port: u16) -> String {
        match &self.public_base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "localhost".to_owned());
                let scheme = if self.tls_cert_file.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{host}:{bound_port}")
            }
        }
    }
}

/// Words a secret may not start or end with (the deploy scripts that generate secrets draw again
/// on these; a test keeps their lists the same).
const KNOWN_WEAK: &[&str] = &["changeme", "secret", "password", "admin", "example", "jwt"];

/// Why a secret is unacceptable, if it is.
pub fn weak_secret_reason(secret: &str) -> Option<&'static str> {
    if secret.chars().count() < 32 {
        return Some("it must be at least 32 characters long");
    }
    let distinct: std::collections::HashSet<char> = secret.chars().collect();
    if distinct.len() < 10 {
        return Some("it repeats too few distinct characters");
    }
    let lower = secret.to_ascii_lowercase();
    if KNOWN_WEAK
        .iter()
        .any(|w| lower.starts_with(w) || lower.ends_with(w))
    {
        return Some("it is built from a well-known placeholder word");
    }
    None
}

/// A string that never shows up in `Debug` output or logs (the one type for every credential).
pub use wire::Secret;

/// `SESSION_RECORDING`: the installation's default for recording pty sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SessionRecording {
    Off,
    All,
}

/// `RECORDING_FAILURE`: see [`Config::recording_failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordingFailure {
    Refuse,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A listen address: `HOST:PORT`, `[V6]:PORT`, or `:PORT` for every IPv4 interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let full = if s.starts_with(':') {
            format!("0.0.0.0{s}")
        } else {
            s.to_owned()
        };
        full.parse::<SocketAddr>()
            .map(ListenAddr)
            .map_err(|_| format!("`{s}` is not a listen address (expected HOST:PORT or :PORT)"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_accepts_port_only_form() {
        let a: ListenAddr = ":8080".parse().unwrap();
        assert_eq!(a.0.to_string(), "0.0.0.0:8080");
        let b: ListenAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(b.0.port(), 0);
        assert!("8080".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert!(weak_secret_reason("short").is_some());
        assert!(weak_secret_reason(&"a".repeat(64)).is_some());
        assert!(weak_secret_reason("changeme-changeme-changeme-changeme-0123456789").is_some());
        assert!(weak_secret_reason("Xk3v9Qp2LmZr7Tb4Nw8Hc6Jd1Fg5Ys0Ae").is_none());
    }

    /// The scripts that generate `ADMIN_JWT_SECRET` draw again on the words the control plane
    /// refuses: each script's pattern names exactly [`KNOWN_WEAK`], at the start and at the end.
    #[test]
    fn secret_generating_scripts_refuse_the_same_words() {
        let words = KNOWN_WEAK.join("|");
        let pattern = format!("=~ ^({words})|({words})$ ]]");
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        for script in ["scripts/install.sh", "scripts/quickstart.sh", "compose/init.sh"] {
            let text = std::fs::read_to_string(deploy.join(script)).unwrap();
            assert!(
                text.contains(&pattern),
                "deploy/{script} does not redraw a secret on exactly {KNOWN_WEAK:?} (looked for `{pattern}`)"
            );
        }
    }

    #[test]
    fn vnc_port_defaults_to_6080_and_refuses_zero() {
        let base = ["cp", "--jwt-secret", "x"];
        assert_eq!(Config::parse_from(base).vnc_port, 6080);
        let set = Config::parse_from(base.iter().chain(&["--vnc-port", "5999"]));
        assert_eq!(set.vnc_port, 5999);
        assert!(Config::try_parse_from(base.iter().chain(&["--vnc-port", "0"])).is_err());
    }

    #[test]
    fn secrets_key_file_defaults_beside_the_database() {
        let with = |args: &[&str]| {
            Config::parse_from(["cp"].iter().chain(args))
                .secrets_key_path()
                .display()
                .to_string()
        };
        let cases: &[(&[&str], &str)] = &[
            (
                &["--database-url", "sqlite:///var/lib/ccp/db.sqlite"],
                "/var/lib/ccp/secrets.key",
            ),
            (
                &["--database-url", "sqlite://data/x.db?mode=rwc"],
                "data/secrets.key",
            ),
            (&["--database-url", "sqlite:x.db"], "secrets.key"),
            (&["--database-url", "sqlite::memory:"], "secrets.key"),
            (&["--secrets-key-file", "/etc/k"], "/etc/k"),
        ];
        for (args, want) in cases {
            assert_eq!(with(args), *want, "{args:?}");
        }
        assert!(matches!(
            Config::parse_from(["cp", "rotate-secrets-key"]).command,
            Some(Command::RotateSecretsKey)
        ));
        let copy = Config::parse_from([
            "cp",
            "copy-database",
            "--from",
            "sqlite:///var/lib/ccp/db.sqlite",
            "--to",
            "postgres://ccp@db/ccp",
        ]);
        match copy.command {
            Some(Command::CopyDatabase(c)) => {
                assert_eq!(c.from, "sqlite:///var/lib/ccp/db.sqlite");
                assert_eq!(c.to, "postgres://ccp@db/ccp");
                assert_eq!((c.batch_rows, c.sample_rows), (500, 100));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tls_needs_both_files_or_neither() {
        let cases: &[(&[&str], Result<bool, &str>)] = &[
            (&[], Ok(false)),
            (&["--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"], Ok(true)),
            (
                &["--tls-cert-file", "c.pem"],
                Err("TLS_CERT_FILE is set without TLS_KEY_FILE"),
            ),
            (
                &["--tls-key-file", "k.pem"],
                Err("TLS_KEY_FILE is set without TLS_CERT_FILE"),
            ),
        ];
        for (flags, want) in cases {
            let config = Config::parse_from(["cp"].iter().chain(flags.iter()));
            match (config.tls_files(), want) {
                (Ok(files), Ok(on)) => assert_eq!(files.is_some(), *on, "{flags:?}"),
                (Err(line), Err(start)) => {
                    assert!(line.starts_with(start), "{flags:?}: {line}");
                    assert!(!line.contains('\n'), "one line: {line}");
                }
                (got, want) => panic!("{flags:?}: got {got:?}, want {want:?}"),
            }
        }
        let both = Config::parse_from(["cp", "--tls-cert-file", "/c.pem", "--tls-key-file", "/k.pem"]);
        assert_eq!(
            both.tls_files().unwrap(),
            Some(crate::tls::Files {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
    }

    #[test]
    fn default_public_url_is_https_when_serving_tls() {
        let plain = Config::parse_from(["cp"]);
        assert!(plain.public_base_url(8080).starts_with("http://"));
        let tls = Config::parse_from(["cp", "--tls-cert-file", "c", "--tls-key-file", "k"]);
        assert!(tls.public_base_url(8443).starts_with("https://"));
        assert!(tls.public_base_url(8443).ends_with(":8443"));
        let set = Config::parse_from(["cp", "--public-base-url", "https://cp.example.org/"]);
        assert_eq!(set.public_base_url(8080), "https://cp.example.org");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Secret::new("hunter2-hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
