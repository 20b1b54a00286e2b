//! Bad input on every mutating endpoint: malformed JSON, wrong types, unknown fields, oversize bodies,
//! missing content types, bad ids and query values, invalid egress configurations and account fields.
//! Each is refused with the documented status and code, and writes nothing at all.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

#[path = "bad_input/cases.rs"]
mod cases;

use cloud_cli_proxy_tests::fixtures::{self, id};
use std::sync::Mutex;

use cloud_cli_proxy_tests::{Api, Body, ControlPlane, Options, Resp, error_problem};
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Anonymous,
    Admin,
    Tenant,
}

/// How a request must be refused: the status, the accepted codes (the first is the expected one), and
/// the field the error names, if any.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    pub status: u16,
    pub codes: &'a [&'a str],
    pub field: Option<&'a str>,
}

impl<'a> Want<'a> {
    pub const fn new(status: u16, codes: &'a [&'a str], field: Option<&'a str>) -> Self {
        Self { status, codes, field }
    }
}

/// A control plane with one tenant, its host and SSH key, and two egress IPs; plus the check that a
/// refused request changed nothing.
pub struct Ctx {
    pub cp: ControlPlane,
    pub admin: Api,
    pub tenant: Api,
    pub uid: String,
    pub hid: String,
    pub wg_id: String,
    pub socks_id: String,
    pub key_id: String,
    pub dir: TempDir,
    /// Every expectation that did not hold; reported together by [`Ctx::finish`], so one run shows
    /// all of them.
    problems: Mutex<Vec<String>>,
}

impl Ctx {
    pub async fn new(opts: Options) -> Self {
        let cp = ControlPlane::start(opts).await;
        let admin = cp.admin().await;
        let (user, tenant) = admin.tenant("tenant", "tenant-password").await;
        let uid = id(&user);
        let hid = id(&admin.create_host(&uid).await);
        let wg_id = id(&admin.create_egress(fixtures::seed_wireguard()).await);
        let socks_id = id(&admin
            .create_egress(fixtures::seed_egress_examples()[3].clone())
            .await);
        let dir = tempfile::tempdir().unwrap();
        let key = fixtures::ssh_keygen(dir.path(), "k");
        let key_id = id(tenant
            .post("/v1/user/ssh-keys", json!({"public_key": key.public_line}))
            .await
            .expect(201));
        tenant
            .post("/v1/auth/api-tokens", json!({"name": "t", "expires_in_days": 5}))
            .await
            .expect(201);
        Self {
            cp,
            admin,
            tenant,
            uid,
            hid,
            wg_id,
            socks_id,
            key_id,
            dir,
            problems: Mutex::default(),
        }
    }

    pub fn api(&self, who: Who) -> Api {
        match who {
            Who::Anonymous => self.cp.api(),
            Who::Admin => self.admin.clone(),
            Who::Tenant => self.tenant.clone(),
        }
    }

    /// Everything a mutation could touch, as the API shows it.
    async fn snapshot(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let admin_paths = [
            "/v1/admin/users?page_size=500".to_owned(),
            "/v1/admin/hosts?page_size=500".to_owned(),
            "/v1/admin/egress-ips?page_size=500".to_owned(),
            "/v1/admin/bindings?page_size=500".to_owned(),
            "/v1/admin/tasks?page_size=500".to_owned(),
            format!("/v1/admin/users/{}/ssh-keys?page_size=500", self.uid),
            "/v1/admin/events?page_size=1".to_owned(),
            "/v1/auth/api-tokens?page_size=500".to_owned(),
        ];
        for path in admin_paths {
            let r = self.admin.get(&path).await;
            all.push(json!([r.status, r.body]));
        }
        let r = self.tenant.get("/v1/auth/api-tokens?page_size=500").await;
        all.push(json!([r.status, r.body]));
        all
    }

