//! Every route of the router (as `/openapi.json` lists them) × every kind of caller → the status
//! docs/api.md promises; then the lifecycle of session and API tokens and the sign-in limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

#[path = "authz_matrix/fixture.rs"]
mod fixture;
#[path = "authz_matrix/tokens.rs"]
mod tokens;

use std::collections::BTreeSet;

use cloud_cli_proxy_tests::{Api, ControlPlane, Options, Problems, assert_error};
use serde_json::json;

use fixture::{Fixture, Route};

/// Who may call a route, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No token needed (health, the document, sign-in, and the bootstrap/entry flows with their own auth).
    Public,
    /// Any signed-in account: `/v1/auth/*` besides login.
    Signed,
    /// The operator: `/v1/admin/*`.
    Operator,
    /// A tenant: `/v1/user/*`.
    Tenant,
    /// Node agents and SSH gateways, each with its own token (no account token opens these):
    /// `/v1/agent/*`, `/v1/gateway/*`.
    Agent,
    /// The dashboard's browser session, opened by a password and then carried by its cookie, not
    /// by a token: `browser_session` in `tokens` walks it.
    Browser,
}

fn access_of(path: &str) -> Access {
    match path {
        "/healthz" | "/openapi.json" | "/v1/auth/login" | "/v1/admin/login" => Access::Public,
        // The operator's (a `metrics` token's too: `metrics` walks those).
        "/metrics" => Access::Operator,
        "/v1/auth/session" => Access::Browser,
        p if p.starts_with("/v1/bootstrap/") || p.starts_with("/v1/entry/") || p.starts_with("/entry/") => {
            Access::Public
        }
        p if p.starts_with("/v1/admin/") => Access::Operator,
        p if p.starts_with("/v1/user/") => Access::Tenant,
        p if p.starts_with("/v1/auth/") => Access::Signed,
        p if p.starts_with("/v1/agent/") || p.starts_with("/v1/gateway/") => Access::Agent,
        other => panic!("route {other} is in no access class: decide who may call it and add it here"),
    }
}

/// The kinds of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    /// Owner of the host, SSH key and API token used in paths.
    UserA,
    /// Another tenant.
    UserB,
    Admin,
    /// A correctly signed session token of user A whose `exp` has passed.
    ExpiredToken,
    /// A session token of a user who was disabled afterwards.
    DisabledUser,
    /// An API token of user A that was revoked.
    RevokedApiToken,
}

const CALLERS: [Caller; 7] = [
    Caller::Anonymous,
    Caller::UserA,
    Caller::UserB,
    Caller::Admin,
    Caller::ExpiredToken,
    Caller::DisabledUser,
    Caller::RevokedApiToken,
];

/// What a caller gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Served (the route's own success status).
    Ok,
    /// `401 unauthorized`.
    E401,
    /// `403 forbidden`.
    E403,
    /// Served for the caller's own objects; `404 not_found` when the path names user A's object.
    OwnOnly,
}

/// The expectation table. Columns: Public, Signed, Operator, Tenant, Agent.
const MATRIX: [(Caller, [Want; 5]); 7] = {
    use Want::{E401, E403, Ok, OwnOnly};
    [
        (Caller::Anonymous, /*       */ [Ok, E401, E401, E401, E401]),
        (Caller::ExpiredToken, /*    */ [Ok, E401, E401, E401, E401]),
        (Caller::DisabledUser, /*    */ [Ok, E401, E401, E401, E401]),
        (Caller::RevokedApiToken, /* */ [Ok, E401, E401, E401, E401]),
        (Caller::UserA, /*           */ [Ok, Ok, E403, Ok, E401]),
        (
            Caller::UserB,
            /*           */ [Ok, OwnOnly, E403, OwnOnly, E401],
        ),
        (Caller::Admin, /*           */ [Ok, OwnOnly, Ok, E403, E401]),
    ]
};

fn want(caller: Caller, access: Access) -> Want {
    let row = MATRIX.iter().find(|(c, _)| *c == caller).unwrap().1;
    match access {
        Access::Public => row[0],
        Access::Signed => row[1],
        Access::Operator => row[2],
        Access::Tenant => row[3],
        Access::Agent => row[4],
        Access::Browser => unreachable!("browser-session routes are walked by tokens::browser_session"),
    }
}

