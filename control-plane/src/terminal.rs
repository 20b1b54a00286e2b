//! The dashboard's terminal: a shell on a host, for a browser.
//!
//! The control plane logs in to an SSH gateway as the host's owner (`user+shortid`) with a
//! single-use secret it made for this one login, so the shell comes through the same path as
//! `ssh -p 2222`: the gateway's policy, rate limits and audit events (marked as web, naming the
//! browser's address and who opened it). Only a gateway presenting a registered host key is
//! trusted with the secret.
//!
//! A shell outlives its WebSocket: its output goes to a bounded buffer with running byte offsets,
//! and a browser that lost its socket resumes from the last offset it received (what was trimmed
//! from the buffer meanwhile is reported, not invented). A shell nobody is attached to ends after
//! `resume_for`; one browser at a time is attached, and a newer one takes over.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use russh::client;
use russh::keys::PublicKeyOrCertificate;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::db;

/// The WebSocket subprotocol of the dashboard's terminal.
pub const PROTOCOL: &str = "ccp-terminal.v1";
/// Output kept per shell for a browser that comes back.
pub const BUFFER_BYTES: usize = 256 << 10;
/// Shells one account may hold open (attached or waiting to be resumed).
pub const MAX_PER_ACCOUNT: usize = 8;
/// Lifetime of the secret the control plane logs in with; it is used within a second.
const SECRET_TTL: Duration = Duration::from_secs(30);
/// Connecting to the gateway, logging in and opening the shell (the gateway then reaches the host).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest terminal size accepted from a browser.
pub const MAX_COLS: u32 = 1000;
pub const MAX_ROWS: u32 = 500;

/// Why a shell could not be opened; `code` and the message go to the browser.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no SSH gateway is configured for the terminal (TERMINAL_GATEWAY_ADDR)")]
    NoGateway,
    #[error("the SSH gateway at {addr} cannot be reached: {cause}")]
    Unreachable { addr: String, cause: String },
    #[error("the SSH gateway presented a host key no registered gateway has")]
    UnknownGatewayKey,
    #[error(
        "the SSH gateway refused the login (the host's owner may be disabled or expired; see the events)"
    )]
    Refused,
    #[error("the shell could not be opened: {0}")]
    Shell(String),
    #[error("opening the shell took longer than {0:?}")]
    Timeout(Duration),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl OpenError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoGateway => "terminal_unavailable",
            Self::Unreachable { .. } | Self::UnknownGatewayKey => "gateway_unavailable",
            Self::Refused => "login_refused",
            Self::Shell(_) | Self::Timeout(_) => "shell_failed",
            Self::Db(_) => "internal",
        }
    }
}

/// What a browser asks of its shell.
#[derive(Debug)]
pub enum Input {
    Data(Bytes),
    Resize { cols: u32, rows: u32 },
}

/// How a shell ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The shell's exit status (`None`: ended without one, e.g. by a signal).
    Status(Option<u32>),
    /// Nobody came back within the resume time, or the control plane stopped.
    Closed(&'static str),
}

/// Whose shell, on which host, opened how.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The account that opened it (an operator or the host's owner); only it may resume.
    pub account_id: String,
    pub host_id: String,
}

/// One shell on a host.
#[derive(Debug)]
pub struct Shell {
    pub id: String,
    pub owner: Owner,
    input: mpsc::Sender<Input>,
    output: Mutex<Output>,
    /// Bumped on every change (output, exit, a new attachment), waking attached sockets.
    changed: watch::Sender<u64>,
    /// Which attachment is current; an older one stops at its next wake-up.
    attachment: AtomicU64,
}

#[derive(Debug, Default)]
struct Output {
    buf: VecDeque<u8>,
    /// Offset of `buf[0]` in everything the shell ever wrote.
    start: u64,
    exit: Option<Exit>,
    /// When the last browser left (`None` while one is attached).
    detached_at: Option<Instant>,
}

/// Output read from an offset.
#[derive(Debug)]
pub struct Chunk {
    pub data: Vec<u8>,
    /// Offset of `data[0]`: later than asked when the buffer no longer held that part.
    pub from: u64,
    pub exit: Option<Exit>,
}

