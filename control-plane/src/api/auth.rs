//! Sign-in (`/v1/auth/login`, `/v1/admin/login`), the dashboard's browser session
//! (`/v1/auth/session`), and `/v1/auth/me`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::auth::login;
use crate::auth::policy::{Decision, HostPick, Way};
use crate::auth::{self, ClientIp, Credential, Principal, browser};
use crate::db::events::{Actor, NewEvent};
use crate::db::users::{Role, User};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;

use super::users::UserView;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// The current six-digit code of the account's authenticator app, or one of its recovery
    /// codes; needed once the account enrolled a second factor (`totp_required` otherwise).
    #[serde(default)]
    pub totp_code: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub role: Role,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: UtcTime,
}

/// A signed-in browser: who it is, and the token its changes must carry in `X-CSRF-Token`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub user: UserView,
    /// Sent back in the `X-CSRF-Token` header of every request that changes something.
    pub csrf_token: String,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: UtcTime,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(admin_login))
        .routes(routes!(session_create, session_get, session_delete))
        .routes(routes!(me))
}

/// Signs in with username and password and returns a session token.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    token_for(&state, sign_in(&state, ip, None, req, Way::Api).await?)
}

/// Same as `/v1/auth/login`; kept for clients of the older path.
#[utoipa::path(post, path = "/v1/admin/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
async fn admin_login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    token_for(&state, sign_in(&state, ip, None, req, Way::Api).await?)
}

fn token_for(state: &AppState, user: User) -> ApiResult<Json<LoginResponse>> {
    let now = UtcTime::now();
    let token = state.keys.issue_session(&user, now)?;
    Ok(Json(LoginResponse {
        token,
        role: user.role,
        expires_at: session_expiry(state, now),
    }))
}

fn session_expiry(state: &AppState, now: UtcTime) -> UtcTime {
    let ttl = chrono::Duration::from_std(state.keys.session_ttl).unwrap_or(chrono::Duration::zero());
    UtcTime::from(now.0 + ttl)
}

