//! Moving bytes and requests between a client's channel and the matching channel on the host's
//! sshd. Session channels are relayed message by message (data, stderr, EOF, exit status and
//! signal, request replies); forwarding and agent channels are plain byte pipes. Writes wait for
//! the receiver's SSH window, so a slow side slows the other down instead of filling memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, client, server};
use tokio::sync::oneshot;

/// How long the host's sshd may take to answer a channel request (pty, exec, subsystem…).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

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
    }
    fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
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
}

impl SessionLink {
    /// The host-side channel, to send requests on.
    pub fn up(&self) -> &ChannelWriteHalf<client::Msg> {
        &self.up
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

/// Starts relaying a session channel in both directions; returns the handle for its requests.
pub fn session(
    down: Channel<server::Msg>,
    up: Channel<client::Msg>,
    handle: server::Handle,
    stats: Arc<Stats>,
) -> SessionLink {
    let id = down.id();
    let (down_rx, down_tx) = down.split();
    let (up_rx, up_tx) = up.split();
    let up_tx = Arc::new(up_tx);
    let replies = Replies::default();
    tokio::spawn(client_to_host(down_rx, up_tx.clone(), stats.clone()));
    tokio::spawn(host_to_client(up_rx, down_tx, handle, id, replies.clone(), stats));
    SessionLink { up: up_tx, replies }
}

async fn client_to_host(
    mut down: ChannelReadHalf,
    up: Arc<ChannelWriteHalf<client::Msg>>,
    stats: Arc<Stats>,
) {
    while let Some(msg) = down.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                stats.add_in(data.len());
                up.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                stats.add_in(data.len());
                up.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => up.eof().await,
            ChannelMsg::Close => break,
            // Requests arrive through the handler's callbacks, which answer them.
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = up.close().await;
}

async fn host_to_client(
    mut up: ChannelReadHalf,
    down: ChannelWriteHalf<server::Msg>,
    handle: server::Handle,
    id: ChannelId,
    replies: Replies,
    stats: Arc<Stats>,
) {
    while let Some(msg) = up.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                stats.add_out(data.len());
                down.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                stats.add_out(data.len());
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

/// Copies bytes both ways between a client channel and a host channel until both sides are done.
pub async fn pipe(down: Channel<server::Msg>, up: Channel<client::Msg>, stats: Arc<Stats>) {
    let mut down = down.into_stream();
    let mut up = up.into_stream();
    match tokio::io::copy_bidirectional(&mut down, &mut up).await {
        Ok((to_host, to_client)) => {
            stats.bytes_in.fetch_add(to_host, Ordering::Relaxed);
            stats.bytes_out.fetch_add(to_client, Ordering::Relaxed);
        }
        Err(e) => tracing::debug!(error = %e, "forwarded channel ended with an error"),
    }
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
