//! Sign-in under attack, against the real binary: a burst of bad sign-ins costs bounded memory and
//! no more guesses than the limits allow; strangers' failures do not keep an account's owner out;
//! and the second factor (TOTP), checked with codes computed here from the RFC.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use cloud_cli_proxy_tests::{Api, ControlPlane, Options, assert_error, totp};
use serde_json::{Value, json};

/// The documented bound (docs/security.md) on the control plane's peak resident memory through a
/// burst of 1,000 concurrent bad sign-ins: what it holds at rest (under 100 MiB, a debug build
/// with the embedded agent and gateway), one 19 MiB argon2id block per password-check slot (two
/// here), and the sign-ins in flight (at most 64 in their handlers, the rest a few KiB each).
const PEAK_BOUND_KIB: u64 = 192 * 1024;

fn local(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::from([127, a, b, c])
}

/// Fires every `(client, username)` sign-in at once; the statuses answered, counted.
async fn burst(clients: Vec<(Api, String)>) -> BTreeMap<u16, usize> {
    let all = clients.into_iter().map(|(api, username)| {
        tokio::spawn(async move {
            api.post(
                "/v1/auth/login",
                json!({ "username": username, "password": "not-the-password" }),
            )
            .await
        })
    });
    let mut statuses = BTreeMap::new();
    for r in futures::future::join_all(all).await {
        let r = r.expect("request task");
        if r.status == 429 {
            assert!(
                r.header("retry-after")
                    .is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)),
                "429 without Retry-After: {:?}",
                r.headers
            );
            let code = r.body["error"]["code"].as_str().unwrap_or_default();
            assert!(code == "rate_limited" || code == "busy", "{}", r.text);
        }
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_bad_sign_ins_cost_bounded_memory() {
    let cp = ControlPlane::start(Options::new().env("PASSWORD_CHECK_SLOTS", 2)).await;
    let at_rest = cp.memory_kib("VmRSS");

    // From one address: the per-address limit (30) is counted as attempts are admitted, so no
    // more than 30 of the 1,000 are even checked.
    let api = cp.api();
    let one = (0..1000).map(|i| (api.clone(), format!("ghost-{i}"))).collect();
    let statuses = burst(one).await;
    eprintln!("one address: {statuses:?}");
    assert!(statuses.keys().all(|s| *s < 500), "{statuses:?}");
    assert!(statuses.get(&401).copied().unwrap_or(0) <= 30, "{statuses:?}");
    assert_eq!(
        statuses.get(&401).copied().unwrap_or(0) + statuses.get(&429).copied().unwrap_or(0),
        1000,
        "{statuses:?}"
    );
    // The audit log holds each guess, but the refusals of an address already held back only once
    // a minute: a flood cannot fill the disk with copies of one fact.
    let admin = api
        .from_address(local(3, 0, 1))
        .login_as("admin", &cp.options().admin_password)
        .await;
    let failed = admin.count("/v1/admin/events?type=auth.login_failed").await;
    let guesses = i64::try_from(statuses.get(&401).copied().unwrap_or(0)).unwrap();
    assert!(
        (guesses..=guesses + 1).contains(&failed),
        "{failed} auth.login_failed events for {guesses} guesses and {} refusals",
        statuses.get(&429).copied().unwrap_or(0)
    );

    // From 250 addresses, 4 each: no address reaches its limit, so the password-check slots are
    // what holds the memory; the rest wait briefly or are told to come back.
    let spread = (0..1000)
        .map(|i| {
            let a = u8::try_from(i % 250).unwrap();
            (api.from_address(local(1, 0, a + 1)), format!("spread-{i}"))
        })
        .collect();
    let statuses = burst(spread).await;
    eprintln!("250 addresses: {statuses:?}");
    assert!(statuses.keys().all(|s| *s == 401 || *s == 429), "{statuses:?}");

    let peak = cp.memory_kib("VmHWM");
    eprintln!(
        "control plane: {} MiB at rest, peak {} MiB",
        at_rest / 1024,
        peak / 1024
    );
    assert!(
        peak < PEAK_BOUND_KIB,
        "peak resident memory {peak} KiB over the documented bound {PEAK_BOUND_KIB} KiB"
    );
    // Still serving: the operator signs in from an address that did not guess.
    let r = api
        .from_address(local(2, 0, 1))
        .post(
            "/v1/auth/login",
            json!({"username": "admin", "password": cp.options().admin_password}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_lock_the_owner_out() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    admin.create_user("owner", "owner-password").await;
    let api = cp.api();
    let right = json!({"username": "owner", "password": "owner-password"});
    let wrong = json!({"username": "owner", "password": "a-wrong-guess"});

    // The owner's clients: the API from .2, a browser (with its device cookie) from .3.
    let owner = api.from_address(local(0, 0, 2));
    owner.post("/v1/auth/login", right.clone()).await.expect(200);
    let browser = owner.from_address(local(0, 0, 3));
    let r = browser.post("/v1/auth/session", right.clone()).await;
    r.expect(200);
    let device = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("ccp_device="))
        .map(|v| v.split(';').next().unwrap().to_owned())
        .expect("a device cookie");

    // 50 wrong passwords from 50 other addresses.
    let mut statuses = BTreeMap::new();
    for i in 0..50 {
        let r = api
            .from_address(local(0, 1, i + 1))
            .post("/v1/auth/login", wrong.clone())
            .await;
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(401, 20), (429, 30)]),
        "the account-wide limit (20) stops the spread guessing"
    );
    // The guessing addresses, and any address new to the account, are held…
    for addr in [local(0, 1, 1), local(0, 1, 50), local(0, 2, 1)] {
        let r = api.from_address(addr).post("/v1/auth/login", right.clone()).await;
        assert_error(&r, 429, "rate_limited");
    }
    // …the owner's clients are not: by address, and by device cookie from a new address.
    owner.post("/v1/auth/login", right.clone()).await.expect(200);
    let moved = api.from_address(local(0, 3, 1)).with_header("cookie", &device);
    moved.post("/v1/auth/session", right.clone()).await.expect(200);
    // The bootstrap script's sign-in is held the same way and passes the owner the same way.
    let bootstrap = json!({"username": "owner", "password": "owner-password"});
    let r = api
        .from_address(local(0, 2, 2))
        .post("/v1/bootstrap/sessions", bootstrap.clone())
        .await;
    assert_error(&r, 429, "rate_limited");
    let r = owner.post("/v1/bootstrap/sessions", bootstrap).await;
    assert_error(&r, 404, "no_host");

    // 50 wrong passwords from one address: that address is held for this account after 5, and
    // the owner still signs in.
    let other = cp.api().from_address(local(0, 4, 1));
    admin.create_user("second", "second-password").await;
    let wrong = json!({"username": "second", "password": "a-wrong-guess"});
    let mut refused = 0;
    for _ in 0..50 {
        if other.post("/v1/auth/login", wrong.clone()).await.status == 429 {
            refused += 1;
        }
    }
    assert_eq!(refused, 45);
    let second = json!({"username": "second", "password": "second-password"});
    assert_error(
        &other.post("/v1/auth/login", second.clone()).await,
        429,
        "rate_limited",
    );
    api.from_address(local(0, 4, 2))
        .post("/v1/auth/login", second)
        .await
        .expect(200);
}

