//! Moving bytes and requests between a client's channel and the matching channel on the host's
//! sshd, message by message: data, stderr, EOF, exit status and signal, and the replies to the
//! client's requests. Writes wait for the receiver's SSH window, so a slow receiver slows the
//! sender down.
//!
//! One buffer is deliberately elastic. russh pushes back on a sender by pausing the connection's
//! whole read loop, which then also stops reading the peer's window adjustments. With both
//! directions of a channel busy (an echo, rsync), the client's loop would wait for the host side
//! to take data while the host side waits for the client's window to open, which only the paused
//! loop can read: a deadlock. So what the client sends is always taken off its connection at once
//! into a per-channel queue, by a task that keeps reading while its write to the host waits; only
//! past [`BACKLOG_LIMIT`] bytes not yet taken by the host does the client's connection wait.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, client, server};
use tokio::sync::oneshot;

use crate::recording::Tap;

/// How long the host's sshd may take to answer a channel request (pty, exec, subsystem…).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes from the client a channel may hold that the host has not taken yet, before the client's
/// connection waits (see the module documentation).
pub const BACKLOG_LIMIT: usize = 128 << 20;

/// Bytes relayed on one client connection, over all its channels.
#[derive(Debug, Default)]
pub struct Stats {
    /// From the client to the host.
    pub bytes_in: AtomicU64,
    /// From the host to the client.
    pub bytes_out: AtomicU64,
}

impl Stats {
    fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        crate::metrics::get().relayed_to_host(n);
    }
    fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        crate::metrics::get().relayed_to_client(n);
    }
    pub fn totals(&self) -> (u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        )
    }
}

type Replies = Arc<Mutex<VecDeque<oneshot::Sender<bool>>>>;

/// The upstream side of a relayed session channel, for the requests the client sends on it.
pub struct SessionLink {
    up: Arc<ChannelWriteHalf<client::Msg>>,
    replies: Replies,
    /// The session's recorder, once it has one (see `recording`).
    pub tap: Tap,
}

impl SessionLink {
    /// The host-side channel, to send requests on.
    pub fn up(&self) -> &ChannelWriteHalf<client::Msg> {
        &self.up
    }

    /// The host-side channel, shared (a recording that must end the session closes it).
    pub fn up_shared(&self) -> Arc<ChannelWriteHalf<client::Msg>> {
        self.up.clone()
    }

    /// Registers interest in the reply to the next request sent with `want_reply`; call before
    /// sending it. sshd answers requests in order, so replies are matched first in, first out.
    pub fn expect_reply(&self) -> Pending {
        let (tx, rx) = oneshot::channel();
        lock(&self.replies).push_back(tx);
        Pending(rx)
    }
}

/// A reply not yet received.
pub struct Pending(oneshot::Receiver<bool>);

impl Pending {
    /// The host's answer: false on failure, on timeout, or when the channel went away.
    pub async fn outcome(self) -> bool {
        matches!(tokio::time::timeout(REPLY_TIMEOUT, self.0).await, Ok(Ok(true)))
    }
}

fn lock(replies: &Replies) -> std::sync::MutexGuard<'_, VecDeque<oneshot::Sender<bool>>> {
    replies.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The runtimes of a connection's two halves (see `workers`). Each relay runs beside the session
/// loop it feeds, so that only the deep per-channel queues cross between threads.
#[derive(Debug, Clone)]
pub struct Sides {
    /// The client's session loop, and the relays towards the client.
    pub client: tokio::runtime::Handle,
    /// The host's session loop, and the relays towards the host.
    pub host: tokio::runtime::Handle,
}

/// Starts relaying a session channel in both directions; returns the handle for its requests.
pub fn session(
    down: Channel<server::Msg>,
    up: Channel<client::Msg>,
    handle: server::Handle,
    sides: &Sides,
    stats: Arc<Stats>,
) -> SessionLink {
    let id = down.id();
    let (down_rx, down_tx) = down.split();
    let (up_rx, up_tx) = up.split();
    let up_tx = Arc::new(up_tx);
    let replies = Replies::default();
    let tap = Tap::default();
    sides
        .host
        .spawn(client_to_host(down_rx, up_tx.clone(), stats.clone()));
    sides.client.spawn(host_to_client(
        up_rx,
        down_tx,
        handle,
        id,
        replies.clone(),
        stats,
        Some(tap.clone()),
    ));
    SessionLink {
        up: up_tx,
        replies,
        tap,
    }
}

type Sending = Pin<Box<dyn Future<Output = (bool, usize)> + Send>>;

