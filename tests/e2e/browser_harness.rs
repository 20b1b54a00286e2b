//! The browser harness against a small site served by the test on 127.0.0.1: typing and clicking,
//! screenshots, CSP violations and script errors, cookies a script may and may not read, a narrow
//! window, and what a failed wait reports. Skipped without chromium and chromedriver unless
//! `CCP_REQUIRE_BROWSER=1`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, SET_COOKIE};
use axum::response::{AppendHeaders, IntoResponse};
use axum::routing::get;
use cloud_cli_proxy_tests::browser::{Browser, Key, NARROW_WINDOW, WINDOW, shots_dir};
use futures::FutureExt as _;
use serde_json::json;

/// The policy of every page: scripts and styles only from the site itself, so inline ones are refused.
const CSP: &str = "default-src 'self'; script-src 'self'";

const FORM_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Form</title>
<link rel="stylesheet" href="/style.css">
<script src="/app.js" defer></script>
</head>
<body>
<header><h1>Browser harness</h1><p>A form whose script writes back what was typed.</p></header>
<main>
<p id="loading">Loading…</p>
<form id="form">
<label for="name">Name</label>
<input id="name" name="name" autocomplete="off">
<button id="send" type="submit">Send</button>
</form>
<p id="out"></p>
</main>
</body>
</html>
"#;