/// The current code, once the step of `used` (if any) has passed, so no code is offered twice.
async fn fresh_code(secret: &str, used: Option<&str>) -> String {
    loop {
        let code = totp::code_now(secret);
        if Some(code.as_str()) != used {
            return code;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_second_factor() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let (user, tenant) = admin.tenant("tina", "tina-password").await;
    let anon = cp.api();
    let password = json!({"username": "tina", "password": "tina-password"});

    // Enrolment needs the password again; nothing changes until it is confirmed.
    let r = tenant
        .post("/v1/auth/totp", json!({"password": "wrong-password"}))
        .await;
    assert_error(&r, 401, "unauthorized");
    let r = tenant
        .post("/v1/auth/totp", json!({"password": "tina-password"}))
        .await;
    let enrolment = r.expect(201).clone();
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let uri = enrolment["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/cloud-cli-proxy:tina?"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(enrolment["qr_svg"].as_str().unwrap().contains("<svg"));
    anon.post("/v1/auth/login", password.clone()).await.expect(200);
    let status = tenant.get("/v1/auth/totp").await;
    assert_eq!(status.expect(200)["pending"], true);

    // Confirmed with a code computed here: ten recovery codes, shown once.
    let r = tenant
        .post("/v1/auth/totp/confirm", json!({"code": "000000"}))
        .await;
    if totp::code_now(&secret) != "000000" {
        assert_error(&r, 400, "validation_failed");
    }
    let first = fresh_code(&secret, None).await;
    let r = tenant.post("/v1/auth/totp/confirm", json!({"code": first})).await;
    let codes: Vec<String> = r.expect(200)["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    let me = tenant.get("/v1/auth/me").await;
    assert_eq!(me.expect(200)["totp_enabled"], true);

    // Now the password alone is not enough, on the API and the dashboard.
    for path in ["/v1/auth/login", "/v1/auth/session"] {
        let r = anon.post(path, password.clone()).await;
        assert_error(&r, 401, "totp_required");
    }
    let with = |code: &str| json!({"username": "tina", "password": "tina-password", "totp_code": code});
    let wrong = if first == "123456" { "654321" } else { "123456" };
    assert_error(
        &anon.post("/v1/auth/login", with(wrong)).await,
        401,
        "totp_invalid",
    );
    // A wrong password with a right code says nothing about the code.
    let code = fresh_code(&secret, Some(&first)).await;
    let r = anon
        .post(
            "/v1/auth/login",
            json!({"username": "tina", "password": "not-it", "totp_code": code}),
        )
        .await;
    assert_error(&r, 401, "unauthorized");
    anon.post("/v1/auth/login", with(&code)).await.expect(200);
    // A code opens one sign-in.
    assert_error(
        &anon.post("/v1/auth/login", with(&code)).await,
        401,
        "totp_invalid",
    );
    // A recovery code works once, in any case and without its dash.
    let recovery = codes[0].to_uppercase().replace('-', "");
    anon.post("/v1/auth/session", with(&recovery)).await.expect(200);
    assert_error(
        &anon.post("/v1/auth/login", with(&codes[0])).await,
        401,
        "totp_invalid",
    );
    assert_eq!(
        tenant.get("/v1/auth/totp").await.expect(200)["recovery_codes_left"],
        9
    );
    // A second enrolment over a confirmed one is refused.
    let r = tenant
        .post("/v1/auth/totp", json!({"password": "tina-password"}))
        .await;
    assert_error(&r, 409, "totp_enabled");

    // Every step left an event.
    let events = admin
        .get(&format!(
            "/v1/admin/events?user_id={}&page_size=200",
            user["id"].as_str().unwrap()
        ))
        .await;
    let types: Vec<&str> = events.expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    for t in ["user.totp_started", "user.totp_enabled"] {
        assert!(types.contains(&t), "{t} in {types:?}");
    }
    let reasons: Vec<Value> = events.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["reason"].clone())
        .collect();
    for reason in ["totp_required", "totp_invalid"] {
        assert!(reasons.contains(&json!(reason)), "{reason} in {reasons:?}");
    }

    // Removing it takes the password and a code; then the password alone opens the account.
    let r = tenant
        .delete_json(
            "/v1/auth/totp",
            json!({"password": "tina-password", "code": "not-a-code"}),
        )
        .await;
    assert_error(&r, 400, "validation_failed");
    let r = tenant
        .delete_json(
            "/v1/auth/totp",
            json!({"password": "tina-password", "code": codes[1]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    anon.post("/v1/auth/login", password.clone()).await.expect(200);
    // With none left, removing one is a conflict, not a missing route or object.
    let r = tenant
        .delete_json(
            "/v1/auth/totp",
            json!({"password": "tina-password", "code": codes[2]}),
        )
        .await;
    assert_error(&r, 409, "totp_not_enrolled");

    // The operator resets a second factor for someone who lost it.
    let tenant = anon.login_as("tina", "tina-password").await;
    let enrolment = tenant
        .post("/v1/auth/totp", json!({"password": "tina-password"}))
        .await
        .expect(201)
        .clone();
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let code = fresh_code(&secret, None).await;
    tenant
        .post("/v1/auth/totp/confirm", json!({"code": code}))
        .await
        .expect(200);
    assert_error(
        &anon.post("/v1/auth/login", password.clone()).await,
        401,
        "totp_required",
    );
    let id = user["id"].as_str().unwrap();
    let r = tenant.delete(&format!("/v1/admin/users/{id}/totp")).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = admin.delete(&format!("/v1/admin/users/{id}/totp")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    anon.post("/v1/auth/login", password).await.expect(200);
    let r = admin.delete(&format!("/v1/admin/users/{id}/totp")).await;
    assert_error(&r, 409, "totp_not_enrolled");
    let r = admin
        .delete(&format!("/v1/admin/users/{}/totp", uuid::Uuid::new_v4()))
        .await;
    assert_error(&r, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_in_the_dashboard() {
    let Some(browser) = cloud_cli_proxy_tests::browser::Browser::start().await else {
        return;
    };
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    admin.create_user("dora", "dora-password").await;
    let base = cp.base_url();

    browser.goto(&format!("{base}/")).await;
    browser.wait_for("[data-test=login-form]").await;
    browser.sign_in("dora", "dora-password").await;
    browser.wait_for("[data-test=signout]").await;
    browser.click("[data-test=nav-security]").await;
    browser.wait_for("[data-test=totp-start-form]").await;
    browser.fill("[data-test=totp-password]", "dora-password").await;
    browser.click("[data-test=totp-start]").await;

    // The QR code is drawn, and its key is the one the code is computed from.
    browser.wait_for("[data-test=totp-qr]").await;
    let drawn = browser
        .exec_js(
            "const img = document.querySelector('[data-test=totp-qr]'); return img.complete && img.naturalWidth;",
            vec![],
        )
        .await;
    assert!(
        drawn.as_u64().unwrap_or(0) >= 200,
        "the QR image did not load: {drawn}"
    );
    let secret = browser.text("[data-test=totp-secret]").await;
    browser.shot("totp-enrol").await;
    browser
        .fill("[data-test=totp-code]", &totp::code_now(&secret))
        .await;
    browser.click("[data-test=totp-confirm]").await;
    let codes = browser.text("[data-test=totp-recovery-value]").await;
    assert_eq!(codes.split_whitespace().count(), 10, "{codes}");
    browser.shot("totp-recovery-codes").await;
    browser.click("[data-test=totp-codes-saved]").await;
    browser.wait_for_text("[data-test=totp-codes-left]", "10").await;

    // Signing in again asks for the code after the password.
    browser.click("[data-test=signout]").await;
    browser.wait_for("[data-test=login-form]").await;
    browser.sign_in("dora", "dora-password").await;
    browser.wait_for("[data-test=login-totp]").await;
    browser
        .wait_for_text("[data-test=form-error]", "two-factor")
        .await;
    browser.shot("sign-in-code").await;
    let first = codes.split_whitespace().next().unwrap().to_owned();
    browser.fill("[data-test=login-password]", "dora-password").await;
    browser.fill("[data-test=login-totp]", &first).await;
    browser.click("[data-test=login-submit]").await;
    browser.wait_for("[data-test=signout]").await;

    // The operator resets it from the user's page; then the password alone signs dora in.
    browser.click("[data-test=signout]").await;
    browser.wait_for("[data-test=login-form]").await;
    let opts = cp.options().clone();
    browser.sign_in(&opts.admin_username, &opts.admin_password).await;
    browser.wait_for("[data-test=signout]").await;
    let users = admin.get("/v1/admin/users?q=dora").await;
    let id = users.expect(200)["data"][0]["id"].as_str().unwrap().to_owned();
    browser.goto(&format!("{base}/#/users/{id}")).await;
    browser.wait_for_text("[data-test=user-totp]", "on").await;
    browser.click("[data-test=user-reset-totp]").await;
    browser.click("[data-test=confirm-ok]").await;
    browser.wait_for_text("[data-test=user-totp]", "off").await;
    browser.shot("totp-reset").await;
    cp.api()
        .post(
            "/v1/auth/login",
            json!({"username": "dora", "password": "dora-password"}),
        )
        .await
        .expect(200);
    assert!(browser.js_errors().await.is_empty());
    assert!(browser.violations().await.is_empty());
}
