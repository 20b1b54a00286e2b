//! The cloud-cli-proxy control plane: the operator's HTTP API, authentication, the database, durable
//! host tasks and the audit log; the dashboard ([`web`]) with each host's desktop ([`vnc`]) and
//! terminal ([`terminal`]); the entry paths ([`access`]: bootstrap scripts and short links); the
//! replicas' coordination over PostgreSQL ([`cluster`]). On one machine it also runs the node agent
//! and the SSH gateway in its own process (`EMBEDDED_AGENT`, `EMBEDDED_SSH_PROXY`). `run` is the whole
//! server; `main.rs` only parses configuration.

pub mod access;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod db;
pub mod egress;
pub mod enrolment;
pub mod error;
pub mod extract;
pub mod hosts;
pub mod live;
pub mod metrics;
pub mod recording;
pub mod secrets;
pub mod tasks;
pub mod telemetry;
pub mod terminal;
pub mod tls;
pub mod traffic;
pub mod vnc;
pub mod web;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::Config;

/// Why the control plane could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Database(#[from] db::Error),
    #[error(transparent)]
    Admin(#[from] auth::admin::AdminError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::Error),
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("SSH gateway: cannot listen on {addr}: {source}")]
    SshListener {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("SSH gateway keys: {0}")]
    SshKeys(#[from] ssh_proxy::keys::Error),
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("VNC proxy client: {0}")]
    VncClient(#[source] reqwest::Error),
    #[error(transparent)]
    Secrets(#[from] secrets::Error),
    #[error("start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Settings handlers read, fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL printed in access commands, no trailing slash.
    pub public_base_url: String,
    /// Host name users pass to `ssh` (the host of `public_base_url`).
    pub ssh_host: String,
    pub ssh_port: u16,
    pub trust_forwarded_for: bool,
    /// Whether the API's own listeners serve HTTPS (`TLS_CERT_FILE`).
    pub tls_listener: bool,
    /// Lifetime of the single-use SSH secrets of the bootstrap and entry flows.
    pub handoff_ttl: Duration,
    /// `EGRESS_DNS_SERVER`.
    pub egress_dns_server: std::net::Ipv4Addr,
    /// `EGRESS_PROBE_*`: where egress tests send their checks.
    pub egress_probe: wire::ProbeTargets,
    /// `WEB_DIR`: the dashboard's files read from here instead of the built-in copy.
    pub web_dir: Option<std::path::PathBuf>,
    /// `EVENT_RETENTION_DAYS`: audit events older than this are deleted (0 keeps them).
    pub event_retention_days: u32,
    /// `TRAFFIC_RETENTION_DAYS`: hourly traffic older than this is deleted (0 keeps it).
    pub traffic_retention_days: u32,
    /// `TRAFFIC_QUOTA_CHECK_SECS`: how often the quotas are checked.
    pub traffic_quota_check: Duration,
    /// `SESSION_RECORDING`, `RECORDING_FAILURE`, `RECORDING_RETENTION_DAYS` and
    /// `RECORDINGS_TENANT_ACCESS`.
    pub recording: RecordingSettings,
}

/// How pty sessions are recorded (see `docs/recording.md`).
#[derive(Debug, Clone, Copy)]
pub struct RecordingSettings {
    /// Recorded unless a user's or host's override says otherwise.
    pub all: bool,
    pub on_failure: wire::gateway::RecordingFailure,
    /// Recordings older than this are deleted (0 keeps them).
    pub retention_days: u32,
    /// Tenants may read the recordings of their own sessions.
    pub tenant_access: bool,
}

impl Settings {
    /// Whether browsers reach us over HTTPS, here or at a reverse proxy in front (so cookies are
    /// `Secure` and responses carry `Strict-Transport-Security`).
    pub fn serves_tls(&self) -> bool {
        self.tls_listener || self.public_base_url.starts_with("https://")
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub db: db::Pool,
    pub keys: Arc<auth::Keys>,
    pub limiter: Arc<auth::ratelimit::Limiter>,
    /// Runs the password checks of every sign-in, a bounded number at once.
    pub verifier: Arc<auth::password::Verifier>,
    pub settings: Arc<Settings>,
    /// Verified against for unknown usernames so that they cost as much as a wrong password.
    pub decoy_hash: Arc<str>,
    /// Woken whenever a task is queued, so waiting agents claim it at once.
    pub work: Arc<tokio::sync::Notify>,
    /// Every change of a task, for the progress streams.
    pub task_updates: tokio::sync::broadcast::Sender<db::tasks::Task>,
    /// Cancelled when the server begins to stop, so long polls end at once.
    pub stopping: tokio_util::sync::CancellationToken,
    /// How hosts' web VNC is reached.
    pub vnc: vnc::Proxy,
    /// The dashboard's terminal: where it logs in, and the shells open now.
    pub terminals: Arc<terminal::Terminals>,
    /// This process among the replicas sharing the database: leases and notifications name it.
    pub instance: Arc<str>,
    /// Long-lived connections each account holds open, bounded.
    pub live: Arc<live::LiveConnections>,
    /// Seals and opens the secrets kept in the database.
    pub secrets: Arc<secrets::SecretsKey>,
    /// The shared lock on the key file, held while this state lives.
    pub secrets_lock: Arc<secrets::Prepared>,
    /// What `/metrics` shows.
    pub metrics: Arc<metrics::Metrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Opens the database, applies migrations and makes sure the operator account matches the config.
    pub async fn init(config: &Config, bound_port: u16, ssh_port: u16) -> Result<Self, StartError> {
        config.check_no_shared_tokens().map_err(StartError::Config)?;
        config.check_database().map_err(StartError::Config)?;
        let secret = config.checked_jwt_secret().map_err(StartError::Config)?;
        let db = db::connect(&config.database_url).await?;
        let prepared = secrets::prepare(&db, &config.secrets_key_path()).await?;
        auth::admin::ensure(&db, &config.admin_username, config.admin_password.as_ref()).await?;
        let public_base_url = config.public_base_url(bound_port);
        access::script::check_base_url(&public_base_url).map_err(|e| StartError::Config(e.to_string()))?;
        let handoff_ttl = config.checked_handoff_ttl().map_err(StartError::Config)?;
        let ssh_host = host_of(&public_base_url).unwrap_or("localhost").to_owned();
        let settings = Settings {
            public_base_url,
            ssh_host,
            ssh_port,
            trust_forwarded_for: config.trust_forwarded_for,
            tls_listener: config.tls_files().map_err(StartError::Config)?.is_some(),
            handoff_ttl,
            egress_dns_server: config.egress_dns_server,
            egress_probe: config.egress_probe().map_err(StartError::Config)?,
            web_dir: config
                .web_dir
                .as_deref()
                .map(web::check_web_dir)
                .transpose()
                .map_err(StartError::Config)?,
            event_retention_days: config.event_retention_days,
            traffic_retention_days: config.traffic_retention_days,
            traffic_quota_check: Duration::from_secs(config.traffic_quota_check_secs),
            recording: RecordingSettings {
                all: config.session_recording == config::SessionRecording::All,
                on_failure: match config.recording_failure {
                    config::RecordingFailure::Refuse => wire::gateway::RecordingFailure::Refuse,
                    config::RecordingFailure::Continue => wire::gateway::RecordingFailure::Continue,
                },
                retention_days: config.recording_retention_days,
                tenant_access: config.recordings_tenant_access,
            },
        };
        let decoy = tokio::task::spawn_blocking(auth::password::decoy_hash).await?;
        let check_slots = match config.password_check_slots {
            0 => std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            n => n,
        };
        Ok(Self {
            db: db.clone(),
            keys: Arc::new(auth::Keys::new(secret.expose(), config.token_ttl())),
            limiter: Arc::new(auth::ratelimit::Limiter::new(
                auth::ratelimit::Limits {
                    per_ip: config.login_max_failures_per_ip,
                    per_account_client: config.login_max_failures_per_account,
                    per_account: config.login_max_failures_per_account_total,
                    window: Duration::from_secs(config.login_window_secs),
                },
                &db,
            )),
            verifier: Arc::new(auth::password::Verifier::new(
                check_slots,
                check_slots * 32,
                Duration::from_secs(5),
            )),
            settings: Arc::new(settings),
            decoy_hash: decoy.into(),
            work: Arc::new(tokio::sync::Notify::new()),
            task_updates: tokio::sync::broadcast::channel(256).0,
            stopping: tokio_util::sync::CancellationToken::new(),
            vnc: vnc::Proxy::new(config.vnc_port).map_err(StartError::VncClient)?,
            terminals: Arc::new(terminal::Terminals::new(
                terminal_gateway(config, ssh_port),
                config.checked_terminal_resume().map_err(StartError::Config)?,
            )),
            instance: db::new_id().into(),
            live: live::LiveConnections::new(config.max_live_connections_per_user),
            secrets: Arc::new(prepared.key.clone()),
            secrets_lock: Arc::new(prepared),
            metrics: Arc::new(metrics::Metrics::new(metrics::Embedded {
                agent: config.embedded_agent,
                gateway: config.embedded_ssh_proxy,
            })),
        })
    }
}

/// Runs a node agent in this process against the local Docker engine, talking to this control plane
/// over loopback. It reads the agent's environment variables (`NODE_NAME`, `AGENT_STATE_DIR`,
/// `HOST_IMAGE`, …) like the standalone agent. Its node is enrolled here at every start with a
/// fresh credential that never leaves this process, so a one-machine install needs no enrolment
/// key. A failure to start it is logged and the control plane carries on: the API works without
/// an agent.
async fn run_embedded_agent(state: AppState, addr: SocketAddr, mut stop: tokio::sync::watch::Receiver<bool>) {
    use clap::Parser as _;

    let url = format!("http://{}:{}", loopback_host(addr), addr.port());
    // The agent's port follows the proxy's, so a `--vnc-port` flag (not only `VNC_PORT`) reaches it.
    let vnc_port = state.vnc.port.to_string();
    let config = agent::Config::try_parse_from([
        "cloud-cli-proxy-agent",
        "--control-plane-url",
        &url,
        "--vnc-port",
        &vnc_port,
    ]);
    let mut config = match config {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e.kind(), "embedded agent not started: bad agent configuration");
            return;
        }
    };
    let credential = enrolment::new_secret(enrolment::CREDENTIAL_PREFIX);
    let now = db::UtcTime::now();
    match db::nodes::enrol_embedded(&state.db, &config.node_name, &enrolment::hash(&credential), now).await {
        Ok(node) => tracing::info!(node = %node.name, node_id = %node.id, "embedded node enrolled"),
        Err(e) => {
            tracing::error!(error = %e, "embedded agent not started: cannot enrol its node");
            return;
        }
    }
    config.credential = Some(credential);
    // Its series are on this process's `/metrics`, not a listener of its own.
    config.metrics_addr = None;
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    match agent::run(config, shutdown).await {
        Ok(()) => tracing::info!("embedded agent stopped"),
        Err(e) => tracing::error!(error = %e, "embedded agent not running; host tasks wait for an agent"),
    }
}

