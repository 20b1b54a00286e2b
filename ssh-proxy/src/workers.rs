//! Connections spread over threads, each running a single-threaded runtime; connections are
//! handed out in turn. A relayed connection is a chain of tasks (the client's session loop, the
//! relays, the host's session loop) that wake one another for every packet. Within a thread such a
//! wake-up is a push onto a local queue; between threads it is a system call and a context switch,
//! which cost more than encrypting the packet.
//!
//! So each connection is cut in two where the hand-offs are fewest: the client's session loop and
//! the relay towards the client run on the worker that accepted it, the host's session loop and the
//! relay towards the host on the next worker. Only the per-channel queues, [`crate::CHANNEL_BUFFER`]
//! packets deep, cross between the two threads, so one wake-up carries many packets, and the
//! decryption on one side and the encryption on the other run on two cores at once. Since every
//! worker runs tasks of its neighbour's connections, all of them keep running until the last one
//! has drained.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use russh::server;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::runtime::{self, Runtime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::relay::Sides;
use crate::{Context, grace, proxy_protocol, russh_handler};

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
        let runtimes = contexts
            .iter()
            .map(|_| runtime::Builder::new_current_thread().enable_all().build())
            .collect::<std::io::Result<Vec<Runtime>>>()?;
        let handles: Vec<runtime::Handle> = runtimes.iter().map(|rt| rt.handle().clone()).collect();
        let running = Arc::new(watch::Sender::new(runtimes.len()));
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for (index, (ctx, runtime)) in contexts.into_iter().zip(runtimes).enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            let worker = Worker {
                ctx,
                config: config.clone(),
                sides: Sides {
                    client: handles[index].clone(),
                    host: handles[(index + 1) % handles.len()].clone(),
                },
                drain,
                running: running.clone(),
            };
            let started = std::thread::Builder::new()
                .name(format!("ssh-gateway-{index}"))
                .spawn(move || worker.run(&runtime, rx));
            let thread = match started {
                Ok(thread) => thread,
                Err(e) => {
                    // The workers already started must not wait for these at their end.
                    running.send_modify(|n| *n -= handles.len() - index);
                    return Err(e);
                }
            };
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

struct Worker {
    ctx: Arc<Context>,
    config: Arc<server::Config>,
    /// Where the two halves of this worker's connections run (see the module documentation).
    sides: Sides,
    drain: Duration,
    /// Workers whose own connections are not all over yet.
    running: Arc<watch::Sender<usize>>,
}

impl Worker {
    fn run(self, runtime: &Runtime, mut accepted: mpsc::UnboundedReceiver<Accepted>) {
        runtime.block_on(async move {
            let mut sessions = JoinSet::new();
            loop {
                tokio::select! {
                    next = accepted.recv() => match next {
                        Some(Accepted { stream, peer }) => match TcpStream::from_std(stream) {
                            Ok(stream) => {
                                let (ctx, config) = (self.ctx.clone(), self.config.clone());
                                sessions.spawn(serve(ctx, config, self.sides.clone(), stream, peer));
                            }
                            Err(e) => tracing::warn!(%peer, error = %e, "cannot take a connection over"),
                        },
                        None => break,
                    },
                    Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                }
            }
            let open = sessions.len();
            let drained = tokio::time::timeout(self.drain, async {
                while sessions.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::info!(open, "ending the sessions still open");
                sessions.shutdown().await;
            }
            // The previous worker's connections may still have their host side here.
            self.running.send_modify(|n| *n -= 1);
            let _ = self.running.subscribe().wait_for(|n| *n == 0).await;
        });
    }
}

async fn serve(
    ctx: Arc<Context>,
    config: Arc<server::Config>,
    sides: Sides,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let mut stream = BufReader::with_capacity(crate::READ_BUFFER, stream);
    let client = match client_address(&ctx.proxy_protocol, &mut stream, peer).await {
        Ok(client) => client,
        Err(e) => {
            tracing::info!(%peer, error = %e, "connection refused: PROXY protocol");
            return;
        }
    };
    let ticket = match ctx.gate.enter(client.ip()) {
        Ok(ticket) => ticket,
        Err(refusal) => {
            // At debug: a flood would otherwise fill the log as well.
            tracing::debug!(%client, ?refusal, "connection refused: too many not logged in");
            return;
        }
    };
    let (stream, logged_in) = grace::deadline(stream, ctx.login_grace);
    let login = russh_handler::Login { ticket, logged_in };
    let handler = russh_handler::Connection::new(ctx, sides, Some(client), login);
    match server::run_stream(config, stream, handler).await {
        Ok(session) => {
            if let Err(e) = session.await {
                tracing::debug!(%client, error = %e, "connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(%client, error = %e, "handshake failed"),
    }
}

/// The client's address: the TCP peer's, or the one a trusted balancer's PROXY header names.
async fn client_address(
    proxy: &crate::ProxyProtocol,
    stream: &mut BufReader<TcpStream>,
    peer: SocketAddr,
) -> Result<SocketAddr, proxy_protocol::Error> {
    if proxy.mode == proxy_protocol::Mode::Off {
        return Ok(peer);
    }
    proxy_protocol::check_source(peer.ip(), &proxy.trusted)?;
    tokio::time::timeout(
        proxy.timeout,
        proxy_protocol::read_header(stream, proxy.mode, peer),
    )
    .await
    .map_err(|_| proxy_protocol::Error::Io(std::io::ErrorKind::TimedOut))?
}
