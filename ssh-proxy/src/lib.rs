//! The SSH gateway: accepts `ssh -p 2222 user[+shortid]@…`, asks the control plane whether the login
//! may proceed and to which host, then relays every channel (shell, exec, sftp/scp, forwards, agent)
//! to that host's sshd, which it logs in to with its own key. Runs on its own
//! (`cloud-cli-proxy-ssh-proxy`) or inside the control plane; any number can run side by side.

pub mod admission;
pub mod config;
pub mod control_plane;
pub mod enrol;
mod grace;
pub mod keys;
pub mod metrics;
pub mod proxy_protocol;
pub mod recording;
pub mod relay;
mod russh_handler;
pub mod upstream;
mod workers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use russh::{MethodKind, MethodSet, client, server};
use tokio::net::TcpListener;

pub use config::Config;
pub use keys::Keys;

use crate::control_plane::ControlPlane;

/// How long open sessions get to end on their own once the gateway is asked to stop.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Keys(#[from] keys::Error),
    #[error(transparent)]
    ControlPlane(#[from] control_plane::Error),
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("enrolment: {0}")]
    Enrol(#[from] enrol::Error),
    #[error("metrics listener on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What every connection shares.
pub(crate) struct Context {
    pub control_plane: ControlPlane,
    pub client_key: Arc<russh::keys::PrivateKey>,
    pub upstream_config: Arc<client::Config>,
    pub host_ssh_port: u16,
    pub host_connect_timeout: Duration,
    /// Connections not logged in yet, shared by every worker.
    pub gate: Arc<admission::Gate>,
    pub login_grace: Duration,
    pub max_channels: usize,
    pub proxy_protocol: ProxyProtocol,
}

/// What the listener expects before SSH.
#[derive(Debug, Clone)]
pub(crate) struct ProxyProtocol {
    pub mode: proxy_protocol::Mode,
    pub trusted: Arc<[proxy_protocol::Cidr]>,
    pub timeout: Duration,
}

/// Registers with the control plane (retrying until it answers or `shutdown`), then serves
/// `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    keys: Keys,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    let _stop_metrics = metrics_stop.clone().drop_guard();
    if let Some(addr) = config.metrics_addr {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Metrics { addr, source })?;
        let mut registry = prometheus_client::registry::Registry::with_prefix("ccp");
        metrics::get().register(&mut registry);
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "metrics listener listening");
        tokio::spawn(async move {
            if let Err(e) =
                wire::metrics_listener::serve(listener, registry, metrics_stop.cancelled_owned()).await
            {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    tokio::pin!(shutdown);
    let roots = control_plane::extra_roots(config.control_plane_ca_file.as_deref())?;
    let name = config.gateway_name();
    let credential = tokio::select! {
        credential = enrol::credential(&config, &name) => credential?,
        () = &mut shutdown => return Ok(()),
    };
    let control_plane = ControlPlane::new(&config.control_plane_url, &credential, &roots)?;
    let server_config = Arc::new(server_config(&config, &keys));
    let upstream_config = Arc::new(upstream_config(&config));
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let gate = admission::Gate::new(config.unauthenticated_caps());
    let proxy = ProxyProtocol {
        mode: config.proxy_protocol,
        trusted: config.proxy_protocol_trusted.clone().into(),
        timeout: config.proxy_protocol_timeout(),
    };
    let mut contexts = Vec::with_capacity(threads);
    for _ in 0..threads {
        // A client per worker: each lives on its own runtime.
        contexts.push(Arc::new(Context {
            control_plane: ControlPlane::new(&config.control_plane_url, &credential, &roots)?,
            client_key: keys.client.clone(),
            upstream_config: upstream_config.clone(),
            host_ssh_port: config.host_ssh_port,
            host_connect_timeout: config.host_connect_timeout(),
            gate: gate.clone(),
            login_grace: config.login_grace(),
            max_channels: config.max_channels,
            proxy_protocol: proxy.clone(),
        }));
    }
    let register = wire::gateway::Register {
        name,
        client_key: keys.client_public_line()?,
        host_key: Some(keys.host_public_line()?),
    };
    let addr = listener.local_addr().map_err(Error::Listener)?;
    let mut workers = workers::Workers::start(contexts, server_config, DRAIN).map_err(Error::Listener)?;
    tracing::info!(%addr, name = %register.name, workers = threads, "ssh gateway listening");
    let mut registration = tokio::spawn(keep_registered(control_plane, register));

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => workers.hand_over(stream, peer),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    registration.abort();
    let _ = (&mut registration).await;
    tracing::info!("ssh gateway stopping");
    let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    tracing::info!("ssh gateway stopped");
    Ok(())
}

/// Registers with the control plane, retrying until it answers, then again every heartbeat so the
/// operator sees the gateway is alive.
async fn keep_registered(cp: ControlPlane, register: wire::gateway::Register) {
    let heartbeat = Duration::from_secs(wire::gateway::HEARTBEAT_SECS);
    let mut wait = Duration::from_millis(200);
    let mut registered = false;
    loop {
        match cp.register(&register).await {
            Ok(()) => {
                if !registered {
                    tracing::info!(name = %register.name, "registered with the control plane");
                }
                registered = true;
                wait = Duration::from_millis(200);
                tokio::time::sleep(heartbeat).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "cannot register with the control plane");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn server_config(config: &Config, keys: &Keys) -> server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    methods.push(MethodKind::Password);
    server::Config {
        keys: vec![keys.host.as_ref().clone()],
        methods,
        // Every refusal takes as long, whatever the reason; the first `none` probe is answered at once.
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        max_auth_attempts: 6,
        keepalive_interval: Some(config.keepalive()),
        keepalive_max: 4,
        // Idle shells are fine; dead peers are found by the keepalives. Clients that never log in
        // are cut off by the login deadline (`grace`) instead.
        inactivity_timeout: None,
        nodelay: true,
        event_buffer_size: 64,
        channel_buffer_size: CHANNEL_BUFFER,
        preferred: ciphers(config.compat_ciphers),
        window_size: 8 << 20,
        ..Default::default()
    }
}

/// Bytes read from a socket at a time, on both sides of a relayed connection. russh asks for each
/// packet in two reads (its length, then the rest); served from this buffer, a 1 GiB transfer takes
/// a few thousand `recv` calls instead of some 65,000, for one more copy in memory.
pub(crate) const READ_BUFFER: usize = 256 << 10;

/// Messages (each at most one 32 KiB packet) a relayed channel may hold before its connection stops
/// reading. russh applies backpressure by pausing the whole connection's loop, which also stops it
/// from reading the peer's window adjustments; when both directions of a channel are busy (an echo,
/// rsync), the client's loop and the host's loop can each wait on the other. A deep queue keeps
/// both loops reading while data is in flight: 512 packets, at most 16 MiB per channel and side.
const CHANNEL_BUFFER: usize = 512;

/// Ciphers offered to clients. The client's order decides, and OpenSSH puts ChaCha20-Poly1305 and
/// AES-CTR (with a separate HMAC) before AES-GCM; since every byte is decrypted and encrypted
/// again here, AES-GCM alone (on the CPU's AES instructions) is several times cheaper. Every
/// OpenSSH since 6.2 and PuTTY since 0.76 speak it; `compat_ciphers` also offers the others for
/// older clients.
fn ciphers(compat: bool) -> russh::Preferred {
    use russh::cipher;
    const GCM: &[cipher::Name] = &[cipher::AES_128_GCM, cipher::AES_256_GCM];
    const COMPAT: &[cipher::Name] = &[
        cipher::AES_128_GCM,
        cipher::AES_256_GCM,
        cipher::CHACHA20_POLY1305,
        cipher::AES_128_CTR,
        cipher::AES_256_CTR,
    ];
    russh::Preferred {
        cipher: std::borrow::Cow::Borrowed(if compat { COMPAT } else { GCM }),
        ..russh::Preferred::default()
    }
}

fn upstream_config(config: &Config) -> client::Config {
    client::Config {
        keepalive_interval: Some(config.keepalive()),
        keepalive_max: 4,
        inactivity_timeout: None,
        nodelay: true,
        channel_buffer_size: CHANNEL_BUFFER,
        // Every host's sshd is ours and speaks AES-GCM.
        preferred: ciphers(false),
        ..Default::default()
    }
}
