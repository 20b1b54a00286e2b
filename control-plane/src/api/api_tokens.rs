//! Personal API tokens for scripts: `/v1/auth/api-tokens…`. Any signed-in account manages its own.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Credential;
use crate::auth::Principal;
use crate::db::api_tokens::{ApiToken, Scope};
use crate::db::events::NewEvent;
use crate::db::users::Role;
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};

use super::{PageQuery, Paginated};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for (1-64 printable characters).
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub name: String,
    /// Lifetime in days, 1-365 (default 30). A token made with another API token may not outlive it.
    #[schema(minimum = 1, maximum = 365)]
    pub expires_in_days: Option<u32>,
    /// `full` (default: everything the account may do), `read` (GET requests only) or `metrics`
    /// (`GET /metrics` only; operators only). A token made with another API token may not have a
    /// scope its own does not cover.
    pub scope: Option<Scope>,
}

/// Most live (unexpired, unrevoked) tokens one account may hold.
pub const MAX_LIVE_TOKENS_PER_USER: i64 = 50;

/// Why a token made with `credential` may not have `scope` and `expires_at`; `None` when it may.
/// Sessions and the dashboard may mint anything; an API token only what does not outgrow it.
pub fn mint_refusal(credential: &Credential, scope: Scope, expires_at: UtcTime) -> Option<ApiError> {
    let Credential::ApiToken {
        scope: own_scope,
        expires_at: own_expiry,
        ..
    } = credential
    else {
        return None;
    };
    if !own_scope.covers(scope) {
        return Some(ApiError::insufficient_scope(
            "an API token cannot make a token with a scope its own does not cover",
        ));
    }
    if expires_at > *own_expiry {
        return Some(ApiError::invalid(
            "expires_in_days",
            format!(
                "a token made with an API token cannot outlive it (it expires at {})",
                own_expiry.0.to_rfc3339()
            ),
        ));
    }
    None
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: ApiToken,
    /// The token itself, shown only in this response. Send it as `Authorization: Bearer …`.
    pub token: String,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

/// Creates a personal API token that acts as the caller (`full`) or reads as the caller (`read`) until
/// it expires or is revoked.
#[utoipa::path(post, path = "/v1/auth/api-tokens", tag = "auth", security(("bearer" = [])),
    request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = crate::error::ErrorBody),
              (status = 403, description = "`insufficient_scope`", body = crate::error::ErrorBody),
              (status = 409, description = "`too_many_tokens`", body = crate::error::ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    me: Principal,
    Json(req): Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let len = req.name.chars().count();
    if !(1..=64).contains(&len) || req.name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "name must be 1-64 printable characters",
        ));
    }
    let days = req.expires_in_days.unwrap_or(30);
    if !(1..=365).contains(&days) {
        return Err(ApiError::invalid(
            "expires_in_days",
            "expires_in_days must be 1 to 365",
        ));
    }
    let scope = req.scope.unwrap_or_default();
    if scope == Scope::Metrics && me.user.role != Role::Admin {
        // A well-formed request this caller may not make: refused as forbidden, not as bad input.
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the `metrics` scope is for operators: only they may read /metrics",
        ));
    }
    let now = UtcTime::now();
    let expires_at = UtcTime::from(now.0 + chrono::Duration::days(i64::from(days)));
    if let Some(refusal) = mint_refusal(&me.credential, scope, expires_at) {
        return Err(refusal);
    }
    let (token, hash) = state.keys.new_api_token();
    let prefix: String = token.chars().take(10).collect();
    let mut tx = state.db.begin().await?;
    if db::api_tokens::count_live(&mut *tx, &me.user.id, now).await? >= MAX_LIVE_TOKENS_PER_USER {
        return Err(ApiError::conflict(
            "too_many_tokens",
            format!(
                "an account may hold at most {MAX_LIVE_TOKENS_PER_USER} live API tokens: revoke one first"
            ),
        ));
    }
    let new = db::api_tokens::NewToken {
        name: &req.name,
        token_hash: &hash,
        prefix: &prefix,
        scope,
        expires_at,
    };
    let info = db::api_tokens::insert(&mut *tx, &me.user, new, now).await?;
    let event = NewEvent::success("api_token.created")
        .user(&me.user.id)
        .details(serde_json::json!({
            "token_id": info.id, "name": info.name, "expires_at": info.expires_at, "scope": info.scope,
        }));
    db::events::record(&mut *tx, &me.actor(), event, now).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token })))
}

/// The caller's API tokens (never the secrets).
#[utoipa::path(get, path = "/v1/auth/api-tokens", tag = "auth", security(("bearer" = [])),
    params(PageQuery), responses((status = 200, body = Paginated<ApiToken>)))]
async fn list_tokens(
    State(state): State<AppState>,
    me: Principal,
    Query(page): Query<PageQuery>,
) -> ApiResult<Paginated<ApiToken>> {
    let page = page.resolve()?;
    let (rows, total) = db::api_tokens::list_for_user(&state.db, &me.user.id, page).await?;
    Ok(Paginated::new(rows, page, total))
}

/// Revokes one of the caller's API tokens; it stops working at once.
#[utoipa::path(delete, path = "/v1/auth/api-tokens/{token_id}", tag = "auth", security(("bearer" = [])),
    params(("token_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    me: Principal,
    Path(token_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    db::api_tokens::revoke(&mut *tx, &me.user.id, &token_id.to_string(), now)
        .await?
        .ok_or_else(|| ApiError::not_found("API token"))?;
    let event = NewEvent::success("api_token.revoked")
        .user(&me.user.id)
        .details(serde_json::json!({ "token_id": token_id }));
    db::events::record(&mut *tx, &me.actor(), event, now).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_mints_nothing_wider_or_longer_lived_than_itself() {
        let now = UtcTime::now();
        let days = |d: i64| UtcTime::from(now.0 + chrono::Duration::days(d));
        let token = |scope, expires_at| Credential::ApiToken {
            token_id: "t".into(),
            scope,
            expires_at,
        };
        let cases = [
            (Credential::Session, Scope::Full, days(365), None),
            (
                Credential::WebSession {
                    session_id: "s".into(),
                },
                Scope::Full,
                days(365),
                None,
            ),
            (token(Scope::Full, days(10)), Scope::Full, days(10), None),
            (token(Scope::Full, days(10)), Scope::Read, days(5), None),
            (
                token(Scope::Full, days(1)),
                Scope::Full,
                days(2),
                Some("validation_failed"),
            ),
            (token(Scope::Read, days(10)), Scope::Read, days(5), None),
            (
                token(Scope::Read, days(10)),
                Scope::Full,
                days(5),
                Some("insufficient_scope"),
            ),
            (token(Scope::Full, days(10)), Scope::Metrics, days(5), None),
            (token(Scope::Metrics, days(10)), Scope::Metrics, days(5), None),
            (
                token(Scope::Read, days(10)),
                Scope::Metrics,
                days(5),
                Some("insufficient_scope"),
            ),
            (
                token(Scope::Metrics, days(10)),
                Scope::Read,
                days(5),
                Some("insufficient_scope"),
            ),
        ];
        for (credential, scope, expires_at, want) in cases {
            let got = mint_refusal(&credential, scope, expires_at).map(|e| e.code);
            assert_eq!(got, want, "{credential:?} {scope:?}");
        }
    }
}
