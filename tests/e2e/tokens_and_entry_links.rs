//! API token scopes and caps, the SSH key cap, and entry links that can be switched off, given an
//! expiry and rotated, against the real binary over HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::time::Duration;

use chrono::Utc;
use cloud_cli_proxy_tests::fixtures::{id, rfc3339};
use cloud_cli_proxy_tests::{Api, ControlPlane, Options, Resp, assert_error, assert_error_field, eventually};
use serde_json::{Value, json};

async fn mint(api: &Api, body: Value) -> Resp {
    api.post("/v1/auth/api-tokens", body).await
}

fn token_of(r: &Resp) -> String {
    r.expect(201)["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_tokens_only_read_and_tokens_never_outgrow_their_maker() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let (_, alice) = admin.tenant("alice", "alice-password").await;

    // Without a scope a token is `full`: a client that never names one keeps working.
    let full = mint(&alice, json!({"name": "ci", "expires_in_days": 2})).await;
    assert_eq!(full.expect(201)["scope"], "full");
    let full = cp.api().with_token(token_of(&full));
    let read = mint(
        &alice,
        json!({"name": "ro", "scope": "read", "expires_in_days": 5}),
    )
    .await;
    assert_eq!(read.expect(201)["scope"], "read");
    let read_id = id(&read.body);
    let read = cp.api().with_token(token_of(&read));

    read.get("/v1/auth/me").await.expect(200);
    read.get("/v1/user/hosts").await.expect(200);
    read.get("/v1/auth/api-tokens").await.expect(200);
    for r in [
        read.post("/v1/auth/api-tokens", json!({"name": "x", "scope": "read"}))
            .await,
        read.post("/v1/user/ssh-keys/generate", json!({})).await,
        read.delete(&format!("/v1/auth/api-tokens/{read_id}")).await,
    ] {
        assert_error(&r, 403, "insufficient_scope");
    }
    // The same requests with a full token of the same account go through.
    full.post("/v1/user/ssh-keys/generate", json!({}))
        .await
        .expect(201);

    // A token cannot mint one that outlives it, nor (were it read-only) one that may write.
    let longer = mint(&full, json!({"name": "longer", "expires_in_days": 3})).await;
    assert_error_field(&longer, 400, "validation_failed", "expires_in_days");
    let shorter = mint(
        &full,
        json!({"name": "shorter", "expires_in_days": 1, "scope": "read"}),
    )
    .await;
    assert_eq!(shorter.expect(201)["scope"], "read");
    // A session (no token) may mint anything within the usual limits.
    mint(&alice, json!({"name": "year", "expires_in_days": 365}))
        .await
        .expect(201);

    // An operator's read token reads the operator routes and changes nothing.
    let admin_read = mint(&admin, json!({"name": "audit", "scope": "read"})).await;
    let admin_read = cp.api().with_token(token_of(&admin_read));
    admin_read.get("/v1/admin/users").await.expect(200);
    admin_read.get("/v1/admin/events").await.expect(200);
    let refused = admin_read
        .post(
            "/v1/admin/users",
            json!({"username": "mallory", "password": "mallory-password"}),
        )
        .await;
    assert_error(&refused, 403, "insufficient_scope");
    assert_eq!(admin.count("/v1/admin/users?q=mallory").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tokens_and_ssh_keys_per_user_are_capped() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let (_, bob) = admin.tenant("bob", "bob-password").await;
    let mut first = None;
    for i in 0..50 {
        let r = mint(&bob, json!({"name": format!("t{i}")})).await;
        first.get_or_insert_with(|| id(r.expect(201)));
    }
    let over = mint(&bob, json!({"name": "one-too-many"})).await;
    assert_error(&over, 409, "too_many_tokens");
    // A revoked token no longer counts.
    bob.delete(&format!("/v1/auth/api-tokens/{}", first.unwrap()))
        .await
        .expect(204);
    mint(&bob, json!({"name": "room-again"})).await.expect(201);

    let mut key = None;
    for _ in 0..50 {
        let r = bob.post("/v1/user/ssh-keys/generate", json!({})).await;
        key.get_or_insert_with(|| id(r.expect(201)));
    }
    let over = bob.post("/v1/user/ssh-keys/generate", json!({})).await;
    assert_error(&over, 409, "too_many_ssh_keys");
    bob.delete(&format!("/v1/user/ssh-keys/{}", key.unwrap()))
        .await
        .expect(204);
    bob.post("/v1/user/ssh-keys/generate", json!({}))
        .await
        .expect(201);
}

/// `POST /v1/entry/{id}/auth` with the owner's right password.
async fn enter(cp: &ControlPlane, entry_id: &str) -> Resp {
    cp.api()
        .post(
            &format!("/v1/entry/{entry_id}/auth"),
            json!({"password": "carol-password"}),
        )
        .await
}

/// A closed link must answer exactly as a link that never existed.
#[track_caller]
fn assert_like_unknown(closed: &Resp, unknown: &Resp) {
    assert_eq!(closed.status, 401, "{}", closed.text);
    assert_eq!(
        (closed.status, &closed.body),
        (unknown.status, &unknown.body),
        "a closed entry link answers differently from an unknown one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_links_can_be_switched_off_given_an_expiry_and_rotated() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let carol = admin.create_user("carol", "carol-password").await;
    let host = admin.create_host(&id(&carol)).await;
    let link_path = format!("/v1/admin/hosts/{}/entry-link", id(&host));
    let link = admin.get(&link_path).await;
    let first_id = link.str("entry_id");
    assert_eq!(
        first_id,
        host["short_id"].as_str().unwrap(),
        "existing links keep their id"
    );
    assert_eq!(link.body["open"], true);
    let opened = enter(&cp, &first_id).await;
    assert_ne!(
        opened.status, 401,
        "the open link lets the owner in: {}",
        opened.text
    );
    let unknown = enter(&cp, "zzzzzzzz").await;

    // Switched off: like an unknown link, including the script route.
    let off = admin.patch(&link_path, json!({"enabled": false})).await;
    assert_eq!(off.expect(200)["open"], false);
    assert_like_unknown(&enter(&cp, &first_id).await, &unknown);
    let script = cp.api().get(&format!("/entry/{first_id}")).await;
    let unknown_script = cp.api().get("/entry/zzzzzzzz").await;
    // The same script, only the id it was asked for filled in.
    assert_eq!(script.status, unknown_script.status);
    assert!(
        script.text.replace(&first_id, "ID") == unknown_script.text.replace("zzzzzzzz", "ID"),
        "the script of a closed link differs from an unknown link's"
    );
    let host_view = admin.get(&format!("/v1/admin/hosts/{}", id(&host))).await;
    assert_eq!(host_view.expect(200)["access"]["entry_disabled"], true);
    admin
        .patch(&link_path, json!({"enabled": true}))
        .await
        .expect(200);
    assert_ne!(enter(&cp, &first_id).await.status, 401);

    // An expiry in the past is refused; a near one closes the link when it passes.
    let past = rfc3339(Utc::now() - chrono::Duration::minutes(1));
    assert_error_field(
        &admin.patch(&link_path, json!({"expires_at": past})).await,
        400,
        "validation_failed",
        "expires_at",
    );
    let soon = rfc3339(Utc::now() + chrono::Duration::seconds(2));
    let r = admin.patch(&link_path, json!({"expires_at": soon})).await;
    assert_eq!(r.expect(200)["open"], true);
    eventually(Duration::from_secs(10), "the entry link to expire", || async {
        (enter(&cp, &first_id).await.status == 401).then_some(())
    })
    .await;
    assert_like_unknown(&enter(&cp, &first_id).await, &unknown);
    let r = admin.patch(&link_path, json!({"expires_at": null})).await;
    assert_eq!(r.expect(200)["open"], true);
    assert_ne!(enter(&cp, &first_id).await.status, 401);

    // Rotated: the old id stops working, the new one works and is what the API hands out.
    let rotated = admin.post(&format!("{link_path}/rotate"), None).await;
    let new_id = rotated.str("entry_id");
    assert_ne!(new_id, first_id);
    assert!(rotated.str("entry_url").ends_with(&format!("/entry/{new_id}")));
    assert_like_unknown(&enter(&cp, &first_id).await, &unknown);
    assert_ne!(enter(&cp, &new_id).await.status, 401);
    let host_view = admin.get(&format!("/v1/admin/hosts/{}", id(&host))).await;
    let url = host_view.expect(200)["access"]["entry_url"].as_str().unwrap();
    assert!(url.ends_with(&format!("/entry/{new_id}")), "{url}");
    // The host itself keeps its short id: SSH logins and containers are unchanged.
    assert_eq!(host_view.body["short_id"], host["short_id"]);

    // Operator routes only.
    let tenant = cp.api().login_as("carol", "carol-password").await;
    assert_error(
        &tenant.post(&format!("{link_path}/rotate"), None).await,
        403,
        "forbidden",
    );
    assert_error(
        &admin
            .get("/v1/admin/hosts/00000000-0000-4000-8000-000000000000/entry-link")
            .await,
        404,
        "not_found",
    );
}
