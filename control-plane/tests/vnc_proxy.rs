//! The VNC proxy in process, on 127.0.0.1:0, in front of a fake host: an axum server that serves
//! "noVNC" files, records the headers it receives, and speaks websockify + an RFB server that insists
//! on VncAuth with the host's secret. Who gets through, what crosses, and the error answers.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must stop the test loudly"
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use control_plane::db::hosts::{HostStatus, NewHost};
use control_plane::db::users::{Role, Status};
use control_plane::db::{self, UtcTime};
use control_plane::vnc::rfb::vnc_auth_response;
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};

#[allow(dead_code, reason = "each test binary uses a part of the shared set-up")]
mod common;

const SECRET: &str = "s3cret12";
const CHALLENGE: [u8; 16] = *b"0123456789abcdef";
const STEP: Duration = Duration::from_secs(10);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Headers of every request the fake host received.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<HeaderMap>>>);

impl Seen {
    fn push(&self, h: &HeaderMap) {
        self.0.lock().unwrap().push(h.clone());
    }
    fn all(&self) -> Vec<HeaderMap> {
        self.0.lock().unwrap().clone()
    }
}

async fn fake_page(State(seen): State<Seen>, req: Request) -> Response {
    seen.push(req.headers());
    match req.uri().path() {
        "/vnc.html" => (
            [("content-type", "text/html"), ("set-cookie", "planted=1; Path=/")],
            "<title>noVNC</title>",
        )
            .into_response(),
        // websockify's redirect of a directory without its slash.
        "/app" => (axum::http::StatusCode::MOVED_PERMANENTLY, [("location", "/app/")]).into_response(),
        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

async fn fake_websockify(State(seen): State<Seen>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    seen.push(&headers);
    ws.protocols(["binary"]).on_upgrade(rfb_server)
}

async fn read_exact(ws: &mut WebSocket, buf: &mut Vec<u8>, n: usize) -> Option<Vec<u8>> {
    while buf.len() < n {
        match ws.recv().await? {
            Ok(AxumMessage::Binary(b)) => buf.extend_from_slice(&b),
            Ok(AxumMessage::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    Some(buf.drain(..n).collect())
}

/// TigerVNC as far as the proxy can tell: VncAuth only, then a 640x480 desktop that echoes every
/// client message back (to check the relay both ways).
async fn rfb_server(mut ws: WebSocket) {
    let send = |b: Vec<u8>| AxumMessage::Binary(b.into());
    let mut buf = Vec::new();
    let _ = ws.send(send(b"RFB 003.008\n".to_vec())).await;
    let Some(_version) = read_exact(&mut ws, &mut buf, 12).await else {
        return;
    };
    let _ = ws.send(send(vec![1, 2])).await;
    let Some(choice) = read_exact(&mut ws, &mut buf, 1).await else {
        return;
    };
    assert_eq!(choice, [2]);
    let _ = ws.send(send(CHALLENGE.to_vec())).await;
    let Some(answer) = read_exact(&mut ws, &mut buf, 16).await else {
        return;
    };
    if answer != vnc_auth_response(SECRET, &CHALLENGE) {
        let mut fail = vec![0, 0, 0, 1, 0, 0, 0, 6];
        fail.extend_from_slice(b"denied");
        let _ = ws.send(send(fail)).await;
        return;
    }
    let _ = ws.send(send(vec![0, 0, 0, 0])).await;
    let Some(_shared) = read_exact(&mut ws, &mut buf, 1).await else {
        return;
    };
    let mut init = Vec::new();
    init.extend_from_slice(&640u16.to_be_bytes());
    init.extend_from_slice(&480u16.to_be_bytes());
    init.extend_from_slice(&[0; 16]);
    init.extend_from_slice(&4u32.to_be_bytes());
    init.extend_from_slice(b"fake");
    let _ = ws.send(send(init)).await;
    while let Some(Ok(msg)) = ws.recv().await {
        if let AxumMessage::Binary(b) = msg {
            let _ = ws.send(AxumMessage::Binary(b)).await;
        }
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    addr
}

struct Fixture {
    base: String,
    state: control_plane::AppState,
    admin: String,
    owner: String,
    owner_id: String,
    other: String,
    host_id: String,
    seen: Seen,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A control plane whose VNC port is the fake host's, an operator, two tenants, and a running
    /// host of the first at 127.0.0.1.
    async fn new() -> Self {
        let seen = Seen::default();
        let fake = Router::new()
            .route("/websockify", get(fake_websockify))
            .fallback(fake_page)
            .with_state(seen.clone());
        let fake_addr = serve(fake).await;
        let port = fake_addr.port().to_string();
        let (state, config, dir) = common::state_with(&["--vnc-port", &port]).await;
        let now = UtcTime::now();
        let admin = db::users::get_by_username(&state.db, "admin")
            .await
            .unwrap()
            .unwrap();
        let owner = db::users::insert(&state.db, "alice", "x", Role::User, None, now)
            .await
            .unwrap();
        let other = db::users::insert(&state.db, "bob", "x", Role::User, None, now)
            .await
            .unwrap();
        let new = NewHost {
            short_id: "abcdefgh",
            user_id: &owner.id,
            name: "h",
            memory_mb: 512,
            cpu_millis: 1000,
            pids_limit: 256,
            ssh_password_hash: "x",
            password_crypt: "x",
            vnc_secret: &control_plane::secrets::Sealed::seal(
                &state.secrets,
                control_plane::secrets::field::HOST_VNC_SECRET,
                SECRET,
            ),
        };
        let host_id = db::hosts::insert(&state.db, new, now).await.unwrap();
        db::hosts::set_outcome(
            &state.db,
            &host_id,
            HostStatus::Running,
            None,
            Some("127.0.0.1"),
            now,
        )
        .await
        .unwrap();
        let token = |u| state.keys.issue_session(u, now).unwrap();
        let app = control_plane::api::router(state.clone(), config.max_body_bytes);
        let addr = serve(app).await;
        Self {
            base: format!("http://{addr}"),
            admin: token(&admin),
            owner: token(&owner),
            owner_id: owner.id.clone(),
            other: token(&other),
            host_id,
            state,
            seen,
            _dir: dir,
        }
    }

    fn path(&self, scope: &str, rest: &str) -> String {
        format!("/v1/{scope}/hosts/{}/vnc{rest}", self.host_id)
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap();
        let mut req = client.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    async fn cookie(&self, scope: &str, token: &str) -> String {
        let resp = reqwest::Client::new()
            .post(format!("{}{}-session", self.base, self.path(scope, "")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let set = resp.headers()["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    }

    async fn ws(&self, path: &str, headers: &[(&str, &str)]) -> Result<Ws, tungstenite::Error> {
        let url = format!("{}{path}", self.base.replacen("http", "ws", 1));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "binary".parse().unwrap());
        for (k, v) in headers {
            req.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
    }
}

async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The next `n` bytes from the proxy, across as many messages as they come in.
async fn expect(ws: &mut Ws, buf: &mut Vec<u8>, n: usize) -> Vec<u8> {
    while buf.len() < n {
        match tokio::time::timeout(STEP, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?} with {buf:?}"),
        }
    }
    buf.drain(..n).collect()
}

fn ws_status<T: std::fmt::Debug>(r: Result<T, tungstenite::Error>) -> u16 {
    match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn http_is_proxied_without_our_credentials() {
    let f = Fixture::new().await;
    let cookie = f.cookie("user", &f.owner).await;
    let with_extra_cookie = format!("{cookie}; theme=dark");
    let resp = f
        .get(
            &f.path("user", "/vnc.html?x=1"),
            &[("cookie", &with_extra_cookie), ("accept", "text/html")],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "the container set a cookie on our origin"
    );
    // The host's page is the tenant's: it comes back sandboxed, never as a page of our origin.
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("sandbox;"), "{csp}");
    assert_eq!(resp.text().await.unwrap(), "<title>noVNC</title>");

    let resp = f
        .get(
            &f.path("admin", "/vnc.html"),
            &[("authorization", &format!("Bearer {}", f.admin))],
        )
        .await;
    assert_eq!(resp.status(), 200);
    for h in f.seen.all() {
        for name in ["authorization", "cookie", "origin", "x-forwarded-for"] {
            assert!(h.get(name).is_none(), "{name} reached the container: {h:?}");
        }
        assert!(h["host"].to_str().unwrap().starts_with("127.0.0.1:"), "{h:?}");
    }

    // The container's redirects stay under the sub-path.
    let bearer = format!("Bearer {}", f.owner);
    let resp = f
        .get(&f.path("user", "/app"), &[("authorization", &bearer)])
        .await;
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], f.path("user", "/app/").as_str());

    // …/vnc and …/vnc/ send the browser to the dashboard's own viewer for this host.
    for index in ["", "/"] {
        let resp = f.get(&f.path("user", index), &[("authorization", &bearer)]).await;
        assert_eq!(resp.status(), 303);
        let location = resp.headers()["location"].to_str().unwrap();
        assert_eq!(
            location,
            format!("/ui/desktop.html?scope=user&host={}", f.host_id)
        );
    }
}

#[tokio::test]
async fn who_is_refused() {
    let f = Fixture::new().await;
    let page = |scope| f.path(scope, "/vnc.html");
    let bearer = |t: &str| format!("Bearer {t}");
    // (route, bearer token or none, status, code)
    let cases = [
        ("user", None, 401, "unauthorized"),
        ("admin", None, 401, "unauthorized"),
        ("user", Some(f.other.as_str()), 404, "not_found"),
        ("admin", Some(f.owner.as_str()), 403, "forbidden"),
        ("user", Some(f.admin.as_str()), 403, "forbidden"),
        ("user", Some("nonsense"), 401, "unauthorized"),
    ];
    for (scope, token, status, code) in cases {
        let auth = token.map(bearer);
        let headers: Vec<(&str, &str)> = auth.iter().map(|v| ("authorization", v.as_str())).collect();
        let got = error_code(f.get(&page(scope), &headers).await).await;
        assert_eq!(got, (status, code.to_owned()), "{scope} with {token:?}");
    }
    // Cookies: another tenant cannot get one; one route's cookie does not open the other route.
    let resp = reqwest::Client::new()
        .post(format!("{}{}-session", f.base, f.path("user", "")))
        .bearer_auth(&f.other)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (404, "not_found".into()));
    let cookie = f.cookie("user", &f.owner).await;
    assert_eq!(f.get(&page("admin"), &[("cookie", &cookie)]).await.status(), 401);
    assert_eq!(f.get(&page("user"), &[("cookie", &cookie)]).await.status(), 200);
    // Disabling the account ends the cookie.
    db::users::set_status(&f.state.db, &f.owner_id, Status::Disabled, UtcTime::now())
        .await
        .unwrap();
    assert_eq!(f.get(&page("user"), &[("cookie", &cookie)]).await.status(), 401);

    // WebSockets: anonymous, another tenant, another site.
    let ws = f.path("admin", "/websockify");
    assert_eq!(ws_status(f.ws(&ws, &[]).await), 401);
    assert_eq!(
        ws_status(
            f.ws(
                &f.path("user", "/websockify"),
                &[("authorization", &bearer(&f.other))]
            )
            .await
        ),
        404
    );
    let admin_cookie = f.cookie("admin", &f.admin).await;
    let evil = [
        ("cookie", admin_cookie.as_str()),
        ("origin", "https://evil.example"),
    ];
    assert_eq!(ws_status(f.ws(&ws, &evil).await), 403);
}

#[tokio::test]
async fn websocket_authenticates_upstream_and_relays() {
    let f = Fixture::new().await;
    let cookie = f.cookie("admin", &f.admin).await;
    let origin = f.base.clone();
    let mut ws = f
        .ws(
            &f.path("admin", "/websockify"),
            &[("cookie", &cookie), ("origin", &origin)],
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(expect(&mut ws, &mut buf, 12).await, b"RFB 003.008\n");
    ws.send(Message::Binary(b"RFB 003.008\n".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(expect(&mut ws, &mut buf, 2).await, [1, 1]);
    // The security choice and ClientInit in one message, as fragments may come.
    ws.send(Message::Binary(vec![1, 1].into())).await.unwrap();
    assert_eq!(expect(&mut ws, &mut buf, 4).await, [0, 0, 0, 0]);
    let init = expect(&mut ws, &mut buf, 28).await;
    assert_eq!(&init[..4], [2, 128, 1, 224], "640x480");
    assert_eq!(&init[24..], b"fake");
    ws.send(Message::Binary(vec![7, 7, 7].into())).await.unwrap();
    assert_eq!(expect(&mut ws, &mut buf, 3).await, [7, 7, 7]);
    ws.close(None).await.unwrap();
    // The upstream request carried websockify's own Host and Origin, none of ours.
    let upgrade = f
        .seen
        .all()
        .into_iter()
        .find(|h| h.contains_key("upgrade"))
        .unwrap();
    let host = upgrade["host"].to_str().unwrap().to_owned();
    assert!(host.starts_with("127.0.0.1:"));
    assert_eq!(upgrade["origin"].to_str().unwrap(), format!("http://{host}"));
    assert!(upgrade.get("cookie").is_none());

    // Start and end are on record, with the bytes of each direction.
    let deadline = tokio::time::Instant::now() + STEP;
    let ended = loop {
        let filter = db::events::Filter {
            types: vec!["vnc.".into()],
            ..Default::default()
        };
        let (events, _) = db::events::list(
            &f.state.db,
            &filter,
            db::Page {
                page: 1,
                page_size: 10,
            },
        )
        .await
        .unwrap();
        if let Some(e) = events.iter().find(|e| e.kind == "vnc.session_ended") {
            assert!(events.iter().any(|e| e.kind == "vnc.session_started"));
            break e.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no vnc.session_ended: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ended.host_id.as_deref(), Some(f.host_id.as_str()));
    assert_eq!(ended.user_id.as_deref(), Some(f.owner_id.as_str()));
    assert_eq!(ended.details["route"], "admin");
    assert_eq!(ended.details["closed_by"], "browser");
    assert_eq!(
        ended.details["bytes_from_browser"], 4,
        "ClientInit + 3 echoed bytes"
    );
    assert_eq!(ended.details["bytes_to_browser"], 28 + 3);
}

#[tokio::test]
async fn hosts_that_cannot_answer() {
    let f = Fixture::new().await;
    let bearer = format!("Bearer {}", f.admin);
    let auth = [("authorization", bearer.as_str())];
    let page = f.path("admin", "/vnc.html");
    let now = UtcTime::now();

    // A wrong secret in the database: the VNC server refuses the proxy, the browser gets 502.
    let wrong = control_plane::secrets::Sealed::seal(
        &f.state.secrets,
        control_plane::secrets::field::HOST_VNC_SECRET,
        "wrong",
    );
    control_plane::on_db!(
        &f.state.db,
        "UPDATE hosts SET vnc_secret = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(&wrong)
            .bind(&f.host_id)
            .execute(exec)
            .await
            .map(control_plane::db::Done::from)
    )
    .unwrap();
    assert_eq!(ws_status(f.ws(&f.path("admin", "/websockify"), &auth).await), 502);
    // A secret that does not open under the key (stored in clear behind the server's back) is our
    // fault, not the host's: 500, and nothing is sent to the VNC server.
    control_plane::on_db!(
        &f.state.db,
        "UPDATE hosts SET vnc_secret = 'in-clear' WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(&f.host_id)
            .execute(exec)
            .await
            .map(control_plane::db::Done::from)
    )
    .unwrap();
    assert_eq!(ws_status(f.ws(&f.path("admin", "/websockify"), &auth).await), 500);

    db::hosts::set_outcome(&f.state.db, &f.host_id, HostStatus::Stopped, None, None, now)
        .await
        .unwrap();
    assert_eq!(
        error_code(f.get(&page, &auth).await).await,
        (409, "host_not_running".into())
    );

    control_plane::on_db!(
        &f.state.db,
        "UPDATE hosts SET status = 'running', address = NULL WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(&f.host_id)
            .execute(exec)
            .await
            .map(control_plane::db::Done::from)
    )
    .unwrap();
    assert_eq!(
        error_code(f.get(&page, &auth).await).await,
        (503, "host_no_address".into())
    );

    // Nothing listens at the address: 502 with a code, quickly.
    control_plane::on_db!(
        &f.state.db,
        "UPDATE hosts SET address = '127.0.0.2' WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(&f.host_id)
            .execute(exec)
            .await
            .map(control_plane::db::Done::from)
    )
    .unwrap();
    assert_eq!(
        error_code(f.get(&page, &auth).await).await,
        (502, "vnc_unavailable".into())
    );
}