    /// Sends a request that must be refused with `status`/`code` (and `field`, when given: either the
    /// exact name or, for a name ending in `.`, a prefix), and checks that nothing was written.
    pub async fn refused(&self, who: Who, method: Method, path: &str, body: Body, want: Want<'_>) -> Resp {
        let Want {
            status,
            codes: code,
            field,
        } = want;
        let before = self.snapshot().await;
        let r = self.api(who).send(method.clone(), path, body).await;
        let got = r.body["error"]["code"].as_str().unwrap_or("");
        let code = code.iter().find(|c| **c == got).copied().unwrap_or(code[0]);
        let mut problems = Vec::new();
        problems.extend(error_problem(&r, status, code));
        if let Some(field) = field.filter(|_| problems.is_empty()) {
            let got = r.body["error"]["field"].as_str();
            let ok = match field.strip_suffix('.') {
                Some(prefix) => got.is_some_and(|f| f == prefix || f.starts_with(field)),
                None => got == Some(field),
            };
            if !ok {
                problems.push(format!(
                    "{method} {path}: the error should name field `{field}`: {}",
                    r.text
                ));
            }
        }
        let after = self.snapshot().await;
        if after != before {
            problems.push(format!(
                "{method} {path} was refused ({}) but changed state",
                r.text
            ));
        }
        self.problems.lock().unwrap().extend(problems);
        r
    }

