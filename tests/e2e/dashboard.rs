//! The dashboard in a real headless Chromium against the real binary: the operator signs in through
//! the page, the overview paints, a user is created through the form (bad input shows the field's
//! error and writes nothing), the session cookie is out of the page's reach, every response carries
//! the dashboard's policy and nothing violates it, a forged form from another site changes nothing,
//! and signing out ends the session on the server; a host's entry link is switched off and on,
//! rotated and given an expiry (then none) with the host page's buttons. With a real host (Docker,
//! the host image): a tenant's hostile page served through the VNC proxy does not run in our origin.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::time::Duration;

use cloud_cli_proxy_tests::browser::{Browser, Key};
use cloud_cli_proxy_tests::{ControlPlane, Options, assert_error, eventually};

/// Waits up to `limit` (longer than the harness's usual wait) for an element matching `css`.
async fn wait_long(browser: &mut Browser, css: &str, limit: Duration) {
    browser.set_wait(limit);
    browser.wait_for(css).await;
    browser.set_wait(cloud_cli_proxy_tests::browser::WAIT);
}

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
    browser.sign_in(&opts.admin_username, "not-the-password").await;
    browser
        .wait_for_text("[data-test=form-error]", "Wrong username or password")
        .await;

    browser.sign_in(&opts.admin_username, &opts.admin_password).await;
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

