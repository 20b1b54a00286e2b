//! Hosts through the API and from the outside: creating them, following their tasks (polling and
//! over the SSE stream), reaching their sshd with the real OpenSSH client, and checking that Docker
//! and the node's files agree with the database.

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::api::Api;
use crate::docker::{self, Out};
use crate::node::Node;

/// Generous bounds: these tests share two cores with the rest of the suite.
pub const CREATE_LIMIT: Duration = Duration::from_secs(180);
pub const ACTION_LIMIT: Duration = Duration::from_secs(150);

/// A host just asked for, with the secrets shown once.
#[derive(Debug, Clone)]
pub struct NewHost {
    pub id: String,
    pub short_id: String,
    pub user_id: String,
    pub task_id: String,
    pub ssh_password: String,
}

/// The account name inside the container for an API username (plain lower-case names keep theirs).
pub fn linux_user(username: &str) -> String {
    let name = username.to_lowercase();
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if plain && name != "root" {
        name
    } else {
        "user".to_owned()
    }
}

pub fn is_finished(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

impl Node {
    /// A tenant; returns its id.
    pub async fn user(&self, username: &str) -> String {
        let user = self
            .admin
            .create_user(username, &format!("pw-{}", crate::fixtures::random_alnum(16)))
            .await;
        crate::fixtures::id(&user)
    }

    /// `POST /v1/admin/hosts`.
    pub async fn create_host(&self, user_id: &str) -> NewHost {
        let r = self
            .admin
            .post("/v1/admin/hosts", json!({ "user_id": user_id }))
            .await;
        let body = r.expect(201);
        let s = |k: &str| {
            body[k]
                .as_str()
                .unwrap_or_else(|| panic!("no `{k}` in {body}"))
                .to_owned()
        };
        NewHost {
            id: s("id"),
            short_id: s("short_id"),
            user_id: user_id.to_owned(),
            task_id: s("task_id"),
            ssh_password: s("ssh_password"),
        }
    }

    /// A user and a host of theirs, created and running (the create task succeeded).
    pub async fn running_host(&self, username: &str) -> NewHost {
        self.tenant(username).await.host
    }

    /// `POST /v1/admin/hosts/{id}/{action}` (start, stop, rebuild): the task id.
    pub async fn host_action(&self, host_id: &str, action: &str) -> String {
        let r = self
            .admin
            .post(&format!("/v1/admin/hosts/{host_id}/{action}"), None)
            .await;
        crate::fixtures::id(r.expect(202))
    }

    pub async fn task(&self, task_id: &str) -> Value {
        self.admin
            .get(&format!("/v1/admin/tasks/{task_id}"))
            .await
            .expect(200)
            .clone()
    }

    /// Polls the task until it has finished, whatever the outcome.
    pub async fn task_finished(&self, task_id: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let task = self.task(task_id).await;
            if is_finished(task["status"].as_str().unwrap_or("")) {
                return task;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {task_id} has not finished within {limit:?}: {task}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls the task until it has finished and asserts it succeeded.
    pub async fn task_succeeded(&self, task_id: &str, limit: Duration, what: &str) -> Value {
        let task = self.task_finished(task_id, limit).await;
        assert_eq!(
            task["status"],
            "succeeded",
            "{what} task did not succeed: {task}\n{}",
            self.diagnostics()
        );
        task
    }

    pub async fn host(&self, host_id: &str) -> Value {
        self.admin
            .get(&format!("/v1/admin/hosts/{host_id}"))
            .await
            .expect(200)
            .clone()
    }

    /// Polls until the host's status is `status`.
    pub async fn host_status(&self, host_id: &str, status: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let host = self.host(host_id).await;
            if host["status"] == status {
                return host;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "host {host_id} is not `{status}` after {limit:?}: {host}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls until `GET /v1/admin/hosts/{id}` answers 404 (the delete task removed everything).
    pub async fn host_gone(&self, host_id: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let r = self.admin.get(&format!("/v1/admin/hosts/{host_id}")).await;
            if r.status == 404 {
                crate::assert_error(&r, 404, "not_found");
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "host {host_id} still answers {} after {limit:?}: {}\n{}",
                r.status,
                r.text,
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// What is left of a host: Docker objects with its `host-id` label, and its files.
    pub async fn leftovers(&self, host_id: &str) -> Vec<String> {
        let mut left = docker::labelled(docker::HOST_ID, host_id).await;
        let files = self.host_files(host_id);
        if files.exists() {
            left.push(format!("files {}", files.display()));
        }
        left
    }

    /// Waits until nothing labelled with the node is left in Docker: once its last host is deleted,
    /// the agent's reconciler removes the hosts network too.
    pub async fn node_emptied(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = docker::labelled(docker::NODE, &self.name).await;
            if left.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still labelled with node {} after {limit:?}: {left:?}\n{}",
                self.name,
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Docker objects of this node whose host has no row in the database (or no host label).
    pub async fn orphans(&self) -> Vec<String> {
        let mut orphans = Vec::new();
        for (object, host_id) in docker::host_ids_on_node(&self.name).await {
            if host_id.is_empty() {
                orphans.push(format!("{object} (no host-id label)"));
                continue;
            }
            let r = self.admin.get(&format!("/v1/admin/hosts/{host_id}")).await;
            if r.status == 404 {
                orphans.push(format!("{object} of host {host_id}, which has no row"));
            }
        }
        orphans
    }

    /// Asserts, within a grace period for the reconciler, that the host's status agrees with Docker:
    /// `running` exactly when its container runs.
    pub async fn status_matches_docker(&self, host_id: &str, short_id: &str) -> Value {
        let container = self.host_container(short_id);
        let limit = Duration::from_secs(60);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let host = self.host(host_id).await;
            let running = docker::is_running(&container).await;
            let status = host["status"].as_str().unwrap_or("").to_owned();
            let busy = matches!(status.as_str(), "creating" | "pending" | "deleting");
            if !busy && (status == "running") == running {
                return host;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "host {host_id} and Docker disagree after {limit:?}: status {status}, container \
                 running: {running}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Follows `GET /v1/admin/tasks/{id}/events` until the task has finished; returns every `task`
/// event's JSON in order.
pub async fn task_events(api: &Api, task_id: &str, limit: Duration) -> Vec<Value> {
    let path = format!("/v1/admin/tasks/{task_id}/events");
    let resp = api.stream(&path, limit + Duration::from_secs(5)).await;
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut events: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(bytes))) => bytes,
            Ok(Some(Err(e))) => panic!("{path}: reading the stream failed: {e}; events so far: {events:?}"),
            Ok(None) => break,
            Err(_) => panic!("{path}: the task did not finish within {limit:?}; events so far: {events:?}"),
        };
        buf.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if let Some(event) = parse_sse_block(&block) {
                events.push(event);
            }
        }
        if events
            .last()
            .is_some_and(|e| is_finished(e["status"].as_str().unwrap_or("")))
        {
            break;
        }
    }
    events
}

/// One SSE block → the JSON of a `task` event (comments, keep-alives and other events are `None`).
fn parse_sse_block(block: &str) -> Option<Value> {
    let mut name = "message";
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    if name != "task" || data.is_empty() {
        return None;
    }
    let text = data.join("\n");
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("task event is not JSON ({e}): {text}")))
}

/// `sshpass -e ssh … USER@IP COMMAND` with the real OpenSSH client, password authentication only.
/// The password travels in the environment (`SSHPASS`), not on the command line.
pub async fn ssh(user: &str, ip: Ipv4Addr, password: &str, command: &str) -> Out {
    let target = format!("{user}@{ip}");
    let child = tokio::process::Command::new("sshpass")
        .env("SSHPASS", password)
        .args([
            "-e",
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "ConnectTimeout=15",
            "-o",
            "LogLevel=ERROR",
            &target,
            command,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run sshpass (install sshpass and openssh-client)");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ssh {target} {command}: no answer within 60 s"))
        .expect("wait for ssh");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `command` over SSH until it succeeds (sshd may need a moment after a start), asserting it
/// does within `limit`; returns its output.
pub async fn ssh_ok(user: &str, ip: Ipv4Addr, password: &str, command: &str, limit: Duration) -> Out {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let out = ssh(user, ip, password, command).await;
        if out.success() {
            return out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`ssh {user}@{ip} {command}` did not succeed within {limit:?}; last exit {:?}: {}",
            out.code,
            out.both()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether something at `addr` sends an SSH banner within a timeout: the agent's own readiness check.
pub use agent::hosts::ssh_banner;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks() {
        let v = parse_sse_block("event: task\ndata: {\"status\":\"running\",\"progress\":40}\n\n").unwrap();
        assert_eq!(v["progress"], 40);
        assert!(parse_sse_block(": keep-alive\n\n").is_none());
        assert!(parse_sse_block("event: other\ndata: {}\n\n").is_none());
    }

    #[test]
    fn linux_user_names() {
        assert_eq!(linux_user("Alice"), "alice");
        assert_eq!(linux_user("bob.smith"), "user");
        assert_eq!(linux_user("root"), "user");
        assert_eq!(linux_user("9x"), "user");
    }
}
