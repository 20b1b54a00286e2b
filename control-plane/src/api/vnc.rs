//! The VNC proxy's routes: `/v1/{admin,user}/hosts/{host_id}/vnc/…` (the container's noVNC page and
//! its WebSocket) and `…/vnc-session` (the cookie a browser uses there).
//!
//! Admin routes are for the operator, user routes for the host's owner (another tenant's host is
//! 404). Callers authenticate with `Authorization: Bearer` or with the VNC session cookie; neither
//! reaches the container (see `vnc::forward`). The WebSocket is checked against cross-site use by
//! its `Origin`, and the container's VNC server only ever sees the proxy, authenticated with the
//! host's secret.

use std::time::Instant;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts as _, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{self, Admin, Tenant};
use crate::db::events::{Actor, NewEvent};
use crate::db::hosts::{Host, HostStatus};
use crate::db::users::{Role, User};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::vnc::cookie::{self, Claims, Scope};
use crate::vnc::{self, forward};

#[derive(Debug, Deserialize)]
struct HostParam {
    host_id: Uuid,
}

/// Where to open the web desktop, and until when the cookie just set lets the browser in.
#[derive(Debug, Serialize, ToSchema)]
pub struct VncSession {
    /// Path of the web client, to open in the browser that received the cookie.
    pub url: String,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: UtcTime,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin_vnc_session))
        .routes(routes!(user_vnc_session))
        .routes(routes!(admin_vnc_index))
        .route("/v1/admin/hosts/{host_id}/vnc/", get(admin_vnc_index))
        .routes(routes!(user_vnc_index))
        .route("/v1/user/hosts/{host_id}/vnc/", get(user_vnc_index))
        .merge(catch_all(
            routes!(admin_vnc_proxy),
            "/v1/admin/hosts/{host_id}/vnc/{*path}",
        ))
        .merge(catch_all(
            routes!(user_vnc_proxy),
            "/v1/user/hosts/{host_id}/vnc/{*path}",
        ))
}

/// Documents a handler under its OpenAPI path (`…/{path}`) but routes it as axum's catch-all
/// (`…/{*path}`), which OpenAPI cannot spell.
fn catch_all(documented: UtoipaMethodRouter<AppState>, route: &str) -> OpenApiRouter<AppState> {
    let (schemas, paths, method_router) = documented;
    let mut doc = utoipa::openapi::OpenApiBuilder::new().paths(paths).build();
    doc.components = Some(
        utoipa::openapi::ComponentsBuilder::new()
            .schemas_from_iter(schemas)
            .build(),
    );
    OpenApiRouter::with_openapi(doc).route(route, method_router)
}

/// `/v1/{scope}/hosts/{id}/vnc` as the browser sees it (behind `PUBLIC_BASE_URL`'s path, if any).
fn base_path(state: &AppState, scope: Scope, host_id: &str) -> String {
    let prefix = forward::public_prefix(&state.settings.public_base_url);
    format!("{prefix}/v1/{}/hosts/{host_id}/vnc", scope.as_str())
}

async fn host_for(state: &AppState, scope: Scope, user: &User, host_id: Uuid) -> ApiResult<Host> {
    let id = host_id.to_string();
    let host = match scope {
        Scope::Admin => db::hosts::get(&state.db, &id).await?,
        Scope::User => db::hosts::get_owned(&state.db, &id, &user.id).await?,
    };
    host.ok_or_else(|| ApiError::not_found("host"))
}

fn role_of(scope: Scope) -> Role {
    match scope {
        Scope::Admin => Role::Admin,
        Scope::User => Role::User,
    }
}