/// The name the gateway in this process is enrolled under.
const EMBEDDED_GATEWAY: &str = "embedded";

/// The SSH gateway in this process: its keys are made (or loaded) and its client key recorded
/// before the embedded agent can build a host, so every host trusts it from the start.
struct EmbeddedGateway {
    keys: ssh_proxy::Keys,
    listener: TcpListener,
}

impl EmbeddedGateway {
    async fn prepare(config: &Config) -> Result<Option<Self>, StartError> {
        if !config.embedded_ssh_proxy {
            return Ok(None);
        }
        let dir = config.ssh_proxy_state_dir.clone();
        let keys = tokio::task::spawn_blocking(move || ssh_proxy::Keys::load_or_create(&dir)).await??;
        let addr = config.ssh_proxy_addr.0;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::SshListener { addr, source })?;
        Ok(Some(Self { keys, listener }))
    }

    fn port(&self) -> Option<u16> {
        self.listener.local_addr().ok().map(|a| a.port())
    }

    /// Enrols the gateway with a fresh credential (which never leaves this process) and records
    /// its keys; answers the credential.
    async fn enrol(&self, state: &AppState) -> Result<String, StartError> {
        let line = self.keys.client_public_line()?;
        let host_key = self.keys.host_public_line()?;
        let credential = enrolment::new_secret(enrolment::CREDENTIAL_PREFIX);
        let now = db::UtcTime::now();
        let recorded = async {
            let mut tx = state.db.begin().await?;
            db::gateways::enrol_embedded(&mut *tx, EMBEDDED_GATEWAY, &enrolment::hash(&credential), now)
                .await?;
            db::gateways::register(&mut tx, EMBEDDED_GATEWAY, &line, Some(&host_key), now).await?;
            tx.commit().await
        };
        recorded
            .await
            .map_err(|e| StartError::Config(format!("cannot record the SSH gateway key: {e}")))?;
        Ok(credential)
    }

    fn run(
        self,
        credential: String,
        api: SocketAddr,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        use clap::Parser as _;

        let url = format!("http://{}:{}", loopback_host(api), api.port());
        let config = ssh_proxy::Config::try_parse_from([
            "cloud-cli-proxy-ssh-proxy",
            "--control-plane-url",
            &url,
            "--name",
            EMBEDDED_GATEWAY,
        ]);
        async move {
            let mut config = match config {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e.kind(), "embedded SSH gateway not started: bad configuration");
                    return;
                }
            };
            config.credential = Some(credential);
            // Its series are on this process's `/metrics`, not a listener of its own.
            config.metrics_addr = None;
            let shutdown = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            if let Err(e) = ssh_proxy::run(config, self.keys, self.listener, shutdown).await {
                tracing::error!(error = %e, "embedded SSH gateway stopped");
            }
        }
    }
}

