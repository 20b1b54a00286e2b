//! Writers at once never make the API fail: operators create and remove users, hosts, egress IPs,
//! bindings, SSH keys and tokens from several clients while an agent heartbeats, claims tasks,
//! reports progress and ends them, all against one control plane. Not one answer may be a 5xx.
//! Runs on SQLite and (with `CCP_E2E_DATABASE=postgres`) on PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloud_cli_proxy_tests::fixtures::{self, id, unique};
use cloud_cli_proxy_tests::{Api, ControlPlane, Options, Resp, enrolment};
use serde_json::{Value, json};
use tokio::time::Instant;

/// How long the writers keep at it.
const RUN_FOR: Duration = Duration::from_secs(20);
const OPERATORS: usize = 4;

/// Every status answered, and the first few 5xx in full.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, usize>,
    server_errors: Vec<String>,
}

#[derive(Clone, Default)]
struct Record(Arc<Mutex<Tally>>);

impl Record {
    fn note(&self, what: &str, r: &Resp) -> bool {
        let mut t = self.0.lock().unwrap();
        *t.statuses.entry(r.status).or_insert(0) += 1;
        if r.status >= 500 && t.server_errors.len() < 10 {
            t.server_errors.push(format!("{what}: {} {}", r.status, r.text));
        }
        r.status < 300
    }
}

/// One operator's round: a user with a host, an egress IP bound to it, a key and a token, then
/// all of it taken apart again.
async fn operator_round(admin: &Api, rec: &Record) {
    let name = unique("cw");
    let r = admin
        .post(
            "/v1/admin/users",
            json!({"username": name, "password": "writer-password-1"}),
        )
        .await;
    if !rec.note("create user", &r) {
        return;
    }
    let uid = id(&r.body);
    let r = admin.post("/v1/admin/hosts", json!({"user_id": uid})).await;
    let host = rec.note("create host", &r).then(|| id(&r.body));
    let r = admin
        .post(
            "/v1/admin/egress-ips",
            fixtures::wireguard_egress(&unique("cw-wg")),
        )
        .await;
    let egress = rec.note("create egress", &r).then(|| id(&r.body));
    let binding = match (&host, &egress) {
        (Some(h), Some(e)) => {
            let r = admin
                .post("/v1/admin/bindings", json!({"host_id": h, "egress_ip_id": e}))
                .await;
            rec.note("bind", &r).then(|| id(&r.body))
        }
        _ => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let key = fixtures::ssh_keygen(dir.path(), "id_cw");
    let r = admin
        .post(
            &format!("/v1/admin/users/{uid}/ssh-keys"),
            json!({"public_key": key.public_line}),
        )
        .await;
    rec.note("add key", &r);
    let r = admin
        .patch(&format!("/v1/admin/users/{uid}"), json!({"status": "disabled"}))
        .await;
    rec.note("disable user", &r);
    if let Some(b) = binding {
        let r = admin.delete(&format!("/v1/admin/bindings/{b}")).await;
        rec.note("unbind", &r);
    }
    if let Some(h) = &host {
        let r = admin.delete(&format!("/v1/admin/hosts/{h}")).await;
        rec.note("delete host", &r);
    }
    let r = admin.delete(&format!("/v1/admin/users/{uid}")).await;
    rec.note("delete user", &r);
    if let Some(e) = egress {
        // Refused (409) while the deleting host still holds it; fine either way.
        let r = admin.delete(&format!("/v1/admin/egress-ips/{e}")).await;
        rec.note("delete egress", &r);
    }
}

/// An agent that claims whatever is queued, reports progress, ends it, and heartbeats meanwhile.
async fn agent_round(agent: &Api, node_id: &str, rec: &Record, seen: &mut Vec<String>) {
    let r = agent
        .post("/v1/agent/claim", json!({"node_id": node_id, "wait_secs": 0}))
        .await;
    rec.note("claim", &r);
    if r.status == 200 {
        let task = r.body;
        let task_id = task["task_id"].as_str().unwrap().to_owned();
        let host_id = task["host"]["host_id"].as_str().unwrap().to_owned();
        let r = agent
            .post(
                &format!("/v1/agent/tasks/{task_id}/progress"),
                json!({"lease": task["lease"], "percent": 50, "stage": "working"}),
            )
            .await;
        rec.note("progress", &r);
        let state = if task["kind"] == "stop" {
            "stopped"
        } else {
            "running"
        };
        let observed = if task["kind"] == "delete" {
            Value::Null
        } else {
            json!({"host_id": host_id, "state": state, "address": null})
        };
        let r = agent
            .post(
                &format!("/v1/agent/tasks/{task_id}/result"),
                json!({"lease": task["lease"], "outcome": {"status": "succeeded"}, "observed": observed}),
            )
            .await;
        rec.note("result", &r);
        if !seen.contains(&host_id) {
            seen.push(host_id);
        }
    }
    let observed: Vec<Value> = seen
        .iter()
        .map(|h| json!({"host_id": h, "state": "running", "address": null}))
        .collect();
    let r = agent
        .post(
            "/v1/agent/heartbeat",
            json!({"node_id": node_id, "observed": observed}),
        )
        .await;
    rec.note("heartbeat", &r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_no_server_errors() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let (_, credential) = enrolment::agent(&admin, &cp.api(), "cw-node").await;
    let agent = cp.api().with_header("x-agent-token", &credential);
    let r = agent
        .post(
            "/v1/agent/register",
            json!({"node_name": "cw-node", "agent_version": "test", "reach_address": null}),
        )
        .await;
    let node_id = r.expect(200)["node_id"].as_str().unwrap().to_owned();

    let rec = Record::default();
    let until = Instant::now() + RUN_FOR;
    let mut workers = Vec::new();
    for _ in 0..OPERATORS {
        let (admin, rec) = (admin.clone(), rec.clone());
        workers.push(tokio::spawn(async move {
            let mut rounds = 0;
            while Instant::now() < until {
                operator_round(&admin, &rec).await;
                rounds += 1;
            }
            rounds
        }));
    }
    let agent_worker = {
        let rec = rec.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut rounds = 0;
            while Instant::now() < until {
                agent_round(&agent, &node_id, &rec, &mut seen).await;
                rounds += 1;
            }
            rounds
        })
    };
    let mut operator_rounds = 0;
    for w in workers {
        operator_rounds += w.await.unwrap();
    }
    let agent_rounds = agent_worker.await.unwrap();

    let tally = rec.0.lock().unwrap();
    eprintln!(
        "{} database: {operator_rounds} operator rounds, {agent_rounds} agent rounds, statuses {:?}",
        if cp.is_postgres() { "PostgreSQL" } else { "SQLite" },
        tally.statuses
    );
    assert!(operator_rounds >= OPERATORS, "the operators barely ran");
    assert!(
        tally.server_errors.is_empty(),
        "server errors under concurrent writers: {:#?}\nstatuses: {:?}",
        tally.server_errors,
        tally.statuses
    );
}
