//! The cloud-cli-proxy control plane: the operator's HTTP API, authentication, the database, durable
//! host tasks and the audit log. `run` is the whole server; `main.rs` only parses configuration.

pub mod api;
pub mod auth;
pub mod config;
pub mod db;
pub mod egress;
pub mod error;
pub mod extract;
pub mod hosts;
pub mod tasks;
pub mod telemetry;
pub mod vnc;

use std::future::Future;
use std::net::SocketAddr;
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
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("VNC proxy client: {0}")]
    VncClient(#[source] reqwest::Error),
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
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub db: db::Pool,
    pub keys: Arc<auth::Keys>,
    pub limiter: Arc<auth::ratelimit::LoginLimiter>,
    pub settings: Arc<Settings>,
    /// Verified against for unknown usernames so that they cost as much as a wrong password.
    pub decoy_hash: Arc<str>,
    /// The secret agents present; `None` refuses every agent.
    pub agent_token: Option<Arc<str>>,
    /// Woken whenever a task is queued, so waiting agents claim it at once.
    pub work: Arc<tokio::sync::Notify>,
    /// Every change of a task, for the progress streams.
    pub task_updates: tokio::sync::broadcast::Sender<db::tasks::Task>,
    /// Public keys of the SSH gateway, installed in every host so it can log in without passwords.
    pub gateway_keys: Arc<Vec<String>>,
    /// Cancelled when the server begins to stop, so long polls end at once.
    pub stopping: tokio_util::sync::CancellationToken,
    /// How hosts' web VNC is reached.
    pub vnc: vnc::Proxy,
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
    pub async fn init(config: &Config, bound_port: u16) -> Result<Self, StartError> {
        let secret = config.checked_jwt_secret().map_err(StartError::Config)?;
        let db = db::connect(&config.database_url).await?;
        auth::admin::ensure(&db, &config.admin_username, config.admin_password.as_ref()).await?;
        let public_base_url = config.public_base_url(bound_port);
        let ssh_host = host_of(&public_base_url).unwrap_or("localhost").to_owned();
        let settings = Settings {
            public_base_url,
            ssh_host,
            ssh_port: config.ssh_proxy_addr.0.port(),
            trust_forwarded_for: config.trust_forwarded_for,
        };
        let decoy = tokio::task::spawn_blocking(auth::password::decoy_hash).await?;
        let agent_token = match &config.agent_token {
            Some(t) if t.expose().len() >= 32 => Some(Arc::from(t.expose())),
            Some(_) => {
                return Err(StartError::Config(
                    "AGENT_TOKEN must be at least 32 characters".into(),
                ));
            }
            // The embedded agent talks to this process with a secret that never leaves it.
            None if config.embedded_agent => Some(Arc::from(auth::password::generate(48).as_str())),
            None => None,
        };
        Ok(Self {
            db,
            keys: Arc::new(auth::Keys::new(secret.expose(), config.token_ttl())),
            limiter: Arc::new(auth::ratelimit::LoginLimiter::new(
                config.login_max_failures_per_ip,
                config.login_max_failures_per_account,
                Duration::from_secs(config.login_window_secs),
            )),
            settings: Arc::new(settings),
            decoy_hash: decoy.into(),
            agent_token,
            work: Arc::new(tokio::sync::Notify::new()),
            task_updates: tokio::sync::broadcast::channel(256).0,
            gateway_keys: Arc::new(Vec::new()),
            stopping: tokio_util::sync::CancellationToken::new(),
            vnc: vnc::Proxy::new(config.vnc_port).map_err(StartError::VncClient)?,
        })
    }
}

/// Runs a node agent in this process against the local Docker engine, talking to this control plane
/// over loopback with the in-process agent token. It reads the agent's environment variables
/// (`NODE_NAME`, `AGENT_STATE_DIR`, `HOST_IMAGE`, …) like the standalone agent. A failure to start
/// it is logged and the control plane carries on: the API works without an agent.
fn run_embedded_agent(
    state: &AppState,
    addr: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    use clap::Parser as _;

    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let url = format!("http://{host}:{}", addr.port());
    let token = state.agent_token.as_deref().unwrap_or_default().to_owned();
    // The agent's port follows the proxy's, so a `--vnc-port` flag (not only `VNC_PORT`) reaches it.
    let vnc_port = state.vnc.port.to_string();
    let config = agent::Config::try_parse_from([
        "cloud-cli-proxy-agent",
        "--control-plane-url",
        &url,
        "--agent-token",
        &token,
        "--vnc-port",
        &vnc_port,
    ]);
    async move {
        let config = match config {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e.kind(), "embedded agent not started: bad agent configuration");
                return;
            }
        };
        let shutdown = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        match agent::run(config, shutdown).await {
            Ok(()) => tracing::info!("embedded agent stopped"),
            Err(e) => tracing::error!(error = %e, "embedded agent not running; host tasks wait for an agent"),
        }
    }
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
    let state = AppState::init(&config, addr.port()).await?;
    let app = api::router(state.clone(), config.max_body_bytes);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(tasks::run_scheduler(state.clone(), stop_rx.clone()));
    let embedded_agent = if config.embedded_agent {
        Some(tokio::spawn(run_embedded_agent(&state, addr, stop_rx.clone())))
    } else {
        None
    };
    tracing::info!(%addr, public_base_url = %state.settings.public_base_url, "control plane listening");
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown({
            let stopping = state.stopping.clone();
            async move {
                shutdown.await;
                stopping.cancel();
                let _ = stop_tx.send(true);
            }
        })
        .await;
    let _ = scheduler.await;
    if let Some(agent) = embedded_agent {
        let _ = agent.await;
    }
    served.map_err(StartError::Serve)?;
    state.db.close().await;
    tracing::info!("control plane stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_urls() {
        assert_eq!(super::host_of("http://example.org:8080/x"), Some("example.org"));
        assert_eq!(super::host_of("https://[::1]:8443"), Some("::1"));
        assert_eq!(super::host_of("http://u:p@h"), Some("h"));
    }
}
