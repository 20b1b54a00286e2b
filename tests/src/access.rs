//! Bootstrap and entry access from the outside: control planes whose scripts reach them (the API,
//! and the SSH gateway, on chosen loopback ports), `curl -sSf URL | bash` on a terminal, a stand-in
//! `ssh` for the steps before the gateway, and a stand-in agent that finishes host tasks on demand.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::api::{Api, Body};
use crate::process::{ControlPlane, Options};
use crate::terminal::Terminal;

/// The tools the access script calls, besides `ssh` and `sshpass`.
pub const SCRIPT_TOOLS: &[&str] = &["bash", "curl", "mktemp", "chmod", "rm", "sleep", "cat"];

/// A loopback TCP port nobody listens on now. The OS picks it; between closing it here and the
/// process under test binding it there is a small window, which a busy machine rarely hits.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Options whose API listens on a chosen loopback port that `PUBLIC_BASE_URL` names, so the URLs
/// the scripts call reach this process. Returns the base URL.
pub fn reachable(opts: Options) -> (Options, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let opts = opts
        .env("CONTROL_PLANE_ADDR", format!("127.0.0.1:{port}"))
        .env("PUBLIC_BASE_URL", &url);
    (opts, url)
}

/// The SSH gateway's address knob: `SSH_PROXY_ADDR` on a free loopback port, the port the access
/// answers hand out. Returns the port.
pub fn ssh_proxy_addr(opts: Options) -> (Options, u16) {
    let port = free_port();
    (opts.env("SSH_PROXY_ADDR", format!("127.0.0.1:{port}")), port)
}

/// `curl -sSf URL | bash` on a new terminal, with `env` added (e.g. a `PATH` and `HOME`).
pub fn pipe_to_bash(url: &str, env: &[(&str, &str)]) -> Terminal {
    assert!(
        url.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":/.-_".contains(c)),
        "not a plain URL: {url}"
    );
    Terminal::spawn(&format!("curl -sSf {url} | bash"), env)
}

/// A directory to put first on `PATH`: links to `tools` as found on the test's `PATH`, and, when
/// `fake_ssh` is set, a stand-in `ssh` that records its arguments and the password it is given
/// (through `SSH_ASKPASS` when forced, else from its terminal as `sshpass` types it) in `log_dir`,
/// then prints `FAKE-SSH-DONE` and exits 0.
pub fn tool_dir(dir: &Path, tools: &[&str], fake_ssh: Option<&Path>) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in tools {
        let found = std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("`{tool}` is not on PATH"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    if let Some(log_dir) = fake_ssh {
        let script = format!(
            r#"#!/bin/bash
set -eu
log={log}
printf '%s\n' "$@" >"$log/args"
if [[ ${{SSH_ASKPASS_REQUIRE-}} == force ]]; then
    secret=$("$SSH_ASKPASS" "password: ")
    echo askpass >"$log/via"
else
    printf 'password: ' >/dev/tty
    IFS= read -r -s secret </dev/tty
    echo terminal >"$log/via"
fi
printf '%s' "$secret" >"$log/secret"
printf '\nFAKE-SSH-DONE\n'
"#,
            log = log_dir.display()
        );
        let fake = bin.join("ssh");
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    bin
}

/// SHA-256 (hex) of a secret, as the database keeps it.
pub fn secret_hash(secret: &str) -> String {
    let out = std::process::Command::new("bash")
        .args(["-c", "printf '%s' \"$1\" | sha256sum", "-", secret])
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The stored handoff row of `secret`: `(host_id, used)`.
pub async fn handoff_row(cp: &ControlPlane, secret: &str) -> Option<(String, bool)> {
    let rows = crate::database::fetch_texts(
        &cp.database_url(),
        "SELECT host_id, used_at FROM ssh_handoffs WHERE secret_hash = $1",
        &[&secret_hash(secret)],
    )
    .await;
    rows.into_iter().next().map(|row| {
        let host = row[0].clone().expect("host_id");
        (host, row[1].is_some())
    })
}

/// A stand-in node agent over the agent link: it claims host tasks and ends them as told, so API
/// tests can bring hosts "up" without Docker. It enrols as a node with a key the admin makes.
#[derive(Debug)]
pub struct FakeAgent {
    api: Api,
    node_id: String,
}

impl FakeAgent {
    pub async fn register(cp: &ControlPlane) -> Self {
        let admin = cp.admin().await;
        let (_, credential) = crate::enrolment::agent(&admin, &cp.api(), "fake-node").await;
        let api = cp.api().with_header("x-agent-token", &credential);
        let r = api
            .post(
                "/v1/agent/register",
                json!({"node_name": "fake-node", "agent_version": "test", "reach_address": null}),
            )
            .await;
        let node_id = r.expect(200)["node_id"].as_str().unwrap().to_owned();
        Self { api, node_id }
    }

    /// Claims the next task (waiting for one up to 30 s), which must be one of `host_id`, and ends
    /// it: succeeded with the host running or stopped as the task kind says, or failed for good.
    /// Returns the task's id.
    pub async fn finish_next(&self, host_id: &str, succeed: bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let assignment = loop {
            let r = self
                .api
                .post(
                    "/v1/agent/claim",
                    json!({"node_id": self.node_id, "wait_secs": 1}),
                )
                .await;
            if r.status == 200 {
                break r.body;
            }
            assert_eq!(r.status, 204, "claim: {}", r.text);
            assert!(Instant::now() < deadline, "no task to claim within 30 s");
        };
        let task_id = assignment["task_id"].as_str().unwrap().to_owned();
        assert_eq!(
            assignment["host"]["host_id"], host_id,
            "the fake agent claimed another host's task: {assignment}"
        );
        let state = if assignment["kind"] == "stop" {
            "stopped"
        } else {
            "running"
        };
        let outcome = if succeed {
            json!({"status": "succeeded"})
        } else {
            json!({"status": "failed", "error": "the fake agent fails this task", "retryable": false})
        };
        let body = json!({
            "lease": assignment["lease"],
            "outcome": outcome,
            "observed": {"host_id": host_id, "state": state, "address": null},
        });
        let r = self
            .api
            .send(
                Method::POST,
                &format!("/v1/agent/tasks/{task_id}/result"),
                Body::Json(body),
            )
            .await;
        assert!(r.status < 300, "result of {task_id}: {} {}", r.status, r.text);
        task_id
    }
}

/// `GET /v1/bootstrap/tasks/{id}` until its status is `want`.
pub async fn session_status(api: &Api, task_id: &str, want: &str) -> Value {
    crate::api::eventually(
        Duration::from_secs(30),
        &format!("bootstrap task {want}"),
        || async {
            let r = api.get(&format!("/v1/bootstrap/tasks/{task_id}")).await;
            (r.body["status"] == want).then(|| r.body.clone())
        },
    )
    .await
}

/// Control-plane variables for a Docker node whose scripts reach it: the API and the SSH gateway
/// on chosen loopback ports, `PUBLIC_BASE_URL` naming the API. Returns them, the base URL and the
/// SSH port.
pub fn reachable_env() -> (Vec<(String, String)>, String, u16) {
    let (opts, base) = reachable(Options {
        env: Vec::new(),
        ..Options::new()
    });
    let (opts, ssh_port) = ssh_proxy_addr(opts);
    (opts.env, base, ssh_port)
}
