//! A host's web desktop as a browser reaches it through the control plane's VNC proxy (the
//! WebSocket noVNC opens, the RFB handshake the proxy offers, the first framebuffer update), and
//! what of the desktop runs inside the host container, for the tests and the density benchmark.

use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::docker::exec_root;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Bound of each step (connecting, each RFB message).
pub const STEP: Duration = Duration::from_secs(30);

/// An open desktop: an RFB session through the proxy that has received its first frame.
#[derive(Debug)]
pub struct Desktop {
    ws: Ws,
    /// The desktop's size from ServerInit.
    pub size: (u16, u16),
    /// From the WebSocket request to the first FramebufferUpdate's header.
    pub first_frame: Duration,
}

/// Opens `{base}{vnc_path}/websockify` as noVNC does (subprotocol `binary`, the page's Origin) with
/// `bearer`, runs the RFB handshake as the browser (security None, shared), asks for the whole
/// screen and waits for the first FramebufferUpdate.
pub async fn open(base: &str, vnc_path: &str, bearer: &str) -> Result<Desktop, String> {
    let t0 = Instant::now();
    let url = format!("{}{vnc_path}/websockify", base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    h.insert("origin", base.parse().map_err(|_| "bad origin")?);
    h.insert(
        "sec-websocket-protocol",
        "binary".parse().map_err(|_| "bad protocol")?,
    );
    h.insert(
        "authorization",
        format!("Bearer {bearer}").parse().map_err(|_| "bad token")?,
    );
    let (mut ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .map_err(|_| format!("WebSocket not open within {STEP:?}"))?
        .map_err(|e| format!("WebSocket refused: {e}"))?;
    let mut buf = Vec::new();
    read_at_least(&mut ws, &mut buf, 12).await?;
    if &buf[..12] != b"RFB 003.008\n" {
        return Err(format!("not RFB 3.8: {:?}", &buf[..12]));
    }
    buf.drain(..12);
    send(&mut ws, b"RFB 003.008\n").await?;
    read_at_least(&mut ws, &mut buf, 2).await?;
    if buf[..2] != [1, 1] {
        return Err(format!("the proxy did not offer only None: {:?}", &buf[..2]));
    }
    buf.drain(..2);
    send(&mut ws, &[1]).await?;
    read_at_least(&mut ws, &mut buf, 4).await?;
    if buf[..4] != [0, 0, 0, 0] {
        return Err(format!("SecurityResult {:?}", &buf[..4]));
    }
    buf.drain(..4);
    send(&mut ws, &[1]).await?;
    // ServerInit: width, height, 16 bytes of pixel format, name length, name.
    read_at_least(&mut ws, &mut buf, 24).await?;
    let width = u16::from_be_bytes([buf[0], buf[1]]);
    let height = u16::from_be_bytes([buf[2], buf[3]]);
    let name_len = u32::from_be_bytes([buf[20], buf[21], buf[22], buf[23]]) as usize;
    read_at_least(&mut ws, &mut buf, 24 + name_len).await?;
    let mut request = vec![3, 0, 0, 0, 0, 0];
    request.extend_from_slice(&width.to_be_bytes());
    request.extend_from_slice(&height.to_be_bytes());
    send(&mut ws, &request).await?;
    let mut update = buf.split_off(24 + name_len);
    read_at_least(&mut ws, &mut update, 4).await?;
    if update[0] != 0 {
        return Err(format!(
            "expected a FramebufferUpdate, got message type {}",
            update[0]
        ));
    }
    Ok(Desktop {
        ws,
        size: (width, height),
        first_frame: t0.elapsed(),
    })
}

impl Desktop {
    /// Closes as a browser does and waits for the proxy's Close (pixels may still be on their way).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(STEP, async {
            while let Some(Ok(msg)) = self.ws.next().await {
                if msg.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}

async fn read_at_least(ws: &mut Ws, buf: &mut Vec<u8>, n: usize) -> Result<(), String> {
    while buf.len() < n {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .map_err(|_| format!("no RFB data within {STEP:?}; have {} bytes", buf.len()))?;
        match msg {
            Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
            Some(Ok(Message::Close(c))) => return Err(format!("closed while waiting for RFB data: {c:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("reading RFB: {e}")),
            None => return Err("the WebSocket ended while waiting for RFB data".into()),
        }
    }
    Ok(())
}

async fn send(ws: &mut Ws, bytes: &[u8]) -> Result<(), String> {
    ws.send(Message::Binary(bytes.to_vec().into()))
        .await
        .map_err(|e| format!("sending RFB: {e}"))
}

/// The desktop's programs running in a host container (Xvnc, websockify, the session), by name.
pub async fn programs(container: &str) -> Vec<String> {
    let out = exec_root(container, &["ps", "-eo", "comm="]).await;
    assert!(out.success(), "ps in {container}: {}", out.both());
    out.stdout
        .lines()
        .map(str::trim)
        .filter(|c| {
            matches!(
                *c,
                "Xvnc" | "openbox" | "tint2" | "xterm" | "python3" | "dbus-daemon"
            )
        })
        .map(str::to_owned)
        .collect()
}
