//! The dashboard in a real headless Chromium against the real binary: the operator signs in through
//! the page, the overview paints, a user is created through the form (bad input shows the field's
//! error and writes nothing), the session cookie is out of the page's reach, every response carries
//! the dashboard's policy and nothing violates it, and signing out ends the session on the server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::time::Duration;

use cloud_cli_proxy_tests::browser::{Browser, Key};
use cloud_cli_proxy_tests::{ControlPlane, Options, assert_error, eventually};

/// Serves, on `localhost` (another site than the control plane's `127.0.0.1`), a page whose script
/// posts a form creating a user to the control plane on `cp_port`; answers the page's URL.
async fn cross_site_page(cp_port: u16) -> String {
    let page = format!(
        "<!doctype html><title>prize</title>\
         <form id=f method=post enctype=text/plain action=\"http://127.0.0.1:{cp_port}/v1/admin/users\">\
         <input name='{{\"username\":\"forged-user\",\"password\":\"forged-pass-1\",\"x\":\"' value='\"}}'>\
         </form><script>document.getElementById('f').submit()</script>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://localhost:{port}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_signs_in_creates_a_user_and_signs_out() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let cp = ControlPlane::start(Options::new()).await;
    let base = cp.base_url();
    let opts = cp.options().clone();

    // Every file of the dashboard carries its policy, and the page forbids inline script.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for path in [
        "/",
        "/ui/app.js",
        "/ui/app.css",
        "/ui/vendor/novnc/core/rfb.js",
        "/ui/desktop.html",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(r.headers()["x-frame-options"], "DENY", "{path}");
    }

    browser.goto(&format!("{base}/")).await;
    browser.wait_for("[data-test=login-form]").await;
    browser.shot("sign-in").await;
    // A wrong password: the API's message on the page, still the sign-in form.
    browser
        .fill("[data-test=login-username]", &opts.admin_username)
        .await;
    browser
        .fill("[data-test=login-password]", "not-the-password")
        .await;
    browser.click("[data-test=login-submit]").await;
    browser
        .wait_for_text("[data-test=form-error]", "Wrong username or password")
        .await;

    browser
        .fill("[data-test=login-password]", &opts.admin_password)
        .await;
    browser.click("[data-test=login-submit]").await;
    browser.wait_for("[data-test=signout]").await;
    browser.wait_for_text("[data-test=page-title]", "Overview").await;
    browser.shot("overview").await;

    // The session cookie: HttpOnly, SameSite=Strict, invisible to the page's scripts.
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c.name == "ccp_session")
        .expect("the session cookie");
    assert!(session.http_only);
    assert_eq!(session.same_site.as_deref(), Some("Strict"));
    let readable = browser.exec_js("return document.cookie", vec![]).await;
    assert!(
        !readable.as_str().unwrap_or_default().contains(&session.value),
        "document.cookie shows the session: {readable}"
    );
    let storage = browser
        .exec_js(
            "return JSON.stringify([Object.keys(localStorage), Object.keys(sessionStorage)])",
            vec![],
        )
        .await;
    assert_eq!(storage.as_str(), Some("[[],[]]"), "nothing in web storage");

    // Users: bad input shows the field's error and writes nothing; good input creates.
    browser.click("[data-test=nav-users]").await;
    browser.click("[data-test=new-user]").await;
    browser.fill("[data-test=create-user-username]", "x").await;
    browser
        .fill("[data-test=create-user-password]", "browser-pass-1")
        .await;
    browser.click("[data-test=create-user-submit]").await;
    browser
        .wait_for_text("[data-test=field-error-username]", "3")
        .await;
    browser.shot("user-field-error").await;
    let admin = cp.admin().await;
    assert_eq!(admin.get("/v1/admin/users").await.total(), 0, "nothing written");
    browser
        .fill("[data-test=create-user-username]", "browser-alice")
        .await;
    browser.click("[data-test=create-user-submit]").await;
    browser.wait_for("[data-test=new-user-password-value]").await;
    browser.shot("user-created").await;
    // The dialog that shows the password once closes with Escape.
    browser.key("[data-test=user-created-dialog]", &Key::Escape).await;
    browser.wait_gone("[data-test=user-created-dialog]").await;
    let users = admin.get("/v1/admin/users").await;
    assert_eq!(users.total(), 1);
    assert_eq!(users.data()[0]["username"], "browser-alice");

    // A page of another site that posts a form to the API as soon as it loads: the browser does not
    // send the SameSite=Strict cookie with it, and even with it the change would need the CSRF
    // token. Nothing is written.
    let evil = cross_site_page(cp.addr().port()).await;
    browser.goto(&evil).await;
    eventually(Duration::from_secs(15), "the forged form to be sent", || async {
        let url = browser.url().await;
        url.contains("/v1/admin/users").then_some(())
    })
    .await;
    let users = admin.get("/v1/admin/users").await;
    assert_eq!(users.total(), 1, "the cross-site form created nothing");
    browser.goto(&format!("{base}/#/users")).await;
    browser.wait_for("[data-test=signout]").await;

    let violations = browser.violations().await;
    assert!(violations.is_empty(), "CSP violations: {violations:?}");
    let errors = browser.js_errors().await;
    assert!(errors.is_empty(), "JS errors: {errors:?}");

    // Sign-out ends the session on the server: the old cookie no longer opens anything.
    let old = format!("ccp_session={}", session.value);
    browser.click("[data-test=signout]").await;
    browser.wait_for("[data-test=login-form]").await;
    let r = cp.api().with_header("cookie", &old).get("/v1/admin/users").await;
    assert_error(&r, 401, "unauthorized");
}
