//! A host's whole life on a real Docker node (the control plane's embedded agent): create with
//! progress over SSE, sshd answering the real OpenSSH client, stop, start, rebuild keeping the home,
//! live SSH password rotation, delete leaving nothing behind; and deleting a user removing their
//! hosts just as completely.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use cloud_cli_proxy_tests::Node;
use cloud_cli_proxy_tests::docker;
use cloud_cli_proxy_tests::fixtures::random_alnum;
use cloud_cli_proxy_tests::hosts::{
    ACTION_LIMIT, CREATE_LIMIT, NewHost, linux_user, ssh, ssh_ok, task_events,
};
use serde_json::json;

const SSH_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_lifecycle_from_create_to_delete() {
    let node = Node::embedded(&[]).await;
    // A mixed-case name: the account inside the container is its lower-case form.
    let username = "Alice";
    let user = linux_user(username);
    assert_eq!(user, "alice");
    let user_id = node.user(username).await;

    // Create: the task's progress arrives over SSE, in steps, before it succeeds.
    let host = node.create_host(&user_id).await;
    let events = task_events(&node.admin, &host.task_id, CREATE_LIMIT).await;
    let last = events.last().expect("at least one task event");
    assert_eq!(
        last["status"],
        "succeeded",
        "create task: {events:#?}\n{}",
        node.diagnostics()
    );
    let steps: BTreeSet<(i64, String)> = events
        .iter()
        .filter(|e| e["status"] == "running")
        .map(|e| {
            (
                e["progress"].as_i64().unwrap(),
                e["stage"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        steps.len() >= 2,
        "expected at least two distinct progress steps while running, saw {steps:?} in {events:#?}"
    );
    // Within one attempt progress only grows (a retried attempt starts again from the beginning).
    for pair in events.windows(2) {
        if pair[0]["attempts"] == pair[1]["attempts"] {
            assert!(
                pair[0]["progress"].as_i64() <= pair[1]["progress"].as_i64(),
                "progress went backwards within an attempt: {events:#?}"
            );
        }
    }
    assert_eq!(last["progress"], 100, "{last}");
    assert_eq!(node.host(&host.id).await["status"], "running");

    // sshd answers the real client with the password the API handed out.
    let ip = node.host_ip(&host.short_id).await;
    let who = ssh_ok(&user, ip, &host.ssh_password, "id -un", SSH_LIMIT).await;
    assert_eq!(who.stdout.trim(), user);
    let container = node.host_container(&host.short_id);
    let info = docker::container(&container).await.expect("host container");
    assert!(info.running);
    assert_eq!(info.labels[docker::HOST_ID], host.id.as_str());
    assert_eq!(info.labels[docker::NODE], node.name.as_str());
    assert_eq!(info.labels[docker::ROLE], "host");

    // Stop.
    let task = node.host_action(&host.id, "stop").await;
    node.task_succeeded(&task, ACTION_LIMIT, "stop").await;
    node.host_status(&host.id, "stopped", Duration::from_secs(10))
        .await;
    let info = docker::container(&container)
        .await
        .expect("a stopped host keeps its container");
    assert!(!info.running, "container still running after stop: {info:?}");

    // Start, and leave a file in the home directory.
    let task = node.host_action(&host.id, "start").await;
    node.task_succeeded(&task, ACTION_LIMIT, "start").await;
    node.host_status(&host.id, "running", Duration::from_secs(10))
        .await;
    assert!(docker::is_running(&container).await);
    let ip = node.host_ip(&host.short_id).await;
    let marker = format!("kept-{}", random_alnum(12));
    ssh_ok(
        &user,
        ip,
        &host.ssh_password,
        &format!("echo {marker} > ~/persist.txt && sync"),
        SSH_LIMIT,
    )
    .await;

    // Rebuild: a new container from the image, the same home.
    let before = docker::container(&container).await.unwrap();
    let task = node.host_action(&host.id, "rebuild").await;
    node.task_succeeded(&task, CREATE_LIMIT, "rebuild").await;
    node.host_status(&host.id, "running", Duration::from_secs(10))
        .await;
    let after = docker::container(&container)
        .await
        .expect("host container after rebuild");
    assert_ne!(before.id, after.id, "rebuild must replace the container");
    assert!(after.running);
    let ip = node.host_ip(&host.short_id).await;
    let kept = ssh_ok(&user, ip, &host.ssh_password, "cat ~/persist.txt", SSH_LIMIT).await;
    assert_eq!(kept.stdout.trim(), marker, "the home did not survive the rebuild");

    rotate_password_live(&node, &host, &user, ip).await;

    // Delete: the row goes once everything is removed, and nothing of the host is left.
    let r = node.admin.delete(&format!("/v1/admin/hosts/{}", host.id)).await;
    let task = r.expect(202)["id"].as_str().unwrap().to_owned();
    node.host_gone(&host.id, ACTION_LIMIT).await;
    assert_eq!(node.task(&task).await["status"], "succeeded");
    let left = node.leftovers(&host.id).await;
    assert!(left.is_empty(), "left behind after delete: {left:?}");
    for name in [
        node.host_container(&host.short_id),
        node.egress_container(&host.short_id),
    ] {
        assert!(docker::container(&name).await.is_none(), "{name} still exists");
    }
    assert!(
        docker::volumes(&[format!("{}={}", docker::NODE, node.name)])
            .await
            .is_empty(),
        "a volume of the node is left"
    );
    // It was the node's only host: the hosts network goes too.
    node.node_emptied(Duration::from_secs(60)).await;
}

/// A new SSH password works at once, in the same container (not restarted), and the old one stops
/// working.
async fn rotate_password_live(node: &Node, host: &NewHost, user: &str, ip: std::net::Ipv4Addr) {
    let container = node.host_container(&host.short_id);
    let before = docker::container(&container).await.unwrap();
    let r = node
        .admin
        .post(&format!("/v1/admin/hosts/{}/rotate-ssh-password", host.id), None)
        .await;
    let body = r.expect(202).clone();
    let new_password = body["ssh_password"].as_str().expect("ssh_password").to_owned();
    assert_ne!(new_password, host.ssh_password);
    let task = body["task"]["id"].as_str().expect("task.id").to_owned();
    assert_eq!(body["task"]["kind"], "rotate_ssh_password");
    node.task_succeeded(&task, ACTION_LIMIT, "rotate-ssh-password")
        .await;

    let who = ssh(user, ip, &new_password, "id -un").await;
    assert!(who.success(), "the new password is refused: {}", who.both());
    assert_eq!(who.stdout.trim(), user);
    let old = ssh(user, ip, &host.ssh_password, "true").await;
    assert!(!old.success(), "the old password still works after rotation");
    // sshpass exits 5 when the password is refused (not for a network or protocol failure).
    assert!(
        old.code == Some(5) || old.both().contains("Permission denied"),
        "the old password should be refused, not fail otherwise (exit {:?}): {}",
        old.code,
        old.both()
    );
    let after = docker::container(&container).await.unwrap();
    assert_eq!(before.id, after.id, "rotation must not replace the container");
    assert_eq!(
        before.started_at, after.started_at,
        "rotation must not restart the container"
    );
    assert_eq!(node.host(&host.id).await["status"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_removes_their_hosts() {
    let node = Node::embedded(&[]).await;
    let user_id = node.user("bob").await;
    let first = node.create_host(&user_id).await;
    let second = node.create_host(&user_id).await;
    node.task_succeeded(&first.task_id, CREATE_LIMIT, "create").await;
    node.task_succeeded(&second.task_id, CREATE_LIMIT, "create").await;
    // One running, one stopped: both must go.
    let task = node.host_action(&second.id, "stop").await;
    node.task_succeeded(&task, ACTION_LIMIT, "stop").await;
    let ip = node.host_ip(&first.short_id).await;
    ssh_ok("bob", ip, &first.ssh_password, "echo data > ~/f", SSH_LIMIT).await;
    for h in [&first, &second] {
        assert!(!node.leftovers(&h.id).await.is_empty());
    }

    node.admin
        .delete(&format!("/v1/admin/users/{user_id}"))
        .await
        .expect(204);
    for h in [&first, &second] {
        node.host_gone(&h.id, ACTION_LIMIT).await;
        let left = node.leftovers(&h.id).await;
        assert!(left.is_empty(), "left behind of host {}: {left:?}", h.id);
    }
    let node_filter = [format!("{}={}", docker::NODE, node.name)];
    assert!(docker::containers(&node_filter).await.is_empty());
    assert!(docker::volumes(&node_filter).await.is_empty());
    node.node_emptied(Duration::from_secs(60)).await;
    let hosts = node
        .admin
        .get(&format!("/v1/admin/hosts?user_id={user_id}"))
        .await;
    assert_eq!(hosts.total(), 0, "{}", hosts.text);
    // The deletion is on record, naming the hosts it removed.
    let events = node.admin.get("/v1/admin/events?type=user.deleted").await;
    let event = events
        .data()
        .iter()
        .find(|e| e["user_id"] == json!(user_id))
        .unwrap_or_else(|| panic!("no user.deleted event for {user_id}: {}", events.text));
    let named = event["details"]["hosts_deleting"].to_string();
    assert!(
        named.contains(&first.id) && named.contains(&second.id),
        "user.deleted should name both hosts: {event}"
    );
}