/// Every (method, path) of the seed's API reference, VNC aside (a wildcard proxy, not an API route).
const SEED_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/admin/login"),
    ("GET", "/healthz"),
    ("POST", "/v1/admin/users"),
    ("GET", "/v1/admin/users"),
    ("GET", "/v1/admin/users/{}"),
    ("PATCH", "/v1/admin/users/{}"),
    ("DELETE", "/v1/admin/users/{}"),
    ("POST", "/v1/admin/users/{}/rotate-password"),
    ("PUT", "/v1/admin/users/{}/expiry"),
    ("GET", "/v1/admin/users/{}/ssh-keys"),
    ("POST", "/v1/admin/users/{}/ssh-keys"),
    ("POST", "/v1/admin/users/{}/ssh-keys/generate"),
    ("DELETE", "/v1/admin/users/{}/ssh-keys/{}"),
    ("GET", "/v1/user/ssh-keys"),
    ("POST", "/v1/user/ssh-keys"),
    ("POST", "/v1/user/ssh-keys/generate"),
    ("POST", "/v1/admin/egress-ips"),
    ("GET", "/v1/admin/egress-ips"),
    ("GET", "/v1/admin/egress-ips/{}"),
    ("PUT", "/v1/admin/egress-ips/{}"),
    ("DELETE", "/v1/admin/egress-ips/{}"),
    ("POST", "/v1/admin/egress-ips/{}/test"),
    ("POST", "/v1/admin/hosts"),
    ("GET", "/v1/admin/hosts"),
    ("GET", "/v1/admin/hosts/{}"),
    ("POST", "/v1/admin/hosts/{}/start"),
    ("POST", "/v1/admin/hosts/{}/stop"),
    ("POST", "/v1/admin/hosts/{}/rebuild"),
    ("POST", "/v1/admin/hosts/{}/rotate-ssh-password"),
    ("DELETE", "/v1/admin/hosts/{}"),
    ("POST", "/v1/admin/bindings"),
    ("DELETE", "/v1/admin/bindings/{}"),
    ("POST", "/v1/user/change-password"),
    ("GET", "/v1/user/hosts"),
    ("GET", "/v1/user/hosts/{}"),
    ("POST", "/v1/user/hosts/{}/rebuild"),
    ("GET", "/v1/admin/tasks"),
    ("GET", "/v1/admin/events"),
    ("GET", "/v1/admin/dashboard/stats"),
];

/// The seed's access routes (bootstrap and entry short links), public but with their own auth;
/// `access_routes_are_served` checks that the document lists them.
const ACCESS_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/bootstrap/script"),
    ("POST", "/v1/bootstrap/sessions"),
    ("GET", "/v1/bootstrap/tasks/{}"),
    ("GET", "/v1/bootstrap/tasks/{}/handoff"),
    ("GET", "/entry/{}"),
    ("POST", "/v1/entry/{}/auth"),
];

/// Routes docs/api.md adds to the seed's.
const DOC_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/auth/me"),
    ("GET", "/v1/auth/api-tokens"),
    ("POST", "/v1/auth/api-tokens"),
    ("DELETE", "/v1/auth/api-tokens/{}"),
    ("DELETE", "/v1/user/ssh-keys/{}"),
    ("GET", "/v1/admin/bindings"),
    ("GET", "/v1/admin/bindings/{}"),
    ("GET", "/v1/admin/tasks/{}"),
    ("POST", "/v1/admin/tasks/{}/cancel"),
    ("POST", "/v1/admin/hosts/{}/vnc-session"),
    ("POST", "/v1/user/hosts/{}/vnc-session"),
    ("POST", "/v1/admin/hosts/{}/ssh-session"),
    ("POST", "/v1/user/hosts/{}/ssh-session"),
    ("GET", "/v1/admin/hosts/{}/entry-link"),
    ("PATCH", "/v1/admin/hosts/{}/entry-link"),
    ("POST", "/v1/admin/hosts/{}/entry-link/rotate"),
    ("GET", "/metrics"),
    ("GET", "/v1/admin/hosts/{}/traffic"),
    ("GET", "/v1/user/hosts/{}/traffic"),
    ("GET", "/v1/admin/traffic-quotas"),
    ("POST", "/v1/admin/traffic-quotas"),
    ("GET", "/v1/admin/traffic-quotas/{}"),
    ("DELETE", "/v1/admin/traffic-quotas/{}"),
    ("GET", "/v1/user/traffic-quotas"),
    ("GET", "/v1/admin/recordings"),
    ("GET", "/v1/admin/recordings/{}"),
    ("GET", "/v1/admin/recordings/{}/cast"),
    ("GET", "/v1/admin/users/{}/recording"),
    ("PUT", "/v1/admin/users/{}/recording"),
    ("GET", "/v1/admin/hosts/{}/recording"),
    ("PUT", "/v1/admin/hosts/{}/recording"),
    ("GET", "/v1/user/recordings"),
    ("GET", "/v1/user/recordings/{}/cast"),
    ("POST", "/v1/gateway/recordings"),
    ("POST", "/v1/gateway/recordings/{}/chunks/{}"),
    ("POST", "/v1/gateway/recordings/{}/end"),
];

