//! A host's desktop runs only while it is used: a new host runs none of it, the dashboard's viewer
//! (in Chromium) and the `vnc/` route's WebSocket each open it from cold, it stops after the
//! configured idle time without a VNC session (a short `DESKTOP_IDLE_SECS` here) while sshd keeps
//! answering, and a desktop whose VNC server was killed comes back on the next open.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::time::Duration;

use cloud_cli_proxy_tests::browser::{Browser, WAIT};
use cloud_cli_proxy_tests::docker::{exec_root, is_running};
use cloud_cli_proxy_tests::fixtures::unique;
use cloud_cli_proxy_tests::hosts::{CREATE_LIMIT, ssh_banner};
use cloud_cli_proxy_tests::{AgentMode, Node, desktop, eventually};

/// The desktop size host-init gives Xvnc (`VNC_GEOMETRY`'s default).
const DESKTOP: (u16, u16) = (1280, 800);
/// Short, so the test sees the desktop stop; the default is 900.
const IDLE_SECS: &str = "4";
/// Bound of the desktop going away once nothing uses it (idle time, the check's tick, stopping).
const STOP_LIMIT: Duration = Duration::from_secs(60);

async fn stopped(container: &str) {
    eventually(STOP_LIMIT, "the idle desktop to stop", || async {
        desktop::programs(container).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desktop_starts_on_open_stops_when_idle_and_survives_a_crash() {
    // Embedded whatever CCP_E2E_AGENT says: the agent reads DESKTOP_IDLE_SECS from this environment.
    let node = Node::start(AgentMode::Embedded, &[("DESKTOP_IDLE_SECS", IDLE_SECS)]).await;
    let base = node.cp.base_url();
    let (owner, owner_api) = node.admin.tenant(&unique("desk"), "owner-password-1").await;
    let host = node.create_host(owner["id"].as_str().unwrap()).await;
    node.task_succeeded(&host.task_id, CREATE_LIMIT, "create").await;
    let container = node.host_container(&host.short_id);
    let ip = node.host_ip(&host.short_id).await;

    // Created, sshd answering, and no desktop: nothing has asked for it.
    assert!(ssh_banner((ip, 22).into(), Duration::from_secs(5)).await);
    let cold = desktop::programs(&container).await;
    assert!(cold.is_empty(), "a new host runs desktop programs: {cold:?}");

    // The dashboard's viewer opens the cold desktop and draws frames.
    if let Some(mut browser) = Browser::start().await {
        let opts = node.cp.options().clone();
        browser.goto(&format!("{base}/")).await;
        browser.sign_in(&opts.admin_username, &opts.admin_password).await;
        browser.wait_for("[data-test=signout]").await;
        browser.goto(&format!("{base}/#/hosts/{}/desktop", host.id)).await;
        browser.set_wait(Duration::from_secs(60));
        browser
            .wait_for("[data-test=desktop-viewer][data-state=connected]")
            .await;
        browser.set_wait(WAIT);
        eventually(Duration::from_secs(30), "frames in the viewer", || async {
            (browser.viewer_frames().await > 0).then_some(())
        })
        .await;
        browser.shot("desktop-on-demand").await;
        let running = desktop::programs(&container).await;
        assert!(running.iter().any(|p| p == "Xvnc"), "{running:?}");
        // Leaving the page closes its WebSocket: the last VNC session ends.
        browser.goto(&format!("{base}/#/hosts")).await;
        stopped(&container).await;
    } else {
        eprintln!("no chromium: the dashboard's part is left out");
    }

    // The `vnc/` route (the owner's, with a bearer token) opens it from cold too.
    let user_path = format!("/v1/user/hosts/{}/vnc", host.id);
    let first = desktop::open(&base, &user_path, owner_api.token())
        .await
        .unwrap_or_else(|e| panic!("opening the cold desktop: {e}"));
    assert_eq!(first.size, DESKTOP);
    first.close().await;

    // A crash of the VNC server (and the programs drawing on it) does not keep the desktop away.
    let killed = exec_root(&container, &["pkill", "-KILL", "-x", "Xvnc"]).await;
    assert!(killed.success(), "pkill Xvnc: {}", killed.both());
    let admin_path = format!("/v1/admin/hosts/{}/vnc", host.id);
    let again = desktop::open(&base, &admin_path, node.admin.token())
        .await
        .unwrap_or_else(|e| panic!("opening the desktop after a crash: {e}"));
    assert_eq!(again.size, DESKTOP);
    again.close().await;

    // Idle again: it stops, the host keeps running and sshd keeps answering.
    stopped(&container).await;
    assert!(is_running(&container).await);
    assert!(ssh_banner((ip, 22).into(), Duration::from_secs(5)).await);
}
