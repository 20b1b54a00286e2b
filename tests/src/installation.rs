//! A control plane filled through its API as an operator and tenants would, and the answers that
//! must stay the same when its data moves: across a restart, a backup and restore, or a copy into
//! another database.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::fixtures::{self, id, rfc3339};
use crate::{Api, ControlPlane};

/// Tokens and secrets handed out while populating.
pub struct Populated {
    pub admin_token: String,
    pub alice_token: String,
    pub alice_api_token: String,
    /// Every secret the API returned or was given: none may show up in the logs.
    pub secrets: Vec<String>,
}

/// Users (active, expiring, disabled), SSH keys, every egress example, hosts with tasks, a binding, an
/// API token and a refused sign-in.
pub async fn populate(cp: &ControlPlane, admin: &Api, dir: &Path) -> Populated {
    let (alice, alice_api) = admin.tenant("alice", "alice-password").await;
    let bob = admin.create_user("bob", "bob-password").await;
    admin
        .put(
            &format!("/v1/admin/users/{}/expiry", id(&bob)),
            json!({"expires_at": "2030-01-01T00:00:00Z"}),
        )
        .await
        .expect(200);
    let carol = admin.create_user("carol", "carol-password").await;
    admin
        .patch(
            &format!("/v1/admin/users/{}", id(&carol)),
            json!({"status": "disabled"}),
        )
        .await
        .expect(200);

    let key = fixtures::ssh_keygen(dir, "alice").public_line;
    alice_api
        .post("/v1/user/ssh-keys", json!({"public_key": key}))
        .await
        .expect(201);
    let generated = admin
        .post(&format!("/v1/admin/users/{}/ssh-keys/generate", id(&bob)), None)
        .await;
    let private_line = generated.expect(201)["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(2)
        .unwrap()
        .to_owned();

    let mut egress = Vec::new();
    let mut secrets = vec![
        cp.options().admin_password.clone(),
        cp.options().jwt_secret.clone(),
        "alice-password".to_owned(),
        private_line,
    ];
    for body in fixtures::seed_egress_examples() {
        if let Some(psk) = body["wg_preshared_key"].as_str() {
            secrets.push(psk.to_owned());
        }
        egress.push(admin.create_egress(body).await);
    }
    let alice_host = admin.create_host(&id(&alice)).await;
    let bob_host = admin.create_host(&id(&bob)).await;
    secrets.push(alice_host["ssh_password"].as_str().unwrap().to_owned());
    admin
        .post(&format!("/v1/admin/hosts/{}/start", id(&bob_host)), None)
        .await
        .expect(202);
    let binding = json!({"host_id": id(&alice_host), "egress_ip_id": id(&egress[0])});
    admin.post("/v1/admin/bindings", binding).await.expect(201);

    let t = alice_api
        .post(
            "/v1/auth/api-tokens",
            json!({"name": "backup-test", "expires_in_days": 30}),
        )
        .await;
    let alice_api_token = t.expect(201)["token"].as_str().unwrap().to_owned();
    secrets.push(alice_api_token.clone());
    let refused = admin
        .anonymous()
        .post(
            "/v1/auth/login",
            json!({"username": "alice", "password": "wrong-password"}),
        )
        .await;
    assert_eq!(refused.status, 401);

    Populated {
        admin_token: admin.token().to_owned(),
        alice_token: alice_api.token().to_owned(),
        alice_api_token,
        secrets,
    }
}

/// The answers that must not change, events limited to those before `until`. The SSH command in a
/// host's access block names the SSH listener's port, which a new process may choose anew: it is left
/// out; the entry URL and command are kept.
pub async fn observe(admin: &Api, until: DateTime<Utc>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in [
        "/v1/admin/users?page_size=500".to_owned(),
        "/v1/admin/hosts?page_size=500".to_owned(),
        "/v1/admin/egress-ips?page_size=500".to_owned(),
        "/v1/admin/bindings?page_size=500".to_owned(),
        "/v1/admin/tasks?page_size=500".to_owned(),
        format!("/v1/admin/events?page_size=500&until={}", rfc3339(until)),
    ] {
        let mut body = admin.get(&path).await.expect(200).clone();
        if path.starts_with("/v1/admin/hosts") {
            for host in body["data"].as_array_mut().unwrap() {
                host["access"].as_object_mut().unwrap().remove("ssh_command");
            }
        }
        out.push((path, body));
    }
    for user in admin.get("/v1/admin/users?page_size=500").await.data().clone() {
        let path = format!("/v1/admin/users/{}/ssh-keys", id(&user));
        out.push((path.clone(), admin.get(&path).await.expect(200).clone()));
    }
    out
}

#[track_caller]
pub fn assert_same(before: &[(String, Value)], after: &[(String, Value)], what: &str) {
    assert_eq!(before.len(), after.len());
    for ((path, a), (_, b)) in before.iter().zip(after) {
        assert_eq!(a, b, "{what}: GET {path} differs");
    }
    // The comparison is about something: the populated data is there.
    let users = &before[0].1;
    assert_eq!(users["total_records"], 3, "{users}");
    assert_eq!(before[2].1["total_records"], 7);
    assert!(before[5].1["total_records"].as_i64().unwrap() > 10);
}