/// `/a/{x}/b/{y}` → `/a/{}/b/{}`.
fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            c if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// (METHOD, path template) of every operation in the served OpenAPI document.
async fn openapi_routes(api: &Api) -> Vec<Route> {
    let doc = api.get("/openapi.json").await.expect(200).clone();
    let paths = doc["paths"].as_object().expect("openapi `paths`");
    let mut routes = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.push(Route {
                    method: method.to_uppercase(),
                    template: path.clone(),
                });
            }
        }
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_routes_are_served() {
    let cp = ControlPlane::start(Options::new()).await;
    let routes = openapi_routes(&cp.api()).await;
    for (m, p) in ACCESS_ROUTES {
        assert!(
            routes
                .iter()
                .any(|r| r.method == *m && shape(&r.template) == shape(p)),
            "{m} {p} is missing from /openapi.json"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_for_every_caller() {
    // Recordings shared with tenants, so their routes answer by role like every other tenant route
    // (tests/e2e/recording.rs checks the refusal while they are not shared).
    let cp = ControlPlane::start(Options::new().env("RECORDINGS_TENANT_ACCESS", "true")).await;
    let fx = Fixture::build(&cp).await;
    let problems = Problems::default();
    let mut routes = openapi_routes(&fx.admin).await;

    // The document lists every route of the seed and of docs/api.md.
    let listed: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| (r.method.clone(), shape(&r.template)))
        .collect();
    for (m, p) in SEED_ROUTES.iter().chain(DOC_ROUTES) {
        if !listed.contains(&((*m).to_owned(), (*p).to_owned())) {
            problems.push(format!("{m} {p} is missing from /openapi.json"));
        }
    }
    // `/openapi.json` itself is served (the matrix checks it is public).
    routes.push(Route {
        method: "GET".into(),
        template: "/openapi.json".into(),
    });

    // Pass 1: every refusal, and every read that is allowed. Nothing may change.
    let before = fx.owned_state().await;
    let events_before = fx.admin.count("/v1/admin/events").await;
    let mut allowed_mutations = Vec::new();
    let mut checked = 0;
    for route in &routes {
        let access = access_of(&route.template);
        if access == Access::Browser {
            continue;
        }
        for caller in CALLERS {
            let expect = match want(caller, access) {
                Want::E401 => Some((401, "unauthorized")),
                Want::E403 => Some((403, "forbidden")),
                Want::OwnOnly if fx.names_object_of_a(route) => Some((404, "not_found")),
                Want::Ok | Want::OwnOnly => None,
            };
            let cell = format!("{caller:?} × {} {}", route.method, route.template);
            if let Some((status, code)) = expect {
                let r = fx.send(caller, route, fx.body_for(route)).await;
                problems
                    .check(cell, async {
                        assert_error(&r, status, code);
                    })
                    .await;
                checked += 1;
            } else if route.method == "GET" {
                if route.template.contains("/bootstrap/tasks/") {
                    // Bootstrap task status and handoff answer whoever holds the bootstrap session
                    // (seed_api walks them); a host task id is not one.
                    continue;
                }
                let r = fx.send(caller, route, None).await;
                problems
                    .check(cell, async { fx.check_allowed_read(caller, route, &r) })
                    .await;
                checked += 1;
            } else if access != Access::Public {
                allowed_mutations.push((route.clone(), caller));
            }
        }
    }
    if fx.owned_state().await != before {
        problems.push("refused requests changed user A's objects".into());
    }
    let events_after = fx.admin.count("/v1/admin/events").await;
    if events_after != events_before {
        problems.push(format!(
            "refused requests wrote {} events",
            events_after - events_before
        ));
    }

    problems
        .check("user B's own lists", async {
            assert_eq!(fx.b.get("/v1/user/hosts").await.total(), 0);
            assert_eq!(fx.b.get("/v1/user/ssh-keys").await.total(), 0);
            let b_tokens = fx.b.get("/v1/auth/api-tokens").await;
            assert!(
                !b_tokens.text.contains(&fx.a_token_id),
                "B lists A's API token: {}",
                b_tokens.text
            );
            // A 404 for another tenant's object is the same answer as for no object at all.
            let theirs = fx.b.get(&format!("/v1/user/hosts/{}", fx.a_host_id)).await;
            let nothing =
                fx.b.get(&format!("/v1/user/hosts/{}", uuid::Uuid::new_v4()))
                    .await;
            assert_eq!((theirs.status, &theirs.body), (nothing.status, &nothing.body));
        })
        .await;

    // Sign-in ignores whatever bearer token comes with it.
    for caller in CALLERS {
        for path in ["/v1/auth/login", "/v1/admin/login"] {
            let body = json!({"username": "usera", "password": fixture::A_PASSWORD});
            let r = fx.api(caller).post(path, body).await;
            problems
                .check(format!("{caller:?} signs in on {path}"), async {
                    assert_eq!(r.expect(200)["role"], "user")
                })
                .await;
        }
    }

    // Pass 2: the allowed mutations, each on objects made for it.
    for (route, caller) in &allowed_mutations {
        let cell = format!("{caller:?} × {} {}", route.method, route.template);
        problems
            .check(cell, fx.run_allowed_mutation(*caller, route))
            .await;
        checked += 1;
    }
    assert!(checked > 7 * 40, "the matrix covered only {checked} cells");
    problems.finish();
}

#[test]
fn shapes_and_classes() {
    assert_eq!(
        shape("/v1/admin/users/{user_id}/ssh-keys/{key_id}"),
        "/v1/admin/users/{}/ssh-keys/{}"
    );
    assert_eq!(access_of("/v1/admin/login"), Access::Public);
    assert_eq!(want(Caller::UserB, Access::Tenant), Want::OwnOnly);
    assert_eq!(want(Caller::Admin, Access::Tenant), Want::E403);
    assert_eq!(want(Caller::RevokedApiToken, Access::Signed), Want::E401);
}
