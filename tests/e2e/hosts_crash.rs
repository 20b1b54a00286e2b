//! Crash recovery of host tasks: `kill -9` of a standalone agent, and of the control plane, while a
//! create runs. The task must end (succeeded after another attempt, or failed cleanly), the host's
//! status must agree with Docker, and no Docker object may be left for a host without a row.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::net::SocketAddr;
use std::time::Duration;

use cloud_cli_proxy_tests::hosts::{ACTION_LIMIT, CREATE_LIMIT, NewHost, ssh_banner, ssh_ok};
use cloud_cli_proxy_tests::{Node, docker};
use serde_json::Value;

/// The tenant of both tests; the account inside the container has the same name.
const USER: &str = "carol";

/// Polls the task until its attempt is running and past `min_progress` (the agent is then in the
/// middle of its Docker work); returns that view of the task.
async fn running_past(node: &Node, task_id: &str, min_progress: i64) -> Value {
    let deadline = tokio::time::Instant::now() + CREATE_LIMIT;
    loop {
        let task = node.task(task_id).await;
        let progress = task["progress"].as_i64().unwrap_or(0);
        if task["status"] == "running" && progress >= min_progress {
            return task;
        }
        assert!(
            task["status"] == "queued" || task["status"] == "running",
            "the task finished before it could be interrupted: {task}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never ran past {min_progress}%: {task}\n{}",
            node.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After the crash: the task ended, cleanly either way (a success after at least `min_attempts`
/// attempts); the host agrees with Docker; a running host answers SSH; nothing is orphaned.
async fn check_recovered(node: &Node, host: &NewHost, min_attempts: i64) {
    let task = node.task_finished(&host.task_id, CREATE_LIMIT).await;
    match task["status"].as_str().unwrap() {
        "succeeded" => {
            assert!(
                task["attempts"].as_i64().unwrap() >= min_attempts,
                "expected at least {min_attempts} attempt(s): {task}"
            );
            assert_eq!(task["progress"], 100, "{task}");
        }
        "failed" => {
            assert!(
                task["error"].as_str().is_some_and(|e| !e.is_empty()),
                "a failed task says why: {task}"
            );
        }
        other => panic!("unexpected end of the create task ({other}): {task}"),
    }
    let host_row = node.status_matches_docker(&host.id, &host.short_id).await;
    if host_row["status"] == "running" {
        let ip = node.host_ip(&host.short_id).await;
        assert!(
            ssh_banner(SocketAddr::from((ip, 22)), Duration::from_secs(10)).await,
            "a running host's sshd must answer"
        );
        ssh_ok(USER, ip, &host.ssh_password, "true", Duration::from_secs(60)).await;
    }
    let orphans = node.orphans().await;
    assert!(orphans.is_empty(), "orphaned Docker objects: {orphans:?}");
}

/// Deletes the host and checks that nothing of it, nor of the node's hosts, is left.
async fn delete_everything(node: &Node, host: &NewHost) {
    let r = node.admin.delete(&format!("/v1/admin/hosts/{}", host.id)).await;
    r.expect(202);
    node.host_gone(&host.id, ACTION_LIMIT).await;
    let left = node.leftovers(&host.id).await;
    assert!(left.is_empty(), "left behind after delete: {left:?}");
    let node_filter = [format!("{}={}", docker::NODE, node.name)];
    assert!(docker::containers(&node_filter).await.is_empty());
    assert!(docker::volumes(&node_filter).await.is_empty());
    let hosts_dir = node.state_dir().join(&node.name).join("hosts");
    let files: Vec<_> = std::fs::read_dir(&hosts_dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        files.is_empty(),
        "host files left in {}: {files:?}",
        hosts_dir.display()
    );
    node.node_emptied(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_during_create_recovers() {
    let mut node = Node::standalone(&[]).await;
    let user_id = node.user(USER).await;
    let host = node.create_host(&user_id).await;

    let seen = running_past(&node, &host.task_id, 40).await;
    node.kill_agent();
    assert_eq!(seen["attempts"], 1, "{seen}");

    node.start_agent();
    node.wait_agent_connected().await;
    // The killed attempt cannot report: success needs a second one.
    check_recovered(&node, &host, 2).await;
    delete_everything(&node, &host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_killed_during_create_recovers() {
    let mut node = Node::standalone(&[]).await;
    let user_id = node.user(USER).await;
    let host = node.create_host(&user_id).await;

    running_past(&node, &host.task_id, 40).await;
    node.cp.kill().await;
    // The agent carries on without it: let it finish its Docker work (up to a bound), so that its
    // result has to wait for the control plane to come back.
    let container = node.host_container(&host.short_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !docker::is_running(&container).await && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Back on the same database and the same port (the agent keeps its URL and retries).
    let port = node.cp.addr().port();
    let opts = node
        .cp
        .options()
        .clone()
        .env("CONTROL_PLANE_ADDR", format!("127.0.0.1:{port}"));
    node.cp.restart(opts).await;
    assert_eq!(node.cp.addr().port(), port);
    node.admin = node.cp.admin().await;
    node.wait_agent_connected().await;
    // The agent's attempt survived the crash: its result, delivered late, may end the task.
    check_recovered(&node, &host, 1).await;
    delete_everything(&node, &host).await;
}