/// Who is calling a proxy route, and the host they may reach: a bearer token (session or API token)
/// when the request has one, else the dashboard's session cookie, else a VNC session cookie for this
/// route and host.
async fn authorize(state: &AppState, parts: &Parts, scope: Scope, host_id: Uuid) -> ApiResult<(Actor, Host)> {
    let ip = auth::client_ip(parts, state.settings.trust_forwarded_for).map(|ip| ip.to_string());
    let now = UtcTime::now();
    // A token or the dashboard's session names the account; its role must be this route's.
    let account = if let Some(token) = auth::bearer(parts) {
        let (user, credential) = auth::authenticate(state, token, now)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        // A desktop is driven, not read: only `full` tokens open one, even on these GET routes.
        if let auth::Credential::ApiToken { scope, .. } = credential
            && scope != db::api_tokens::Scope::Full
        {
            return Err(ApiError::insufficient_scope(
                "only an API token with the `full` scope can open a desktop",
            ));
        }
        Some(user)
    } else {
        auth::web_session(state, &parts.headers, now)
            .await?
            .map(|(user, _)| user)
    };
    let user = match account {
        Some(user) if user.role != role_of(scope) => return Err(ApiError::forbidden()),
        Some(user) => user,
        None => cookie_user(state, parts, scope, host_id, now)
            .await?
            .ok_or_else(ApiError::unauthorized)?,
    };
    let host = host_for(state, scope, &user, host_id).await?;
    let actor = Actor {
        id: Some(user.id.clone()),
        name: Some(user.username.clone()),
        ip,
    };
    Ok((actor, host))
}

/// The user of a valid cookie for exactly this route and host, whose account is still usable and
/// has not changed password (or been disabled and re-enabled) since the cookie was issued.
async fn cookie_user(
    state: &AppState,
    parts: &Parts,
    scope: Scope,
    host_id: Uuid,
    now: UtcTime,
) -> ApiResult<Option<User>> {
    let key = state.keys.vnc_cookie_key();
    let host_id = host_id.to_string();
    for value in cookie::values(&parts.headers) {
        let Some(claims) = cookie::verify(key, value, now.0.timestamp()) else {
            continue;
        };
        if claims.scope != scope || claims.hid != host_id {
            continue;
        }
        let Some(user) = db::users::get(&state.db, &claims.sub).await? else {
            continue;
        };
        if user.is_usable(now) && user.token_version == claims.ver && user.role == role_of(scope) {
            return Ok(Some(user));
        }
    }
    Ok(None)
}

