//! Sign-in (`/v1/auth/login`, `/v1/admin/login`), the dashboard's browser session
//! (`/v1/auth/session`), and `/v1/auth/me`.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::auth::{self, ClientIp, Credential, Principal, browser, password};
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
    token_for(&state, sign_in(&state, ip, req, Via::Api).await?)
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
    token_for(&state, sign_in(&state, ip, req, Via::Api).await?)
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
    Json(req): Json<LoginRequest>,
) -> ApiResult<Response> {
    let user = sign_in(&state, ip, req, Via::Dashboard).await?;
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
    with_cookie(Json(body).into_response(), &cookie)
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
#[utoipa::path(delete, path = "/v1/auth/session", tag = "auth", security(("session_cookie" = [])),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)))]
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

/// Where a sign-in came from, recorded in its event.
#[derive(Debug, Clone, Copy)]
enum Via {
    Api,
    Dashboard,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Dashboard => "dashboard",
        }
    }
}

/// Why a sign-in failed; recorded in the event, never told to the client.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    RateLimited,
    UnknownUser,
    WrongPassword,
    Disabled,
    Expired,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::UnknownUser => "unknown_user",
            Self::WrongPassword => "wrong_password",
            Self::Disabled => "disabled",
            Self::Expired => "expired",
        }
    }
}

/// Checks a username and password under the sign-in limits and records the attempt; the account
/// when it may sign in.
async fn sign_in(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    req: LoginRequest,
    via: Via,
) -> ApiResult<User> {
    let ip_text = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let now = UtcTime::now();
    let actor = Actor {
        id: None,
        name: Some(req.username.clone()),
        ip: ip.map(|i| i.to_string()),
    };
    // Bounded so a huge username cannot bloat the limiter or the log.
    let account: String = req.username.chars().take(64).collect();

    if let Err(wait) = state.limiter.check(&ip_text, &account, Instant::now()) {
        record_refusal(state, &actor, None, Refusal::RateLimited, now).await?;
        return Err(ApiError::rate_limited(wait.as_secs() + 1));
    }

    let user = db::users::get_by_username(&state.db, &account).await?;
    let stored_hash = user
        .as_ref()
        .map_or_else(|| state.decoy_hash.to_string(), |u| u.password_hash.clone());
    let password_ok = password::verify_async(req.password, stored_hash).await;

    let refusal = match &user {
        None => Some(Refusal::UnknownUser),
        Some(_) if !password_ok => Some(Refusal::WrongPassword),
        Some(u) if u.status != db::users::Status::Active => Some(Refusal::Disabled),
        Some(u) if u.is_expired(now) => Some(Refusal::Expired),
        Some(_) => None,
    };
    let user = match (refusal, user) {
        (None, Some(user)) => user,
        (refusal, user) => {
            state.limiter.failed(&ip_text, &account, Instant::now());
            let refusal = refusal.unwrap_or(Refusal::UnknownUser);
            record_refusal(state, &actor, user.map(|u| u.id), refusal, now).await?;
            return Err(ApiError::unauthorized());
        }
    };

    state.limiter.succeeded(&account);
    let actor = Actor {
        id: Some(user.id.clone()),
        ..actor
    };
    db::events::record(
        &state.db,
        &actor,
        NewEvent::success("auth.login_succeeded")
            .user(&user.id)
            .details(serde_json::json!({ "via": via.as_str() })),
        now,
    )
    .await?;
    Ok(user)
}

async fn record_refusal(
    state: &AppState,
    actor: &Actor,
    user_id: Option<String>,
    refusal: Refusal,
    now: UtcTime,
) -> Result<(), ApiError> {
    let mut event = NewEvent::failure("auth.login_failed").details(serde_json::json!({
        "reason": refusal.as_str(),
    }));
    event.user_id = user_id;
    tracing::info!(reason = refusal.as_str(), "sign-in refused");
    db::events::record(&state.db, actor, event, now).await?;
    Ok(())
}

/// The account behind the token.
#[utoipa::path(get, path = "/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = crate::error::ErrorBody)))]
async fn me(principal: Principal) -> Json<UserView> {
    Json(UserView::from_user(&principal.user, UtcTime::now()))
}
