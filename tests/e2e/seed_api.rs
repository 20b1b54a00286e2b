//! Walks every curl example of the seed's API reference that does not need Docker, with the seed's
//! methods, paths and bodies, against the real binary. Each test owns its control plane and database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

#[path = "seed_api/events.rs"]
mod events;
#[path = "seed_api/hosts.rs"]
mod hosts;

use std::io::Write as _;
use std::process::{Command, Stdio};

use chrono::{TimeZone as _, Utc};
use cloud_cli_proxy_tests::fixtures::{self, id, key_material, parse_time};
use cloud_cli_proxy_tests::shapes;
use cloud_cli_proxy_tests::{Api, ControlPlane, Options, assert_error, assert_error_field, assert_keys};
use serde_json::{Value, json};

/// `grep -o '"token":"[^"]*"' | cut -d'"' -f4`, the seed's token extraction, run by a real shell.
fn seed_token_extraction(raw_body: &str) -> String {
    let mut child = Command::new("bash")
        .args(["-c", r#"grep -o '"token":"[^"]*"' | cut -d'"' -f4"#])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("bash");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(raw_body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "grep found no token in {raw_body}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn event_count_for_user(admin: &Api, user_id: &str) -> i64 {
    admin.count(&format!("/v1/admin/events?user_id={user_id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_token_extraction_and_health() {
    let cp = ControlPlane::start(Options::new()).await;
    let api = cp.api();
    // The seed's body with the operator's configured password in place of "your-password".
    let body = json!({"username": "admin", "password": cp.options().admin_password});
    for path in ["/v1/auth/login", "/v1/admin/login"] {
        let before = Utc::now();
        let r = api.post(path, body.clone()).await;
        r.expect(200);
        let keys: Vec<&String> = r.body.as_object().unwrap().keys().collect();
        assert_eq!(
            keys.len(),
            3,
            "{path}: expected exactly token, role, expires_at: {}",
            r.text
        );
        assert_keys(&r.body, &["token", "role", "expires_at"]);
        assert_eq!(r.body["role"], "admin");
        let token = r.str("token");
        assert_eq!(token.split('.').count(), 3, "a session token is a JWT: {token}");
        assert_eq!(
            seed_token_extraction(&r.text),
            token,
            "the seed's grep/cut extraction must yield the token"
        );
        // TOKEN_TTL_SECS defaults to 12 h.
        let ttl = parse_time(&r.body["expires_at"]) - before;
        assert!(
            (43_100..=43_300).contains(&ttl.num_seconds()),
            "{path}: token lifetime {ttl} is not 12 h"
        );
        let me = api.with_token(&token).get("/v1/auth/me").await;
        assert_eq!(me.expect(200)["role"], "admin");
        assert_eq!(me.body["username"], "admin");
    }

    let h = api.get("/healthz").await;
    h.expect(200);
    assert_eq!(
        h.body.as_object().unwrap().len(),
        2,
        "healthz is {{status, checks}}: {}",
        h.text
    );
    assert_eq!(
        h.body["checks"].as_object().unwrap().len(),
        2,
        "checks are {{database, agent}}: {}",
        h.text
    );
    assert_eq!(h.body["checks"]["database"], "ok");
    // No agent runs in these tests: docs/api.md says `degraded` with the agent `unavailable`.
    assert_eq!(h.body["checks"]["agent"], "unavailable");
    assert_eq!(h.body["status"], "degraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_management() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let seed_expiry = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();

    // Create User, the seed's body.
    let r = admin
        .post(
            "/v1/admin/users",
            json!({"username": "newuser", "password": "min-8-chars", "expires_at": "2026-12-31T23:59:59Z"}),
        )
        .await;
    let user = r.expect(201).clone();
    assert_keys(&user, shapes::USER);
    assert_eq!(user["username"], "newuser");
    assert_eq!(user["role"], "user");
    assert_eq!(user["status"], "active");
    assert_eq!(parse_time(&user["expires_at"]), seed_expiry);
    assert_eq!(user["expired"], Utc::now() > seed_expiry);
    uuid::Uuid::parse_str(user["id"].as_str().unwrap()).expect("user ids are UUIDs");
    let uid = id(&user);
    assert!(
        event_count_for_user(&admin, &uid).await >= 1,
        "creating a user writes an event"
    );

    // 409 on the same name, whatever its case.
    for name in ["newuser", "NewUser"] {
        let r = admin
            .post(
                "/v1/admin/users",
                json!({"username": name, "password": "another-pass"}),
            )
            .await;
        assert_error(&r, 409, "username_taken");
    }

    // List Users.
    let list = admin.get("/v1/admin/users").await;
    assert_keys(&list.body, shapes::PAGE);
    assert_eq!(
        (list.body["page"].as_i64(), list.body["page_size"].as_i64()),
        (Some(1), Some(50))
    );
    let listed: Vec<&Value> = list.data().iter().filter(|u| u["id"] == user["id"]).collect();
    assert_eq!(listed.len(), 1, "the new user is listed once: {}", list.text);
    assert_eq!(listed[0], &user, "the listed user equals the created one");

    // Get User Details.
    assert_eq!(
        admin.get(&format!("/v1/admin/users/{uid}")).await.expect(200),
        &user
    );

    // Disable / Enable.
    let mut events = event_count_for_user(&admin, &uid).await;
    for status in ["disabled", "active"] {
        let r = admin
            .patch(&format!("/v1/admin/users/{uid}"), json!({"status": status}))
            .await;
        assert_eq!(r.expect(200)["status"], status);
        assert_eq!(
            admin.get(&format!("/v1/admin/users/{uid}")).await.expect(200)["status"],
            status
        );
        let now = event_count_for_user(&admin, &uid).await;
        assert!(now > events, "PATCH status={status} wrote no event");
        events = now;
    }

    // Rotate Password: 20 characters, shown once, and it signs in; the old one no longer does.
    let r = admin
        .post(&format!("/v1/admin/users/{uid}/rotate-password"), None)
        .await;
    r.expect(200);
    assert_eq!(r.body["user_id"], user["id"]);
    let password = r.str("password");
    assert_eq!(password.chars().count(), 20, "rotated password: {password:?}");
    assert!(
        event_count_for_user(&admin, &uid).await > events,
        "rotate-password wrote no event"
    );
    assert!(
        !admin
            .get(&format!("/v1/admin/users/{uid}"))
            .await
            .text
            .contains(&password)
    );
    let login = admin
        .anonymous()
        .post(
            "/v1/auth/login",
            json!({"username": "newuser", "password": password}),
        )
        .await;
    if Utc::now() < seed_expiry {
        assert_eq!(login.expect(200)["role"], "user");
    }
    let old = admin
        .anonymous()
        .post(
            "/v1/auth/login",
            json!({"username": "newuser", "password": "min-8-chars"}),
        )
        .await;
    assert_error(&old, 401, "unauthorized");

    // Set Expiration: any offset in, UTC out; then the seed's value; then cleared with null.
    let events = event_count_for_user(&admin, &uid).await;
    let r = admin
        .put(
            &format!("/v1/admin/users/{uid}/expiry"),
            json!({"expires_at": "2027-06-30T12:00:00+02:00"}),
        )
        .await;
    assert_eq!(
        parse_time(&r.expect(200)["expires_at"]),
        Utc.with_ymd_and_hms(2027, 6, 30, 10, 0, 0).unwrap()
    );
    assert!(
        event_count_for_user(&admin, &uid).await > events,
        "PUT expiry wrote no event"
    );
    let r = admin
        .put(
            &format!("/v1/admin/users/{uid}/expiry"),
            json!({"expires_at": "2026-12-31T23:59:59Z"}),
        )
        .await;
    assert_eq!(parse_time(&r.expect(200)["expires_at"]), seed_expiry);
    let r = admin
        .put(
            &format!("/v1/admin/users/{uid}/expiry"),
            json!({"expires_at": null}),
        )
        .await;
    assert_eq!(r.expect(200)["expires_at"], Value::Null);
    assert_eq!(r.body["expired"], false);
    assert_eq!(
        admin.get(&format!("/v1/admin/users/{uid}")).await.expect(200)["expires_at"],
        Value::Null
    );
    let login = admin
        .anonymous()
        .post(
            "/v1/auth/login",
            json!({"username": "newuser", "password": password}),
        )
        .await;
    login.expect(200);

    // Delete User (last, so the examples above had a user): 204, gone, cannot sign in.
    let events = event_count_for_user(&admin, &uid).await;
    let r = admin.delete(&format!("/v1/admin/users/{uid}")).await;
    r.expect(204);
    assert!(r.text.is_empty(), "204 has no body: {}", r.text);
    assert_error(
        &admin.get(&format!("/v1/admin/users/{uid}")).await,
        404,
        "not_found",
    );
    assert!(
        admin
            .get("/v1/admin/users")
            .await
            .data()
            .iter()
            .all(|u| u["id"] != user["id"])
    );
    assert!(
        event_count_for_user(&admin, &uid).await > events,
        "DELETE user wrote no event"
    );
    let login = admin
        .anonymous()
        .post(
            "/v1/auth/login",
            json!({"username": "newuser", "password": password}),
        )
        .await;
    assert_error(&login, 401, "unauthorized");
    assert_error(
        &admin.delete(&format!("/v1/admin/users/{uid}")).await,
        404,
        "not_found",
    );
    // Passwords never reach the logs.
    let logs = cp.logs();
    for secret in [
        password.as_str(),
        "min-8-chars",
        cp.options().admin_password.as_str(),
    ] {
        assert!(!logs.contains(secret), "a password is in the logs: {secret}");
    }
}

/// Checks a key object against the key pair it should describe.
#[track_caller]
fn assert_key_object(key: &Value, user_id: &str, material: &str, fingerprint: &str) {
    assert_keys(key, shapes::SSH_KEY);
    assert_eq!(key["user_id"], user_id, "{key}");
    assert_eq!(
        key_material(key["public_key"].as_str().unwrap()),
        material,
        "{key}"
    );
    assert_eq!(
        key["fingerprint"], fingerprint,
        "fingerprint must be ssh-keygen's SHA256 form: {key}"
    );
    assert!(key["key_type"].as_str().unwrap().contains("ed25519"), "{key}");
    assert!(
        key.get("private_key").is_none(),
        "private key outside the generating answer: {key}"
    );
}

/// A generated key: the private half is a real OpenSSH key whose public half is the stored one.
#[track_caller]
fn check_generated(dir: &std::path::Path, key: &Value, user_id: &str) -> String {
    let pem = key["private_key"]
        .as_str()
        .unwrap_or_else(|| panic!("generate returns private_key: {key}"));
    assert!(
        pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"),
        "OpenSSH PEM expected: {pem}"
    );
    let public = fixtures::public_of_private(dir, pem);
    assert_eq!(
        key_material(key["public_key"].as_str().unwrap()),
        public,
        "private and public halves differ"
    );
    let fp = fixtures::fingerprint_of(dir, key["public_key"].as_str().unwrap());
    let mut without_private = key.clone();
    without_private.as_object_mut().unwrap().remove("private_key");
    assert_key_object(&without_private, user_id, &public, &fp);
    // A line from the middle of the PEM: only this answer may ever carry it.
    pem.lines().nth(2).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_managed_ssh_keys() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let dir = tempfile::tempdir().unwrap();
    let user = admin.create_user("keyowner", "key-owner-pass").await;
    let uid = id(&user);
    let base = format!("/v1/admin/users/{uid}/ssh-keys");
    let pair = fixtures::ssh_keygen(dir.path(), "k");

    // List: empty page.
    let r = admin.get(&base).await;
    assert_keys(&r.body, shapes::PAGE);
    assert_eq!(r.total(), 0);

    // Add SSH public key, then again: 409.
    let added = admin
        .post(&base, json!({"public_key": pair.public_line}))
        .await
        .expect(201)
        .clone();
    assert_key_object(&added, &uid, &key_material(&pair.public_line), &pair.fingerprint);
    assert_error(
        &admin.post(&base, json!({"public_key": pair.public_line})).await,
        409,
        "ssh_key_exists",
    );

    // Auto-generate key pair (no body, as in the seed).
    let generated = admin
        .post(&format!("{base}/generate"), None)
        .await
        .expect(201)
        .clone();
    let pem_line = check_generated(dir.path(), &generated, &uid);

    // A later list shows both, never the private key.
    let list = admin.get(&base).await;
    assert_eq!(list.total(), 2);
    assert!(
        !list.text.contains(&pem_line) && !list.text.contains("private_key"),
        "{}",
        list.text
    );
    let mut ids: Vec<&str> = list.data().iter().map(|k| k["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut want = vec![added["id"].as_str().unwrap(), generated["id"].as_str().unwrap()];
    want.sort_unstable();
    assert_eq!(ids, want);

    // Delete SSH key.
    let r = admin.delete(&format!("{base}/{}", id(&added))).await;
    r.expect(204);
    let list = admin.get(&base).await;
    assert_eq!(list.total(), 1);
    assert_eq!(list.data()[0]["id"], generated["id"]);
    assert_error(
        &admin.delete(&format!("{base}/{}", id(&added))).await,
        404,
        "not_found",
    );
    // Deleted, the same key may be added again.
    admin
        .post(&base, json!({"public_key": pair.public_line}))
        .await
        .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_self_managed_ssh_keys() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let dir = tempfile::tempdir().unwrap();
    let (user, me) = admin.tenant("selfserve", "self-serve-pass").await;
    let uid = id(&user);
    let pair = fixtures::ssh_keygen(dir.path(), "mine");

    // List own SSH keys.
    assert_eq!(me.get("/v1/user/ssh-keys").await.total(), 0);
    // Add SSH public key.
    let added = me
        .post("/v1/user/ssh-keys", json!({"public_key": pair.public_line}))
        .await
        .expect(201)
        .clone();
    assert_key_object(&added, &uid, &key_material(&pair.public_line), &pair.fingerprint);
    assert_error(
        &me.post("/v1/user/ssh-keys", json!({"public_key": pair.public_line}))
            .await,
        409,
        "ssh_key_exists",
    );
    // Auto-generate key pair, without and with a name.
    let generated = me
        .post("/v1/user/ssh-keys/generate", None)
        .await
        .expect(201)
        .clone();
    let pem_line = check_generated(dir.path(), &generated, &uid);
    let named = me
        .post("/v1/user/ssh-keys/generate", json!({"name": "laptop"}))
        .await
        .expect(201)
        .clone();
    assert_eq!(named["name"], "laptop");

    let mine = me.get("/v1/user/ssh-keys").await;
    assert_eq!(mine.total(), 3);
    assert!(!mine.text.contains(&pem_line) && !mine.text.contains("private_key"));
    // The operator sees the same keys.
    let theirs = admin.get(&format!("/v1/admin/users/{uid}/ssh-keys")).await;
    assert_eq!(theirs.total(), 3);
    let mut a: Vec<&Value> = mine.data().iter().collect();
    let mut b: Vec<&Value> = theirs.data().iter().collect();
    a.sort_by_key(|k| k["id"].as_str().unwrap().to_owned());
    b.sort_by_key(|k| k["id"].as_str().unwrap().to_owned());
    assert_eq!(a, b);

    me.delete(&format!("/v1/user/ssh-keys/{}", id(&named)))
        .await
        .expect(204);
    assert_eq!(me.get("/v1/user/ssh-keys").await.total(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_portal() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let (user, me) = admin.tenant("portaluser", "portal-pass-1").await;
    let other_session = admin.login_as("portaluser", "portal-pass-1").await;
    let host = admin.create_host(&id(&user)).await;
    let hid = id(&host);

    // List Own Hosts.
    let r = me.get("/v1/user/hosts").await;
    assert_keys(&r.body, shapes::PAGE);
    assert_eq!(r.total(), 1);
    assert_eq!(r.data()[0]["id"], host["id"]);
    assert_keys(&r.data()[0], shapes::HOST);
    // Get Host Details.
    let r = me.get(&format!("/v1/user/hosts/{hid}")).await;
    assert_eq!(r.expect(200)["id"], host["id"]);
    assert_eq!(r.body["short_id"], host["short_id"]);
    // Rebuild Own Host.
    let r = me.post(&format!("/v1/user/hosts/{hid}/rebuild"), None).await;
    let task = r.expect(202).clone();
    assert_keys(&task, shapes::TASK);
    assert_eq!(
        (task["kind"].as_str(), task["status"].as_str()),
        (Some("rebuild"), Some("queued"))
    );
    assert_eq!(task["host_id"], host["id"]);
    let listed = admin.get(&format!("/v1/admin/tasks?host_id={hid}")).await;
    assert!(
        listed.data().iter().any(|t| t["id"] == task["id"]),
        "the rebuild task is listed"
    );
    // With the optional body.
    let r = me
        .post(&format!("/v1/user/hosts/{hid}/rebuild"), json!({"wipe": true}))
        .await;
    assert_eq!(r.expect(202)["kind"], "rebuild");

    // Change Password: a wrong old password is 401 and ends nothing; a short new one is 400.
    let wrong = me
        .post(
            "/v1/user/change-password",
            json!({"old_password": "not-my-pass", "new_password": "portal-pass-2"}),
        )
        .await;
    assert_error(&wrong, 401, "unauthorized");
    me.get("/v1/user/hosts").await.expect(200);
    let short = me
        .post(
            "/v1/user/change-password",
            json!({"old_password": "portal-pass-1", "new_password": "short"}),
        )
        .await;
    assert_error_field(&short, 400, "validation_failed", "new_password");
    let r = me
        .post(
            "/v1/user/change-password",
            json!({"old_password": "portal-pass-1", "new_password": "portal-pass-2"}),
        )
        .await;
    r.expect(204);
    // Old password refused, new one works, sessions from before the change end.
    let old = me
        .anonymous()
        .post(
            "/v1/auth/login",
            json!({"username": "portaluser", "password": "portal-pass-1"}),
        )
        .await;
    assert_error(&old, 401, "unauthorized");
    let fresh = me.login_as("portaluser", "portal-pass-2").await;
    fresh.get("/v1/user/hosts").await.expect(200);
    assert_error(&other_session.get("/v1/user/hosts").await, 401, "unauthorized");
    assert_error(&me.get("/v1/user/hosts").await, 401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_and_entry_scripts() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let (user, _me) = admin.tenant("bootuser", "boot-user-pass").await;
    let host = admin.create_host(&id(&user)).await;
    let short = host["short_id"].as_str().unwrap();
    let anon = cp.api();

    // Get Bootstrap Script / Get Entry Script: bash scripts, no token needed.
    for path in ["/v1/bootstrap/script".to_owned(), format!("/entry/{short}")] {
        let r = anon.get(&path).await;
        r.expect(200);
        assert!(r.text.starts_with("#!"), "{path} should be a script: {}", r.text);
        assert!(!r.text.contains("boot-user-pass"));
    }

    // Create Bootstrap Session: task_id and status_url; a wrong password is 401.
    let bad = anon
        .post(
            "/v1/bootstrap/sessions",
            json!({"username": "bootuser", "password": "wrong-pass"}),
        )
        .await;
    assert_error(&bad, 401, "unauthorized");
    let r = anon
        .post(
            "/v1/bootstrap/sessions",
            json!({"username": "bootuser", "password": "boot-user-pass"}),
        )
        .await;
    assert!(
        (200..300).contains(&r.status),
        "bootstrap session: {} {}",
        r.status,
        r.text
    );
    let task_id = r.str("task_id");
    let status_url = r.str("status_url");
    assert!(
        status_url.contains(&format!("/v1/bootstrap/tasks/{task_id}")),
        "{status_url}"
    );

    // Query Task Status (the path of status_url; its host is only printed, never dialled).
    let r = anon.get(&format!("/v1/bootstrap/tasks/{task_id}")).await;
    r.expect(200);
    assert!(r.text.contains(&task_id), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_test_needs_an_agent() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let ip = admin.create_egress(fixtures::seed_wireguard()).await;
    // Nothing may dial the seed's addresses: with no agent the check is refused, not attempted.
    let r = admin
        .post(&format!("/v1/admin/egress-ips/{}/test", id(&ip)), None)
        .await;
    assert_error(&r, 503, "no_agent");
    let after = admin.get(&format!("/v1/admin/egress-ips/{}", id(&ip))).await;
    assert_eq!(
        after.expect(200)["ip_address"],
        "203.0.113.10",
        "a test never changes the declared address"
    );
    assert_eq!(after.body["observed_ip"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_ssh_key_types() {
    // ed25519, ECDSA P-256/384/521 and RSA of 2048 bits or more are accepted.
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let (_, me) = admin.tenant("keytypes", "key-types-pass").await;
    let dir = tempfile::tempdir().unwrap();
    for (kind, bits) in [
        ("ecdsa", "256"),
        ("ecdsa", "384"),
        ("ecdsa", "521"),
        ("rsa", "2048"),
        ("rsa", "3072"),
    ] {
        let path = dir.path().join(format!("{kind}{bits}"));
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-b", bits, "-N", "", "-C", "user@host", "-f"])
            .arg(&path)
            .output()
            .expect("ssh-keygen");
        assert!(
            out.status.success(),
            "ssh-keygen {kind} {bits}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = std::fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned();
        let key = me.post("/v1/user/ssh-keys", json!({"public_key": line})).await;
        let key = key.expect(201).clone();
        assert_eq!(
            key_material(key["public_key"].as_str().unwrap()),
            key_material(&line)
        );
        assert_eq!(
            key["fingerprint"],
            fixtures::fingerprint_of(dir.path(), &line),
            "{kind} {bits}"
        );
    }
    assert_eq!(me.get("/v1/user/ssh-keys").await.total(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wireguard_key_rotation_shows_a_new_public_key_only() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let ip = admin.create_egress(fixtures::seed_wireguard()).await;
    let before = ip["wg_client_public_key"]
        .as_str()
        .expect("a generated key pair")
        .to_owned();
    let r = admin
        .post(&format!("/v1/admin/egress-ips/{}/rotate-wg-key", id(&ip)), None)
        .await;
    let after = r.expect(200);
    let rotated = after["wg_client_public_key"].as_str().unwrap();
    assert_ne!(rotated, before, "a new key pair");
    assert_eq!(rotated.len(), 44, "base64 of 32 bytes: {rotated}");
    assert!(
        !r.text.contains("private"),
        "no private key in the answer: {}",
        r.text
    );
    let shown = admin.get(&format!("/v1/admin/egress-ips/{}", id(&ip))).await;
    assert_eq!(shown.expect(200)["wg_client_public_key"], rotated);
    let events = admin.get("/v1/admin/events?type=egress_ip.wg_key_rotated").await;
    assert!(events.text.contains(rotated), "{}", events.text);

    let proxy = admin
        .create_egress(json!({
            "label": "socks-rot", "ip_address": "198.18.9.9", "tunnel_type": "proxy",
            "proxy_config": {"type": "socks", "server": "198.18.9.9", "server_port": 1080},
        }))
        .await;
    let r = admin
        .post(
            &format!("/v1/admin/egress-ips/{}/rotate-wg-key", id(&proxy)),
            None,
        )
        .await;
    assert_error(&r, 409, "not_wireguard");
    let r = admin
        .post(
            &format!("/v1/admin/egress-ips/{}/rotate-wg-key", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_error(&r, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wireguard_binding_gives_the_host_its_own_key_pair() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let user = admin.create_user("keyowner", "pw-keyowner-123").await;
    let host = admin.create_host(&id(&user)).await;
    let wg = admin.create_egress(fixtures::seed_wireguard()).await;

    let r = admin
        .post(
            "/v1/admin/bindings",
            json!({"host_id": id(&host), "egress_ip_id": id(&wg), "wg_peer_address": "10.0.0.9/32"}),
        )
        .await;
    let binding = r.expect(201).clone();
    assert_keys(
        &binding,
        &[
            "id",
            "host_id",
            "egress_ip_id",
            "wg_public_key",
            "wg_peer_address",
            "created_at",
        ],
    );
    let host_key = binding["wg_public_key"].as_str().unwrap().to_owned();
    assert_eq!(host_key.len(), 44);
    assert_ne!(
        host_key,
        wg["wg_client_public_key"].as_str().unwrap(),
        "the host's own key pair"
    );
    assert_eq!(binding["wg_peer_address"], "10.0.0.9/32");
    assert!(!r.text.contains("private"), "{}", r.text);

    let rotated = admin
        .post(
            &format!("/v1/admin/bindings/{}/rotate-wg-key", id(&binding)),
            None,
        )
        .await;
    let new_key = rotated.expect(200)["wg_public_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, host_key);
    let listed = admin
        .get(&format!("/v1/admin/bindings?host_id={}", id(&host)))
        .await;
    assert_eq!(listed.expect(200)["data"][0]["wg_public_key"], new_key.as_str());
    assert!(!listed.text.contains("private"), "{}", listed.text);

    // A proxy binding has no key pair, and no tunnel address to give.
    let other = admin.create_host(&id(&user)).await;
    let proxy = admin
        .create_egress(json!({
            "label": "socks-bind", "ip_address": "198.18.9.9", "tunnel_type": "proxy",
            "proxy_config": {"type": "socks", "server": "198.18.9.9", "server_port": 1080},
        }))
        .await;
    let r = admin
        .post(
            "/v1/admin/bindings",
            json!({"host_id": id(&other), "egress_ip_id": id(&proxy), "wg_peer_address": "10.0.0.9/32"}),
        )
        .await;
    assert_error_field(&r, 400, "validation_failed", "wg_peer_address");
    let r = admin
        .post(
            "/v1/admin/bindings",
            json!({"host_id": id(&other), "egress_ip_id": id(&proxy)}),
        )
        .await;
    let binding = r.expect(201).clone();
    assert_eq!(binding["wg_public_key"], Value::Null);
    let r = admin
        .post(
            &format!("/v1/admin/bindings/{}/rotate-wg-key", id(&binding)),
            None,
        )
        .await;
    assert_error(&r, 409, "not_wireguard");
}
