//! Node identity against the real binary: enrolment keys (single-use, expired, revoked, wrong
//! kind), the credentials they are traded for, and what a node may do with its credential: only its
//! own hosts' tasks and secrets, host addresses only inside its own network, nothing once revoked.
//! Two stand-in agents speak the agent link over HTTP as two nodes of one control plane.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::time::Duration;

use cloud_cli_proxy_tests::fixtures::id;
use cloud_cli_proxy_tests::{Api, Body, ControlPlane, Options, Resp, assert_error, enrolment, eventually};
use reqwest::Method;
use serde_json::{Value, json};

/// A node speaking the agent link with its credential.
struct Agent {
    api: Api,
    node_id: String,
}

impl Agent {
    async fn enrol(cp: &ControlPlane, admin: &Api, name: &str, subnet: &str) -> Self {
        let (node_id, credential) = enrolment::agent(admin, &cp.api(), name).await;
        assert!(credential.starts_with("ccpn_"), "{credential}");
        let api = cp.api().with_header("x-agent-token", &credential);
        let r = api
            .post(
                "/v1/agent/register",
                json!({"node_name": name, "agent_version": "test", "reach_address": null, "hosts_subnet": subnet}),
            )
            .await;
        assert_eq!(r.expect(200)["node_id"], node_id.as_str());
        Self { api, node_id }
    }

    async fn claim(&self, node_id: &str) -> Resp {
        self.api
            .post("/v1/agent/claim", json!({"node_id": node_id, "wait_secs": 1}))
            .await
    }

    /// Claims until a task comes (at most 30 s).
    async fn next_task(&self) -> Value {
        eventually(Duration::from_secs(30), "a task to claim", || async {
            let r = self.claim(&self.node_id).await;
            assert!(
                r.status == 200 || r.status == 204,
                "claim: {} {}",
                r.status,
                r.text
            );
            (r.status == 200).then(|| r.body.clone())
        })
        .await
    }

