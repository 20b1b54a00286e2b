//! Sign-in (`/v1/auth/login`, `/v1/admin/login`) and `/v1/auth/me`.

use std::time::Instant;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::auth::password;
use crate::auth::{ClientIp, Principal};
use crate::db::events::{Actor, NewEvent};
use crate::db::users::Role;
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

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(admin_login))
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
    sign_in(&state, ip, req).await
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
    sign_in(&state, ip, req).await
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

async fn sign_in(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    req: LoginRequest,
) -> ApiResult<Json<LoginResponse>> {
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
    let token = state.keys.issue_session(&user, now)?;
    let actor = Actor {
        id: Some(user.id.clone()),
        ..actor
    };
    db::events::record(
        &state.db,
        &actor,
        NewEvent::success("auth.login_succeeded").user(&user.id),
        now,
    )
    .await?;
    let ttl = chrono::Duration::from_std(state.keys.session_ttl).unwrap_or(chrono::Duration::zero());
    Ok(Json(LoginResponse {
        token,
        role: user.role,
        expires_at: UtcTime::from(now.0 + ttl),
    }))
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
