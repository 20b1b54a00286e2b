//! An HTTP client for the API, the error-shape assertion and a deadline poller.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::Value;

/// Strings no response of the API may ever contain: a stored password hash leaking out.
const NEVER_IN_A_RESPONSE: &[&str] = &["password_hash", "$argon2"];

/// One answer of the API.
#[derive(Debug, Clone)]
pub struct Resp {
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub headers: HeaderMap,
    /// The body parsed as JSON; `Null` when empty, a JSON string when it is not JSON.
    pub body: Value,
    /// The raw body.
    pub text: String,
}

impl Resp {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "{} {}: expected {status}, got {} with body {}",
            self.method, self.path, self.status, self.text
        );
        &self.body
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `body[key]` as a string, or a panic that says what was there instead.
    #[track_caller]
    pub fn str(&self, key: &str) -> String {
        match self.body.get(key).and_then(Value::as_str) {
            Some(s) => s.to_owned(),
            None => panic!(
                "{} {}: no string `{key}` in {}",
                self.method, self.path, self.text
            ),
        }
    }

    /// `total_records` of a page.
    #[track_caller]
    pub fn total(&self) -> i64 {
        self.expect(200);
        self.body["total_records"]
            .as_i64()
            .unwrap_or_else(|| panic!("{} {}: not a page: {}", self.method, self.path, self.text))
    }

    /// `data` of a page.
    #[track_caller]
    pub fn data(&self) -> &Vec<Value> {
        self.expect(200);
        self.body["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{} {}: not a page: {}", self.method, self.path, self.text))
    }
}

/// A body to send.
#[derive(Debug, Clone)]
pub enum Body {
    None,
    Json(Value),
    /// Bytes with the given `Content-Type` header (none when `None`).
    Raw {
        content_type: Option<String>,
        bytes: Vec<u8>,
    },
}

/// A client bound to a base URL and, optionally, a bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    /// Further headers sent with every request (`x-agent-token`, `x-bootstrap-secret`).
    headers: Vec<(String, String)>,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        Self::trusting(base, None)
    }

    /// A client that also trusts the CA certificate `ca_pem`, for an `https://` base.
    pub fn trusting(base: impl Into<String>, ca_pem: Option<&str>) -> Self {
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            // Only loopback is ever dialled; a proxy from the environment must not change that.
            .no_proxy();
        if let Some(pem) = ca_pem {
            http =
                http.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("a PEM CA"));
        }
        let http = http.build().expect("HTTP client");
        Self {
            base: base.into(),
            http,
            token: None,
            headers: Vec::new(),
        }
    }

    /// The same server, reached from the loopback address `local` (any of 127.0.0.0/8), so tests
    /// can sign in as several clients. Keeps cookies, like a browser.
    pub fn from_address(&self, local: std::net::IpAddr) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .local_address(local)
            .build()
            .expect("HTTP client");
        Self { http, ..self.clone() }
    }

    /// The same client, also sending `name: value` with every request.
    pub fn with_header(&self, name: &str, value: &str) -> Self {
        let mut headers = self.headers.clone();
        headers.push((name.to_owned(), value.to_owned()));
        Self {
            headers,
            ..self.clone()
        }
    }

    /// The same server with this bearer token.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Self {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// The same server without a token.
    pub fn anonymous(&self) -> Self {
        Self {
            token: None,
            ..self.clone()
        }
    }

    pub fn token(&self) -> &str {
        self.token.as_deref().expect("this client has no token")
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Signs in on `/v1/auth/login`, asserting success; returns the session token.
    #[track_caller]
    pub fn login(&self, username: &str, password: &str) -> impl Future<Output = String> + '_ {
        let caller = std::panic::Location::caller();
        let body = serde_json::json!({ "username": username, "password": password });
        let username = username.to_owned();
        async move {
            let r = self.anonymous().post("/v1/auth/login", body).await;
            assert_eq!(
                r.status, 200,
                "login as {username} (called at {caller}) failed: {}",
                r.text
            );
            r.str("token")
        }
    }

    /// A client signed in as `username`.
    pub async fn login_as(&self, username: &str, password: &str) -> Self {
        let token = self.login(username, password).await;
        self.with_token(token)
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, Body::None).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, Body::None).await
    }

    /// `DELETE` with a JSON body (routes that ask for a password before removing something).
    pub async fn delete_json(&self, path: &str, body: impl Into<Option<Value>>) -> Resp {
        self.send(Method::DELETE, path, json_body(body)).await
    }

    pub async fn post(&self, path: &str, body: impl Into<Option<Value>>) -> Resp {
        self.send(Method::POST, path, json_body(body)).await
    }

    pub async fn put(&self, path: &str, body: impl Into<Option<Value>>) -> Resp {
        self.send(Method::PUT, path, json_body(body)).await
    }

    pub async fn patch(&self, path: &str, body: impl Into<Option<Value>>) -> Resp {
        self.send(Method::PATCH, path, json_body(body)).await
    }

    /// `GET` of an event stream: asserts `200 text/event-stream` and hands back the open response,
    /// allowed to stay open up to `limit` (the client's own 60 s bound would cut a long stream).
    pub async fn stream(&self, path: &str, limit: Duration) -> reqwest::Response {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url).timeout(limit);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: request failed: {e}"));
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if status != 200 || !ct.starts_with("text/event-stream") {
            let body = resp.text().await.unwrap_or_default();
            panic!("GET {path}: expected 200 text/event-stream, got {status} {ct}: {body}");
        }
        resp
    }

    /// Any request. Every answer is checked for leaked password hashes.
    pub async fn send(&self, method: Method, path: &str, body: Body) -> Resp {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.header(CONTENT_TYPE, "application/json").body(v.to_string()),
            Body::Raw {
                content_type: Some(ct),
                bytes,
            } => req.header(CONTENT_TYPE, ct).body(bytes),
            Body::Raw {
                content_type: None,
                bytes,
            } => req.body(bytes),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: request failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let streaming = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        // An event stream never ends; its headers are the answer.
        let text = if streaming {
            String::new()
        } else {
            resp.text()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: reading the body failed: {e}"))
        };
        for needle in NEVER_IN_A_RESPONSE {
            assert!(
                !text.contains(needle),
                "{method} {path}: the response contains `{needle}`: {text}"
            );
        }
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
        };
        Resp {
            method,
            path: path.to_owned(),
            status,
            headers,
            body,
            text,
        }
    }
}

