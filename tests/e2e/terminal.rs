//! The dashboard terminal's WebSocket against a real host, through the real SSH gateway: a shell
//! opens with the asked size, runs commands and follows a resize; a dropped socket resumes the same
//! shell from the last byte received, with what the shell wrote meanwhile and nothing twice; the
//! exit status arrives. The login is the gateway's, recorded as a web session naming the browser and
//! who opened it. Another tenant, another account's shell id, another site, a missing subprotocol
//! and a caller without credentials are refused. Open sockets count against the account's live
//! connections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::time::Duration;

use cloud_cli_proxy_tests::fixtures::unique;
use cloud_cli_proxy_tests::hosts::CREATE_LIMIT;
use cloud_cli_proxy_tests::{Node, eventually};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const PROTOCOL: &str = "ccp-terminal.v1";
const STEP: Duration = Duration::from_secs(30);

/// Opens the terminal's WebSocket with a bearer token (or none), an Origin and a subprotocol.
async fn connect(
    base: &str,
    path: &str,
    token: Option<&str>,
    origin: &str,
    protocol: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let url = format!("{}{path}", base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("origin", origin.parse().unwrap());
    if let Some(p) = protocol {
        h.insert("sec-websocket-protocol", p.parse().unwrap());
    }
    if let Some(t) = token {
        h.insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("WebSocket connect timed out")
        .map(|(ws, _)| ws)
}

/// The HTTP status and error code a refused handshake answered.
fn refused(result: Result<Ws, tungstenite::Error>) -> (u16, String) {
    match result {
        Ok(_) => panic!("the handshake succeeded"),
        Err(tungstenite::Error::Http(resp)) => {
            let body: Value = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            (
                resp.status().as_u16(),
                body["error"]["code"].as_str().unwrap_or_default().to_owned(),
            )
        }
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

/// One side of a terminal conversation: output received so far and the control messages.
struct Term {
    ws: Ws,
    output: Vec<u8>,
    /// Offset of `output[0]` in the shell's output.
    start: u64,
}

impl Term {
    async fn control(&mut self) -> Value {
        loop {
            match self.next().await {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Binary(b) => self.output.extend_from_slice(&b),
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    async fn next(&mut self) -> Message {
        match tokio::time::timeout(STEP, self.ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(other) => panic!(
                "terminal socket ended: {other:?}; output so far: {}",
                self.shown()
            ),
            Err(_) => panic!(
                "nothing from the terminal within {STEP:?}; output so far: {}",
                self.shown()
            ),
        }
    }

    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// Offset just past what was received.
    fn received(&self) -> u64 {
        self.start + self.output.len() as u64
    }

    async fn type_line(&mut self, line: &str) {
        let bytes = format!("{line}\r").into_bytes();
        self.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// Reads until the output (from `from` on) holds `needle`; answers the output after it.
    async fn expect(&mut self, needle: &str, from: usize) -> usize {
        loop {
            if let Some(at) = self.shown()[from.min(self.output.len())..].find(needle) {
                return from + at + needle.len();
            }
            match self.next().await {
                Message::Binary(b) => self.output.extend_from_slice(&b),
                Message::Text(t) => panic!(
                    "control message while waiting for {needle:?}: {t}; output: {}",
                    self.shown()
                ),
                other => panic!("unexpected {other:?} while waiting for {needle:?}"),
            }
        }
    }
}

/// Opens a shell (or resumes `session` from `offset`) and waits for `ready`.
async fn hello(ws: Ws, first: Value) -> (Term, Value) {
    let mut term = Term {
        ws,
        output: Vec::new(),
        start: first["offset"].as_u64().unwrap_or(0),
    };
    term.ws
        .send(Message::Text(first.to_string().into()))
        .await
        .unwrap();
    let ready = term.control().await;
    (term, ready)
}

async fn events(node: &Node, kind: &str, host_id: &str) -> Vec<Value> {
    let r = node
        .admin
        .get(&format!(
            "/v1/admin/events?type={kind}&host_id={host_id}&page_size=100"
        ))
        .await;
    r.expect(200);
    r.data().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_in_the_browser_goes_through_the_gateway_and_survives_a_dropped_socket() {
    let node = Node::embedded(&[("MAX_LIVE_CONNECTIONS_PER_USER", "2")]).await;
    let base = node.cp.base_url();
    let origin = base.trim_end_matches('/').to_owned();
    let owner_name = unique("term");
    let (owner, owner_api) = node.admin.tenant(&owner_name, "owner-password-1").await;
    let (_, stranger_api) = node.admin.tenant(&unique("stranger"), "stranger-pass-1").await;
    let host = node.create_host(owner["id"].as_str().unwrap()).await;
    node.task_succeeded(&host.task_id, CREATE_LIMIT, "create").await;
    let path = format!("/v1/user/hosts/{}/terminal", host.id);
    let admin_path = format!("/v1/admin/hosts/{}/terminal", host.id);

    // Refusals, each before any shell is opened.
    let token = owner_api.token();
    let cases = [
        (
            "no credentials",
            None,
            origin.as_str(),
            Some(PROTOCOL),
            401,
            "unauthorized",
        ),
        (
            "another tenant",
            Some(stranger_api.token()),
            origin.as_str(),
            Some(PROTOCOL),
            404,
            "not_found",
        ),
        (
            "another site",
            Some(token),
            "http://localhost:1",
            Some(PROTOCOL),
            403,
            "origin_not_allowed",
        ),
        (
            "a sandboxed page",
            Some(token),
            "null",
            Some(PROTOCOL),
            403,
            "origin_not_allowed",
        ),
        (
            "no subprotocol",
            Some(token),
            origin.as_str(),
            None,
            400,
            "bad_subprotocol",
        ),
        (
            "the operator on the tenant route",
            Some(node.admin.token()),
            origin.as_str(),
            Some(PROTOCOL),
            403,
            "forbidden",
        ),
    ];
    for (what, token, origin, protocol, status, code) in cases {
        let got = refused(connect(&base, &path, token, origin, protocol).await);
        assert_eq!(got, (status, code.to_owned()), "{what}");
    }

    // A shell of the asked size runs commands and follows a resize.
    let ws = connect(&base, &path, Some(token), &origin, Some(PROTOCOL))
        .await
        .unwrap();
    let (mut term, ready) = hello(ws, json!({"type": "open", "cols": 101, "rows": 29})).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["offset"], 0);
    let session = ready["session"].as_str().unwrap().to_owned();
    term.type_line("echo $((6*7))-marker; stty size").await;
    let at = term.expect("42-marker", 0).await;
    let at = term.expect("29 101", at).await;
    term.ws
        .send(Message::Text(
            json!({"type": "resize", "cols": 120, "rows": 40})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    term.type_line("stty size").await;
    let at = term.expect("40 120", at).await;

    // The socket drops while a command is still to print; the same shell resumes from the last
    // byte received, with the late output and nothing twice.
    term.type_line("sleep 2; echo late-$((20+3))").await;
    let _ = term.expect("sleep 2", at).await;
    let offset = term.received();
    drop(term);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ws = connect(&base, &path, Some(token), &origin, Some(PROTOCOL))
        .await
        .unwrap();
    let resume = json!({"type": "resume", "session": session, "offset": offset, "cols": 120, "rows": 40});
    let (mut term, ready) = hello(ws, resume.clone()).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(
        ready["offset"].as_u64(),
        Some(offset),
        "nothing was lost: {ready}"
    );
    term.start = offset;
    let at = term.expect("late-23", 0).await;
    assert!(
        !term.shown().contains("42-marker"),
        "output already received is not sent again: {}",
        term.shown()
    );

    // Another account cannot take the shell, even knowing its id: the operator on the admin route
    // is told it has ended.
    let ws = connect(
        &base,
        &admin_path,
        Some(node.admin.token()),
        &origin,
        Some(PROTOCOL),
    )
    .await
    .unwrap();
    let (_, answer) = hello(ws, resume).await;
    assert_eq!(answer["code"], "session_gone", "{answer}");

    // The exit status ends it.
    term.type_line("exit 7").await;
    let _ = at;
    let exit = term.control().await;
    assert_eq!(exit, json!({"type": "exit", "status": 7}));

    // The operator opens a shell on the same host: it is the owner's account inside.
    let ws = connect(
        &base,
        &admin_path,
        Some(node.admin.token()),
        &origin,
        Some(PROTOCOL),
    )
    .await
    .unwrap();
    let (mut op, ready) = hello(ws, json!({"type": "open", "cols": 80, "rows": 24})).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    op.type_line("echo \"who=$(whoami)\"").await;
    let linux_user = cloud_cli_proxy_tests::hosts::linux_user(&owner_name);
    op.expect(&format!("who={linux_user}"), 0).await;
    op.type_line("exit").await;
    assert_eq!(op.control().await["type"], "exit");

    // The gateway recorded both logins and sessions as web sessions, naming the browser's address
    // and who opened each.
    let logins = events(&node, "ssh.login_succeeded", &host.id).await;
    let admin_name = node.cp.options().admin_username.clone();
    for who in [owner_name.as_str(), admin_name.as_str()] {
        let found = logins
            .iter()
            .find(|e| e["details"]["opened_by"] == who)
            .unwrap_or_else(|| panic!("no web login opened by {who}: {logins:#?}"));
        assert_eq!(found["details"]["via"], "web", "{found:#}");
        assert_eq!(found["ip"], "127.0.0.1", "{found:#}");
        assert_eq!(found["user_id"], owner["id"], "{found:#}");
    }
    let ended = eventually(Duration::from_secs(20), "both web sessions to end", || async {
        let ended = events(&node, "ssh.session_ended", &host.id).await;
        (ended.iter().filter(|e| e["details"]["via"] == "web").count() >= 2).then_some(ended)
    })
    .await;
    let mine = ended
        .iter()
        .find(|e| e["details"]["opened_by"] == owner_name.as_str())
        .unwrap();
    assert!(mine["details"]["bytes_out"].as_u64().unwrap() > 0, "{mine:#}");

    // Open sockets hold the account's live connections (two here): a third is refused while both
    // are open, the operator's own allowance is apart, and a socket that ends frees its slot.
    drop((term, op));
    let mut open = Vec::new();
    for _ in 0..2 {
        let ws = eventually(Duration::from_secs(20), "a free slot", || async {
            connect(&base, &path, Some(token), &origin, Some(PROTOCOL))
                .await
                .ok()
        })
        .await;
        let (shell, ready) = hello(ws, json!({"type": "open", "cols": 80, "rows": 24})).await;
        assert_eq!(ready["type"], "ready", "{ready}");
        open.push(shell);
    }
    let third = connect(&base, &path, Some(token), &origin, Some(PROTOCOL)).await;
    assert_eq!(refused(third), (429, "too_many_connections".to_owned()));
    let operator = connect(
        &base,
        &admin_path,
        Some(node.admin.token()),
        &origin,
        Some(PROTOCOL),
    )
    .await
    .expect("the operator's allowance is their own");
    drop(operator);
    let mut first = open.remove(0);
    first.type_line("exit").await;
    assert_eq!(first.control().await["type"], "exit");
    drop(first);
    eventually(Duration::from_secs(20), "the ended socket's slot", || async {
        connect(&base, &path, Some(token), &origin, Some(PROTOCOL))
            .await
            .ok()
    })
    .await;
}