/// The gateway the terminal logs in through: `TERMINAL_GATEWAY_ADDR`, else the embedded one.
fn terminal_gateway(config: &Config, ssh_port: u16) -> Option<String> {
    match &config.terminal_gateway_addr {
        Some(addr) => Some(addr.clone()),
        None if config.embedded_ssh_proxy => {
            let listen = SocketAddr::new(config.ssh_proxy_addr.0.ip(), ssh_port);
            Some(format!("{}:{ssh_port}", loopback_host(listen)))
        }
        None => None,
    }
}

/// The address to dial this process on from inside it.
fn loopback_host(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    }
}

/// Serves the access routes alone on the `ENTRY_ADDR` listener until the server stops.
async fn serve_entry(
    state: AppState,
    max_body_bytes: usize,
    listener: tls::Listener,
    stopping: tokio_util::sync::CancellationToken,
) -> Result<(), std::io::Error> {
    let addr = axum::serve::Listener::local_addr(&listener)?;
    let app = api::access_router(state, max_body_bytes);
    tracing::info!(%addr, "entry listener listening");
    tls::serve(listener, app, stopping.cancelled_owned()).await
}

/// Whether users' passwords and SSH secrets would cross a network in clear: plain HTTP, no HTTPS
/// proxy in front (an `https://` public URL), and a listener other machines can reach.
fn serves_plain_http_beyond_loopback(tls_listener: bool, public_base_url: &str, listen: IpAddr) -> bool {
    !tls_listener && !public_base_url.starts_with("https://") && !listen.is_loopback()
}

