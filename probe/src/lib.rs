//! The egress probe (`cloud-cli-proxy-probe`): the three things an egress test asks of the outside
//! world, served by the operator (or the tests) instead of a public service:
//!
//! - `GET /generate_204` answers `204` (connectivity);
//! - `GET /ip` answers the caller's address as plain text (the exit IP);
//! - DNS: an `A` query for `--dns-name` (or a name under it) is answered with the address of whoever
//!   asked; through a resolver, that is the resolver (the DNS-leak check).
//!
//! Point `EGRESS_PROBE_CONNECTIVITY_URL`, `EGRESS_PROBE_IP_URL` and `EGRESS_PROBE_DNS_NAME` at it
//! (the DNS name delegated to this server). It is operator infrastructure, run where the egress
//! tests can reach it, not on the nodes; the agent's side of a test (`agent::probe_client`) uses only
//! this crate's DNS messages ([`dns`]).

pub mod dns;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::{TcpListener, UdpSocket};

/// Settings of the probe. Every flag can also be given by the environment variable beside it.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "cloud-cli-proxy-probe",
    version,
    about = "Egress probe: connectivity (204), caller IP, and whoami DNS"
)]
pub struct Config {
    /// HTTP address (`/generate_204`, `/ip`).
    #[arg(long, env = "PROBE_HTTP_ADDR", default_value = "0.0.0.0:80")]
    pub http_listen: SocketAddr,
    /// DNS address (UDP).
    #[arg(long, env = "PROBE_DNS_ADDR", default_value = "0.0.0.0:53")]
    pub dns_listen: SocketAddr,
    /// The name whose `A` record is the asker's address, e.g. `whoami.probe.example.net`; names
    /// under it answer the same, anything else is refused.
    #[arg(long, env = "PROBE_DNS_NAME")]
    pub dns_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--dns-name `{0}` is not a DNS name")]
    BadName(String),
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
}

/// Whether `name` can be served: dot-separated labels of 1-63 letters, digits or `-`.
pub fn valid_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The caller's address as text: IPv4 callers on a dual-stack socket show as IPv4.
fn caller(addr: SocketAddr) -> IpAddr {
    addr.ip().to_canonical()
}

pub fn router() -> Router {
    Router::new()
        .route("/generate_204", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/ip",
            get(|ConnectInfo(addr): ConnectInfo<SocketAddr>| async move {
                (
                    [
                        (header::CONTENT_TYPE, "text/plain"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    caller(addr).to_string(),
                )
                    .into_response()
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}

/// Serves HTTP on `http` and DNS on `dns` (UDP) and `dns_tcp` until `shutdown`. DNS over TCP is
/// what resolvers behind proxies without UDP (an HTTP proxy) use.
pub async fn run(
    config: &Config,
    http: TcpListener,
    dns: UdpSocket,
    dns_tcp: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if !valid_name(&config.dns_name) {
        return Err(Error::BadName(config.dns_name.clone()));
    }
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tracing::info!(
        http = ?http.local_addr().ok(),
        dns = ?dns.local_addr().ok(),
        name = %config.dns_name,
        "probe listening"
    );
    let dns = Arc::new(dns);
    let zone = config.dns_name.clone();
    let dns_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            tokio::select! {
                _ = stop_rx.changed() => break,
                received = dns.recv_from(&mut buf) => {
                    let Ok((len, from)) = received else { continue };
                    if let Some(reply) = buf.get(..len).and_then(|q| dns::answer(q, caller(from), &zone)) {
                        let _ = dns.send_to(&reply, from).await;
                    }
                }
            }
        }
    });
    let zone = config.dns_name.clone();
    let mut tcp_stop = stop_tx.subscribe();
    let tcp_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tcp_stop.changed() => break,
                accepted = dns_tcp.accept() => {
                    let Ok((stream, from)) = accepted else { continue };
                    tokio::spawn(serve_dns_tcp(stream, caller(from), zone.clone()));
                }
            }
        }
    });
    let served = axum::serve(http, router().into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
    let _ = dns_task.await;
    let _ = tcp_task.await;
    served.map_err(Error::Http)
}

/// DNS over TCP: length-prefixed messages, answered in turn until the client closes (or idles
/// for 10 s).
async fn serve_dns_tcp(mut stream: tokio::net::TcpStream, from: IpAddr, zone: String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    loop {
        let mut len = [0u8; 2];
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_exact(&mut len)).await;
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(reply) = dns::answer(&query, from, &zone) else {
            return;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&reply_len.to_be_bytes());
        out.extend_from_slice(&reply);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert!(super::valid_name("whoami.probe.example.net"));
        assert!(super::valid_name("whoami.probe.test."));
        assert!(!super::valid_name(""));
        assert!(!super::valid_name("a..b"));
        assert!(!super::valid_name("bad_name.test"));
        assert!(!super::valid_name(&"a".repeat(64)));
    }
}