/// A tenant (root in their host) replaces noVNC's page with one whose script, run in our origin,
/// would use the operator's session to create an account. The operator opens it through the proxy
/// in a signed-in browser: the page arrives, sandboxed, and its script never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_page_cannot_run_in_our_origin() {
    use base64::Engine as _;
    use cloud_cli_proxy_tests::docker::exec_root;
    use cloud_cli_proxy_tests::fixtures::unique;
    use cloud_cli_proxy_tests::hosts::CREATE_LIMIT;

    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let node = cloud_cli_proxy_tests::Node::embedded(&[]).await;
    let base = node.cp.base_url();
    let (owner, owner_api) = node.admin.tenant(&unique("evil"), "owner-password-1").await;
    let host = node.create_host(owner["id"].as_str().unwrap()).await;
    node.task_succeeded(&host.task_id, CREATE_LIMIT, "create").await;
    let user_page = format!("/v1/user/hosts/{}/vnc/vnc.html", host.id);
    eventually(Duration::from_secs(90), "noVNC through the proxy", || async {
        (owner_api.get(&user_page).await.status == 200).then_some(())
    })
    .await;

    let hostile = "<!doctype html><title>noVNC</title><script>\
        document.title = 'ran';\
        fetch('/v1/auth/session').then(r => r.json()).then(s => fetch('/v1/admin/users', {method: 'POST',\
        headers: {'content-type': 'application/json', 'x-csrf-token': s.csrf_token},\
        body: JSON.stringify({username: 'made-by-tenant', password: 'tenant-pass-1'})}));\
        </script><p>hostile</p>";
    let encoded = base64::engine::general_purpose::STANDARD.encode(hostile);
    let script = format!("echo {encoded} | base64 -d > /usr/share/novnc/vnc.html");
    let out = exec_root(&node.host_container(&host.short_id), &["sh", "-c", &script]).await;
    assert!(out.success(), "replacing vnc.html: {}", out.both());
    let served = owner_api.get(&user_page).await;
    assert!(
        served.text.contains("made-by-tenant"),
        "the hostile page is served: {}",
        served.text
    );

    let opts = node.cp.options().clone();
    browser.goto(&format!("{base}/")).await;
    browser.sign_in(&opts.admin_username, &opts.admin_password).await;
    browser.wait_for("[data-test=signout]").await;

    browser
        .goto(&format!("{base}/v1/admin/hosts/{}/vnc/vnc.html", host.id))
        .await;
    browser.wait_for_text("p", "hostile").await;
    browser.shot("hostile-page").await;
    // Give a script every chance to have run: a while of nothing happening.
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        let users = node.admin.get("/v1/admin/users?q=made-by-tenant").await;
        assert_eq!(
            users.total(),
            0,
            "the tenant's script ran with the operator's session"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let title = browser.exec_js("return document.title", vec![]).await;
    assert_ne!(title.as_str(), Some("ran"), "the tenant's script ran");

    // The desktop in the page: the dashboard's own viewer, through the proxy's WebSocket, draws the
    // host's screen (whatever the tenant did to the host's web pages).
    browser.goto(&format!("{base}/#/hosts/{}/desktop", host.id)).await;
    // The desktop is up (the page above started it), but a busy machine may slow it; the viewer retries.
    wait_long(
        &mut browser,
        "[data-test=desktop-viewer][data-state=connected]",
        Duration::from_secs(90),
    )
    .await;
    let drawn = eventually(Duration::from_secs(30), "the desktop to be drawn", || async {
        let v = browser
            .exec_js(
                "const c = document.querySelector('[data-test=desktop-viewer] canvas');\
                 if (!c || c.width < 100) return 0;\
                 const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;\
                 let lit = 0; for (let i = 0; i < d.length; i += 4 * 97) if (d[i] + d[i+1] + d[i+2] > 0) lit++;\
                 return lit;",
                vec![],
            )
            .await;
        let lit = v.as_u64().unwrap_or(0);
        (lit > 100).then_some(lit)
    })
    .await;
    assert!(drawn > 100);
    // The viewer counts the framebuffer updates it completed (the benchmark's `data-frames`).
    eventually(Duration::from_secs(10), "a frame count on the viewer", || async {
        (browser.viewer_frames().await > 0).then_some(())
    })
    .await;
    browser.shot("desktop").await;
    let violations = browser.violations().await;
    assert!(
        violations.is_empty(),
        "CSP violations on the desktop: {violations:?}"
    );

    // The terminal in the page: a shell on the host, typed into and read back as a person would.
    browser
        .goto(&format!("{base}/#/hosts/{}/terminal", host.id))
        .await;
    wait_long(
        &mut browser,
        "[data-test=terminal-viewer][data-state=connected]",
        Duration::from_secs(60),
    )
    .await;
    browser
        .key(
            ".xterm-helper-textarea",
            &format!("echo typed-$((40+2)); whoami{}", Key::Enter),
        )
        .await;
    // xterm.js draws on a canvas; its screen-reader rows hold the same text.
    let screen = browser
        .wait_for_text(".xterm-accessibility-tree", "typed-42")
        .await;
    let linux_user = cloud_cli_proxy_tests::hosts::linux_user(owner["username"].as_str().unwrap());
    assert!(screen.contains(&linux_user), "{screen}");
    browser.shot("terminal").await;
    // Reconnecting (a new socket) resumes the same shell, which kept its state.
    browser
        .key(
            ".xterm-helper-textarea",
            &format!("kept=still-here{}", Key::Enter),
        )
        .await;
    browser.click("[data-test=terminal-reconnect]").await;
    wait_long(
        &mut browser,
        "[data-test=terminal-viewer][data-state=connected]",
        Duration::from_secs(60),
    )
    .await;
    browser
        .key(
            ".xterm-helper-textarea",
            &format!("echo \"$kept\"-resumed{}", Key::Enter),
        )
        .await;
    browser
        .wait_for_text(".xterm-accessibility-tree", "still-here-resumed")
        .await;
    let violations = browser.violations().await;
    assert!(
        violations.is_empty(),
        "CSP violations on the terminal: {violations:?}"
    );

    // The tenant signs in on the same page and sees their own host, never another tenant's.
    let (other, _) = node.admin.tenant(&unique("other"), "other-password-1").await;
    let other_host = node.create_host(other["id"].as_str().unwrap()).await;
    browser.click("[data-test=signout]").await;
    browser.wait_for("[data-test=login-form]").await;
    browser
        .sign_in(owner["username"].as_str().unwrap(), "owner-password-1")
        .await;
    let card = browser.wait_for_text("[data-test=my-host]", &host.short_id).await;
    assert!(!card.contains(&other_host.short_id));
    let cards = browser
        .exec_js(
            "return document.querySelectorAll('[data-test=my-host]').length",
            vec![],
        )
        .await;
    assert_eq!(cards.as_u64(), Some(1), "the tenant sees exactly their one host");
    let page = browser.exec_js("return document.body.innerText", vec![]).await;
    assert!(!page.as_str().unwrap().contains(&other_host.short_id));
    let operator_nav = browser
        .exec_js(
            "return document.querySelector('[data-test=nav-users]') !== null",
            vec![],
        )
        .await;
    assert_eq!(
        operator_nav.as_bool(),
        Some(false),
        "no operator pages for a tenant"
    );
    browser.shot("tenant-hosts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_switches_off_rotates_and_expires_an_entry_link_from_the_host_page() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let cp = ControlPlane::start(Options::new()).await;
    let base = cp.base_url();
    let opts = cp.options().clone();
    let admin = cp.admin().await;
    let user = admin.create_user("linked", "linked-password").await;
    let host = admin.create_host(user["id"].as_str().unwrap()).await;
    let host_id = host["id"].as_str().unwrap().to_owned();
    let short_id = host["short_id"].as_str().unwrap().to_owned();
    let link = |admin: cloud_cli_proxy_tests::Api| {
        let path = format!("/v1/admin/hosts/{host_id}/entry-link");
        async move { admin.get(&path).await.expect(200).clone() }
    };

    browser.goto(&format!("{base}/")).await;
    browser.sign_in(&opts.admin_username, &opts.admin_password).await;
    browser.wait_for_text("[data-test=page-title]", "Overview").await;
    browser.goto(&format!("{base}/#/hosts/{host_id}")).await;
    browser.wait_for_text("[data-test=entry-state]", "Active").await;
    browser
        .wait_for_text("[data-test=access-entry-url]", &format!("/entry/{short_id}"))
        .await;

    browser.click("[data-test=entry-toggle]").await;
    browser.wait_for_text("[data-test=entry-state]", "Disabled").await;
    assert_eq!(link(admin.clone()).await["enabled"], false);
    browser.shot("entry-link-disabled").await;
    browser.click("[data-test=entry-toggle]").await;
    browser.wait_for_text("[data-test=entry-state]", "Active").await;
    assert_eq!(link(admin.clone()).await["enabled"], true);

    browser.click("[data-test=entry-rotate]").await;
    browser.click("[data-test=confirm-ok]").await;
    let rotated = eventually(Duration::from_secs(15), "a new entry id", || {
        let admin = admin.clone();
        let short_id = short_id.clone();
        async move {
            let id = link(admin).await["entry_id"].as_str().unwrap().to_owned();
            (id != short_id).then_some(id)
        }
    })
    .await;
    browser
        .wait_for_text("[data-test=access-entry-url]", &format!("/entry/{rotated}"))
        .await;

    // An expiry an hour ahead, typed as the page's local time, then removed again.
    browser.click("[data-test=entry-expiry]").await;
    browser.wait_for("[data-test=entry-expiry-at]").await;
    browser
        .exec_js(
            "const d = new Date(Date.now() + 3600e3);\
             const p = (n) => String(n).padStart(2, '0');\
             document.querySelector('[data-test=entry-expiry-at]').value =\
               `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;",
            vec![],
        )
        .await;
    browser.click("[data-test=entry-expiry-submit]").await;
    let expires = eventually(Duration::from_secs(15), "the expiry to be stored", || {
        let admin = admin.clone();
        async move { link(admin).await["expires_at"].as_str().map(str::to_owned) }
    })
    .await;
    let at = chrono::DateTime::parse_from_rfc3339(&expires).unwrap();
    let ahead = at.signed_duration_since(chrono::Utc::now()).num_minutes();
    assert!(
        (58..=60).contains(&ahead),
        "expiry {expires} is {ahead} minutes ahead"
    );
    browser.wait_gone("[data-test=entry-expiry-dialog]").await;
    browser.click("[data-test=entry-expiry]").await;
    browser.wait_for("[data-test=entry-expiry-at]").await;
    browser.click("[data-test=entry-expiry-submit]").await;
    eventually(Duration::from_secs(15), "the expiry to be removed", || {
        let admin = admin.clone();
        async move { link(admin).await["expires_at"].is_null().then_some(()) }
    })
    .await;

    let violations = browser.violations().await;
    assert!(violations.is_empty(), "CSP violations: {violations:?}");
    let errors = browser.js_errors().await;
    assert!(errors.is_empty(), "JS errors: {errors:?}");
}
