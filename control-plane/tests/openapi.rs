//! The OpenAPI document and the router come from the same handler list; these tests keep it that way:
//! every documented operation is routed, the seed's endpoints are all documented, and the committed
//! `docs/openapi.json` is the document the server serves.

#![expect(clippy::expect_used, reason = "test helpers fail loudly on broken fixtures")]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use control_plane::api;
use http_body_util::BodyExt;
use tower::ServiceExt;

mod common;

/// (method, path) of every endpoint of the API contract that this release serves.
const SEED_ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/admin/login"),
    ("GET", "/healthz"),
    ("POST", "/v1/admin/users"),
    ("GET", "/v1/admin/users"),
    ("GET", "/v1/admin/users/{user_id}"),
    ("PATCH", "/v1/admin/users/{user_id}"),
    ("DELETE", "/v1/admin/users/{user_id}"),
    ("POST", "/v1/admin/users/{user_id}/rotate-password"),
    ("PUT", "/v1/admin/users/{user_id}/expiry"),
    ("GET", "/v1/admin/users/{user_id}/ssh-keys"),
    ("POST", "/v1/admin/users/{user_id}/ssh-keys"),
    ("POST", "/v1/admin/users/{user_id}/ssh-keys/generate"),
    ("DELETE", "/v1/admin/users/{user_id}/ssh-keys/{key_id}"),
    ("GET", "/v1/user/ssh-keys"),
    ("POST", "/v1/user/ssh-keys"),
    ("POST", "/v1/user/ssh-keys/generate"),
    ("POST", "/v1/admin/egress-ips"),
    ("GET", "/v1/admin/egress-ips"),
    ("GET", "/v1/admin/egress-ips/{ip_id}"),
    ("PUT", "/v1/admin/egress-ips/{ip_id}"),
    ("DELETE", "/v1/admin/egress-ips/{ip_id}"),
    ("POST", "/v1/admin/egress-ips/{ip_id}/test"),
    ("POST", "/v1/admin/hosts"),
    ("GET", "/v1/admin/hosts"),
    ("GET", "/v1/admin/hosts/{host_id}"),
    ("POST", "/v1/admin/hosts/{host_id}/start"),
    ("POST", "/v1/admin/hosts/{host_id}/stop"),
    ("POST", "/v1/admin/hosts/{host_id}/rebuild"),
    ("POST", "/v1/admin/hosts/{host_id}/rotate-ssh-password"),
    ("DELETE", "/v1/admin/hosts/{host_id}"),
    ("POST", "/v1/admin/bindings"),
    ("DELETE", "/v1/admin/bindings/{binding_id}"),
    ("POST", "/v1/user/change-password"),
    ("GET", "/v1/user/hosts"),
    ("GET", "/v1/user/hosts/{host_id}"),
    ("POST", "/v1/user/hosts/{host_id}/rebuild"),
    ("GET", "/v1/admin/tasks"),
    ("GET", "/v1/admin/events"),
    ("GET", "/v1/admin/dashboard/stats"),
    ("GET", "/v1/bootstrap/script"),
    ("POST", "/v1/bootstrap/sessions"),
    ("GET", "/v1/bootstrap/tasks/{task_id}"),
    ("GET", "/v1/bootstrap/tasks/{task_id}/handoff"),
    ("GET", "/entry/{short_id}"),
    ("POST", "/v1/entry/{short_id}/auth"),
];

fn documented_operations(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                ops.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops.sort();
    ops
}

async fn app() -> (axum::Router, tempfile::TempDir) {
    let (state, config, dir) = common::state().await;
    (api::router(state, config.max_body_bytes), dir)
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let (router, _dir) = app().await;
    let doc = serde_json::to_value(api::openapi()).expect("doc");
    let ops = documented_operations(&doc);
    assert!(ops.len() >= SEED_ENDPOINTS.len());
    for (method, path) in ops {
        let uri = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "00000000-0000-4000-8000-000000000000"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let code = body["error"]["code"].as_str().unwrap_or_default().to_owned();
        assert!(
            code != "route_not_found" && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but not routed ({status}, {code})"
        );
    }
}

#[tokio::test]
async fn undocumented_paths_are_not_routed() {
    let (router, _dir) = app().await;
    for (method, uri) in [
        ("GET", "/v1/admin/nothing"),
        ("DELETE", "/v1/admin/users"),
        ("PUT", "/healthz"),
    ] {
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        let status = router.clone().oneshot(request).await.expect("response").status();
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri} answered {status}"
        );
    }
}

#[test]
fn every_seed_endpoint_is_documented() {
    let doc = serde_json::to_value(api::openapi()).expect("doc");
    let ops = documented_operations(&doc);
    for (method, path) in SEED_ENDPOINTS {
        assert!(
            ops.iter().any(|(m, p)| m == method && p == path),
            "seed endpoint {method} {path} is missing from the OpenAPI document"
        );
    }
}

/// `docs/openapi.json` is what the server serves. Regenerate it with
/// `UPDATE_OPENAPI=1 cargo test -p control-plane --test openapi`.
#[test]
fn committed_document_matches() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let served = serde_json::to_string_pretty(&api::openapi()).expect("doc") + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &served).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == served,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p control-plane --test openapi`"
    );
}
