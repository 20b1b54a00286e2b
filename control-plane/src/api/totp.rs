//! The caller's second factor (`/v1/auth/totp…`): enrol with an authenticator app (otpauth URI
//! and QR code), confirm with a first code to turn it on and receive recovery codes once, remove
//! it; and an operator's reset for an account that lost its device.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Admin, Principal, login, totp};
use crate::db::events::NewEvent;
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::secrets::{Sealed, field};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status, start, remove))
        .routes(routes!(confirm))
        .routes(routes!(reset))
}

/// Whether the caller's account has a second factor.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpStatus {
    /// Confirmed and asked for at sign-in.
    pub enabled: bool,
    /// Started and waiting for its first code.
    pub pending: bool,
    pub recovery_codes_left: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartTotp {
    /// The account's password, asked again before its sign-in changes.
    pub password: String,
}

/// A started enrolment: what the authenticator app takes. Shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// The shared secret, base32 (for typing it in by hand).
    pub secret: String,
    /// `otpauth://totp/cloud-cli-proxy:<username>?secret=…&issuer=cloud-cli-proxy…`
    pub otpauth_uri: String,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotp {
    /// The app's current six-digit code.
    pub code: String,
}

/// The recovery codes, each good for one sign-in in place of a code. Shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveTotp {
    pub password: String,
    /// A current code or an unused recovery code.
    pub code: String,
}

/// The caller's second factor.
#[utoipa::path(get, path = "/v1/auth/totp", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = TotpStatus), (status = 401, body = crate::error::ErrorBody)))]
async fn status(State(state): State<AppState>, me: Principal) -> ApiResult<Json<TotpStatus>> {
    let enrolment = db::totp::get(&state.db, &me.user.id).await?;
    Ok(Json(TotpStatus {
        enabled: enrolment.as_ref().is_some_and(|e| e.enabled_at.is_some()),
        pending: enrolment.as_ref().is_some_and(|e| e.enabled_at.is_none()),
        recovery_codes_left: db::totp::recovery_codes_left(&state.db, &me.user.id).await?,
    }))
}

/// Starts enrolling a second factor (again, if one was started and not confirmed): a new secret,
/// as an otpauth URI and a QR code. Nothing changes at sign-in until it is confirmed.
#[utoipa::path(post, path = "/v1/auth/totp", tag = "auth", security(("bearer" = [])), request_body = StartTotp,
    responses((status = 201, body = TotpEnrolment), (status = 401, body = crate::error::ErrorBody),
              (status = 409, description = "`totp_enabled`: remove the current one first", body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
async fn start(
    State(state): State<AppState>,
    me: Principal,
    Json(req): Json<StartTotp>,
) -> ApiResult<(StatusCode, Json<TotpEnrolment>)> {
    login::recheck_password(&state, &me.user, me.ip, req.password, "password").await?;
    let secret = totp::new_secret();
    let otpauth_uri = totp::uri(&secret, &me.user.username).map_err(ApiError::internal)?;
    let qr_svg = totp::qr_svg(&otpauth_uri).map_err(ApiError::internal)?;
    let now = UtcTime::now();
    let sealed = Sealed::seal(&state.secrets, field::USER_TOTP_SECRET, &secret);
    if !db::totp::start(&state.db, &me.user.id, &sealed, now).await? {
        return Err(enabled_already());
    }
    let event = NewEvent::success("user.totp_started").user(&me.user.id);
    db::events::record(&state.db, &me.actor(), event, now).await?;
    Ok((
        StatusCode::CREATED,
        Json(TotpEnrolment {
            secret,
            otpauth_uri,
            qr_svg,
        }),
    ))
}

fn enabled_already() -> ApiError {
    ApiError::conflict(
        "totp_enabled",
        "a second factor is already on: remove it before enrolling another",
    )
}

/// Turns the started second factor on with the app's first code; answers the recovery codes,
/// which are never shown again.
#[utoipa::path(post, path = "/v1/auth/totp/confirm", tag = "auth", security(("bearer" = [])), request_body = ConfirmTotp,
    responses((status = 200, body = RecoveryCodes), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody),
              (status = 409, description = "`totp_enabled`, or `totp_not_started`", body = crate::error::ErrorBody)))]
async fn confirm(
    State(state): State<AppState>,
    me: Principal,
    Json(req): Json<ConfirmTotp>,
) -> ApiResult<Json<RecoveryCodes>> {
    let now = UtcTime::now();
    let enrolment = db::totp::get(&state.db, &me.user.id).await?.ok_or_else(|| {
        ApiError::conflict("totp_not_started", "start an enrolment first: POST /v1/auth/totp")
    })?;
    if enrolment.enabled_at.is_some() {
        return Err(enabled_already());
    }
    let secret = enrolment
        .secret
        .open(&state.secrets, field::USER_TOTP_SECRET)
        .map_err(ApiError::internal)?;
    let step = totp::confirm_step(&secret, &req.code, now)
        .ok_or_else(|| ApiError::invalid("code", "not the app's current six-digit code"))?;
    let codes = totp::new_recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|c| totp::recovery_hash(c)).collect();
    let mut tx = state.db.begin().await?;
    if !db::totp::confirm(&mut *tx, &me.user.id, step, now).await? {
        return Err(enabled_already());
    }
    db::totp::set_recovery_codes(&mut tx, &me.user.id, &hashes, now).await?;
    let event = NewEvent::success("user.totp_enabled").user(&me.user.id);
    db::events::record(&mut *tx, &me.actor(), event, now).await?;
    tx.commit().await?;
    Ok(Json(RecoveryCodes {
        recovery_codes: codes,
    }))
}

/// Removes the caller's second factor, with the password and a current (or recovery) code.
#[utoipa::path(delete, path = "/v1/auth/totp", tag = "auth", security(("bearer" = [])), request_body = RemoveTotp,
    responses((status = 204), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody),
              (status = 409, description = "`totp_not_enrolled`: the account has no second factor", body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    me: Principal,
    Json(req): Json<RemoveTotp>,
) -> ApiResult<StatusCode> {
    login::recheck_password(&state, &me.user, me.ip, req.password, "password").await?;
    let now = UtcTime::now();
    let enrolled = db::totp::get(&state.db, &me.user.id).await?;
    match enrolled {
        None => return Err(not_enrolled()),
        Some(e) if e.enabled_at.is_some() => {
            if !totp::redeem(&state, &me.user, &req.code, now).await? {
                return Err(ApiError::invalid(
                    "code",
                    "not a current code or an unused recovery code",
                ));
            }
        }
        Some(_) => {}
    }
    let mut tx = state.db.begin().await?;
    db::totp::remove(&mut tx, &me.user.id, now).await?;
    let event = NewEvent::success("user.totp_removed").user(&me.user.id);
    db::events::record(&mut *tx, &me.actor(), event, now).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an account's second factor for someone who lost their device and recovery codes; they
/// sign in with the password alone until they enrol again.
#[utoipa::path(delete, path = "/v1/admin/users/{user_id}/totp", tag = "users", security(("bearer" = [])),
    params(("user_id" = Uuid, Path)),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "`totp_not_enrolled`: the account has no second factor", body = crate::error::ErrorBody)))]
async fn reset(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(user_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let user = db::users::get(&state.db, &user_id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    if !db::totp::remove(&mut tx, &user.id, now).await? {
        return Err(not_enrolled());
    }
    let event = NewEvent::success("user.totp_reset").user(&user.id);
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// 409: there is no second factor (enrolled or started) to remove.
fn not_enrolled() -> ApiError {
    ApiError::conflict("totp_not_enrolled", "the account has no second factor")
}
