//! Session and API tokens over their whole life, the JWT secret, and the sign-in limits.

use std::time::Duration;

use chrono::Utc;
use cloud_cli_proxy_tests::fixtures::{self, id, parse_time};
use cloud_cli_proxy_tests::{
    Api, ControlPlane, Options, Problems, assert_error, assert_error_field, eventually,
};
use serde_json::{Value, json};

/// Makes an API token expired by editing its row: the API cannot create one already past its expiry.
/// (This couples the test to the `api_tokens.expires_at` column, stored as RFC 3339 text.)
async fn expire_api_token_in_db(database_url: &str, token_id: &str) {
    let done = cloud_cli_proxy_tests::database::execute(
        database_url,
        "UPDATE api_tokens SET expires_at = $1 WHERE id = $2",
        &["2000-01-01T00:00:00.000000Z", token_id],
    )
    .await;
    assert_eq!(done, 1, "no api_tokens row with id {token_id}");
}

/// Creates an API token for the caller; returns (token object, client using it).
async fn api_token(api: &Api, name: &str) -> (Value, Api) {
    let t = api
        .post(
            "/v1/auth/api-tokens",
            json!({"name": name, "expires_in_days": 30}),
        )
        .await
        .expect(201)
        .clone();
    let client = api.with_token(t["token"].as_str().unwrap());
    client.get("/v1/auth/me").await.expect(200);
    (t, client)
}

