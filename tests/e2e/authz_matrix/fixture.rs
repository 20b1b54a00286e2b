//! The callers and objects of the route matrix, and the one valid call per route that each test needs.

use chrono::Utc;
use cloud_cli_proxy_tests::fixtures::{self, id, unique};
use cloud_cli_proxy_tests::{Api, Body, ControlPlane, Resp, assert_error};
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::{Caller, shape};

pub const A_PASSWORD: &str = "user-a-password";
const B_PASSWORD: &str = "user-b-password";

/// A route as the OpenAPI document names it.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    pub template: String,
}

impl Route {
    fn key(&self) -> (String, String) {
        (self.method.clone(), shape(&self.template))
    }

    fn params(&self) -> Vec<String> {
        self.template
            .split('{')
            .skip(1)
            .filter_map(|s| s.split('}').next())
            .map(str::to_owned)
            .collect()
    }
}

pub struct Fixture {
    pub admin: Api,
    pub a: Api,
    pub b: Api,
    anon: Api,
    expired: Api,
    disabled: Api,
    revoked: Api,
    a_id: String,
    pub a_host_id: String,
    a_short_id: String,
    a_key_id: String,
    a_task_id: String,
    pub a_token_id: String,
    egress_id: String,
    binding_id: String,
    /// A traffic quota on A's host.
    quota_id: String,
    spare_key: String,
    dir: TempDir,
}

impl Fixture {
    pub async fn build(cp: &ControlPlane) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let admin = cp.admin().await;
        let (a_user, a) = admin.tenant("usera", A_PASSWORD).await;
        let (_, b) = admin.tenant("userb", B_PASSWORD).await;
        let a_id = id(&a_user);
        let host = admin.create_host(&a_id).await;
        let key = a
            .post(
                "/v1/user/ssh-keys",
                json!({"public_key": fixtures::ssh_keygen(dir.path(), "a").public_line}),
            )
            .await
            .expect(201)
            .clone();
        let egress = admin.create_egress(fixtures::seed_wireguard()).await;
        let binding = admin
            .post(
                "/v1/admin/bindings",
                json!({"host_id": id(&host), "egress_ip_id": id(&egress)}),
            )
            .await;
        let binding = binding.expect(201).clone();
        let token = a
            .post(
                "/v1/auth/api-tokens",
                json!({"name": "live", "expires_in_days": 30}),
            )
            .await;
        let a_token_id = id(token.expect(201));
        let quota = admin
            .post(
                "/v1/admin/traffic-quotas",
                json!({"host_id": id(&host), "limit_bytes": 1_000_000_000}),
            )
            .await;
        let quota_id = id(quota.expect(201));

        // Revoked API token of A.
        let doomed = a
            .post(
                "/v1/auth/api-tokens",
                json!({"name": "revoked", "expires_in_days": 30}),
            )
            .await;
        let doomed = doomed.expect(201).clone();
        a.with_token(doomed["token"].as_str().unwrap())
            .get("/v1/auth/me")
            .await
            .expect(200);
        a.delete(&format!("/v1/auth/api-tokens/{}", id(&doomed)))
            .await
            .expect(204);
        let revoked = a.with_token(doomed["token"].as_str().unwrap());

        // A session of user D, who is then disabled.
        let (d_user, disabled) = admin.tenant("userd", "user-d-password").await;
        disabled.get("/v1/auth/me").await.expect(200);
        admin
            .patch(
                &format!("/v1/admin/users/{}", id(&d_user)),
                json!({"status": "disabled"}),
            )
            .await
            .expect(200);

        // A's session token re-signed with `exp` in the past. The same claims with a future `exp` are
        // accepted, which shows the refusal is about expiry and nothing else.
        let secret = &cp.options().jwt_secret;
        let now = Utc::now().timestamp();
        let valid = fixtures::forge_session(secret, &a_id, "user", 0, now - 60, now + 3600);
        let me = a.with_token(valid).get("/v1/auth/me").await;
        assert_eq!(
            me.expect(200)["id"],
            a_user["id"],
            "a forged token with the brief's claims should be accepted"
        );
        let expired = a.with_token(fixtures::forge_session(
            secret,
            &a_id,
            "user",
            0,
            now - 7200,
            now - 3600,
        ));

