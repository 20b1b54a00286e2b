//! Two control-plane replicas on one PostgreSQL database act as one system: what one writes the
//! other reads, tokens and sign-in limits are shared, an agent attached to one builds what the other
//! was asked for while the other streams its progress, and a replica killed mid-task leaves nothing
//! behind: the task finishes through the survivor and the periodic jobs move to it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cloud_cli_proxy_tests::database::{self, PgDatabase};
use cloud_cli_proxy_tests::fixtures::id;
use cloud_cli_proxy_tests::{Api, ControlPlane, Options, assert_error, enrolment, eventually, hosts};
use serde_json::{Value, json};

/// Two replicas on one fresh PostgreSQL database, sharing the secrets key file and the operator's
/// settings, with no embedded agent or gateway.
async fn replicas(env: &[(&str, &str)]) -> (ControlPlane, ControlPlane, Arc<PgDatabase>, tempfile::TempDir) {
    let db = PgDatabase::create();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new()
        .postgres(db.clone())
        .env("SECRETS_KEY_FILE", dir.path().join("secrets.key").display())
        .env("EMBEDDED_SSH_PROXY", "false");
    for (k, v) in env {
        opts = opts.env(k, v);
    }
    let a = ControlPlane::start(opts.clone()).await;
    let b = ControlPlane::start(opts).await;
    (a, b, db, dir)
}

/// An agent of a node, speaking the agent protocol to one replica.
struct Agent {
    api: Api,
    credential: String,
    node_id: String,
}

impl Agent {
    async fn enrol(admin: &Api, cp: &ControlPlane, name: &str) -> Self {
        let (_, credential) = enrolment::agent(admin, &cp.api(), name).await;
        let api = cp.api().with_header("x-agent-token", &credential);
        let r = api
            .post(
                "/v1/agent/register",
                json!({"node_name": name, "agent_version": "test", "reach_address": null}),
            )
            .await;
        let node_id = r.expect(200)["node_id"].as_str().unwrap().to_owned();
        Self {
            api,
            credential,
            node_id,
        }
    }

    /// The same agent, now speaking to `cp`.
    fn through(&self, cp: &ControlPlane) -> Self {
        Self {
            api: cp.api().with_header("x-agent-token", &self.credential),
            credential: self.credential.clone(),
            node_id: self.node_id.clone(),
        }
    }

    async fn claim(&self) -> Value {
        eventually(Duration::from_secs(30), "a task to claim", || async {
            let r = self
                .api
                .post(
                    "/v1/agent/claim",
                    json!({"node_id": self.node_id, "wait_secs": 2}),
                )
                .await;
            match r.status {
                200 => Some(r.body),
                204 => None,
                other => panic!("claim: {other} {}", r.text),
            }
        })
        .await
    }

    async fn progress(&self, task: &Value, percent: u8, stage: &str) -> Value {
        let r = self
            .api
            .post(
                &format!("/v1/agent/tasks/{}/progress", task["task_id"].as_str().unwrap()),
                json!({"lease": task["lease"], "percent": percent, "stage": stage}),
            )
            .await;
        r.expect(200).clone()
    }