#[track_caller]
fn assert_401(r: &cloud_cli_proxy_tests::Resp, what: &str) {
    assert_eq!(
        r.status, 401,
        "{what}: {} {} → {} {}",
        r.method, r.path, r.status, r.text
    );
    assert_error(r, 401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_lifecycle() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let (user, a) = admin.tenant("tokuser", "tok-user-pass").await;
    let (_, b) = admin.tenant("tokother", "tok-other-pass").await;

    // Create: the secret once, `ccp_…`, with its expiry (30 days by default).
    for body in [
        json!({"name": "ci", "expires_in_days": 30}),
        json!({"name": "default"}),
    ] {
        let r = a.post("/v1/auth/api-tokens", body).await;
        let t = r.expect(201).clone();
        assert!(t["token"].as_str().unwrap().starts_with("ccp_"), "{t}");
        let days = (parse_time(&t["expires_at"]) - Utc::now()).num_minutes();
        assert!((30 * 1440 - 5..=30 * 1440 + 5).contains(&days), "30 days: {t}");
    }
    for days in [0, 366] {
        let r = a
            .post(
                "/v1/auth/api-tokens",
                json!({"name": "x", "expires_in_days": days}),
            )
            .await;
        assert_error_field(&r, 400, "validation_failed", "expires_in_days");
    }
    let (t, client) = api_token(&a, "works").await;
    let list = a.get("/v1/auth/api-tokens").await;
    assert_eq!(list.total(), 3);
    assert!(
        !list.text.contains(t["token"].as_str().unwrap()),
        "a list never shows the secret: {}",
        list.text
    );
    assert!(list.data().iter().all(|x| x.get("token").is_none()));

    // It works like the account: its own things, not the operator's.
    assert_eq!(client.get("/v1/auth/me").await.expect(200)["id"], user["id"]);
    client.get("/v1/user/hosts").await.expect(200);
    assert_error(&client.get("/v1/admin/users").await, 403, "forbidden");

    // Another tenant cannot revoke it; its owner can, at once.
    assert_error(
        &b.delete(&format!("/v1/auth/api-tokens/{}", id(&t))).await,
        404,
        "not_found",
    );
    client.get("/v1/auth/me").await.expect(200);
    a.delete(&format!("/v1/auth/api-tokens/{}", id(&t)))
        .await
        .expect(204);
    assert_401(&client.get("/v1/auth/me").await, "revoked API token");

    // Expired.
    let (t, client) = api_token(&a, "expiring").await;
    expire_api_token_in_db(&cp.database_url(), &id(&t)).await;
    assert_401(&client.get("/v1/auth/me").await, "expired API token");

    // Of a disabled user.
    let (_, client) = api_token(&a, "disabled").await;
    admin
        .patch(
            &format!("/v1/admin/users/{}", id(&user)),
            json!({"status": "disabled"}),
        )
        .await
        .expect(200);
    assert_401(&client.get("/v1/auth/me").await, "API token of a disabled user");

    // The operator's API token reaches operator routes only.
    let (_, op) = api_token(&admin, "ops").await;
    op.get("/v1/admin/users").await.expect(200);
    assert_error(&op.get("/v1/user/hosts").await, 403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_jwt_secret_ends_every_token() {
    let mut cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let (user, a) = admin.tenant("rotuser", "rot-user-pass").await;
    let (_, admin_key) = api_token(&admin, "ops").await;
    let (_, a_key) = api_token(&a, "script").await;
    let tokens = [admin.token(), a.token(), admin_key.token(), a_key.token()].map(str::to_owned);
    let old_secret = cp.options().jwt_secret.clone();

    // Same database, new secret (the seed's rotation: edit the env file, restart).
    let new_secret = fixtures::random_alnum(48);
    cp.restart(cp.options().clone().secret(&new_secret)).await;
    let api = cp.api();
    for (token, what) in tokens.iter().zip([
        "admin session",
        "user session",
        "admin API token",
        "user API token",
    ]) {
        assert_401(&api.with_token(token).get("/v1/auth/me").await, what);
    }
    let now = Utc::now().timestamp();
    let uid = id(&user);
    let signed_old = fixtures::forge_session(&old_secret, &uid, "user", 0, now, now + 600);
    assert_401(
        &api.with_token(signed_old).get("/v1/auth/me").await,
        "token signed with the old secret",
    );
    let signed_new = fixtures::forge_session(&new_secret, &uid, "user", 0, now, now + 600);
    assert_eq!(
        api.with_token(signed_new).get("/v1/auth/me").await.expect(200)["id"],
        user["id"]
    );
    // Accounts are untouched: both sign in again.
    cp.admin().await.get("/v1/admin/users").await.expect(200);
    api.login_as("rotuser", "rot-user-pass")
        .await
        .get("/v1/user/hosts")
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_end_with_the_account() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let anon = cp.api();

    // Disabled: sessions and API tokens end; re-enabling does not revive old sessions.
    let (u, s) = admin.tenant("gone-disabled", "password-111").await;
    let (_, k) = api_token(&s, "k").await;
    admin
        .patch(
            &format!("/v1/admin/users/{}", id(&u)),
            json!({"status": "disabled"}),
        )
        .await
        .expect(200);
    assert_401(&s.get("/v1/auth/me").await, "session of a disabled user");
    assert_401(&k.get("/v1/auth/me").await, "API token of a disabled user");
    assert_401(
        &anon
            .post(
                "/v1/auth/login",
                json!({"username": "gone-disabled", "password": "password-111"}),
            )
            .await,
        "login",
    );
    admin
        .patch(
            &format!("/v1/admin/users/{}", id(&u)),
            json!({"status": "active"}),
        )
        .await
        .expect(200);
    assert_401(
        &s.get("/v1/auth/me").await,
        "a session from before the disable, after re-enabling",
    );
    anon.login("gone-disabled", "password-111").await;

    // Deleted.
    let (u, s) = admin.tenant("gone-deleted", "password-222").await;
    let (_, k) = api_token(&s, "k").await;
    admin
        .delete(&format!("/v1/admin/users/{}", id(&u)))
        .await
        .expect(204);
    assert_401(&s.get("/v1/auth/me").await, "session of a deleted user");
    assert_401(&k.get("/v1/auth/me").await, "API token of a deleted user");

    // Expired (expiry set in the past).
    let (u, s) = admin.tenant("gone-expired", "password-333").await;
    let (_, k) = api_token(&s, "k").await;
    let r = admin
        .put(
            &format!("/v1/admin/users/{}/expiry", id(&u)),
            json!({"expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.expect(200)["expired"], true);
    assert_401(&s.get("/v1/auth/me").await, "session of an expired user");
    assert_401(&k.get("/v1/auth/me").await, "API token of an expired user");
    assert_401(
        &anon
            .post(
                "/v1/auth/login",
                json!({"username": "gone-expired", "password": "password-333"}),
            )
            .await,
        "login",
    );
    admin
        .put(
            &format!("/v1/admin/users/{}/expiry", id(&u)),
            json!({"expires_at": null}),
        )
        .await
        .expect(200);
    anon.login("gone-expired", "password-333").await;

    // Password rotated by the operator.
    let (u, s) = admin.tenant("gone-rotated", "password-444").await;
    let pw = admin
        .post(&format!("/v1/admin/users/{}/rotate-password", id(&u)), None)
        .await
        .str("password");
    assert_401(&s.get("/v1/auth/me").await, "session after rotate-password");
    anon.login("gone-rotated", &pw).await;

    // Password changed by the user: every session ends, the caller's too.
    let (_, s) = admin.tenant("gone-changed", "password-555").await;
    let other = anon.login_as("gone-changed", "password-555").await;
    let body = json!({"old_password": "password-555", "new_password": "password-666"});
    s.post("/v1/user/change-password", body).await.expect(204);
    assert_401(
        &other.get("/v1/auth/me").await,
        "another session after change-password",
    );
    assert_401(
        &s.get("/v1/auth/me").await,
        "the caller's session after change-password",
    );
    anon.login("gone-changed", "password-666").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_end_with_a_password_change() {
    // docs/api.md: "Tokens stop working at once when their account … changes password" — the
    // preceding sentence defines a token as a session token or a personal API token.
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let problems = Problems::default();

    let (u, s) = admin.tenant("key-rotated", "password-444").await;
    let (_, k) = api_token(&s, "k").await;
    admin
        .post(&format!("/v1/admin/users/{}/rotate-password", id(&u)), None)
        .await
        .expect(200);
    let r = k.get("/v1/auth/me").await;
    problems
        .check("API token after rotate-password", async {
            assert_401(&r, "API token after rotate-password")
        })
        .await;

    let (_, s) = admin.tenant("key-changed", "password-555").await;
    let (_, k) = api_token(&s, "k").await;
    let body = json!({"old_password": "password-555", "new_password": "password-666"});
    s.post("/v1/user/change-password", body).await.expect(204);
    let r = k.get("/v1/auth/me").await;
    problems
        .check("API token after change-password", async {
            assert_401(&r, "API token after change-password")
        })
        .await;
    problems.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refusals_look_the_same() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    admin.create_user("real-user", "real-password").await;
    let d = admin.create_user("off-user", "off-password").await;
    admin
        .patch(
            &format!("/v1/admin/users/{}", id(&d)),
            json!({"status": "disabled"}),
        )
        .await
        .expect(200);
    let e = admin.create_user("old-user", "old-password").await;
    admin
        .put(
            &format!("/v1/admin/users/{}/expiry", id(&e)),
            json!({"expires_at": "2021-06-01T00:00:00Z"}),
        )
        .await
        .expect(200);
    let before = admin.count("/v1/admin/events?type=auth.login_failed").await;

    let cases = [
        ("no-such-user", "whatever-pass"), // unknown user
        ("real-user", "wrong-password"),   // wrong password
        ("off-user", "off-password"),      // disabled, right password
        ("old-user", "old-password"),      // expired, right password
    ];
    let mut bodies = Vec::new();
    for path in ["/v1/auth/login", "/v1/admin/login"] {
        for (username, password) in cases {
            let r = cp
                .api()
                .post(path, json!({"username": username, "password": password}))
                .await;
            assert_error(&r, 401, "unauthorized");
            assert!(r.header("retry-after").is_none());
            bodies.push((
                username,
                r.text.clone(),
                r.header("content-type").map(str::to_owned),
            ));
        }
    }
    for (who, text, ct) in &bodies {
        assert_eq!(
            (text, ct),
            (&bodies[0].1, &bodies[0].2),
            "{who}'s refusal differs from {}'s",
            bodies[0].0
        );
    }
    let after = admin.count("/v1/admin/events?type=auth.login_failed").await;
    assert_eq!(after - before, 8, "each refused sign-in is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_rate_limited_per_account() {
    let opts = Options::new()
        .env("LOGIN_MAX_FAILURES_PER_ACCOUNT", 3)
        .env("LOGIN_MAX_FAILURES_PER_IP", 1000)
        .env("LOGIN_WINDOW_SECS", 10);
    let cp = ControlPlane::start(opts).await;
    let admin = cp.admin().await;
    let (user, _) = admin.tenant("limited", "limited-pass").await;
    let anon = cp.api();
    let right = json!({"username": "limited", "password": "limited-pass"});

    for _ in 0..3 {
        let r = anon
            .post(
                "/v1/auth/login",
                json!({"username": "limited", "password": "wrong-pass"}),
            )
            .await;
        assert_error(&r, 401, "unauthorized");
    }
    // Past the limit: 429 even with the right password, on both paths, with Retry-After.
    for path in ["/v1/auth/login", "/v1/admin/login"] {
        let r = anon.post(path, right.clone()).await;
        assert_error(&r, 429, "rate_limited");
        let secs: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("Retry-After in seconds");
        assert!(
            (1..=10).contains(&secs),
            "Retry-After {secs} within the 10 s window"
        );
    }
    // Another account from the same address is not limited.
    cp.admin().await;

    // Recorded: the refused attempts of this account, then (after the window) its sign-in.
    let failed = admin
        .get("/v1/admin/events?type=auth.login_failed&page_size=500")
        .await;
    let mine = |e: &&Value| e["user_id"] == user["id"] || e["actor_name"] == "limited";
    assert!(
        failed.data().iter().filter(mine).count() >= 3,
        "auth.login_failed events: {}",
        failed.text
    );
    let refused = admin.get("/v1/admin/events?type=auth.&page_size=500").await;
    let refused = refused
        .data()
        .iter()
        .filter(mine)
        .filter(|e| e["outcome"] == "failure")
        .count();
    // The three guesses each, and the first refusal of an already limited attempt; the second,
    // within the minute, is answered but not written again (a flood must not fill the log).
    assert_eq!(
        refused, 4,
        "3 failures and the first of 2 rate-limited attempts are recorded: {refused}"
    );

    let succeeded_before = admin
        .count(&format!(
            "/v1/admin/events?type=auth.login_succeeded&user_id={}",
            id(&user)
        ))
        .await;
    eventually(
        Duration::from_secs(30),
        "the right password works once the window has passed",
        || {
            let (anon, right) = (anon.clone(), right.clone());
            async move { (anon.post("/v1/auth/login", right).await.status == 200).then_some(()) }
        },
    )
    .await;
    let succeeded = admin
        .count(&format!(
            "/v1/admin/events?type=auth.login_succeeded&user_id={}",
            id(&user)
        ))
        .await;
    assert_eq!(succeeded, succeeded_before + 1, "auth.login_succeeded recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_rate_limited_per_ip() {
    let opts = Options::new()
        .env("LOGIN_MAX_FAILURES_PER_IP", 3)
        .env("LOGIN_MAX_FAILURES_PER_ACCOUNT", 1000);
    let cp = ControlPlane::start(opts).await;
    let anon = cp.api();
    for name in ["ghost-1", "ghost-2", "ghost-3"] {
        let r = anon
            .post(
                "/v1/auth/login",
                json!({"username": name, "password": "nope-nope"}),
            )
            .await;
        assert_error(&r, 401, "unauthorized");
    }
    let right = json!({"username": "admin", "password": cp.options().admin_password});
    let r = anon.post("/v1/auth/login", right).await;
    assert_error(&r, 429, "rate_limited");
    assert!(
        r.header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= 1),
        "{:?}",
        r.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tokens_expire_after_their_ttl() {
    let cp = ControlPlane::start(Options::new().env("TOKEN_TTL_SECS", 3)).await;
    let asked = Utc::now();
    let r = cp
        .api()
        .post(
            "/v1/auth/login",
            json!({"username": "admin", "password": cp.options().admin_password}),
        )
        .await;
    let token = r.str("token");
    let ttl = (parse_time(&r.body["expires_at"]) - asked).num_milliseconds();
    assert!(
        (2000..=5000).contains(&ttl),
        "expires_at is TOKEN_TTL_SECS ahead: {}",
        r.text
    );
    let api = cp.api().with_token(token);
    api.get("/v1/auth/me").await.expect(200);
    eventually(Duration::from_secs(15), "the session token expires", || {
        let api = api.clone();
        async move { (api.get("/v1/auth/me").await.status == 401).then_some(()) }
    })
    .await;
    assert_401(&api.get("/v1/admin/users").await, "expired session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_or_missing_jwt_secret_is_refused() {
    // Too short; too few distinct characters; unset.
    for secret in ["Xq7-tiny-9", "abababababababababababababababababababab", ""] {
        let opts = Options::new().env("ADMIN_JWT_SECRET", secret);
        let (status, out) = ControlPlane::start_failing(opts).await;
        assert!(!status.success(), "secret {secret:?} accepted");
        let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line on refusal, got:\n{out}");
        assert!(
            lines[0].contains("ADMIN_JWT_SECRET"),
            "the line names the variable: {}",
            lines[0]
        );
        if !secret.is_empty() {
            assert!(!out.contains(secret), "the secret is printed: {out}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_end_nothing_keep_sessions() {
    // Only disabling, expiry, deletion and a password change end tokens: re-saving an active user's
    // status or moving its expiry into the future must not sign it out.
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let problems = Problems::default();

    let (u, s) = admin.tenant("keeps-status", "password-777").await;
    let (_, k) = api_token(&s, "k").await;
    admin
        .patch(
            &format!("/v1/admin/users/{}", id(&u)),
            json!({"status": "active"}),
        )
        .await
        .expect(200);
    let (rs, rk) = (s.get("/v1/auth/me").await, k.get("/v1/auth/me").await);
    problems
        .check("session after PATCH status=active on an active user", async {
            rs.expect(200);
        })
        .await;
    problems
        .check("API token after PATCH status=active on an active user", async {
            rk.expect(200);
        })
        .await;

    let (u, s) = admin.tenant("keeps-expiry", "password-888").await;
    let (_, k) = api_token(&s, "k").await;
    let expiry = format!("/v1/admin/users/{}/expiry", id(&u));
    admin
        .put(&expiry, json!({"expires_at": "2099-01-01T00:00:00Z"}))
        .await
        .expect(200);
    admin.put(&expiry, json!({"expires_at": null})).await.expect(200);
    let (rs, rk) = (s.get("/v1/auth/me").await, k.get("/v1/auth/me").await);
    problems
        .check("session after a future expiry", async {
            rs.expect(200);
        })
        .await;
    problems
        .check("API token after a future expiry", async {
            rk.expect(200);
        })
        .await;
    problems.finish();
}

/// The dashboard's browser session: the cookie is HttpOnly and SameSite=Strict, opens every route
/// of its account's role, refuses changes without the CSRF token or from another origin, and
/// signing out ends it on the server (the old cookie gets 401 wherever it was copied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_session() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let (tenant, _) = admin.tenant("webuser", "web-user-pass").await;
    let anon = cp.api().anonymous();

    // Wrong password: the same 401 as /v1/auth/login, and no cookie.
    let r = anon
        .post(
            "/v1/auth/session",
            json!({"username": "webuser", "password": "nope-nope"}),
        )
        .await;
    assert_401(&r, "wrong password");
    assert!(r.header("set-cookie").is_none());

    let r = anon
        .post(
            "/v1/auth/session",
            json!({"username": "webuser", "password": "web-user-pass"}),
        )
        .await;
    let body = r.expect(200).clone();
    assert_eq!(body["user"]["id"], tenant["id"]);
    assert_eq!(body["user"]["role"], "user");
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    assert!(csrf.len() >= 40);
    let set = r.header("set-cookie").unwrap().to_owned();
    for part in ["ccp_session=", "Path=/", "HttpOnly", "SameSite=Strict"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag ({set})");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let cookie = set.split(';').next().unwrap().to_owned();
    // The session's secret is not the CSRF token, and appears nowhere in the body.
    let secret = cookie.trim_start_matches("ccp_session=");
    assert!(!r.text.contains(secret));

    let browser = anon.with_header("cookie", &cookie);
    let me = browser.get("/v1/auth/session").await;
    assert_eq!(me.expect(200)["csrf_token"], csrf.as_str());
    browser.get("/v1/user/hosts").await.expect(200);
    assert_error(&browser.get("/v1/admin/users").await, 403, "forbidden");

    // A change without the token, with a wrong one, or from another site (even with the token).
    let key = json!({"name": "from the dashboard", "expires_in_days": 1});
    for (client, why) in [
        (browser.clone(), "no token"),
        (
            browser.with_header("x-csrf-token", "not-the-token"),
            "wrong token",
        ),
        (
            browser
                .with_header("x-csrf-token", &csrf)
                .with_header("origin", "https://evil.example"),
            "other origin",
        ),
        (
            browser
                .with_header("x-csrf-token", &csrf)
                .with_header("origin", "null"),
            "opaque origin",
        ),
    ] {
        let r = client.post("/v1/auth/api-tokens", key.clone()).await;
        assert_eq!(r.status, 403, "{why}: {}", r.text);
        assert_error(&r, 403, "csrf_failed");
    }
    assert_eq!(
        browser.get("/v1/auth/api-tokens").await.total(),
        0,
        "nothing written"
    );
    let signed = browser.with_header("x-csrf-token", &csrf);
    signed.post("/v1/auth/api-tokens", key.clone()).await.expect(201);

    // A bearer token needs no CSRF token (no browser attaches it by itself); it cannot sign out.
    let r = admin.delete("/v1/auth/session").await;
    assert_error(&r, 400, "not_a_session");

    // Sign-out: 204, the cookie cleared, and the session gone on the server.
    let r = signed.delete("/v1/auth/session").await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_401(&browser.get("/v1/auth/session").await, "signed out");
    assert_401(&browser.get("/v1/user/hosts").await, "signed out");

    // A password change ends every browser session of the account too.
    let r = anon
        .post(
            "/v1/auth/session",
            json!({"username": "webuser", "password": "web-user-pass"}),
        )
        .await;
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let browser = anon.with_header("cookie", &cookie);
    browser.get("/v1/user/hosts").await.expect(200);
    let id = tenant["id"].as_str().unwrap();
    admin
        .post(&format!("/v1/admin/users/{id}/rotate-password"), None)
        .await
        .expect(200);
    assert_401(&browser.get("/v1/user/hosts").await, "after a password change");
}
