//! Tenant accounts, managed by the operator: `/v1/admin/users…`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Admin, password};
use crate::db::events::NewEvent;
use crate::db::users::{Role, Status, User};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{Json, Path, Query};

use super::{PageQuery, Paginated};

/// An account as the API shows it: never the password hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub status: Status,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<UtcTime>,
    /// Whether `expires_at` has passed.
    pub expired: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UtcTime,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: UtcTime,
    /// A second factor (TOTP) is on: sign-ins by API and dashboard ask for a code.
    pub totp_enabled: bool,
}

impl UserView {
    pub fn from_user(u: &User, now: UtcTime) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username.clone(),
            role: u.role,
            status: u.status,
            expires_at: u.expires_at,
            expired: u.is_expired(now),
            created_at: u.created_at,
            updated_at: u.updated_at,
            totp_enabled: u.totp_enabled,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 3-50 characters: letters, digits, `.`, `_`, `-`, starting with a letter or digit.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{2,49}$")]
    pub username: String,
    /// 8-256 characters.
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<chrono::DateTime<chrono::FixedOffset>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    pub status: Status,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetExpiry {
    /// The new expiry, or `null` for never. The field must be present.
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub expires_at: Option<chrono::DateTime<chrono::FixedOffset>>,
}

fn present<'de, D>(d: D) -> Result<Option<chrono::DateTime<chrono::FixedOffset>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::deserialize(d)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedPassword {
    pub user_id: String,
    /// The new password, shown only in this response.
    pub password: String,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    pub status: Option<Status>,
    /// Part of the username (any case, at most 100 characters, no control characters).
    #[param(max_length = 100, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub q: Option<String>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_user, patch_user, delete_user))
        .routes(routes!(rotate_password))
        .routes(routes!(set_expiry))
}

pub fn validate_username(name: &str) -> Result<(), ApiError> {
    let len = name.chars().count();
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !(3..=50).contains(&len) || !first_ok || !rest_ok {
        return Err(ApiError::invalid(
            "username",
            "username must be 3-50 characters: letters, digits, `.`, `_`, `-`, starting with a letter or digit",
        ));
    }
    Ok(())
}

pub fn validate_password(field: &str, password: &str) -> Result<(), ApiError> {
    let len = password.chars().count();
    if !(8..=256).contains(&len) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be 8 to 256 characters"),
        ));
    }
    Ok(())
}

/// Loads a tenant or answers 404.
pub async fn tenant_or_404(state: &AppState, id: Uuid) -> ApiResult<User> {
    db::users::get_tenant(&state.db, &id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("user"))
}

/// Creates a tenant account.
#[utoipa::path(post, path = "/v1/admin/users", tag = "users", security(("bearer" = [])),
    request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 400, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(req): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    validate_username(&req.username)?;
    validate_password("password", &req.password)?;
    let now = UtcTime::now();
    let expires_at = req.expires_at.map(|t| UtcTime::from(t.to_utc()));
    let hash = password::hash_async(req.password)
        .await
        .map_err(ApiError::internal)?;
    // Read, then write: one such check at a time, across every replica.
    let mut tx = state.db.begin().await?;
    db::serialize(&mut tx, db::Serial::Usernames).await?;
    let existing = db::users::all_usernames(&mut *tx).await?;
    if crate::api::agent::linux_user_taken(&req.username, existing.iter().map(String::as_str)) {
        return Err(ApiError::conflict(
            "linux_user_taken",
            "this username would share its host account name with an existing user's; choose another",
        ));
    }
    let user = match db::users::insert(&mut *tx, &req.username, &hash, Role::User, expires_at, now).await {
        Ok(u) => u,
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict(
                "username_taken",
                "a user with this username already exists",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let event = NewEvent::success("user.created")
        .user(&user.id)
        .details(serde_json::json!({ "username": user.username, "expires_at": user.expires_at }));
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(UserView::from_user(&user, now))))
}

/// Lists tenant accounts.
#[utoipa::path(get, path = "/v1/admin/users", tag = "users", security(("bearer" = [])),
    params(PageQuery, UserFilter),
    responses((status = 200, body = Paginated<UserView>)))]
