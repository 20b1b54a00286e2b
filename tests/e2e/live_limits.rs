//! Long-lived connections are bounded per account (`MAX_LIVE_CONNECTIONS_PER_USER`), against the
//! real binary: task-progress event streams and the desktop and terminal WebSockets share one
//! allowance; past it the answer is 429 `too_many_connections` with `Retry-After`; another account
//! and the operator keep their own; a closed stream gives its slot back. (Open WebSockets holding
//! slots are shown against a running host in the `terminal` suite.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::time::Duration;

use cloud_cli_proxy_tests::fixtures::id;
use cloud_cli_proxy_tests::{ControlPlane, Options, assert_error, eventually};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};

const OPEN: Duration = Duration::from_secs(120);

/// The status and error code of a refused WebSocket handshake.
async fn ws_refusal(base: &str, path: &str, token: &str, protocol: &str) -> (u16, String, bool) {
    let url = format!("{}{path}", base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("origin", base.trim_end_matches('/').parse().unwrap());
    h.insert("sec-websocket-protocol", protocol.parse().unwrap());
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => panic!("{path}: the handshake succeeded"),
        Err(tungstenite::Error::Http(resp)) => {
            let body: Value = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            (
                resp.status().as_u16(),
                body["error"]["code"].as_str().unwrap_or_default().to_owned(),
                resp.headers().contains_key("retry-after"),
            )
        }
        Err(e) => panic!("{path}: unexpected handshake error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_connections_are_capped_per_account() {
    let cp = ControlPlane::start(Options::new().env("MAX_LIVE_CONNECTIONS_PER_USER", 2)).await;
    let base = cp.base_url();
    let admin = cp.admin().await;
    let (alice, alice_api) = admin.tenant("alice", "alice-password").await;
    let (bob, bob_api) = admin.tenant("bob", "bob-password-1").await;
    // No agent runs here: the hosts' create tasks stay queued, so their streams stay open.
    let alice_host = admin.create_host(&id(&alice)).await;
    let bob_host = admin.create_host(&id(&bob)).await;
    let alice_task = alice_host["task_id"].as_str().unwrap().to_owned();
    let bob_task = bob_host["task_id"].as_str().unwrap().to_owned();
    let alice_events = format!("/v1/user/tasks/{alice_task}/events");

    let first = alice_api.stream(&alice_events, OPEN).await;
    let second = alice_api.stream(&alice_events, OPEN).await;
    let refused = alice_api.get(&alice_events).await;
    assert_error(&refused, 429, "too_many_connections");
    assert!(
        refused.header("retry-after").is_some(),
        "a refusal says when to retry"
    );

    // The desktop and the terminal draw on the same allowance, refused before anything is opened.
    let host_id = id(&alice_host);
    let token = alice_api.token().to_owned();
    for (path, protocol) in [
        (format!("/v1/user/hosts/{host_id}/terminal"), "ccp-terminal.v1"),
        (format!("/v1/user/hosts/{host_id}/vnc/websockify"), "binary"),
    ] {
        let (status, code, retry_after) = ws_refusal(&base, &path, &token, protocol).await;
        assert_eq!((status, code.as_str()), (429, "too_many_connections"), "{path}");
        assert!(retry_after, "{path}: a refusal says when to retry");
    }

    // Another tenant, and the operator watching alice's own task, have their own allowance.
    let bob_stream = bob_api
        .stream(&format!("/v1/user/tasks/{bob_task}/events"), OPEN)
        .await;
    let admin_stream = admin
        .stream(&format!("/v1/admin/tasks/{alice_task}/events"), OPEN)
        .await;

    // A closed stream gives its slot back (once the server sees the socket close).
    drop(first);
    let http = reqwest::Client::new();
    let url = format!("{base}{alice_events}");
    let third = eventually(Duration::from_secs(40), "a freed slot", || async {
        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        (r.status() != 429).then_some(r)
    })
    .await;
    assert_eq!(third.status(), 200);
    drop((second, third, bob_stream, admin_stream));
}
