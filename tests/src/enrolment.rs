//! Enrolment keys for the tests' agents and gateways, made through the admin API as an operator
//! would, and the raw enrolment call that stand-in agents use.

use serde_json::{Value, json};

use crate::api::Api;

/// Creates an enrolment key of `kind` (`agent` or `gateway`) allowing `usage_limit` enrolments;
/// answers its secret.
pub async fn key(admin: &Api, kind: &str, usage_limit: u32) -> String {
    let r = admin
        .post(
            "/v1/admin/enrolment-keys",
            json!({"kind": kind, "name": format!("test {kind}"), "usage_limit": usage_limit}),
        )
        .await;
    let body = r.expect(201);
    body["secret"].as_str().expect("the key's secret").to_owned()
}

/// `POST /v1/{agent,gateway}/enrol`: the answer as it came.
pub async fn enrol(api: &Api, kind: &str, key: &str, name: &str) -> crate::Resp {
    api.post(&format!("/v1/{kind}/enrol"), json!({"key": key, "name": name}))
        .await
}

/// Enrols an agent called `name` with a fresh single-use key; answers `(node_id, credential)`.
pub async fn agent(admin: &Api, anon: &Api, name: &str) -> (String, String) {
    let key = key(admin, "agent", 1).await;
    let r = enrol(anon, "agent", &key, name).await;
    let body: &Value = r.expect(201);
    (
        body["id"].as_str().unwrap().to_owned(),
        body["credential"].as_str().unwrap().to_owned(),
    )
}