/// `http://host:port/…` → `host`.
fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next();
    }
    authority.split(':').next().filter(|h| !h.is_empty())
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let addr = listener.local_addr().map_err(StartError::Listener)?;
    let certificate = match config.tls_files().map_err(StartError::Config)? {
        Some(files) => Some(Arc::new(tls::Certificate::open(files)?)),
        None => None,
    };
    let tls_config = certificate
        .as_ref()
        .map(tls::Certificate::server_config)
        .transpose()?;
    let gateway = EmbeddedGateway::prepare(&config).await?;
    let ssh_port = gateway
        .as_ref()
        .and_then(EmbeddedGateway::port)
        .unwrap_or(config.ssh_proxy_addr.0.port());
    let state = AppState::init(&config, addr.port(), ssh_port).await?;
    let gateway_credential = match &gateway {
        Some(gateway) => Some(gateway.enrol(&state).await?),
        None => None,
    };
    let app = api::router(state.clone(), config.max_body_bytes);
    let entry = match config.entry_addr {
        Some(entry_addr) => {
            let tcp = TcpListener::bind(entry_addr.0)
                .await
                .map_err(StartError::Listener)?;
            Some(tls::Listener::new(tcp, tls_config.as_ref()).map_err(StartError::Listener)?)
        }
        None => None,
    };
    // The embedded agent and gateway hold no certificate for the public name, so with HTTPS on
    // they reach this process over a plain listener of their own on loopback, which serves only
    // the agent and gateway routes (each call checked against its random in-process token).
    let inner = if tls_config.is_some() && (config.embedded_agent || config.embedded_ssh_proxy) {
        Some(
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .map_err(StartError::Listener)?,
        )
    } else {
        None
    };
    let inner_addr = match &inner {
        Some(l) => l.local_addr().map_err(StartError::Listener)?,
        None => addr,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(tasks::run_scheduler(state.clone(), stop_rx.clone()));
    let replicas = tokio::spawn(cluster::run_listener(state.clone(), stop_rx.clone()));
    let embedded_agent = if config.embedded_agent {
        Some(tokio::spawn(run_embedded_agent(
            state.clone(),
            inner_addr,
            stop_rx.clone(),
        )))
    } else {
        None
    };
    let metrics_server = match config.metrics_addr {
        Some(metrics_addr) => {
            let tcp = TcpListener::bind(metrics_addr.0)
                .await
                .map_err(StartError::Listener)?;
            tracing::info!(addr = %tcp.local_addr().map_err(StartError::Listener)?, "metrics listener listening");
            let app = api::metrics_router(state.clone());
            let stopping = state.stopping.clone();
            Some(tokio::spawn(async move {
                axum::serve(tcp, app)
                    .with_graceful_shutdown(stopping.cancelled_owned())
                    .await
            }))
        }
        None => None,
    };
    let entry_server = match entry {
        Some(listener) => Some(tokio::spawn(serve_entry(
            state.clone(),
            config.max_body_bytes,
            listener,
            state.stopping.clone(),
        ))),
        None => None,
    };
    let inner_server = inner.map(|l| {
        tokio::spawn(tls::serve(
            tls::Listener::Plain(l),
            api::machine_router(state.clone(), config.max_body_bytes),
            state.stopping.clone().cancelled_owned(),
        ))
    });
    let embedded_gateway = gateway
        .zip(gateway_credential)
        .map(|(g, credential)| tokio::spawn(g.run(credential, inner_addr, stop_rx.clone())));
    if let Some(certificate) = &certificate {
        tracing::info!(fingerprint = %tls::fingerprint(&certificate.current()), "serving HTTPS; SIGHUP reloads the certificate");
        tokio::spawn(tls::reload_on_hangup(certificate.clone(), state.stopping.clone()));
    }
    if serves_plain_http_beyond_loopback(
        state.settings.tls_listener,
        &state.settings.public_base_url,
        addr.ip(),
    ) {
        tracing::warn!(%addr, "serving plain HTTP beyond loopback: passwords, SSH secrets and access scripts cross the network in clear; set TLS_CERT_FILE and TLS_KEY_FILE, or put an HTTPS proxy in front with an https:// PUBLIC_BASE_URL (docs/tls.md)");
    }
    let listener = tls::Listener::new(listener, tls_config.as_ref()).map_err(StartError::Listener)?;
    tracing::info!(%addr, ssh_port, public_base_url = %state.settings.public_base_url, tls = state.settings.tls_listener, "control plane listening");
    let served = tls::serve(listener, app, {
        let stopping = state.stopping.clone();
        async move {
            shutdown.await;
            stopping.cancel();
            let _ = stop_tx.send(true);
        }
    })
    .await;
    let _ = scheduler.await;
    let _ = replicas.await;
    if let Some(inner) = inner_server {
        inner.await?.map_err(StartError::Serve)?;
    }
    if let Some(entry) = entry_server {
        entry.await?.map_err(StartError::Serve)?;
    }
    if let Some(metrics) = metrics_server {
        metrics.await?.map_err(StartError::Serve)?;
    }
    if let Some(agent) = embedded_agent {
        let _ = agent.await;
    }
    if let Some(gateway) = embedded_gateway {
        let _ = gateway.await;
    }
    served.map_err(StartError::Serve)?;
    state.db.close().await;
    tracing::info!("control plane stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_http_beyond_loopback_is_flagged() {
        let any: std::net::IpAddr = "0.0.0.0".parse().unwrap();
        let lan: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: std::net::IpAddr = "::1".parse().unwrap();
        let cases = [
            (false, "http://h:8080", any, true),
            (false, "http://h:8080", lan, true),
            (false, "http://h:8080", lo, false),
            (false, "http://h:8080", lo6, false),
            (true, "http://h:8080", any, false),
            (false, "https://h", any, false),
            (true, "https://h", lan, false),
        ];
        for (tls, url, ip, want) in cases {
            assert_eq!(
                super::serves_plain_http_beyond_loopback(tls, url, ip),
                want,
                "{tls} {url} {ip}"
            );
        }
    }

    #[test]
    fn host_of_urls() {
        assert_eq!(super::host_of("http://example.org:8080/x"), Some("example.org"));
        assert_eq!(super::host_of("https://[::1]:8443"), Some("::1"));
        assert_eq!(super::host_of("http://u:p@h"), Some("h"));
    }
}
