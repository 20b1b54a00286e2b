//! The VNC reverse proxy against a real host container (TigerVNC + websockify/noVNC): the web client
//! page, its assets and its WebSocket load through both routes, for the owner (with the session
//! cookie, as a browser would) and for the operator (with a bearer token); the RFB handshake through
//! the proxy needs no secret and reaches the desktop. Another tenant, an anonymous client, a page of
//! another site, and a direct connection to the container's web VNC without the secret are refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::time::Duration;

use cloud_cli_proxy_tests::fixtures::unique;
use cloud_cli_proxy_tests::hosts::CREATE_LIMIT;
use cloud_cli_proxy_tests::{Node, assert_error, eventually};
use futures::{SinkExt as _, StreamExt as _};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The desktop size host-init gives Xvnc (`VNC_GEOMETRY`'s default).
const DESKTOP: (u16, u16) = (1280, 800);
const STEP: Duration = Duration::from_secs(20);

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// How a request proves who it is.
#[derive(Clone, Copy)]
enum Cred<'a> {
    None,
    Bearer(&'a str),
    Cookie(&'a str),
}

fn with_cred(req: reqwest::RequestBuilder, cred: Cred<'_>) -> reqwest::RequestBuilder {
    match cred {
        Cred::None => req,
        Cred::Bearer(t) => req.bearer_auth(t),
        Cred::Cookie(c) => req.header(COOKIE, c),
    }
}

async fn get(base: &str, path: &str, cred: Cred<'_>) -> reqwest::Response {
    with_cred(http().get(format!("{base}{path}")), cred)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `POST …/vnc-session`: the `name=value` of the cookie it sets, after checking its attributes.
async fn vnc_cookie(base: &str, vnc_path: &str, token: &str) -> String {
    let resp = http()
        .post(format!("{base}{vnc_path}-session"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{vnc_path}-session");
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in [
        "ccp_vnc=",
        &format!("Path={vnc_path};"),
        "HttpOnly",
        "SameSite=Strict",
    ] {
        assert!(set.contains(attribute), "Set-Cookie lacks {attribute}: {set}");
    }
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["url"], format!("{vnc_path}/"));
    set.split(';').next().unwrap().to_owned()
}

/// Opens the proxy's WebSocket as noVNC does (subprotocol `binary`, the page's Origin).
async fn ws_connect(base: &str, path: &str, cred: Cred<'_>, origin: &str) -> Result<Ws, tungstenite::Error> {
    let url = format!("{}{path}", base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("origin", origin.parse().unwrap());
    h.insert("sec-websocket-protocol", "binary".parse().unwrap());
    match cred {
        Cred::None => {}
        Cred::Bearer(t) => {
            h.insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Cred::Cookie(c) => {
            h.insert("cookie", c.parse().unwrap());
        }
    }
    tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("WebSocket connect timed out")
        .map(|(ws, _)| ws)
}

/// Reads until `buf` holds `n` bytes.
async fn read_at_least(ws: &mut Ws, buf: &mut Vec<u8>, n: usize) {
    while buf.len() < n {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no RFB data within {STEP:?}; have {buf:?}"));
        match msg {
            Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
            Some(Ok(Message::Close(c))) => panic!("closed while waiting for {n} bytes (have {buf:?}): {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("reading RFB: {e}; have {buf:?}"),
            None => panic!("stream ended while waiting for {n} bytes; have {buf:?}"),
        }
    }
}

async fn send(ws: &mut Ws, bytes: &[u8]) {
    ws.send(Message::Binary(bytes.to_vec().into())).await.unwrap();
}

/// What a browser's noVNC does through the proxy: version 3.8, security None, SecurityResult OK,
/// ClientInit (shared), ServerInit. Returns the desktop size and name.
async fn rfb_as_browser(ws: &mut Ws) -> (u16, u16, String) {
    let mut buf = Vec::new();
    read_at_least(ws, &mut buf, 12).await;
    assert_eq!(&buf[..12], b"RFB 003.008\n");
    buf.drain(..12);
    send(ws, b"RFB 003.008\n").await;
    read_at_least(ws, &mut buf, 2).await;
    assert_eq!(&buf[..2], [1, 1], "the proxy offers exactly security type None");
    buf.drain(..2);
    send(ws, &[1]).await;
    read_at_least(ws, &mut buf, 4).await;
    assert_eq!(&buf[..4], [0, 0, 0, 0], "SecurityResult OK");
    buf.drain(..4);
    send(ws, &[1]).await;
    // ServerInit: width, height, 16 bytes of pixel format, name length, name.
    read_at_least(ws, &mut buf, 24).await;
    let width = u16::from_be_bytes([buf[0], buf[1]]);
    let height = u16::from_be_bytes([buf[2], buf[3]]);
    let name_len = u32::from_be_bytes([buf[20], buf[21], buf[22], buf[23]]) as usize;
    read_at_least(ws, &mut buf, 24 + name_len).await;
    let name = String::from_utf8_lossy(&buf[24..24 + name_len]).into_owned();
    // A FramebufferUpdateRequest of the whole screen gets pixels back: the relay works both ways.
    let mut request = vec![3, 0, 0, 0, 0, 0];
    request.extend_from_slice(&width.to_be_bytes());
    request.extend_from_slice(&height.to_be_bytes());
    send(ws, &request).await;
    let mut update = buf.split_off(24 + name_len);
    read_at_least(ws, &mut update, 4).await;
    assert_eq!(update[0], 0, "a FramebufferUpdate follows the request");
    (width, height, name)
}

/// The page, one of its assets, and the WebSocket with the RFB handshake, through one route.
async fn loads_through(base: &str, vnc_path: &str, cred: Cred<'_>, who: &str) {
    for index in [vnc_path.to_owned(), format!("{vnc_path}/")] {
        let resp = get(base, &index, cred).await;
        assert_eq!(resp.status(), 303, "{who}: GET {index}");
        let location = resp.headers()[LOCATION].to_str().unwrap().to_owned();
        // `/v1/{scope}/hosts/{id}/vnc` → the dashboard's own viewer for that host.
        let parts: Vec<&str> = vnc_path.split('/').collect();
        let viewer = format!("/ui/desktop.html?scope={}&host={}", parts[2], parts[4]);
        assert_eq!(location, viewer, "{who}: redirect");
    }
    // The host's own page still passes through, but sandboxed: no script of the host's runs in
    // our origin, and its scripts come back as opaque bytes.
    let page = get(base, &format!("{vnc_path}/vnc.html"), cred).await;
    assert_eq!(page.status(), 200, "{who}: the host's page");
    assert!(page.headers().get(SET_COOKIE).is_none());
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("sandbox;"), "{who}: {csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("noVNC"), "{who}: not the noVNC page: {html:.300}");
    let asset = get(base, &format!("{vnc_path}/app/ui.js"), cred).await;
    assert_eq!(asset.status(), 200, "{who}: app/ui.js");
    assert_eq!(
        asset.headers()["content-type"],
        "application/octet-stream",
        "{who}: a host's script is not served as script"
    );

    let origin = base.to_owned();
    let mut ws = ws_connect(base, &format!("{vnc_path}/websockify"), cred, &origin)
        .await
        .unwrap_or_else(|e| panic!("{who}: WebSocket refused: {e}"));
    let (w, h, name) = rfb_as_browser(&mut ws).await;
    assert_eq!((w, h), DESKTOP, "{who}: desktop {name}");
    close(ws).await;
}

/// Closes as a browser does: sends Close and reads until the proxy's Close (pixels may still be
/// on their way).
async fn close(mut ws: Ws) {
    ws.close(None).await.unwrap();
    let drained = tokio::time::timeout(STEP, async {
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
        }
    });
    drained.await.expect("the proxy did not answer Close");
}

fn refused_with(result: Result<Ws, tungstenite::Error>, status: u16, what: &str) {
    match result {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), status, "{what}"),
        Err(e) => panic!("{what}: expected HTTP {status}, got {e}"),
        Ok(_) => panic!("{what}: the WebSocket was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vnc_proxy_for_owner_and_admin_only() {
    let node = Node::embedded(&[]).await;
    let base = node.cp.base_url();
    let owner_name = unique("vnc");
    let (owner, owner_api) = node.admin.tenant(&owner_name, "owner-password-1").await;
    let owner_id = owner["id"].as_str().unwrap().to_owned();
    let (_, other_api) = node.admin.tenant(&unique("other"), "other-password-1").await;
    let host = node.create_host(&owner_id).await;
    node.task_succeeded(&host.task_id, CREATE_LIMIT, "create").await;
    let user_path = format!("/v1/user/hosts/{}/vnc", host.id);
    let admin_path = format!("/v1/admin/hosts/{}/vnc", host.id);

    // The first request starts the desktop: wait until websockify serves the page through the proxy.
    eventually(Duration::from_secs(90), "noVNC through the proxy", || async {
        let r = get(
            &base,
            &format!("{user_path}/vnc.html"),
            Cred::Bearer(owner_api.token()),
        )
        .await;
        (r.status() == 200).then_some(())
    })
    .await;

    // The owner as a browser: a cookie from vnc-session, nothing else.
    let owner_cookie = vnc_cookie(&base, &user_path, owner_api.token()).await;
    loads_through(&base, &user_path, Cred::Cookie(&owner_cookie), "owner (cookie)").await;
    loads_through(
        &base,
        &user_path,
        Cred::Bearer(owner_api.token()),
        "owner (bearer)",
    )
    .await;
    // The operator on the admin route, with its token and with its own cookie.
    loads_through(
        &base,
        &admin_path,
        Cred::Bearer(node.admin.token()),
        "admin (bearer)",
    )
    .await;
    let admin_cookie = vnc_cookie(&base, &admin_path, node.admin.token()).await;
    loads_through(&base, &admin_path, Cred::Cookie(&admin_cookie), "admin (cookie)").await;

    refusals(
        &node,
        &base,
        &user_path,
        &admin_path,
        &owner_cookie,
        other_api.token(),
    )
    .await;

    // Each WebSocket session is on record, with its byte counts and duration.
    let events = eventually(
        Duration::from_secs(20),
        "four vnc.session_ended events",
        || async {
            let r = node
                .admin
                .get(&format!("/v1/admin/events?type=vnc.&host_id={}", host.id))
                .await;
            let ended: Vec<serde_json::Value> = r
                .data()
                .iter()
                .filter(|e| e["type"] == "vnc.session_ended")
                .cloned()
                .collect();
            (ended.len() >= 4).then_some(r.data().clone())
        },
    )
    .await;
    let started = events
        .iter()
        .filter(|e| e["type"] == "vnc.session_started")
        .count();
    assert_eq!(started, 4, "{events:#?}");
    for e in events.iter().filter(|e| e["type"] == "vnc.session_ended") {
        assert_eq!(e["outcome"], "success", "{e}");
        assert_eq!(e["user_id"], owner_id.as_str(), "{e}");
        assert!(e["details"]["bytes_to_browser"].as_u64().unwrap() > 24, "{e}");
        assert!(e["details"]["bytes_from_browser"].as_u64().unwrap() > 0, "{e}");
        assert!(e["details"]["duration_ms"].is_u64(), "{e}");
        assert_eq!(e["details"]["closed_by"], "browser", "{e}");
    }

    direct_connection_is_refused(&node, &host.short_id).await;
}

/// Another tenant, anonymous clients, a cookie on the wrong route, and another site's page.
async fn refusals(
    node: &Node,
    base: &str,
    user_path: &str,
    admin_path: &str,
    owner_cookie: &str,
    other_token: &str,
) {
    let page = |p: &str| format!("{p}/vnc.html");
    let ws = |p: &str| format!("{p}/websockify");
    let origin = base.to_owned();

    // Another tenant: the host does not exist for them; the admin route is not theirs at all.
    let r = get(base, &page(user_path), Cred::Bearer(other_token)).await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let r = node
        .admin
        .anonymous()
        .with_token(other_token)
        .post(&format!("{user_path}-session"), None)
        .await;
    assert_error(&r, 404, "not_found");
    assert_eq!(
        get(base, &page(admin_path), Cred::Bearer(other_token))
            .await
            .status(),
        403
    );
    refused_with(
        ws_connect(base, &ws(user_path), Cred::Bearer(other_token), &origin).await,
        404,
        "another tenant's WebSocket",
    );

    // Anonymous.
    for p in [user_path.to_owned(), page(user_path), page(admin_path)] {
        let r = get(base, &p, Cred::None).await;
        assert_eq!(r.status(), 401, "anonymous GET {p}");
    }
    for p in [user_path, admin_path] {
        refused_with(
            ws_connect(base, &ws(p), Cred::None, &origin).await,
            401,
            "anonymous WebSocket",
        );
    }
    // A forged or stale cookie is no cookie.
    let forged = format!("{}x", owner_cookie);
    assert_eq!(
        get(base, &page(user_path), Cred::Cookie(&forged)).await.status(),
        401
    );

    // The owner's cookie names the user route and this host only.
    assert_eq!(
        get(base, &page(admin_path), Cred::Cookie(owner_cookie))
            .await
            .status(),
        401
    );

    // A page of another site cannot open the desktop with the browser's cookie.
    refused_with(
        ws_connect(
            base,
            &ws(user_path),
            Cred::Cookie(owner_cookie),
            "https://evil.example",
        )
        .await,
        403,
        "cross-site WebSocket",
    );
}

/// The container's websockify answers anyone on the node's network, but its VNC server insists on
/// VncAuth: choosing None is refused, and a response made without the secret fails. Run last: a
/// few failures make TigerVNC blacklist websockify's address for a while.
async fn direct_connection_is_refused(node: &Node, short_id: &str) {
    let ip = node.host_ip(short_id).await;
    let url = format!("ws://{ip}:6080/websockify");

    let security_types = |buf: &[u8]| buf[1..1 + usize::from(buf[0])].to_vec();

    // Choosing None although it is not offered.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    let mut buf = Vec::new();
    read_at_least(&mut ws, &mut buf, 12).await;
    assert_eq!(&buf[..12], b"RFB 003.008\n");
    send(&mut ws, b"RFB 003.008\n").await;
    let mut types = Vec::new();
    read_at_least(&mut ws, &mut types, 2).await;
    let offered = security_types(&types);
    assert!(
        !offered.contains(&1),
        "the container's VNC offers None: {offered:?}"
    );
    assert!(
        offered.contains(&2),
        "the container's VNC lacks VncAuth: {offered:?}"
    );
    send(&mut ws, &[1]).await;
    assert!(
        !reaches_server_init(&mut ws).await,
        "choosing None reached the desktop"
    );

    // VncAuth without the secret.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    let mut buf = Vec::new();
    read_at_least(&mut ws, &mut buf, 12).await;
    send(&mut ws, b"RFB 003.008\n").await;
    let mut types = Vec::new();
    read_at_least(&mut ws, &mut types, 2).await;
    send(&mut ws, &[2]).await;
    let mut challenge = types.split_off(1 + usize::from(types[0]));
    read_at_least(&mut ws, &mut challenge, 16).await;
    send(&mut ws, &[0u8; 16]).await;
    let mut result = challenge.split_off(16);
    read_at_least(&mut ws, &mut result, 4).await;
    assert_ne!(
        &result[..4],
        [0, 0, 0, 0],
        "a wrong VncAuth response was accepted"
    );
}

/// Whether the server, after the security choice, says OK (SecurityResult 0); a failure result or
/// a closed connection is a refusal.
async fn reaches_server_init(ws: &mut Ws) -> bool {
    let mut buf = Vec::new();
    while buf.len() < 4 {
        match tokio::time::timeout(STEP, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => buf.extend_from_slice(&b),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return false,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("no answer to the security choice within {STEP:?}"),
        }
    }
    buf[..4] == [0, 0, 0, 0]
}