    /// Fails the test with every problem seen.
    pub fn finish(self) {
        let problems = std::mem::take(&mut *self.problems.lock().unwrap());
        assert!(
            problems.is_empty(),
            "{} refused request(s) answered wrongly:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }

    /// [`Ctx::refused`] for a JSON body refused as `400 validation_failed` naming `field`.
    pub async fn invalid(&self, who: Who, method: Method, path: &str, body: Value, field: &str) {
        self.refused(
            who,
            method,
            path,
            Body::Json(body),
            Want::new(400, &["validation_failed"], Some(field)),
        )
        .await;
    }
}

/// A mutating endpoint that takes a JSON body.
struct Endpoint {
    who: Who,
    method: Method,
    path: String,
    /// A body the endpoint accepts (never sent as is).
    valid: Value,
    /// A field and a value of the wrong type for it.
    wrong_type: (&'static str, Value),
    /// A field the body cannot do without, if any.
    required: Option<&'static str>,
}

fn endpoints(c: &Ctx) -> Vec<Endpoint> {
    let (uid, hid, wg) = (&c.uid, &c.hid, &c.wg_id);
    let e = |who, method, path: String, valid: Value, wrong: (&'static str, Value), required| Endpoint {
        who,
        method,
        path,
        valid,
        wrong_type: wrong,
        required,
    };
    let key_line = fixtures::ssh_keygen(c.dir.path(), "unused").public_line;
    vec![
        e(
            Who::Anonymous,
            Method::POST,
            "/v1/auth/login".into(),
            json!({"username": "tenant", "password": "tenant-password"}),
            ("username", json!(5)),
            Some("password"),
        ),
        e(
            Who::Anonymous,
            Method::POST,
            "/v1/admin/login".into(),
            json!({"username": "tenant", "password": "tenant-password"}),
            ("password", json!(["x"])),
            Some("username"),
        ),
        e(
            Who::Tenant,
            Method::POST,
            "/v1/auth/api-tokens".into(),
            json!({"name": "n", "expires_in_days": 3}),
            ("expires_in_days", json!("three")),
            None,
        ),
        e(
            Who::Admin,
            Method::POST,
            "/v1/admin/users".into(),
            json!({"username": "fresh-user", "password": "fresh-password"}),
            ("username", json!(12345)),
            Some("password"),
        ),
        e(
            Who::Admin,
            Method::PATCH,
            format!("/v1/admin/users/{uid}"),
            json!({"status": "disabled"}),
            ("status", json!(true)),
            Some("status"),
        ),
        e(
            Who::Admin,
            Method::PUT,
            format!("/v1/admin/users/{uid}/expiry"),
            json!({"expires_at": null}),
            ("expires_at", json!(20261231)),
            Some("expires_at"),
        ),
        e(
            Who::Admin,
            Method::POST,
            format!("/v1/admin/users/{uid}/ssh-keys"),
            json!({"public_key": key_line}),
            ("public_key", json!({"k": 1})),
            Some("public_key"),
        ),
        e(
            Who::Admin,
            Method::POST,
            format!("/v1/admin/users/{uid}/ssh-keys/generate"),
            json!({"name": "n"}),
            ("name", json!(7)),
            None,
        ),
        e(
            Who::Tenant,
            Method::POST,
            "/v1/user/ssh-keys".into(),
            json!({"public_key": key_line}),
            ("public_key", json!(1)),
            Some("public_key"),
        ),
        e(
            Who::Tenant,
            Method::POST,
            "/v1/user/ssh-keys/generate".into(),
            json!({"name": "n"}),
            ("name", json!(false)),
            None,
        ),
        e(
            Who::Admin,
            Method::POST,
            "/v1/admin/egress-ips".into(),
            fixtures::wireguard_egress("new-label"),
            ("label", json!(42)),
            Some("label"),
        ),
        e(
            Who::Admin,
            Method::PUT,
            format!("/v1/admin/egress-ips/{wg}"),
            json!({"provider": "other"}),
            ("provider", json!(3)),
            None,
        ),
        e(
            Who::Admin,
            Method::POST,
            "/v1/admin/hosts".into(),
            json!({"user_id": uid}),
            ("memory_mb", json!("lots")),
            Some("user_id"),
        ),
        e(
            Who::Admin,
            Method::POST,
            format!("/v1/admin/hosts/{hid}/rebuild"),
            json!({"wipe": true}),
            ("wipe", json!("yes")),
            None,
        ),
        e(
            Who::Tenant,
            Method::POST,
            format!("/v1/user/hosts/{hid}/rebuild"),
            json!({"wipe": false}),
            ("wipe", json!(1)),
            None,
        ),
        e(
            Who::Admin,
            Method::POST,
            "/v1/admin/bindings".into(),
            json!({"host_id": hid, "egress_ip_id": wg}),
            ("egress_ip_id", json!(9)),
            Some("host_id"),
        ),
        e(
            Who::Tenant,
            Method::POST,
            "/v1/user/change-password".into(),
            json!({"old_password": "tenant-password", "new_password": "tenant-password-2"}),
            ("new_password", json!(null)),
            Some("old_password"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_on_every_mutating_endpoint() {
    let c = Ctx::new(Options::new()).await;
    for ep in endpoints(&c) {
        let (who, m, p) = (ep.who, ep.method.clone(), ep.path.as_str());
        let json_raw = |text: String| Body::Raw {
            content_type: Some("application/json".into()),
            bytes: text.into_bytes(),
        };

        // Not JSON at all / cut short before any field.
        for text in ["{", "{'a': 1}", "not json", "{1: 2}"] {
            c.refused(
                who,
                m.clone(),
                p,
                json_raw(text.into()),
                Want::new(400, &["invalid_json"], None),
            )
            .await;
        }
        // Wrong type for a field.
        let (field, wrong) = &ep.wrong_type;
        let mut body = ep.valid.clone();
        body[*field] = wrong.clone();
        c.invalid(who, m.clone(), p, body, field).await;
        // An unknown field.
        let mut body = ep.valid.clone();
        body["bogus_field"] = json!(1);
        c.invalid(who, m.clone(), p, body, "bogus_field").await;
        // JSON, but not an object.
        for not_object in [json!(42), json!("text"), json!([])] {
            let body = Body::Json(not_object);
            c.refused(
                who,
                m.clone(),
                p,
                body,
                Want::new(400, &["validation_failed"], None),
            )
            .await;
        }
        // A required field missing.
        if let Some(field) = ep.required {
            let mut body = ep.valid.clone();
            body.as_object_mut().unwrap().remove(field);
            c.invalid(who, m.clone(), p, body, field).await;
        }
        // Over MAX_BODY_BYTES (64 KiB by default), though valid JSON: 400 `payload_too_large`.
        let big = format!("{}{}", ep.valid, " ".repeat(64 * 1024));
        c.refused(
            who,
            m.clone(),
            p,
            json_raw(big),
            Want::new(400, &["payload_too_large"], None),
        )
        .await;
        // A valid body without a JSON content type: 415.
        let bytes = ep.valid.to_string().into_bytes();
        c.refused(
            who,
            m.clone(),
            p,
            Body::Raw {
                content_type: None,
                bytes: bytes.clone(),
            },
            Want::new(415, &["unsupported_media_type"], None),
        )
        .await;
        let plain = Body::Raw {
            content_type: Some("text/plain".into()),
            bytes,
        };
        c.refused(
            who,
            m.clone(),
            p,
            plain,
            Want::new(415, &["unsupported_media_type"], None),
        )
        .await;
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_body_bytes_is_configurable() {
    let c = Ctx::new(Options::new().env("MAX_BODY_BYTES", 1024)).await;
    let body = |pad: usize| {
        let text = format!(
            "{}{}",
            json!({"username": fixtures::unique("sized"), "password": "sized-password"}),
            " ".repeat(pad)
        );
        Body::Raw {
            content_type: Some("application/json".into()),
            bytes: text.into_bytes(),
        }
    };
    c.admin
        .send(Method::POST, "/v1/admin/users", body(900))
        .await
        .expect(201);
    c.refused(
        Who::Admin,
        Method::POST,
        "/v1/admin/users",
        body(1100),
        Want::new(400, &["payload_too_large"], None),
    )
    .await;
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_in_paths() {
    let c = Ctx::new(Options::new()).await;
    let (uid, hid, wg, key) = (c.uid.clone(), c.hid.clone(), c.wg_id.clone(), c.key_id.clone());
    let bad = "not-a-uuid";
    let routes: Vec<(Who, Method, String, Option<Value>)> = vec![
        (Who::Admin, Method::GET, format!("/v1/admin/users/{bad}"), None),
        (
            Who::Admin,
            Method::PATCH,
            format!("/v1/admin/users/{bad}"),
            Some(json!({"status": "disabled"})),
        ),
        (Who::Admin, Method::DELETE, format!("/v1/admin/users/{bad}"), None),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/admin/users/{bad}/rotate-password"),
            None,
        ),
        (
            Who::Admin,
            Method::PUT,
            format!("/v1/admin/users/{bad}/expiry"),
            Some(json!({"expires_at": null})),
        ),
        (
            Who::Admin,
            Method::GET,
            format!("/v1/admin/users/{bad}/ssh-keys"),
            None,
        ),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/admin/users/{bad}/ssh-keys/generate"),
            None,
        ),
        (
            Who::Admin,
            Method::DELETE,
            format!("/v1/admin/users/{uid}/ssh-keys/{bad}"),
            None,
        ),
        (
            Who::Admin,
            Method::DELETE,
            format!("/v1/admin/users/{bad}/ssh-keys/{key}"),
            None,
        ),
        (
            Who::Admin,
            Method::GET,
            format!("/v1/admin/egress-ips/{bad}"),
            None,
        ),
        (
            Who::Admin,
            Method::PUT,
            format!("/v1/admin/egress-ips/{bad}"),
            Some(json!({"provider": "x"})),
        ),
        (
            Who::Admin,
            Method::DELETE,
            format!("/v1/admin/egress-ips/{bad}"),
            None,
        ),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/admin/egress-ips/{bad}/test"),
            None,
        ),
        (Who::Admin, Method::GET, format!("/v1/admin/hosts/{bad}"), None),
        (Who::Admin, Method::DELETE, format!("/v1/admin/hosts/{bad}"), None),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/admin/hosts/{bad}/start"),
            None,
        ),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/admin/hosts/{bad}/stop"),
            None,
        ),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/admin/hosts/{bad}/rebuild"),
            None,
        ),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/admin/hosts/{bad}/rotate-ssh-password"),
            None,
        ),
        (Who::Admin, Method::GET, format!("/v1/admin/bindings/{bad}"), None),
        (
            Who::Admin,
            Method::DELETE,
            format!("/v1/admin/bindings/{bad}"),
            None,
        ),
        (Who::Admin, Method::GET, format!("/v1/admin/tasks/{bad}"), None),
        (
            Who::Admin,
            Method::POST,
            format!("/v1/admin/tasks/{bad}/cancel"),
            None,
        ),
        (
            Who::Tenant,
            Method::DELETE,
            format!("/v1/auth/api-tokens/{bad}"),
            None,
        ),
        (
            Who::Tenant,
            Method::DELETE,
            format!("/v1/user/ssh-keys/{bad}"),
            None,
        ),
        (Who::Tenant, Method::GET, format!("/v1/user/hosts/{bad}"), None),
        (
            Who::Tenant,
            Method::POST,
            format!("/v1/user/hosts/{bad}/rebuild"),
            None,
        ),
        // Almost UUIDs.
        (
            Who::Admin,
            Method::GET,
            format!("/v1/admin/hosts/{}x", &hid[..35]),
            None,
        ),
        (
            Who::Admin,
            Method::DELETE,
            format!("/v1/admin/egress-ips/{wg}0"),
            None,
        ),
    ];
    for (who, method, path, body) in routes {
        let body = body.map_or(Body::None, Body::Json);
        c.refused(who, method, &path, body, Want::new(400, &["invalid_id"], None))
            .await;
    }
    // A well-formed id of nothing is 404, not 400.
    let nil = uuid::Uuid::nil();
    c.refused(
        Who::Admin,
        Method::DELETE,
        &format!("/v1/admin/hosts/{nil}"),
        Body::None,
        Want::new(404, &["not_found"], None),
    )
    .await;
    c.refused(
        Who::Admin,
        Method::POST,
        &format!("/v1/admin/users/{nil}/rotate-password"),
        Body::None,
        Want::new(404, &["not_found"], None),
    )
    .await;
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_values() {
    let c = Ctx::new(Options::new()).await;
    let cases: &[(Who, &str)] = &[
        (Who::Admin, "/v1/admin/users?page=0"),
        (Who::Admin, "/v1/admin/users?page=abc"),
        (Who::Admin, "/v1/admin/users?page_size=0"),
        (Who::Admin, "/v1/admin/users?page_size=501"),
        (Who::Admin, "/v1/admin/users?limit=0"),
        (Who::Admin, "/v1/admin/users?status=frozen"),
        (Who::Admin, "/v1/admin/egress-ips?tunnel_type=ipsec"),
        (Who::Admin, "/v1/admin/hosts?status=flying"),
        (Who::Admin, "/v1/admin/hosts?user_id=not-a-uuid"),
        (Who::Admin, "/v1/admin/bindings?host_id=not-a-uuid"),
        (Who::Admin, "/v1/admin/tasks?status=done"),
        (Who::Admin, "/v1/admin/tasks?kind=explode"),
        (Who::Admin, "/v1/admin/tasks?host_id=xyz"),
        (Who::Admin, "/v1/admin/events?since=yesterday"),
        (Who::Admin, "/v1/admin/events?until=2026-13-01T00:00:00Z"),
        (Who::Admin, "/v1/admin/events?user_id=nope"),
        (Who::Admin, "/v1/admin/events?host_id=nope"),
        (Who::Admin, "/v1/admin/events?limit=-1"),
        (Who::Admin, "/v1/admin/events?page=0"),
        (Who::Admin, "/v1/admin/events?page_size=100000"),
        (Who::Tenant, "/v1/auth/api-tokens?page=0"),
        (Who::Tenant, "/v1/user/hosts?page_size=9999"),
        (Who::Tenant, "/v1/user/ssh-keys?page=x"),
    ];
    for (who, path) in cases {
        c.refused(
            *who,
            Method::GET,
            path,
            Body::None,
            Want::new(400, &["invalid_query"], None),
        )
        .await;
    }
    // The edges that are allowed.
    c.admin.get("/v1/admin/users?page_size=500").await.expect(200);
    c.admin
        .get("/v1/admin/users?page_size=1&page=1")
        .await
        .expect(200);
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_bodies_are_refused() {
    // Serde would take a struct as the array of its field values; the API takes objects only.
    let c = Ctx::new(Options::new()).await;
    let mut eps = endpoints(&c);
    // Disabling the tenant would end its session: that endpoint goes last.
    eps.sort_by_key(|ep| ep.method == Method::PATCH);
    for ep in eps {
        let values: Vec<Value> = ep.valid.as_object().unwrap().values().cloned().collect();
        let body = Body::Json(Value::Array(values));
        c.refused(
            ep.who,
            ep.method.clone(),
            &ep.path,
            body,
            Want::new(400, &["validation_failed"], None),
        )
        .await;
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods() {
    let c = Ctx::new(Options::new()).await;
    let cases = [
        (
            Who::Admin,
            Method::GET,
            "/v1/admin/nothing-here",
            Want::new(404, &["route_not_found"], None),
        ),
        (
            Who::Anonymous,
            Method::GET,
            "/v2/healthz",
            Want::new(404, &["route_not_found"], None),
        ),
        (
            Who::Admin,
            Method::DELETE,
            "/v1/admin/users",
            Want::new(405, &["method_not_allowed"], None),
        ),
        (
            Who::Admin,
            Method::PUT,
            "/v1/admin/hosts",
            Want::new(405, &["method_not_allowed"], None),
        ),
        (
            Who::Anonymous,
            Method::GET,
            "/v1/auth/login",
            Want::new(405, &["method_not_allowed"], None),
        ),
    ];
    for (who, method, path, want) in cases {
        c.refused(who, method, path, Body::None, want).await;
    }
    c.finish();
}