/// Sets the cookie for `host` on this route and answers where the web client is.
fn issue_session(state: &AppState, scope: Scope, user: &User, host: &Host) -> Response {
    let now = UtcTime::now();
    let exp = now.0.timestamp() + cookie::TTL_SECS;
    let claims = Claims {
        sub: user.id.clone(),
        hid: host.id.clone(),
        scope,
        ver: user.token_version,
        exp,
    };
    let value = cookie::sign(state.keys.vnc_cookie_key(), &claims);
    let base = base_path(state, scope, &host.id);
    let secure = state.settings.serves_tls();
    let set = cookie::set_cookie(&value, &base, cookie::TTL_SECS, secure);
    let expires_at = chrono::DateTime::from_timestamp(exp, 0).map_or(now, UtcTime::from);
    let body = VncSession {
        url: format!("{base}/"),
        expires_at,
    };
    let mut response = Json(body).into_response();
    match HeaderValue::from_str(&set) {
        Ok(v) => {
            response.headers_mut().insert(header::SET_COOKIE, v);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => ApiError::internal(format_args!("VNC cookie header: {e}")).into_response(),
    }
}

/// Sets a short-lived cookie that lets this browser open the host's web desktop (admin route).
#[utoipa::path(post, path = "/v1/admin/hosts/{host_id}/vnc-session", tag = "vnc",
    security(("bearer" = [])), params(("host_id" = Uuid, Path)),
    responses((status = 200, body = VncSession,
               description = "`Set-Cookie: ccp_vnc=…; Path=/v1/admin/hosts/{host_id}/vnc; HttpOnly; SameSite=Strict`"),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
async fn admin_vnc_session(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(HostParam { host_id }): Path<HostParam>,
) -> ApiResult<Response> {
    let host = host_for(&state, Scope::Admin, &admin.user, host_id).await?;
    Ok(issue_session(&state, Scope::Admin, &admin.user, &host))
}

/// Sets a short-lived cookie that lets this browser open one of the caller's hosts' web desktop.
#[utoipa::path(post, path = "/v1/user/hosts/{host_id}/vnc-session", tag = "vnc",
    security(("bearer" = [])), params(("host_id" = Uuid, Path)),
    responses((status = 200, body = VncSession,
               description = "`Set-Cookie: ccp_vnc=…; Path=/v1/user/hosts/{host_id}/vnc; HttpOnly; SameSite=Strict`"),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
async fn user_vnc_session(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Path(HostParam { host_id }): Path<HostParam>,
) -> ApiResult<Response> {
    let host = host_for(&state, Scope::User, &me.user, host_id).await?;
    Ok(issue_session(&state, Scope::User, &me.user, &host))
}

async fn index(state: &AppState, scope: Scope, host_id: Uuid, req: Request) -> ApiResult<Response> {
    let (parts, _) = req.into_parts();
    let (_, host) = authorize(state, &parts, scope, host_id).await?;
    let prefix = forward::public_prefix(&state.settings.public_base_url);
    Ok(Redirect::to(&forward::index_location(prefix, scope.as_str(), &host.id)).into_response())
}

/// Redirects to the dashboard's desktop viewer for this host (admin), whose WebSocket is
/// `…/vnc/websockify`. `…/vnc/` answers the same.
#[utoipa::path(get, path = "/v1/admin/hosts/{host_id}/vnc", tag = "vnc",
    security(("bearer" = []), ("vnc_cookie" = [])), params(("host_id" = Uuid, Path)),
    responses((status = 303, description = "`Location: /ui/desktop.html?scope=…&host=…`"),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
async fn admin_vnc_index(
    State(state): State<AppState>,
    Path(HostParam { host_id }): Path<HostParam>,
    req: Request,
) -> ApiResult<Response> {
    index(&state, Scope::Admin, host_id, req).await
}

/// Redirects to the dashboard's desktop viewer for one of the caller's hosts. `…/vnc/` answers the same.
#[utoipa::path(get, path = "/v1/user/hosts/{host_id}/vnc", tag = "vnc",
    security(("bearer" = []), ("vnc_cookie" = [])), params(("host_id" = Uuid, Path)),
    responses((status = 303, description = "`Location: /ui/desktop.html?scope=…&host=…`"),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
async fn user_vnc_index(
    State(state): State<AppState>,
    Path(HostParam { host_id }): Path<HostParam>,
    req: Request,
) -> ApiResult<Response> {
    index(&state, Scope::User, host_id, req).await
}

/// The host's web VNC (admin): the host's own files (GET/HEAD, streamed, sandboxed: no script of
/// the host's runs in this origin), or, with `Upgrade: websocket`, the desktop itself as RFB with
/// security type None.
#[utoipa::path(get, path = "/v1/admin/hosts/{host_id}/vnc/{path}", tag = "vnc",
    security(("bearer" = []), ("vnc_cookie" = [])),
    params(("host_id" = Uuid, Path), ("path" = String, Path, description = "any path under the web client, e.g. `vnc.html`, `websockify`")),
    responses((status = 200, description = "the container's answer, streamed"),
              (status = 101, description = "WebSocket: RFB 3.8, security type None offered"),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody),
              (status = 502, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody),
              (status = 504, body = crate::error::ErrorBody)))]
async fn admin_vnc_proxy(
    State(state): State<AppState>,
    Path(HostParam { host_id }): Path<HostParam>,
    req: Request,
) -> ApiResult<Response> {
    proxy(state, Scope::Admin, host_id, req).await
}

/// The web VNC of one of the caller's hosts: web client files, or the desktop over a WebSocket.
#[utoipa::path(get, path = "/v1/user/hosts/{host_id}/vnc/{path}", tag = "vnc",
    security(("bearer" = []), ("vnc_cookie" = [])),
    params(("host_id" = Uuid, Path), ("path" = String, Path, description = "any path under the web client, e.g. `vnc.html`, `websockify`")),
    responses((status = 200, description = "the container's answer, streamed"),
              (status = 101, description = "WebSocket: RFB 3.8, security type None offered"),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody),
              (status = 502, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody),
              (status = 504, body = crate::error::ErrorBody)))]
async fn user_vnc_proxy(
    State(state): State<AppState>,
    Path(HostParam { host_id }): Path<HostParam>,
    req: Request,
) -> ApiResult<Response> {
    proxy(state, Scope::User, host_id, req).await
}

/// The host's address when it can take a connection.
fn reachable(host: &Host) -> ApiResult<std::net::IpAddr> {
    if host.status != HostStatus::Running {
        return Err(ApiError::conflict(
            "host_not_running",
            format!("the host is {}; start it first", host.status.as_str()),
        ));
    }
    host.address
        .as_deref()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            ApiError::unavailable(
                "host_no_address",
                "the host's address is not known yet; retry in a moment",
            )
        })
}