    async fn result(&self, task: &Value, address: Option<&str>) -> Resp {
        let host_id = task["host"]["host_id"].as_str().unwrap();
        let state = if task["kind"] == "stop" {
            "stopped"
        } else {
            "running"
        };
        let body = json!({
            "lease": task["lease"],
            "outcome": {"status": "succeeded"},
            "observed": {"host_id": host_id, "state": state, "address": address},
        });
        self.api
            .send(
                Method::POST,
                &format!("/v1/agent/tasks/{}/result", task["task_id"].as_str().unwrap()),
                Body::Json(body),
            )
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_keys_are_single_use_expire_and_revoke() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let anon = cp.api();

    // A single-use key enrols once; its secret is never listed.
    let key = enrolment::key(&admin, "agent", 1).await;
    let r = enrolment::enrol(&anon, "agent", &key, "node-one").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let again = enrolment::enrol(&anon, "agent", &key, "node-two").await;
    assert_error(&again, 401, "unauthorized");
    let list = admin.get("/v1/admin/enrolment-keys").await;
    let listed = list.expect(200).clone();
    assert!(
        !listed.to_string().contains(&key),
        "the secret is listed: {listed}"
    );
    let row = &listed["data"][0];
    assert_eq!(
        (row["uses"].as_i64(), row["valid"].as_bool()),
        (Some(1), Some(false)),
        "{row}"
    );
    assert_eq!(row["state"], "used_up", "{row}");

    // A made-up key, and a gateway key offered by an agent, are refused alike.
    let made_up = enrolment::enrol(&anon, "agent", "ccpk_made-up", "node-three").await;
    assert_error(&made_up, 401, "unauthorized");
    let gateway_key = enrolment::key(&admin, "gateway", 1).await;
    let wrong_kind = enrolment::enrol(&anon, "agent", &gateway_key, "node-three").await;
    assert_error(&wrong_kind, 401, "unauthorized");

    // A revoked key enrols nothing.
    let key = enrolment::key(&admin, "agent", 5).await;
    let key_id = admin.get("/v1/admin/enrolment-keys").await.expect(200)["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = admin.delete(&format!("/v1/admin/enrolment-keys/{key_id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let revoked = enrolment::enrol(&anon, "agent", &key, "node-four").await;
    assert_error(&revoked, 401, "unauthorized");

    // An expired key enrols nothing: one made to expire in a second, tried once it has.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let r = admin
        .post(
            "/v1/admin/enrolment-keys",
            json!({"kind": "agent", "name": "short", "expires_at": soon}),
        )
        .await;
    let key = r.expect(201)["secret"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "the key to expire", || async {
        let list = admin.get("/v1/admin/enrolment-keys").await;
        let rows = list.expect(200)["data"].as_array().unwrap().clone();
        rows.iter()
            .any(|k| k["name"] == "short" && k["state"] == "expired")
            .then_some(())
    })
    .await;
    let expired = enrolment::enrol(&anon, "agent", &key, "node-five").await;
    assert_error(&expired, 401, "unauthorized");

    // Bad requests name the field; the refusals are in the audit log.
    let r = admin
        .post(
            "/v1/admin/enrolment-keys",
            json!({"kind": "agent", "name": "x", "usage_limit": 0}),
        )
        .await;
    assert_error(&r, 400, "validation_failed");
    let events = admin.get("/v1/admin/events?page_size=200").await;
    let text = events.expect(200).to_string();
    for reason in ["used_up", "wrong_kind", "revoked", "expired"] {
        assert!(text.contains(reason), "no enrolment.refused for {reason}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sees_only_its_own_hosts_and_stops_when_revoked() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;

    // Without a credential, or with a made-up one, the agent link answers nothing.
    let nobody = cp.api().with_header("x-agent-token", "ccpn_made-up");
    for api in [cp.api(), nobody] {
        let r = api
            .post(
                "/v1/agent/register",
                json!({"node_name": "x", "agent_version": "t", "reach_address": null}),
            )
            .await;
        assert_error(&r, 401, "unauthorized");
        let r = api
            .post("/v1/agent/claim", json!({"node_id": "x", "wait_secs": 0}))
            .await;
        assert_error(&r, 401, "unauthorized");
    }

    let a = Agent::enrol(&cp, &admin, "node-a", "172.30.1.0/24").await;
    let b = Agent::enrol(&cp, &admin, "node-b", "172.30.2.0/24").await;
    assert_ne!(a.node_id, b.node_id);

    // A name held by an enrolled node cannot be enrolled again.
    let key = enrolment::key(&admin, "agent", 1).await;
    let taken = enrolment::enrol(&cp.api(), "agent", &key, "node-a").await;
    assert_error(&taken, 409, "name_taken");

    // A takes the host's create: the host is placed on A, with the address A reports.
    let user = admin.create_user("alice", "alice-password").await;
    let host = admin.create_host(&id(&user)).await;
    let host_id = id(&host);
    let create = a.next_task().await;
    assert_eq!(create["host"]["host_id"], host_id.as_str());
    let r = a.result(&create, Some("172.30.1.5")).await;
    assert_eq!(r.status, 204, "{}", r.text);

    // The stop of A's host: B cannot claim it, neither as itself nor by naming A.
    let r = admin.post(&format!("/v1/admin/hosts/{host_id}/stop"), None).await;
    assert!(r.status < 300, "{} {}", r.status, r.text);
    let r = b.claim(&b.node_id).await;
    assert_eq!(r.status, 204, "B got A's task: {}", r.text);
    let r = b.claim(&a.node_id).await;
    assert_error(&r, 403, "wrong_node");
    let r = b
        .api
        .post(
            "/v1/agent/heartbeat",
            json!({"node_id": b.node_id, "observed": []}),
        )
        .await;
    let hosts = r.expect(200)["hosts"].clone();
    assert_eq!(hosts, json!([]), "B sees A's hosts: {hosts}");
    let stop = a.next_task().await;
    assert_eq!(stop["kind"], "stop");
    assert!(stop["host"]["password_crypt"].is_string(), "{stop}");

    // B cannot report on A's task.
    let r = b.result(&stop, None).await;
    assert_error(&r, 404, "not_found");
    let task_id = stop["task_id"].as_str().unwrap();
    let r = b
        .api
        .post(
            &format!("/v1/agent/tasks/{task_id}/progress"),
            json!({"lease": stop["lease"], "percent": 50, "stage": "x"}),
        )
        .await;
    assert_error(&r, 404, "not_found");

    // A's own report with an address outside its network is refused and recorded.
    let r = a.result(&stop, Some("10.9.9.9")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["field"], "observed.address", "{}", r.text);
    let events = admin.get("/v1/admin/events?page_size=200").await;
    assert!(
        events.expect(200).to_string().contains("node.address_refused"),
        "no event for the refused address"
    );
    let r = a.result(&stop, Some("172.30.1.6")).await;
    assert_eq!(r.status, 204, "{}", r.text);

    // Revoking A: its very next request is refused; B carries on.
    let r = admin.delete(&format!("/v1/admin/nodes/{}", a.node_id)).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = a
        .api
        .post(
            "/v1/agent/heartbeat",
            json!({"node_id": a.node_id, "observed": []}),
        )
        .await;
    assert_error(&r, 401, "unauthorized");
    let r = a.claim(&a.node_id).await;
    assert_error(&r, 401, "unauthorized");
    let r = b
        .api
        .post(
            "/v1/agent/heartbeat",
            json!({"node_id": b.node_id, "observed": []}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let nodes = admin.get("/v1/admin/nodes").await;
    let listed = nodes.expect(200)["data"].clone();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == a.node_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (row["enrolled"].as_bool(), row["revoked_at"].is_string()),
        (Some(false), true),
        "{row}"
    );

    // Enrolled again under its name with a new key, the node keeps its id (and its hosts).
    let key = enrolment::key(&admin, "agent", 1).await;
    let r = enrolment::enrol(&cp.api(), "agent", &key, "node-a").await;
    assert_eq!(r.expect(201)["id"], a.node_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_two_users_share_a_host_account() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    admin.create_user("bob.smith", "bob-password").await;
    // Its account name in hosts: u_ and 24 hex digits of the SHA-256 of the lower-cased name.
    let out = std::process::Command::new("bash")
        .args(["-c", "printf %s bob.smith | sha256sum"])
        .output()
        .unwrap();
    let digest = String::from_utf8(out.stdout).unwrap();
    let derived = format!("u_{}", &digest[..24]);
    let r = admin
        .post(
            "/v1/admin/users",
            json!({"username": derived, "password": "derived-password"}),
        )
        .await;
    assert_error(&r, 409, "linux_user_taken");
    // Other dotted names get accounts of their own.
    let r = admin
        .post(
            "/v1/admin/users",
            json!({"username": "jane.roe", "password": "jane-password"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}