/// Signs a browser in: sets the HttpOnly session cookie and answers who signed in and the CSRF
/// token. Limits and refusals are those of `/v1/auth/login`.
#[utoipa::path(post, path = "/v1/auth/session", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = SessionView,
               description = "`Set-Cookie: ccp_session=…; Path=/; HttpOnly; SameSite=Strict` (`__Host-ccp_session`, `Secure`, over HTTPS)"),
              (status = 401, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
async fn session_create(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Response> {
    let user = sign_in(&state, ip, Some(&headers), req, Way::Dashboard).await?;
    let now = UtcTime::now();
    // Expired rows go whenever a new one comes, so the table stays the size of the live sessions.
    db::web_sessions::delete_expired(&state.db, now).await?;
    let secret = browser::random_token();
    let csrf_token = browser::random_token();
    let expires_at = session_expiry(&state, now);
    let ip_text = ip.map(|i| i.to_string());
    db::web_sessions::insert(
        &state.db,
        &db::web_sessions::NewWebSession {
            secret_hash: &browser::secret_hash(&secret),
            user_id: &user.id,
            token_version: user.token_version,
            csrf_token: &csrf_token,
            ip: ip_text.as_deref(),
            expires_at,
        },
        now,
    )
    .await?;
    let max_age = i64::try_from(state.keys.session_ttl.as_secs()).unwrap_or(i64::MAX);
    let cookie = browser::set_cookie(&secret, max_age, state.settings.serves_tls());
    let body = SessionView {
        user: UserView::from_user(&user, now),
        csrf_token,
        expires_at,
    };
    let mut response = with_cookie(Json(body).into_response(), &cookie)?;
    let device = browser::device_cookie(
        state.keys.device_cookie_key(),
        &user.id,
        state.settings.serves_tls(),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&device).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// The signed-in browser's account and CSRF token; `401` when the cookie opens no session.
#[utoipa::path(get, path = "/v1/auth/session", tag = "auth", security(("session_cookie" = [])),
    responses((status = 200, body = SessionView), (status = 401, body = crate::error::ErrorBody)))]
async fn session_get(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let now = UtcTime::now();
    let (user, session) = auth::web_session(&state, &headers, now)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let body = SessionView {
        user: UserView::from_user(&user, now),
        csrf_token: session.csrf_token,
        expires_at: session.expires_at,
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Signs the browser out: the session ends on the server at once (its cookie no longer opens
/// anything, wherever it was copied) and the browser is told to forget the cookie. Needs the CSRF
/// token like every change.
#[utoipa::path(delete, path = "/v1/auth/session", tag = "auth", security(("session_cookie" = []), ("bearer" = [])),
    responses((status = 204), (status = 400, description = "`not_a_session`: only the dashboard's cookie session signs \
               out here; API tokens are revoked with `DELETE /v1/auth/api-tokens/{token_id}`", body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
async fn session_delete(State(state): State<AppState>, principal: Principal) -> ApiResult<Response> {
    let Credential::WebSession { session_id } = &principal.credential else {
        return Err(ApiError::bad_request(
            "not_a_session",
            "only a browser session signs out; revoke API tokens with DELETE /v1/auth/api-tokens/{token_id}",
        ));
    };
    db::web_sessions::delete(&state.db, session_id).await?;
    db::events::record(
        &state.db,
        &principal.actor(),
        NewEvent::success("auth.signed_out").user(&principal.user.id),
        UtcTime::now(),
    )
    .await?;
    let cookie = browser::clear_cookie(state.settings.serves_tls());
    with_cookie(StatusCode::NO_CONTENT.into_response(), &cookie)
}

fn with_cookie(mut response: Response, cookie: &str) -> ApiResult<Response> {
    let value = HeaderValue::from_str(cookie).map_err(ApiError::internal)?;
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, value);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Checks a username and password (and the second factor, once enrolled) under the sign-in
/// policy and records the attempt; the account when it may sign in.
async fn sign_in(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    headers: Option<&HeaderMap>,
    req: LoginRequest,
    way: Way,
) -> ApiResult<User> {
    let now = UtcTime::now();
    // Bounded so a huge username cannot bloat the limiter or the log.
    let account = login::recordable(&req.username, 64);
    let actor = Actor {
        id: None,
        name: Some(account.clone()),
        ip: ip.map(|i| i.to_string()),
    };
    let user = db::users::get_by_username(&state.db, &account).await?;
    let device_known = match (headers, &user) {
        (Some(headers), Some(u)) => browser::knows_device(headers, state.keys.device_cookie_key(), &u.id),
        _ => false,
    };
    let facts = login::Facts {
        way,
        ip,
        account_key: &account,
        user: user.as_ref(),
        host: HostPick::NotAsked,
        device_known,
    };
    let given = login::Given::Password {
        password: &req.password,
        host_hash: None,
    };
    let decision = login::check(state, facts, given, req.totp_code.as_deref()).await?;
    let record = match decision {
        Decision::Refuse(refusal) => login::worth_recording(state, &facts, refusal),
        Decision::Grant => true,
    };
    match (decision, user) {
        (Decision::Grant, Some(user)) => {
            let actor = Actor {
                id: Some(user.id.clone()),
                ..actor
            };
            db::events::record(
                &state.db,
                &actor,
                NewEvent::success("auth.login_succeeded")
                    .user(&user.id)
                    .details(serde_json::json!({ "via": via(way), "second_factor": user.totp_enabled })),
                now,
            )
            .await?;
            Ok(user)
        }
        (Decision::Refuse(refusal), user) => {
            tracing::info!(reason = refusal.as_str(), "sign-in refused");
            if record {
                let mut event = NewEvent::failure("auth.login_failed")
                    .details(serde_json::json!({ "reason": refusal.as_str(), "via": via(way) }));
                event.user_id = user.map(|u| u.id);
                db::events::record(&state.db, &actor, event, now).await?;
            }
            Err(login::answer(way, refusal))
        }
        (Decision::Grant, None) => Err(ApiError::internal("a sign-in granted without an account")),
    }
}

/// The `via` of a sign-in's event.
fn via(way: Way) -> &'static str {
    match way {
        Way::Dashboard => "dashboard",
        _ => "api",
    }
}

/// The account behind the token.
#[utoipa::path(get, path = "/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = crate::error::ErrorBody)))]
async fn me(principal: Principal) -> Json<UserView> {
    Json(UserView::from_user(&principal.user, UtcTime::now()))
}
