//! The VNC reverse proxy's I/O: plain HTTP to the container's web server (noVNC's files), and the
//! WebSocket to its websockify, over which the proxy authenticates to the VNC server with the host's
//! secret ([`rfb`]) and then relays the browser's RFB stream. Who may use it is decided in
//! `api::vnc`; what headers cross is decided in [`forward`].

pub mod cookie;
pub mod forward;
pub mod rfb;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{Message as BrowserMessage, WebSocket};
use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as UpstreamMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_util::sync::CancellationToken;

/// Upper bound of connecting to a container and finishing the upstream handshakes.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a browser may take over its side of the RFB handshake.
pub const BROWSER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The WebSocket subprotocol of websockify and noVNC (raw bytes in binary messages).
pub const SUBPROTOCOL: &str = "binary";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the host's web VNC at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the host's web VNC did not answer within {0:?}")]
    Timeout(Duration),
    #[error("WebSocket to the host's web VNC: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("browser WebSocket: {0}")]
    Browser(#[source] axum::Error),
    #[error(transparent)]
    Rfb(#[from] rfb::RfbError),
    #[error("the connection closed during the RFB handshake")]
    Closed,
    #[error("HTTP request to the host's web VNC: {0}")]
    Http(#[source] reqwest::Error),
}

/// How the control plane reaches hosts' web VNC servers.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// The port websockify listens on inside each host (the agents' `VNC_PORT`).
    pub port: u16,
    http: reqwest::Client,
}

impl Proxy {
    pub fn new(port: u16) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(UPSTREAM_TIMEOUT)
            // Redirects go back to the browser (rewritten), never followed here; hosts are reached
            // directly whatever proxy the environment names.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Self { port, http })
    }

    /// Sends a GET (or HEAD) for `path_and_query` to the host's web server with only the allowed
    /// headers; answers once the response headers are in (the body streams afterwards).
    pub async fn fetch(
        &self,
        ip: std::net::IpAddr,
        method: reqwest::Method,
        path_and_query: &str,
        headers: axum::http::HeaderMap,
    ) -> Result<reqwest::Response, Error> {
        let addr = SocketAddr::new(ip, self.port);
        let url = format!("http://{addr}{path_and_query}");
        let send = self.http.request(method, url).headers(headers).send();
        match tokio::time::timeout(UPSTREAM_TIMEOUT, send).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_timeout() => Err(Error::Timeout(UPSTREAM_TIMEOUT)),
            Ok(Err(e)) => Err(Error::Http(e)),
            Err(_) => Err(Error::Timeout(UPSTREAM_TIMEOUT)),
        }
    }

    /// Opens websockify's WebSocket on the host and authenticates to its VNC server with `secret`.
    pub async fn open(&self, ip: std::net::IpAddr, secret: &str) -> Result<Upstream, Error> {
        let addr = SocketAddr::new(ip, self.port);
        tokio::time::timeout(UPSTREAM_TIMEOUT, open(addr, secret))
            .await
            .map_err(|_| Error::Timeout(UPSTREAM_TIMEOUT))?
    }
}

/// An authenticated RFB connection to a host's VNC server, ready for the browser's ClientInit.
#[derive(Debug)]
pub struct Upstream {
    ws: WebSocketStream<TcpStream>,
    /// Bytes the server sent after its SecurityResult (normally none: it waits for ClientInit).
    pending: Vec<u8>,
}

async fn open(addr: SocketAddr, secret: &str) -> Result<Upstream, Error> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| Error::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    let mut request = format!("ws://{addr}/websockify").into_client_request()?;
    // websockify sees what a browser loading its own page would send: its own Host (set from the
    // URL) and Origin, and the subprotocol noVNC asks for.
    let headers = request.headers_mut();
    if let Ok(origin) = format!("http://{addr}").parse() {
        headers.insert(axum::http::header::ORIGIN, origin);
    }
    headers.insert(
        axum::http::header::SEC_WEBSOCKET_PROTOCOL,
        axum::http::HeaderValue::from_static(SUBPROTOCOL),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await?;
    let mut handshake = rfb::ServerHandshake::new(secret);
    loop {
        let bytes = match ws.next().await {
            Some(Ok(UpstreamMessage::Binary(b))) => b,
            Some(Ok(UpstreamMessage::Close(_))) | None => return Err(Error::Closed),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        };
        let step = handshake.feed(&bytes)?;
        if !step.reply.is_empty() {
            ws.send(UpstreamMessage::Binary(step.reply.into())).await?;
        }
        if let Some(pending) = step.done {
            return Ok(Upstream { ws, pending });
        }
    }
}