async fn list_users(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(page): Query<PageQuery>,
    Query(filter): Query<UserFilter>,
) -> ApiResult<Paginated<UserView>> {
    let page = page.resolve()?;
    let q = super::search_text(filter.q)?;
    let (rows, total) = db::users::list_tenants(&state.db, filter.status, q.as_deref(), page).await?;
    let now = UtcTime::now();
    Ok(Paginated::new(
        rows.iter().map(|u| UserView::from_user(u, now)).collect(),
        page,
        total,
    ))
}

/// One tenant account.
#[utoipa::path(get, path = "/v1/admin/users/{user_id}", tag = "users", security(("bearer" = [])),
    params(("user_id" = Uuid, Path)),
    responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_user(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(user_id): Path<Uuid>,
) -> ApiResult<Json<UserView>> {
    let user = tenant_or_404(&state, user_id).await?;
    Ok(Json(UserView::from_user(&user, UtcTime::now())))
}

/// Disables or enables an account. Disabling ends every session and token of the user at once.
#[utoipa::path(patch, path = "/v1/admin/users/{user_id}", tag = "users", security(("bearer" = [])),
    params(("user_id" = Uuid, Path)), request_body = PatchUser,
    responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody)))]
async fn patch_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(user_id): Path<Uuid>,
    Json(req): Json<PatchUser>,
) -> ApiResult<Json<UserView>> {
    let user = tenant_or_404(&state, user_id).await?;
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let updated = db::users::set_status(&mut *tx, &user.id, req.status, now)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let kind = match req.status {
        Status::Active => "user.enabled",
        Status::Disabled => "user.disabled",
    };
    db::events::record(
        &mut *tx,
        &admin.actor(),
        NewEvent::success(kind).user(&user.id),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(UserView::from_user(&updated, now)))
}

/// Deletes an account. Its hosts are removed with it: each goes to `deleting` with a delete task.
#[utoipa::path(delete, path = "/v1/admin/users/{user_id}", tag = "users", security(("bearer" = [])),
    params(("user_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
async fn delete_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(user_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let user = tenant_or_404(&state, user_id).await?;
    let now = UtcTime::now();
    let actor = admin.actor();
    let mut tx = state.db.begin().await?;
    let hosts = crate::hosts::delete_all_of_user(&mut tx, &actor, &user.id, now).await?;
    db::users::delete(&mut *tx, &user.id).await?;
    let event = NewEvent::success("user.deleted")
        .user(&user.id)
        .details(serde_json::json!({ "username": user.username, "hosts_deleting": hosts }));
    db::events::record(&mut *tx, &actor, event, now).await?;
    tx.commit().await?;
    state.wake_agents();
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the password with a generated 20-character one, returned only here.
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/rotate-password", tag = "users",
    security(("bearer" = [])), params(("user_id" = Uuid, Path)),
    responses((status = 200, body = RotatedPassword), (status = 404, body = crate::error::ErrorBody)))]
async fn rotate_password(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(user_id): Path<Uuid>,
) -> ApiResult<Json<RotatedPassword>> {
    let user = tenant_or_404(&state, user_id).await?;
    let new_password = password::generate(20);
    let hash = password::hash_async(new_password.clone())
        .await
        .map_err(ApiError::internal)?;
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    db::users::set_password(&mut *tx, &user.id, &hash, now).await?;
    db::events::record(
        &mut *tx,
        &admin.actor(),
        NewEvent::success("user.password_rotated").user(&user.id),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(RotatedPassword {
        user_id: user.id,
        password: new_password,
    }))
}

/// Sets or clears (`null`) the expiry. An expired account cannot sign in; its hosts are stopped.
#[utoipa::path(put, path = "/v1/admin/users/{user_id}/expiry", tag = "users", security(("bearer" = [])),
    params(("user_id" = Uuid, Path)), request_body = SetExpiry,
    responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody)))]
async fn set_expiry(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(user_id): Path<Uuid>,
    Json(req): Json<SetExpiry>,
) -> ApiResult<Json<UserView>> {
    let user = tenant_or_404(&state, user_id).await?;
    let now = UtcTime::now();
    let expires_at = req.expires_at.map(|t| UtcTime::from(t.to_utc()));
    let mut tx = state.db.begin().await?;
    let updated = db::users::set_expiry(&mut *tx, &user.id, expires_at, now)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let event = NewEvent::success("user.expiry_set")
        .user(&user.id)
        .details(serde_json::json!({ "expires_at": expires_at }));
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok(Json(UserView::from_user(&updated, now)))
}