fn upstream_error(e: &vnc::Error) -> ApiError {
    tracing::warn!(error = %e, "VNC upstream failed");
    match e {
        vnc::Error::Timeout(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "vnc_timeout",
            "the host's desktop did not answer in time",
        ),
        _ => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "vnc_unavailable",
            "the host's desktop is not reachable (it may still be starting)",
        ),
    }
}

/// The path and query under `…/vnc`, as the container's web server knows it.
fn upstream_path(uri: &axum::http::Uri) -> String {
    // /v1/{scope}/hosts/{id}/vnc/{rest}: the raw rest, percent-encoding untouched.
    let rest = uri.path().splitn(7, '/').nth(6).unwrap_or_default();
    match uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    }
}

fn is_websocket(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn proxy(state: AppState, scope: Scope, host_id: Uuid, req: Request) -> ApiResult<Response> {
    let (mut parts, _) = req.into_parts();
    let (actor, host) = authorize(&state, &parts, scope, host_id).await?;
    if is_websocket(&parts) {
        auth::browser::check_websocket_origin(&parts.headers, &state.settings.public_base_url)?;
        // `authorize` always names the account; the slot is held for the whole session.
        let slot = state.live.open(actor.id.as_deref().unwrap_or_default())?;
        let ip = reachable(&host)?;
        return websocket(state, scope, &mut parts, slot, actor, host, ip).await;
    }
    let ip = reachable(&host)?;
    let method = if parts.method == Method::HEAD {
        reqwest::Method::HEAD
    } else {
        reqwest::Method::GET
    };
    let resp = state
        .vnc
        .fetch(
            ip,
            method,
            &upstream_path(&parts.uri),
            forward::request_headers(&parts.headers),
        )
        .await
        .map_err(|e| upstream_error(&e))?;
    let base = base_path(&state, scope, &host.id);
    let status = resp.status();
    let headers = forward::response_headers(resp.headers(), &base);
    let mut response = Response::new(Body::from_stream(resp.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

async fn websocket(
    state: AppState,
    scope: Scope,
    parts: &mut Parts,
    slot: crate::live::Slot,
    actor: Actor,
    host: Host,
    ip: std::net::IpAddr,
) -> ApiResult<Response> {
    let upgrade = WebSocketUpgrade::from_request_parts(parts, &state)
        .await
        .map_err(|r| ApiError::bad_request("bad_request", r.body_text()))?;
    let vnc_secret = host
        .vnc_secret
        .open(&state.secrets, crate::secrets::field::HOST_VNC_SECRET)
        .map_err(|e| ApiError::internal(format_args!("host {}: VNC secret: {e}", host.id)))?;
    // Authenticated to the VNC server before answering 101, so a failure is a plain JSON error.
    let upstream = state
        .vnc
        .open(ip, &vnc_secret)
        .await
        .map_err(|e| upstream_error(&e))?;
    let response = upgrade
        .protocols([vnc::SUBPROTOCOL])
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            let started = Instant::now();
            let event = NewEvent::success("vnc.session_started")
                .host(&host.id)
                .details(serde_json::json!({ "route": scope.as_str() }));
            let event = match &host.user_id {
                Some(owner) => event.user(owner),
                None => event,
            };
            if let Err(e) = db::events::record(&state.db, &actor, event.clone(), UtcTime::now()).await {
                tracing::error!(error = %e, "recording vnc.session_started");
            }
            let (traffic, result) = vnc::relay(socket, upstream, state.stopping.clone()).await;
            let mut details = serde_json::json!({
                "route": scope.as_str(),
                "bytes_to_browser": traffic.to_browser,
                "bytes_from_browser": traffic.from_browser,
                "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
            let ended = match result {
                Ok(end) => {
                    details["closed_by"] = serde_json::Value::String(end.as_str().to_owned());
                    NewEvent {
                        kind: "vnc.session_ended",
                        ..event
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, host_id = %host.id, "VNC session ended with an error");
                    details["error"] = serde_json::Value::String(e.to_string());
                    NewEvent {
                        kind: "vnc.session_ended",
                        outcome: db::events::Outcome::Failure,
                        ..event
                    }
                }
            };
            let ended = ended.details(details);
            if let Err(e) = db::events::record(&state.db, &actor, ended, UtcTime::now()).await {
                tracing::error!(error = %e, "recording vnc.session_ended");
            }
        });
    Ok(response)
}