    async fn succeed(&self, task: &Value) {
        let host_id = task["host"]["host_id"].clone();
        let r = self
            .api
            .post(
                &format!("/v1/agent/tasks/{}/result", task["task_id"].as_str().unwrap()),
                json!({
                    "lease": task["lease"],
                    "outcome": {"status": "succeeded"},
                    "observed": {"host_id": host_id, "state": "running", "address": null},
                }),
            )
            .await;
        assert!(r.status < 300, "result: {} {}", r.status, r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_act_as_one() {
    let (a, b, _db, _dir) = replicas(&[
        ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "3"),
        ("LOGIN_MAX_FAILURES_PER_IP", "1000"),
    ])
    .await;
    let admin_a = a.admin().await;
    let admin_b = b.api().with_token(admin_a.token());

    // What one writes the other reads; a session and an API token from one work on the other.
    let user = admin_a.create_user("rita", "rita-password-1").await;
    let r = admin_b.get(&format!("/v1/admin/users/{}", id(&user))).await;
    assert_eq!(r.expect(200)["username"], "rita");
    let rita_a = a.api().login_as("rita", "rita-password-1").await;
    let token = rita_a
        .post("/v1/auth/api-tokens", json!({"name": "ci", "expires_in_days": 1}))
        .await;
    let token = token.expect(201)["token"].as_str().unwrap().to_owned();
    let r = b.api().with_token(&token).get("/v1/auth/me").await;
    assert_eq!(r.expect(200)["username"], "rita");

    // Failed sign-ins count across both: two on one, one on the other reach the limit of three,
    // and then even the right password is refused by either.
    let wrong = json!({"username": "rita", "password": "not-her-password"});
    for cp in [&a, &a, &b] {
        assert_error(
            &cp.api().post("/v1/auth/login", wrong.clone()).await,
            401,
            "unauthorized",
        );
    }
    let right = json!({"username": "rita", "password": "rita-password-1"});
    for cp in [&a, &b] {
        assert_error(
            &cp.api().post("/v1/auth/login", right.clone()).await,
            429,
            "rate_limited",
        );
    }

    // An agent attached to B builds the host asked for on A, while A streams the task's progress.
    let agent = Agent::enrol(&admin_b, &b, "node-b").await;
    let host = admin_a.create_host(&id(&user)).await;
    let task_id = host["task_id"].as_str().unwrap().to_owned();
    let follow = {
        let admin_a = admin_a.clone();
        let task_id = task_id.clone();
        tokio::spawn(async move { hosts::task_events(&admin_a, &task_id, Duration::from_secs(60)).await })
    };
    let task = agent.claim().await;
    assert_eq!(task["task_id"], task_id.as_str(), "{task}");
    let reply = agent.progress(&task, 40, "pulling").await;
    assert_eq!(reply["lease_lost"], false, "{reply}");
    // Let the progress reach A's stream before the end, so it is seen on its own.
    tokio::time::sleep(Duration::from_secs(1)).await;
    agent.succeed(&task).await;
    let events = follow.await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["status"] == "running" && e["progress"] == 40),
        "A's stream missed the progress reported through B: {events:#?}"
    );
    assert_eq!(events.last().unwrap()["status"], "succeeded", "{events:#?}");
    let r = admin_b.get(&format!("/v1/admin/hosts/{}", id(&host))).await;
    assert_eq!(r.expect(200)["status"], "running");
}

/// When the scheduler's lease runs out, as stored.
async fn scheduler_lease_until(url: &str) -> Option<DateTime<Utc>> {
    let rows = database::fetch_texts(url, "SELECT until FROM leases WHERE name = 'scheduler'", &[]).await;
    let until = rows.first()?.first()?.clone()?;
    Some(DateTime::parse_from_rfc3339(&until).unwrap().to_utc())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_task_leaves_nothing_behind() {
    let (a, mut b, db, _dir) = replicas(&[]).await;
    let admin_a = a.admin().await;
    let user = admin_a.create_user("kim", "kim-password-1").await;
    let agent_b = Agent::enrol(&admin_a, &b, "node-k").await;
    let host = admin_a.create_host(&id(&user)).await;
    let task = agent_b.claim().await;
    assert_eq!(task["task_id"], host["task_id"], "{task}");
    agent_b.progress(&task, 30, "creating").await;

    // B dies without a word; its agent carries on through A with the same lease.
    b.kill().await;
    let killed_at = Utc::now();
    let agent_a = agent_b.through(&a);
    let reply = agent_a.progress(&task, 70, "starting").await;
    assert_eq!(reply["lease_lost"], false, "{reply}");
    agent_a.succeed(&task).await;
    let r = admin_a
        .get(&format!("/v1/admin/tasks/{}", task["task_id"].as_str().unwrap()))
        .await;
    assert_eq!(r.expect(200)["status"], "succeeded");
    let r = admin_a.get(&format!("/v1/admin/hosts/{}", id(&host))).await;
    assert_eq!(r.expect(200)["status"], "running");

    // The periodic jobs keep running: whoever held their lease, the survivor renews it past the
    // moment a dead holder's lease would have run out.
    eventually(
        Duration::from_secs(40),
        "the survivor to hold the scheduler's lease",
        || async {
            let until = scheduler_lease_until(db.url()).await?;
            (until > killed_at + chrono::Duration::seconds(15)).then_some(())
        },
    )
    .await;

    // Nothing is left running or half-done.
    let running = admin_a.count("/v1/admin/tasks?status=running").await;
    assert_eq!(running, 0, "a task was left running");
}