/// Client to host, in one task that never stops reading the client's channel while a write to the
/// host waits for its window (see the module documentation): what arrives meanwhile is queued, up
/// to [`BACKLOG_LIMIT`] bytes.
async fn client_to_host(
    mut down: ChannelReadHalf,
    up: Arc<ChannelWriteHalf<client::Msg>>,
    stats: Arc<Stats>,
) {
    let mut queue: VecDeque<ChannelMsg> = VecDeque::new();
    // Bytes queued or being written.
    let mut backlog = 0usize;
    let mut reading = true;
    let mut sending: Option<Sending> = None;
    loop {
        if sending.is_none() {
            match queue.pop_front() {
                Some(ChannelMsg::Close) => break,
                Some(msg) => sending = Some(Box::pin(forward(up.clone(), msg, stats.clone()))),
                None if !reading => break,
                None => {}
            }
        }
        tokio::select! {
            msg = down.wait(), if reading && backlog <= BACKLOG_LIMIT => match msg {
                Some(msg) => {
                    backlog += payload(&msg);
                    reading = !matches!(msg, ChannelMsg::Close);
                    queue.push_back(msg);
                }
                None => {
                    reading = false;
                    queue.push_back(ChannelMsg::Close);
                }
            },
            (sent, size) = finish(&mut sending) => {
                sending = None;
                backlog -= size;
                if !sent {
                    break;
                }
            }
        }
    }
    let _ = up.close().await;
}

fn payload(msg: &ChannelMsg) -> usize {
    match msg {
        ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => data.len(),
        _ => 0,
    }
}

/// The write in progress, if any; never resolves when there is none.
async fn finish(sending: &mut Option<Sending>) -> (bool, usize) {
    match sending {
        Some(write) => write.await,
        None => std::future::pending().await,
    }
}

/// Writes one message of the client's to the host: whether it went, and its payload size.
async fn forward(
    up: Arc<ChannelWriteHalf<client::Msg>>,
    msg: ChannelMsg,
    stats: Arc<Stats>,
) -> (bool, usize) {
    let size = payload(&msg);
    stats.add_in(size);
    let sent = match msg {
        ChannelMsg::Data { data } => up.data_bytes(data).await,
        ChannelMsg::ExtendedData { data, ext } => up.extended_data_bytes(ext, data).await,
        ChannelMsg::Eof => up.eof().await,
        // Requests arrive through the handler's callbacks, which answer them.
        _ => Ok(()),
    };
    (sent.is_ok(), size)
}

async fn host_to_client(
    mut up: ChannelReadHalf,
    down: ChannelWriteHalf<server::Msg>,
    handle: server::Handle,
    id: ChannelId,
    replies: Replies,
    stats: Arc<Stats>,
    tap: Option<Tap>,
) {
    while let Some(msg) = up.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                stats.add_out(data.len());
                if let Some(recorder) = tap.as_ref().and_then(|t| t.get()) {
                    recorder.output(&data).await;
                }
                down.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                stats.add_out(data.len());
                if let Some(recorder) = tap.as_ref().and_then(|t| t.get()) {
                    recorder.output(&data).await;
                }
                down.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => down.eof().await,
            ChannelMsg::ExitStatus { exit_status } => down.exit_status(exit_status).await,
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => handle
                .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                .await
                .map_err(|()| russh::Error::SendError),
            ChannelMsg::Success | ChannelMsg::Failure => {
                let ok = matches!(msg, ChannelMsg::Success);
                if let Some(waiting) = lock(&replies).pop_front() {
                    let _ = waiting.send(ok);
                }
                Ok(())
            }
            ChannelMsg::Close => break,
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    // Whoever still waits for a reply gets a failure (their sender is dropped).
    lock(&replies).clear();
    let _ = down.close().await;
}

/// Relays a forwarding or agent channel (data, EOF, close) both ways until both sides are done.
pub async fn pipe(
    down: Channel<server::Msg>,
    up: Channel<client::Msg>,
    handle: server::Handle,
    sides: &Sides,
    stats: Arc<Stats>,
) {
    let id = down.id();
    let (down_rx, down_tx) = down.split();
    let (up_rx, up_tx) = up.split();
    let inbound = sides
        .host
        .spawn(client_to_host(down_rx, Arc::new(up_tx), stats.clone()));
    let outbound = sides.client.spawn(host_to_client(
        up_rx,
        down_tx,
        handle,
        id,
        Replies::default(),
        stats,
        None,
    ));
    let _ = tokio::join!(inbound, outbound);
}

/// Tells the client why its session cannot go on (on stderr), then ends the channel with exit
/// status 1: a stopped host answers at once instead of hanging.
pub async fn refuse(down: Channel<server::Msg>, message: String) {
    let line = format!("cloud-cli-proxy: {message}\r\n");
    let _ = down.extended_data_bytes(1, line.into_bytes()).await;
    let _ = down.exit_status(1).await;
    let _ = down.eof().await;
    let _ = down.close().await;
}
