//! Account expiry stops the account's running hosts: the expiry scanner writes `user.expired` and
//! queues stop tasks, which the node agent carries out in Docker.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use chrono::Utc;
use cloud_cli_proxy_tests::fixtures::rfc3339;
use cloud_cli_proxy_tests::hosts::ACTION_LIMIT;
use cloud_cli_proxy_tests::{Node, docker};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_stops_the_users_running_hosts() {
    let node = Node::embedded(&[]).await;
    let host = node.running_host("dave").await;
    // Someone else's host, which must keep running.
    let other = node.running_host("erin").await;
    let container = node.host_container(&host.short_id);
    assert!(docker::is_running(&container).await);

    let expires_at = rfc3339(Utc::now() + chrono::Duration::seconds(3));
    let r = node
        .admin
        .put(
            &format!("/v1/admin/users/{}/expiry", host.user_id),
            json!({ "expires_at": expires_at }),
        )
        .await;
    assert_eq!(r.expect(200)["expired"], false, "{}", r.text);

    node.host_status(&host.id, "stopped", ACTION_LIMIT).await;
    assert!(
        !docker::is_running(&container).await,
        "the host is `stopped` but its container runs"
    );
    let user = node.admin.get(&format!("/v1/admin/users/{}", host.user_id)).await;
    assert_eq!(user.expect(200)["expired"], true, "{}", user.text);

    let events = node
        .admin
        .get(&format!(
            "/v1/admin/events?type=user.expired&user_id={}",
            host.user_id
        ))
        .await;
    assert_eq!(events.total(), 1, "one user.expired event: {}", events.text);
    let event = &events.data()[0];
    assert_eq!(event["user_id"], host.user_id.as_str());
    assert!(
        event["details"].to_string().contains(&host.id),
        "the event names the stopped host: {event}"
    );
    // The stop is a task like any other, on record for the host.
    let tasks = node
        .admin
        .get(&format!("/v1/admin/tasks?host_id={}&kind=stop", host.id))
        .await;
    assert_eq!(tasks.total(), 1, "{}", tasks.text);
    assert_eq!(tasks.data()[0]["status"], "succeeded");

    // Only that account's hosts.
    assert_eq!(node.host(&other.id).await["status"], "running");
    assert!(docker::is_running(&node.host_container(&other.short_id)).await);
    let unrelated = node
        .admin
        .get(&format!(
            "/v1/admin/events?type=user.expired&user_id={}",
            other.user_id
        ))
        .await;
    assert_eq!(unrelated.total(), 0, "{}", unrelated.text);
}