impl Shell {
    fn push(&self, data: &[u8]) {
        {
            let mut out = lock(&self.output);
            out.buf.extend(data);
            let excess = out.buf.len().saturating_sub(BUFFER_BYTES);
            if excess > 0 {
                out.buf.drain(..excess);
                out.start += excess as u64;
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }

    fn finish(&self, exit: Exit) {
        lock(&self.output).exit.get_or_insert(exit);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Up to `max` bytes of output from `offset` on.
    pub fn read(&self, offset: u64, max: usize) -> Chunk {
        let out = lock(&self.output);
        let end = out.start + out.buf.len() as u64;
        let from = offset.clamp(out.start, end);
        let skip = usize::try_from(from - out.start).unwrap_or(usize::MAX);
        let data: Vec<u8> = out.buf.iter().skip(skip).take(max).copied().collect();
        let drained = from + data.len() as u64 == end;
        Chunk {
            data,
            from,
            exit: if drained { out.exit.clone() } else { None },
        }
    }

    /// Makes the caller the shell's one attachment; answers its number and a change feed.
    pub fn attach(&self) -> (u64, watch::Receiver<u64>) {
        let n = self.attachment.fetch_add(1, Ordering::SeqCst) + 1;
        lock(&self.output).detached_at = None;
        let rx = self.changed.subscribe();
        self.changed.send_modify(|v| *v += 1);
        (n, rx)
    }

    /// Whether attachment `n` is still the current one.
    pub fn is_current(&self, n: u64) -> bool {
        self.attachment.load(Ordering::SeqCst) == n
    }

    /// Attachment `n` left; the resume clock starts if it was the current one.
    pub fn detach(&self, n: u64) {
        if self.is_current(n) {
            lock(&self.output).detached_at = Some(Instant::now());
        }
    }

    pub async fn send(&self, input: Input) -> bool {
        self.input.send(input).await.is_ok()
    }

    fn abandoned(&self, resume_for: Duration) -> bool {
        lock(&self.output)
            .detached_at
            .is_some_and(|t| t.elapsed() >= resume_for)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where the terminal logs in, and the shells open now.
#[derive(Debug)]
pub struct Terminals {
    /// `host:port` of an SSH gateway.
    gateway: Option<String>,
    resume_for: Duration,
    config: Arc<client::Config>,
    shells: Mutex<HashMap<String, Arc<Shell>>>,
}

/// What the login needs to know about the host and its owner.
#[derive(Debug, Clone)]
pub struct Login {
    pub host_id: String,
    pub short_id: String,
    /// The host owner's account.
    pub user_id: String,
    pub username: String,
    /// The browser's address, for the gateway's events.
    pub client_ip: Option<String>,
    /// The account opening the terminal (an operator or the owner): its id and name.
    pub opened_by_id: String,
    pub opened_by: String,
}

impl Terminals {
    pub fn new(gateway: Option<String>, resume_for: Duration) -> Self {
        let config = client::Config {
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 4,
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        };
        Self {
            gateway,
            resume_for,
            config: Arc::new(config),
            shells: Mutex::new(HashMap::new()),
        }
    }

    pub fn available(&self) -> bool {
        self.gateway.is_some()
    }

    /// The shell `id`, if it is `account_id`'s on `host_id`. Anything else looks like a shell
    /// that ended: nobody learns of another account's shells.
    pub fn find(&self, id: &str, account_id: &str, host_id: &str) -> Option<Arc<Shell>> {
        let shells = lock(&self.shells);
        shells
            .get(id)
            .filter(|s| s.owner.account_id == account_id && s.owner.host_id == host_id)
            .cloned()
    }

    /// Shells `account_id` holds.
    pub fn count_of(&self, account_id: &str) -> usize {
        lock(&self.shells)
            .values()
            .filter(|s| s.owner.account_id == account_id)
            .count()
    }

    fn remove(&self, id: &str) {
        lock(&self.shells).remove(id);
    }

    /// Logs in through the gateway and opens a shell with a `cols`×`rows` pty.
    pub async fn open(
        self: &Arc<Self>,
        db: &db::Pool,
        login: Login,
        cols: u32,
        rows: u32,
        stopping: CancellationToken,
    ) -> Result<Arc<Shell>, OpenError> {
        let addr = self.gateway.clone().ok_or(OpenError::NoGateway)?;
        let secret = crate::auth::password::generate(48);
        let now = db::UtcTime::now();
        let ttl = chrono::Duration::from_std(SECRET_TTL).unwrap_or(chrono::Duration::seconds(30));
        let purpose = db::handoffs::Purpose::WebTerminal {
            client_ip: login.client_ip.clone(),
            opened_by: login.opened_by.clone(),
        };
        db::handoffs::create(
            db,
            &login.host_id,
            &login.user_id,
            &secret,
            &purpose,
            db::UtcTime::from(now.0 + ttl),
            now,
        )
        .await?;
        let connect = connect(
            self.config.clone(),
            db.clone(),
            &addr,
            &login,
            &secret,
            cols,
            rows,
        );
        let (handle, channel) = tokio::time::timeout(OPEN_TIMEOUT, connect)
            .await
            .map_err(|_| OpenError::Timeout(OPEN_TIMEOUT))??;

        let (input_tx, input_rx) = mpsc::channel(64);
        let shell = Arc::new(Shell {
            id: crate::auth::browser::random_token(),
            owner: Owner {
                account_id: login.opened_by_id.clone(),
                host_id: login.host_id.clone(),
            },
            input: input_tx,
            output: Mutex::new(Output::default()),
            changed: watch::channel(0).0,
            attachment: AtomicU64::new(0),
        });
        lock(&self.shells).insert(shell.id.clone(), shell.clone());
        tokio::spawn(pump(
            self.clone(),
            shell.clone(),
            handle,
            channel,
            input_rx,
            stopping,
        ));
        Ok(shell)
    }
}

/// Trusts the gateway only if it shows the host key of a registered gateway.
struct GatewayKey {
    db: db::Pool,
}

impl client::Handler for GatewayKey {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let Ok(line) = key.to_openssh() else {
            return Ok(false);
        };
        Ok(db::gateways::knows_host_key(&self.db, &line)
            .await
            .unwrap_or(false))
    }
}

async fn connect(
    config: Arc<client::Config>,
    db: db::Pool,
    addr: &str,
    login: &Login,
    secret: &str,
    cols: u32,
    rows: u32,
) -> Result<(client::Handle<GatewayKey>, russh::Channel<client::Msg>), OpenError> {
    let unreachable = |cause: String| OpenError::Unreachable {
        addr: addr.to_owned(),
        cause,
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let checker = GatewayKey { db };
    let mut handle = match client::connect_stream(config, stream, checker).await {
        Ok(h) => h,
        Err(russh::Error::UnknownKey) => return Err(OpenError::UnknownGatewayKey),
        Err(e) => return Err(unreachable(e.to_string())),
    };
    let name = format!("{}+{}", login.username, login.short_id);
    let auth = handle
        .authenticate_password(name, secret)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !auth.success() {
        return Err(OpenError::Refused);
    }
    let shell_err = |e: russh::Error| OpenError::Shell(e.to_string());
    let mut channel = handle.channel_open_session().await.map_err(shell_err)?;
    channel
        .request_pty(true, "xterm-256color", cols, rows, 0, 0, &[])
        .await
        .map_err(shell_err)?;
    expect_success(&mut channel, "the host refused a terminal").await?;
    channel.request_shell(true).await.map_err(shell_err)?;
    expect_success(&mut channel, "the host refused a shell").await?;
    Ok((handle, channel))
}

/// Waits for the answer to a request; the gateway passes on the host's (or its own refusal, with
/// the reason as text on the channel).
async fn expect_success(channel: &mut russh::Channel<client::Msg>, refused: &str) -> Result<(), OpenError> {
    let mut said = Vec::new();
    loop {
        match channel.wait().await {
            Some(russh::ChannelMsg::Success) => return Ok(()),
            Some(russh::ChannelMsg::Failure) => {
                let reason = String::from_utf8_lossy(&said).trim().to_owned();
                return Err(OpenError::Shell(if reason.is_empty() {
                    refused.to_owned()
                } else {
                    reason
                }));
            }
            Some(russh::ChannelMsg::Data { data } | russh::ChannelMsg::ExtendedData { data, .. }) => {
                said.extend_from_slice(&data);
            }
            Some(russh::ChannelMsg::Close | russh::ChannelMsg::Eof) | None => {
                let reason = String::from_utf8_lossy(&said).trim().to_owned();
                return Err(OpenError::Shell(if reason.is_empty() {
                    "the channel closed".to_owned()
                } else {
                    reason
                }));
            }
            Some(_) => {}
        }
    }
}

/// Carries a shell's output into its buffer and the browser's input to it, until the shell ends,
/// nobody resumes it in time, or the control plane stops.
async fn pump(
    terminals: Arc<Terminals>,
    shell: Arc<Shell>,
    handle: client::Handle<GatewayKey>,
    channel: russh::Channel<client::Msg>,
    mut input: mpsc::Receiver<Input>,
    stopping: CancellationToken,
) {
    let (mut read, write) = channel.split();
    // Writes wait for the host's window; reading goes on meanwhile.
    let writer = tokio::spawn(async move {
        while let Some(item) = input.recv().await {
            let sent = match item {
                Input::Data(data) => write.data_bytes(data).await,
                Input::Resize { cols, rows } => write.window_change(cols, rows, 0, 0).await,
            };
            if sent.is_err() {
                break;
            }
        }
    });
    let mut status = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let exit = loop {
        tokio::select! {
            msg = read.wait() => match msg {
                Some(russh::ChannelMsg::Data { data } | russh::ChannelMsg::ExtendedData { data, .. }) => {
                    shell.push(&data);
                }
                Some(russh::ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(russh::ChannelMsg::Close) | None => break Exit::Status(status),
                Some(_) => {}
            },
            _ = tick.tick() => if shell.abandoned(terminals.resume_for) {
                break Exit::Closed("nobody resumed the shell in time");
            },
            () = stopping.cancelled() => break Exit::Closed("the control plane is stopping"),
        }
    };
    writer.abort();
    terminals.remove(&shell.id);
    shell.finish(exit);
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "terminal closed", "en")
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell() -> Shell {
        Shell {
            id: "s".into(),
            owner: Owner {
                account_id: "a".into(),
                host_id: "h".into(),
            },
            input: mpsc::channel(1).0,
            output: Mutex::new(Output::default()),
            changed: watch::channel(0).0,
            attachment: AtomicU64::new(0),
        }
    }

    #[test]
    fn reads_resume_from_the_offset_and_report_trimmed_output() {
        let s = shell();
        s.push(b"hello ");
        s.push(b"world");
        let all = s.read(0, 1024);
        assert_eq!((all.data.as_slice(), all.from), (&b"hello world"[..], 0));
        let rest = s.read(6, 1024);
        assert_eq!((rest.data.as_slice(), rest.from), (&b"world"[..], 6));
        assert_eq!(s.read(11, 1024).data.len(), 0);
        // Beyond what was written: nothing, from the end.
        assert_eq!(s.read(99, 1024).from, 11);

        let big = vec![b'x'; BUFFER_BYTES];
        s.push(&big);
        let trimmed = s.read(0, usize::MAX);
        assert_eq!(trimmed.from, 11, "the first 11 bytes left the buffer");
        assert_eq!(trimmed.data.len(), BUFFER_BYTES);
    }

    #[test]
    fn exit_is_told_once_the_output_is_read() {
        let s = shell();
        s.push(b"bye");
        s.finish(Exit::Status(Some(3)));
        assert_eq!(s.read(0, 1).exit, None, "output still to read");
        assert_eq!(s.read(0, 1024).exit, Some(Exit::Status(Some(3))));
        s.finish(Exit::Closed("later"));
        assert_eq!(
            s.read(3, 1024).exit,
            Some(Exit::Status(Some(3))),
            "the first end stays"
        );
    }

    #[test]
    fn a_newer_attachment_takes_over() {
        let s = shell();
        let (first, _rx1) = s.attach();
        let (second, _rx2) = s.attach();
        assert!(!s.is_current(first) && s.is_current(second));
        s.detach(first);
        assert!(!s.abandoned(Duration::ZERO), "the current one is still attached");
        s.detach(second);
        assert!(s.abandoned(Duration::ZERO));
    }
}