const STYLE: &str = "body { margin: 0; font: 18px/1.5 sans-serif; color: #1d2430; background: #f4f6fb; }
header { background: #24408e; color: #fff; padding: 24px 32px; }
header h1 { margin: 0 0 4px; font-size: 30px; }
main { padding: 24px 32px; }
form { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
input { font-size: 18px; padding: 8px 12px; border: 2px solid #8a97b8; border-radius: 6px; }
button { font-size: 18px; padding: 8px 20px; background: #2f9e62; color: #fff; border: 0; border-radius: 6px; }
#out { font-size: 24px; font-weight: bold; color: #b3361d; }
";

const APP_JS: &str = "const form = document.getElementById('form');
form.addEventListener('submit', (event) => {
  event.preventDefault();
  document.getElementById('out').textContent = 'You typed: ' + document.getElementById('name').value;
});
// Something the page takes a moment to finish, for wait_gone.
setTimeout(() => document.getElementById('loading').remove(), 300);
";

const INLINE_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Inline</title>
<script>document.title = 'inline ran';</script>
</head>
<body><p id="msg">A page with an inline script the policy refuses.</p></body>
</html>
"#;

const THROWS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Throws</title>
<script src="/throw.js"></script>
<script src="/rejects.js"></script>
</head>
<body><p id="msg">A page whose script throws.</p></body>
</html>
"#;

const THROW_JS: &str = "throw new Error('boom from throw.js');\n";

const REJECTS_JS: &str = "Promise.reject(new Error('late boom'));\n";

const COOKIE_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Cookies</title></head>
<body><p id="msg">Two cookies were set.</p></body>
</html>
"#;

/// The site the browser is pointed at, on a free loopback port; it stops with the test's runtime.
async fn site() -> String {
    let html = |body: &'static str| {
        move || async move {
            (
                [
                    (CONTENT_TYPE, "text/html; charset=utf-8"),
                    (CONTENT_SECURITY_POLICY, CSP),
                ],
                body,
            )
        }
    };
    let asset = |content_type: &'static str, body: &'static str| {
        move || async move { ([(CONTENT_TYPE, content_type)], body) }
    };
    let app = Router::new()
        .route("/form", get(html(FORM_PAGE)))
        .route("/inline", get(html(INLINE_PAGE)))
        .route("/throws", get(html(THROWS_PAGE)))
        .route("/style.css", get(asset("text/css", STYLE)))
        .route("/app.js", get(asset("text/javascript", APP_JS)))
        .route("/throw.js", get(asset("text/javascript", THROW_JS)))
        .route("/rejects.js", get(asset("text/javascript", REJECTS_JS)))
        .route(
            "/cookies",
            get(|| async {
                (
                    AppendHeaders([
                        (SET_COOKIE, "session=s3cret; Path=/; HttpOnly; SameSite=Strict"),
                        (SET_COOKIE, "theme=dark; Path=/; SameSite=Lax"),
                        (CONTENT_TYPE, "text/html; charset=utf-8"),
                        (CONTENT_SECURITY_POLICY, CSP),
                    ]),
                    COOKIE_PAGE,
                )
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Width and height from a PNG's header.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let word = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

fn read_png(path: &Path) -> Vec<u8> {
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_clicking_and_a_screenshot() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let base = site().await;
    browser.goto(&format!("{base}/form")).await;
    assert_eq!(browser.url().await, format!("{base}/form"));
    browser.wait_gone("#loading").await;

    browser.fill("#name", "first").await;
    browser.fill("#name", "hello browser").await;
    browser.click("#send").await;
    let shown = browser.wait_for_text("#out", "hello browser").await;
    assert_eq!(
        shown, "You typed: hello browser",
        "fill replaces what the field held"
    );

    // Ctrl+A selects the field's text, typing replaces it, Enter submits the form.
    browser.key("#name", &(Key::Control + "a")).await;
    browser.key("#name", &("second" + &Key::Enter)).await;
    browser.wait_for_text("#out", "You typed: second").await;
    assert_eq!(browser.text("#out").await, "You typed: second");
    let value = browser
        .exec_js(
            "return document.querySelector(arguments[0]).value;",
            vec![json!("#name")],
        )
        .await;
    assert_eq!(value, json!("second"));

    let path = browser.shot("form").await;
    let png = read_png(&path);
    assert!(
        png.len() > 8 * 1024,
        "{} is only {} bytes",
        path.display(),
        png.len()
    );
    assert_eq!(png_size(&png), WINDOW, "the screenshot is the whole window");

    assert_eq!(
        browser.violations().await,
        [],
        "the page uses only its own script and style"
    );
    assert_eq!(browser.js_errors().await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csp_violations_and_script_errors_are_recorded() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let base = site().await;

    // The inline script in <head> runs (or is refused) before any script of the page could listen.
    browser.goto(&format!("{base}/inline")).await;
    browser.wait_for("#msg").await;
    let violations = browser.violations().await;
    assert_eq!(violations.len(), 1, "{violations:#?}");
    assert_eq!(violations[0].directive, "script-src-elem");
    assert_eq!(violations[0].blocked_uri, "inline");
    assert_eq!(violations[0].disposition, "enforce");
    let title = browser.exec_js("return document.title;", Vec::new()).await;
    assert_eq!(title, json!("Inline"), "the refused script did not run");
    assert_eq!(browser.js_errors().await, []);

    // Each document records its own: the clean page has none.
    browser.goto(&format!("{base}/form")).await;
    browser.wait_for("#send").await;
    assert_eq!(browser.violations().await, []);

    // One script throws, the next rejects a promise nobody handles: the rejection is reported
    // after the script has run, so wait for both.
    browser.goto(&format!("{base}/throws")).await;
    browser.wait_for("#msg").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let errors = loop {
        let errors = browser.js_errors().await;
        if errors.len() >= 2 || Instant::now() > deadline {
            break errors;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].message.contains("boom from throw.js"), "{errors:#?}");
    assert_eq!(errors[0].source, format!("{base}/throw.js"));
    assert_eq!(errors[0].line, 1);
    assert!(errors[1].message.contains("late boom"), "{errors:#?}");
    assert_eq!(browser.violations().await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_only_cookies_are_hidden_from_scripts() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let base = site().await;
    browser.goto(&format!("{base}/cookies")).await;
    browser.wait_for("#msg").await;

    let mut cookies = browser.cookies().await;
    cookies.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = cookies.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["session", "theme"], "{cookies:#?}");
    let (session, theme) = (&cookies[0], &cookies[1]);
    assert_eq!(session.value, "s3cret");
    assert!(session.http_only, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"));
    assert!(!session.secure, "plain http");
    assert_eq!(theme.value, "dark");
    assert!(!theme.http_only, "{theme:?}");
    assert_eq!(theme.same_site.as_deref(), Some("Lax"));

    let seen_by_script = browser.exec_js("return document.cookie;", Vec::new()).await;
    assert_eq!(seen_by_script, json!("theme=dark"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrow_window() {
    let Some(browser) = Browser::start_with(NARROW_WINDOW).await else {
        return;
    };
    let base = site().await;
    browser.goto(&format!("{base}/form")).await;
    browser.wait_gone("#loading").await;
    let size = browser
        .exec_js("return [window.innerWidth, window.innerHeight];", Vec::new())
        .await;
    assert_eq!(size, json!([NARROW_WINDOW.0, NARROW_WINDOW.1]));
    // The form wraps: the button goes below the field.
    let tops = browser
        .exec_js(
            "return ['#name', '#send'].map((s) => document.querySelector(s).getBoundingClientRect().top);",
            Vec::new(),
        )
        .await;
    assert!(
        tops[1].as_f64() > tops[0].as_f64(),
        "button beside the field: {tops}"
    );
    let png = read_png(&browser.shot("narrow").await);
    assert_eq!(png_size(&png), NARROW_WINDOW);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wait_names_the_page_and_leaves_a_screenshot() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let base = site().await;
    browser.set_wait(Duration::from_millis(300));
    browser.goto(&format!("{base}/form")).await;
    // The panic is expected; its message is checked instead of failing the test.
    let failed = AssertUnwindSafe(browser.wait_for("#missing"))
        .catch_unwind()
        .await
        .expect_err("waiting for an element that never comes must fail");
    let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("wait_for(\"#missing\")"), "{message}");
    assert!(message.contains("no element matches"), "{message}");
    assert!(message.contains(&format!("page: {base}/form")), "{message}");
    let shot = message
        .split("screenshot: ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no screenshot in {message}"));
    assert!(shot.ends_with("-failure-0.png"), "{message}");
    read_png(Path::new(shot));

    drop(browser);

    // A test's own assertion failing: the browser's drop saves the page as `<test>-panic.png`.
    let shot = shots_dir().join("a_failed_wait_names_the_page_and_leaves_a_screenshot-panic.png");
    let _ = std::fs::remove_file(&shot);
    let failed = AssertUnwindSafe(async {
        let browser = Browser::start().await.unwrap();
        browser.goto(&format!("{base}/form")).await;
        browser.wait_gone("#loading").await;
        panic!("an assertion of the test fails");
    })
    .catch_unwind()
    .await;
    assert!(failed.is_err());
    assert_eq!(png_size(&read_png(&shot)), WINDOW);
}