/// Bytes relayed in each direction, for the audit log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub to_browser: u64,
    pub from_browser: u64,
}

/// Who ended a session that got past its handshakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The browser closed or went away (a closed tab resets the connection: not an error).
    Browser,
    /// The host's VNC server or websockify closed.
    Host,
    /// The control plane is stopping.
    Stopping,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Browser => "browser",
            Self::Host => "host",
            Self::Stopping => "stopping",
        }
    }
}

/// Runs the browser's side of the RFB handshake (security None) and then relays both ways until
/// either side closes or `stop` fires. Returns what was relayed, also when it ends in an error.
pub async fn relay(
    mut browser: WebSocket,
    upstream: Upstream,
    stop: CancellationToken,
) -> (Traffic, Result<End, Error>) {
    let mut traffic = Traffic::default();
    let Upstream {
        ws: mut server,
        pending,
    } = upstream;
    let handshake = tokio::time::timeout(BROWSER_HANDSHAKE_TIMEOUT, browser_handshake(&mut browser));
    let rest = match handshake.await {
        Ok(Ok(rest)) => rest,
        Ok(Err(e)) => return (traffic, Err(e)),
        Err(_) => return (traffic, Err(Error::Timeout(BROWSER_HANDSHAKE_TIMEOUT))),
    };
    let result = async {
        if !pending.is_empty() {
            traffic.to_browser += pending.len() as u64;
            browser
                .send(BrowserMessage::Binary(pending.into()))
                .await
                .map_err(Error::Browser)?;
        }
        if !rest.is_empty() {
            traffic.from_browser += rest.len() as u64;
            server.send(UpstreamMessage::Binary(rest.into())).await?;
        }
        let end = loop {
            tokio::select! {
                () = stop.cancelled() => break End::Stopping,
                msg = browser.recv() => match msg {
                    Some(Ok(BrowserMessage::Binary(b))) => {
                        traffic.from_browser += b.len() as u64;
                        server.send(UpstreamMessage::Binary(b)).await?;
                    }
                    // Pings are answered by axum; text has no meaning in RFB.
                    Some(Ok(BrowserMessage::Ping(_) | BrowserMessage::Pong(_) | BrowserMessage::Text(_))) => {}
                    Some(Ok(BrowserMessage::Close(_))) | None => break End::Browser,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "browser WebSocket ended without a close");
                        break End::Browser;
                    }
                },
                msg = server.next() => match msg {
                    Some(Ok(UpstreamMessage::Binary(b))) => {
                        traffic.to_browser += b.len() as u64;
                        if let Err(e) = browser.send(BrowserMessage::Binary(b)).await {
                            tracing::debug!(error = %e, "browser WebSocket gone while sending");
                            break End::Browser;
                        }
                    }
                    Some(Ok(UpstreamMessage::Close(_))) | None => break End::Host,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                },
            }
        };
        Ok(end)
    }
    .await;
    let _ = browser.send(BrowserMessage::Close(None)).await;
    let _ = server.close(None).await;
    (traffic, result)
}

/// The proxy as the browser's VNC server: version, security None; returns what the browser sent
/// after the handshake (its ClientInit, if it came along).
async fn browser_handshake(browser: &mut WebSocket) -> Result<Vec<u8>, Error> {
    let mut handshake = rfb::ClientHandshake::new();
    browser
        .send(BrowserMessage::Binary(handshake.greeting().to_vec().into()))
        .await
        .map_err(Error::Browser)?;
    loop {
        let bytes = match browser.recv().await {
            Some(Ok(BrowserMessage::Binary(b))) => b,
            Some(Ok(BrowserMessage::Close(_))) | None => return Err(Error::Closed),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(Error::Browser(e)),
        };
        let step = handshake.feed(&bytes)?;
        if !step.reply.is_empty() {
            browser
                .send(BrowserMessage::Binary(step.reply.into()))
                .await
                .map_err(Error::Browser)?;
        }
        if let Some(rest) = step.done {
            return Ok(rest);
        }
    }
}