fn json_body(body: impl Into<Option<Value>>) -> Body {
    body.into().map_or(Body::None, Body::Json)
}

/// What is wrong with `resp` as an error answer with this status and code, if anything: the shape
/// must be `{"error":{"code","message"[,"field"]}}` with a JSON content type.
pub fn error_problem(resp: &Resp, status: u16, code: &str) -> Option<String> {
    let ctx = format!("{} {} → {} {}", resp.method, resp.path, resp.status, resp.text);
    if resp.status != status {
        return Some(format!("expected status {status}: {ctx}"));
    }
    let ct = resp.header("content-type").unwrap_or("");
    if !ct.starts_with("application/json") {
        return Some(format!("error without a JSON content type ({ct}): {ctx}"));
    }
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    if keys(&resp.body) != BTreeSet::from(["error".to_owned()]) {
        return Some(format!("error body must be exactly {{\"error\":…}}: {ctx}"));
    }
    let err = &resp.body["error"];
    let inner = keys(err);
    if !(inner.contains("code")
        && inner.contains("message")
        && inner
            .iter()
            .all(|k| ["code", "message", "field"].contains(&k.as_str())))
    {
        return Some(format!(
            "error object must have code, message and at most field: {ctx}"
        ));
    }
    if err["code"] != code {
        return Some(format!("expected error code `{code}`: {ctx}"));
    }
    if err["message"].as_str().is_none_or(str::is_empty) {
        return Some(format!("empty error message: {ctx}"));
    }
    if err
        .get("field")
        .is_some_and(|f| f.as_str().is_none_or(str::is_empty))
    {
        return Some(format!("`field` must be a non-empty string: {ctx}"));
    }
    None
}

/// Asserts `{"error":{"code","message"[,"field"]}}` with this status and code; returns the `error`
/// object.
#[track_caller]
pub fn assert_error<'a>(resp: &'a Resp, status: u16, code: &str) -> &'a Value {
    if let Some(problem) = error_problem(resp, status, code) {
        panic!("{problem}");
    }
    &resp.body["error"]
}

/// [`assert_error`] that also names the offending field.
#[track_caller]
pub fn assert_error_field(resp: &Resp, status: u16, code: &str, field: &str) {
    let err = assert_error(resp, status, code);
    assert_eq!(
        err.get("field").and_then(Value::as_str),
        Some(field),
        "{} {}: error should name field `{field}`: {}",
        resp.method,
        resp.path,
        resp.text
    );
}

/// Asserts that the JSON object `v` has every one of `keys`.
#[track_caller]
pub fn assert_keys(v: &Value, keys: &[&str]) {
    let obj = v.as_object().unwrap_or_else(|| panic!("not an object: {v}"));
    let missing: Vec<&&str> = keys.iter().filter(|k| !obj.contains_key(**k)).collect();
    assert!(missing.is_empty(), "missing keys {missing:?} in {v}");
}

/// Polls `f` until it yields `Some`, or panics after `limit` saying what was awaited.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Expectations checked one by one, each failure kept, so that one run of a table-driven test shows
/// every cell that is wrong; [`Problems::finish`] then fails the test with all of them.
#[derive(Debug, Default)]
pub struct Problems(std::sync::Mutex<Vec<String>>);

impl Problems {
    /// Runs `check`; a panic inside it is recorded under `what` instead of ending the test.
    pub async fn check<F: Future<Output = ()>>(&self, what: impl std::fmt::Display, check: F) {
        use futures::FutureExt as _;
        if let Err(panic) = std::panic::AssertUnwindSafe(check).catch_unwind().await {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".to_owned());
            self.push(format!("{what}: {msg}"));
        }
    }

    pub fn push(&self, problem: String) {
        self.0.lock().unwrap().push(problem);
    }

    /// Fails with every recorded problem.
    #[track_caller]
    pub fn finish(self) {
        let problems = self.0.into_inner().unwrap();
        assert!(
            problems.is_empty(),
            "{} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
}