        Self {
            anon: cp.api(),
            a_host_id: id(&host),
            a_short_id: host["short_id"].as_str().unwrap().to_owned(),
            a_key_id: id(&key),
            a_task_id: host["task_id"].as_str().unwrap().to_owned(),
            a_token_id,
            egress_id: id(&egress),
            binding_id: id(&binding),
            quota_id,
            spare_key: fixtures::ssh_keygen(dir.path(), "spare").public_line,
            a_id,
            admin,
            a,
            b,
            expired,
            disabled,
            revoked,
            dir,
        }
    }

    pub fn api(&self, caller: Caller) -> &Api {
        match caller {
            Caller::Anonymous => &self.anon,
            Caller::UserA => &self.a,
            Caller::UserB => &self.b,
            Caller::Admin => &self.admin,
            Caller::ExpiredToken => &self.expired,
            Caller::DisabledUser => &self.disabled,
            Caller::RevokedApiToken => &self.revoked,
        }
    }

    /// The value of a path parameter: user A's objects, by the parameter's name.
    fn param(&self, name: &str) -> String {
        let n = name.to_lowercase();
        let v = if n.contains("short") {
            &self.a_short_id
        } else if n.contains("user") {
            &self.a_id
        } else if n.contains("key") {
            &self.a_key_id
        } else if n.contains("host") {
            &self.a_host_id
        } else if n.contains("binding") {
            &self.binding_id
        } else if n.contains("quota") {
            &self.quota_id
        } else if n.contains("task") {
            &self.a_task_id
        } else if n.contains("token") {
            &self.a_token_id
        } else if n.contains("ip") || n.contains("egress") {
            &self.egress_id
        } else if n.contains("path") {
            return "index.html".to_owned();
        } else {
            return uuid::Uuid::new_v4().to_string();
        };
        v.clone()
    }

    pub fn path(&self, route: &Route) -> String {
        let mut path = route.template.clone();
        for p in route.params() {
            path = path.replace(&format!("{{{p}}}"), &self.param(&p));
        }
        path
    }

    /// Whether a tenant-side route's path names user A's host, SSH key or API token.
    pub fn names_object_of_a(&self, route: &Route) -> bool {
        (route.template.starts_with("/v1/user/") || route.template.starts_with("/v1/auth/"))
            && route
                .params()
                .iter()
                .any(|p| ["host", "key", "token"].iter().any(|k| p.contains(k)))
    }

    /// A valid body for the route (used where the caller should be refused before it is read).
    pub fn body_for(&self, route: &Route) -> Option<Value> {
        let (method, shape) = route.key();
        Some(match (method.as_str(), shape.as_str()) {
            ("POST", "/v1/auth/login" | "/v1/admin/login") => {
                json!({"username": "usera", "password": A_PASSWORD})
            }
            ("POST", "/v1/auth/api-tokens") => json!({"name": "matrix", "expires_in_days": 1}),
            ("POST", "/v1/admin/users") => json!({"username": unique("m"), "password": "matrix-pass-1"}),
            ("PATCH", "/v1/admin/users/{}") => json!({"status": "active"}),
            ("PUT", "/v1/admin/users/{}/expiry") => json!({"expires_at": null}),
            ("POST", "/v1/admin/users/{}/ssh-keys" | "/v1/user/ssh-keys") => {
                json!({"public_key": self.spare_key})
            }
            ("POST", "/v1/admin/egress-ips") => fixtures::wireguard_egress(&unique("m")),
            ("PUT", "/v1/admin/egress-ips/{}") => json!({"provider": "matrix"}),
            ("POST", "/v1/admin/hosts") => json!({"user_id": self.a_id}),
            ("POST", "/v1/admin/bindings") => {
                json!({"host_id": self.a_host_id, "egress_ip_id": self.egress_id})
            }
            ("POST", "/v1/admin/traffic-quotas") => json!({"host_id": self.a_host_id, "limit_bytes": 1000}),
            ("POST", "/v1/user/change-password") => {
                json!({"old_password": A_PASSWORD, "new_password": "new-pass-123"})
            }
            ("POST", "/v1/bootstrap/sessions") => json!({"username": "usera", "password": A_PASSWORD}),
            ("PUT", "/v1/admin/users/{}/recording" | "/v1/admin/hosts/{}/recording") => {
                json!({"recording": "inherit"})
            }
            // No account token opens enrolment: only an enrolment key does, and this one is made up.
            ("POST", "/v1/agent/enrol" | "/v1/gateway/enrol") => {
                json!({"key": "ccpk_not-a-real-key", "name": "matrix"})
            }
            _ => return None,
        })
    }

    pub async fn send(&self, caller: Caller, route: &Route, body: Option<Value>) -> Resp {
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        let body = body.map_or(Body::None, Body::Json);
        self.api(caller).send(method, &self.path(route), body).await
    }

    /// An allowed read: `200` for the routes docs/api.md describes; anything but 401/403 otherwise.
    #[track_caller]
    pub fn check_allowed_read(&self, caller: Caller, route: &Route, r: &Resp) {
        let known = super::SEED_ROUTES
            .iter()
            .chain(super::DOC_ROUTES)
            .any(|(m, p)| route.key() == ((*m).into(), (*p).into()))
            || route.template == "/openapi.json";
        // A recording id in a path names no recording here (the fixture records no session).
        let known = known && !route.template.contains("{recording_id}");
        if known {
            assert_eq!(r.status, 200, "{caller:?} {} {}: {}", r.method, r.path, r.text);
        } else {
            assert!(
                ![401, 403].contains(&r.status),
                "{caller:?} may read {} {}: {} {}",
                r.method,
                r.path,
                r.status,
                r.text
            );
        }
    }

    /// User A's objects as the operator and A see them.
    pub async fn owned_state(&self) -> Vec<Value> {
        let mut state = Vec::new();
        for path in [
            format!("/v1/admin/users/{}", self.a_id),
            format!("/v1/admin/users/{}/ssh-keys", self.a_id),
            format!("/v1/admin/hosts/{}", self.a_host_id),
            format!("/v1/admin/tasks?host_id={}", self.a_host_id),
            format!("/v1/admin/egress-ips/{}", self.egress_id),
            format!("/v1/admin/bindings/{}", self.binding_id),
        ] {
            state.push(self.admin.get(&path).await.expect(200).clone());
        }
        state.push(self.a.get("/v1/auth/api-tokens").await.expect(200).clone());
        state
    }

    async fn fresh_host(&self) -> Value {
        self.admin.create_host(&self.a_id).await
    }

    async fn fresh_user(&self) -> String {
        id(&self.admin.create_user(&unique("tmp"), "temporary-pass").await)
    }

    async fn fresh_egress(&self) -> String {
        id(&self
            .admin
            .create_egress(fixtures::wireguard_egress(&unique("m")))
            .await)
    }

    fn fresh_key(&self) -> String {
        fixtures::ssh_keygen(self.dir.path(), &unique("k")).public_line
    }

    /// Carries out one allowed mutation on objects made for it and checks its success status.
    pub async fn run_allowed_mutation(&self, caller: Caller, route: &Route) {
        let api = self.api(caller);
        let (method, shape) = route.key();
        let a = &self.a_id;
        let (path, body, status): (String, Option<Value>, u16) = match (method.as_str(), shape.as_str()) {
            ("POST", "/v1/auth/api-tokens") => (shape.clone(), self.body_for(route), 201),
            ("DELETE", "/v1/auth/api-tokens/{}") => {
                let t = api.post("/v1/auth/api-tokens", json!({"name": "doomed"})).await;
                (format!("/v1/auth/api-tokens/{}", id(t.expect(201))), None, 204)
            }
            ("POST", "/v1/admin/users") => (shape.clone(), self.body_for(route), 201),
            ("PATCH", "/v1/admin/users/{}") => {
                let body = Some(json!({"status": "disabled"}));
                (format!("/v1/admin/users/{}", self.fresh_user().await), body, 200)
            }
            ("DELETE", "/v1/admin/users/{}") => {
                (format!("/v1/admin/users/{}", self.fresh_user().await), None, 204)
            }
            ("POST", "/v1/admin/users/{}/rotate-password") => (
                format!("/v1/admin/users/{}/rotate-password", self.fresh_user().await),
                None,
                200,
            ),
            ("PUT", "/v1/admin/users/{}/expiry") => (
                format!("/v1/admin/users/{}/expiry", self.fresh_user().await),
                self.body_for(route),
                200,
            ),
            ("POST", "/v1/admin/users/{}/ssh-keys") => (
                format!("/v1/admin/users/{a}/ssh-keys"),
                Some(json!({"public_key": self.fresh_key()})),
                201,
            ),
            ("POST", "/v1/admin/users/{}/ssh-keys/generate") => {
                (format!("/v1/admin/users/{a}/ssh-keys/generate"), None, 201)
            }
            ("DELETE", "/v1/admin/users/{}/ssh-keys/{}") => {
                let k = api
                    .post(
                        &format!("/v1/admin/users/{a}/ssh-keys"),
                        json!({"public_key": self.fresh_key()}),
                    )
                    .await;
                (
                    format!("/v1/admin/users/{a}/ssh-keys/{}", id(k.expect(201))),
                    None,
                    204,
                )
            }
            ("POST", "/v1/admin/egress-ips") => (shape.clone(), self.body_for(route), 201),
            ("PUT", "/v1/admin/egress-ips/{}") => (
                format!("/v1/admin/egress-ips/{}", self.egress_id),
                self.body_for(route),
                200,
            ),
            ("DELETE", "/v1/admin/egress-ips/{}") => (
                format!("/v1/admin/egress-ips/{}", self.fresh_egress().await),
                None,
                204,
            ),
            ("POST", "/v1/admin/egress-ips/{}/test") => {
                // Allowed, but there is no agent to run it (and nothing may dial the seed's addresses).
                let r = api
                    .post(&format!("/v1/admin/egress-ips/{}/test", self.egress_id), None)
                    .await;
                assert_error(&r, 503, "no_agent");
                return;
            }
            ("POST", "/v1/admin/hosts") => (shape.clone(), self.body_for(route), 201),
            // A cookie for the VNC proxy, not a host action.
            ("POST", "/v1/admin/hosts/{}/vnc-session" | "/v1/user/hosts/{}/vnc-session") => {
                (self.path(route), None, 200)
            }
            // A single-use SSH secret: the caller is let in, but the fixture's host has never
            // run (no agent), so there is nothing to log in to yet; tests/e2e/cli.rs takes one.
            ("POST", "/v1/admin/hosts/{}/ssh-session" | "/v1/user/hosts/{}/ssh-session") => {
                let r = api.post(&self.path(route), None).await;
                assert_error(&r, 409, "host_not_running");
                return;
            }
            // The entry link: a new id at once, not a task.
            ("POST", "/v1/admin/hosts/{}/entry-link/rotate") => (self.path(route), None, 200),
            ("PATCH", "/v1/admin/hosts/{}/entry-link") => {
                (self.path(route), Some(json!({"enabled": true})), 200)
            }
            ("POST", s) if s.starts_with("/v1/admin/hosts/{}/") => (self.path(route), None, 202),
            ("DELETE", "/v1/admin/hosts/{}") => (
                format!("/v1/admin/hosts/{}", id(&self.fresh_host().await)),
                None,
                202,
            ),
            ("POST", "/v1/admin/bindings") => {
                let body = json!({"host_id": id(&self.fresh_host().await), "egress_ip_id": self.egress_id});
                (shape.clone(), Some(body), 201)
            }
            ("DELETE", "/v1/admin/bindings/{}") => {
                let body = json!({"host_id": id(&self.fresh_host().await), "egress_ip_id": self.egress_id});
                let b = api.post("/v1/admin/bindings", body).await;
                (format!("/v1/admin/bindings/{}", id(b.expect(201))), None, 204)
            }
            ("POST", "/v1/admin/traffic-quotas") => (shape.clone(), self.body_for(route), 201),
            ("DELETE", "/v1/admin/traffic-quotas/{}") => {
                let body = json!({"host_id": self.a_host_id, "limit_bytes": 1000});
                let q = api.post("/v1/admin/traffic-quotas", body).await;
                (
                    format!("/v1/admin/traffic-quotas/{}", id(q.expect(201))),
                    None,
                    204,
                )
            }
            ("POST", "/v1/admin/tasks/{}/cancel") => {
                let host = self.fresh_host().await;
                let r = api
                    .post(
                        &format!("/v1/admin/tasks/{}/cancel", host["task_id"].as_str().unwrap()),
                        None,
                    )
                    .await;
                assert_eq!(
                    r.expect(200)["status"],
                    "cancelled",
                    "a queued task is cancelled: {}",
                    r.text
                );
                return;
            }
            ("POST", "/v1/user/ssh-keys") => {
                (shape.clone(), Some(json!({"public_key": self.fresh_key()})), 201)
            }
            ("POST", "/v1/user/ssh-keys/generate") => (shape.clone(), None, 201),
            ("DELETE", "/v1/user/ssh-keys/{}") => {
                let k = api
                    .post("/v1/user/ssh-keys", json!({"public_key": self.fresh_key()}))
                    .await;
                (format!("/v1/user/ssh-keys/{}", id(k.expect(201))), None, 204)
            }
            ("POST", "/v1/user/change-password") => {
                // Run by a tenant made for it: changing A's or B's password would end their sessions.
                let (_, e) = self.admin.tenant(&unique("pw"), "old-password-1").await;
                let body = json!({"old_password": "old-password-1", "new_password": "new-password-1"});
                e.post("/v1/user/change-password", body).await.expect(204);
                return;
            }
            ("POST", "/v1/user/hosts/{}/rebuild") => (self.path(route), None, 202),
            ("PUT", "/v1/admin/users/{}/recording" | "/v1/admin/hosts/{}/recording") => {
                (self.path(route), self.body_for(route), 200)
            }
            _ => {
                // A route docs/api.md does not describe: it must at least let this caller in.
                let r = self.send(caller, route, self.body_for(route)).await;
                assert!(
                    ![401, 403].contains(&r.status),
                    "{caller:?} may call {} {}: {}",
                    r.method,
                    r.path,
                    r.text
                );
                eprintln!(
                    "note: {} {} is not in docs/api.md; {caller:?} got {}",
                    route.method, route.template, r.status
                );
                return;
            }
        };
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let r = api.send(method, &path, body.map_or(Body::None, Body::Json)).await;
        assert_eq!(r.status, status, "{caller:?} {} {}: {}", r.method, r.path, r.text);
    }
}
