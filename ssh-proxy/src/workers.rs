//! Connections spread over threads, each running a single-threaded runtime. A relayed connection
//! is a chain of tasks (the client's session loop, the relay tasks, the host's session loop) that
//! wake one another for every packet; on one thread a wake-up is a push onto a local queue, while
//! across the threads of a shared runtime it is a futex call and a context switch, which cost more
//! than the encryption itself. Connections are handed out in turn.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use russh::server;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::{Context, russh_handler};

struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
}

pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Accepted>>,
    threads: Vec<JoinHandle<()>>,
    next: usize,
}

impl Workers {
    /// One worker thread per context. On [`Workers::stop`], open sessions get `drain` to end.
    pub fn start(
        contexts: Vec<Arc<Context>>,
        config: Arc<server::Config>,
        drain: Duration,
    ) -> std::io::Result<Self> {
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for (index, ctx) in contexts.into_iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            let config = config.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ssh-gateway-{index}"))
                .spawn(move || worker(ctx, config, rx, drain))?;
            senders.push(tx);
            threads.push(thread);
        }
        Ok(Self {
            senders,
            threads,
            next: 0,
        })
    }

    /// Gives an accepted connection to the next worker.
    pub fn hand_over(&mut self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand a connection over");
                return;
            }
        };
        if self.senders.is_empty() {
            return;
        }
        let index = self.next % self.senders.len();
        self.next = self.next.wrapping_add(1);
        if self.senders[index].send(Accepted { stream, peer }).is_err() {
            tracing::warn!(%peer, worker = index, "worker gone; connection dropped");
        }
    }

    /// Stops taking connections, gives open ones the drain time to end, then ends them. Blocks.
    pub fn stop(self) {
        drop(self.senders);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn worker(
    ctx: Arc<Context>,
    config: Arc<server::Config>,
    mut accepted: mpsc::UnboundedReceiver<Accepted>,
    drain: Duration,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a gateway worker");
            return;
        }
    };
    runtime.block_on(async move {
        let mut sessions = JoinSet::new();
        loop {
            tokio::select! {
                next = accepted.recv() => match next {
                    Some(Accepted { stream, peer }) => match TcpStream::from_std(stream) {
                        Ok(stream) => {
                            sessions.spawn(serve(ctx.clone(), config.clone(), stream, peer));
                        }
                        Err(e) => tracing::warn!(%peer, error = %e, "cannot take a connection over"),
                    },
                    None => break,
                },
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            }
        }
        let open = sessions.len();
        let drained =
            tokio::time::timeout(drain, async { while sessions.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::info!(open, "ending the sessions still open");
            sessions.shutdown().await;
        }
    });
}

async fn serve(ctx: Arc<Context>, config: Arc<server::Config>, stream: TcpStream, peer: SocketAddr) {
    let handler = russh_handler::Connection::new(ctx, Some(peer));
    match server::run_stream(config, stream, handler).await {
        Ok(session) => {
            if let Err(e) = session.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(%peer, error = %e, "handshake failed"),
    }
}
