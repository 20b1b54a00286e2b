//! The tenant's own portal: `/v1/user/…` (password, own hosts). SSH keys live in `ssh_keys`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Tenant, password};
use crate::db::events::NewEvent;
use crate::db::hosts::Host;
use crate::db::tasks::{Task, TaskKind};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};

use super::hosts::{HostView, RebuildOptions, queue_action};
use super::{PageQuery, Paginated};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub old_password: String,
    /// 8-256 characters.
    #[schema(min_length = 8, max_length = 256)]
    pub new_password: String,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(change_password))
        .routes(routes!(list_own_hosts))
        .routes(routes!(get_own_host))
        .routes(routes!(rebuild_own_host))
        .routes(routes!(start_own_host))
        .routes(routes!(get_own_task))
        .routes(routes!(own_task_events))
}

/// Starts one of the caller's hosts when it is stopped (what the bootstrap script does after a
/// password); follow it with `/v1/user/tasks/{task_id}/events`.
#[utoipa::path(post, path = "/v1/user/hosts/{host_id}/start", tag = "portal", security(("bearer" = [])),
    params(("host_id" = Uuid, Path)),
    responses((status = 202, body = Task), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn start_own_host(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Path(host_id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let host = own_host_or_404(&state, &me.user.id, host_id).await?;
    queue_action(&state, &me.actor(), &host, TaskKind::Start, serde_json::json!({})).await
}

/// A task of one of the caller's hosts; another tenant's (or the operator's own) is 404.
async fn own_task_or_404(state: &AppState, user_id: &str, task_id: Uuid) -> ApiResult<Task> {
    let task = db::tasks::get(&state.db, &task_id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    match db::hosts::get_owned(&state.db, &task.host_id, user_id).await? {
        Some(_) => Ok(task),
        None => Err(ApiError::not_found("task")),
    }
}

/// One task of the caller's hosts, with its progress.
#[utoipa::path(get, path = "/v1/user/tasks/{task_id}", tag = "portal", security(("bearer" = [])),
    params(("task_id" = Uuid, Path)),
    responses((status = 200, body = Task), (status = 404, body = crate::error::ErrorBody)))]
async fn get_own_task(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Path(task_id): Path<Uuid>,
) -> ApiResult<Json<Task>> {
    Ok(Json(own_task_or_404(&state, &me.user.id, task_id).await?))
}

/// Progress of one task of the caller's hosts as server-sent events, as
/// `/v1/admin/tasks/{task_id}/events`.
#[utoipa::path(get, path = "/v1/user/tasks/{task_id}/events", tag = "portal", security(("bearer" = [])),
    params(("task_id" = Uuid, Path)),
    responses((status = 200, description = "text/event-stream of task states"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 429, description = "the account holds too many live connections open", body = crate::error::ErrorBody)))]
async fn own_task_events(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Path(task_id): Path<Uuid>,
) -> ApiResult<
    axum::response::Sse<
        impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>> + use<>,
    >,
> {
    let slot = state.live.open(&me.user.id)?;
    // Subscribed before the task is read, so no change between the two is missed.
    let updates = state.task_updates.subscribe();
    let task = own_task_or_404(&state, &me.user.id, task_id).await?;
    Ok(super::tasks::progress_stream(&state, slot, updates, task))
}

async fn own_host_or_404(state: &AppState, user_id: &str, host_id: Uuid) -> ApiResult<Host> {
    db::hosts::get_owned(&state.db, &host_id.to_string(), user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("host"))
}

/// Changes the caller's password. Every other session and token of the caller ends.
#[utoipa::path(post, path = "/v1/user/change-password", tag = "portal", security(("bearer" = [])),
    request_body = ChangePassword,
    responses((status = 204), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
async fn change_password(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Json(req): Json<ChangePassword>,
) -> ApiResult<StatusCode> {
    super::users::validate_password("new_password", &req.new_password)?;
    let now = UtcTime::now();
    if let Err(e) =
        crate::auth::login::recheck_password(&state, &me.user, me.ip, req.old_password, "old_password").await
    {
        if e.status == StatusCode::UNAUTHORIZED {
            let event = NewEvent::failure("user.password_change_failed").user(&me.user.id);
            db::events::record(&state.db, &me.actor(), event, now).await?;
            return Err(ApiError {
                field: Some("old_password".into()),
                ..ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the old password is wrong",
                )
            });
        }
        return Err(e);
    }
    let hash = password::hash_async(req.new_password)
        .await
        .map_err(ApiError::internal)?;
    let mut tx = state.db.begin().await?;
    db::users::set_password(&mut *tx, &me.user.id, &hash, now).await?;
    db::events::record(
        &mut *tx,
        &me.actor(),
        NewEvent::success("user.password_changed").user(&me.user.id),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's hosts.
#[utoipa::path(get, path = "/v1/user/hosts", tag = "portal", security(("bearer" = [])),
    params(PageQuery), responses((status = 200, body = Paginated<HostView>)))]
async fn list_own_hosts(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Query(page): Query<PageQuery>,
) -> ApiResult<Paginated<HostView>> {
    let page = page.resolve()?;
    let filter = db::hosts::Filter {
        user_id: Some(me.user.id.clone()),
        status: None,
        q: None,
    };
    let (rows, total) = db::hosts::list(&state.db, &filter, page).await?;
    Ok(Paginated::new(
        rows.iter().map(|h| HostView::new(&state, h)).collect(),
        page,
        total,
    ))
}

/// One of the caller's hosts, with its access commands.
#[utoipa::path(get, path = "/v1/user/hosts/{host_id}", tag = "portal", security(("bearer" = [])),
    params(("host_id" = Uuid, Path)),
    responses((status = 200, body = HostView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_own_host(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Path(host_id): Path<Uuid>,
) -> ApiResult<Json<HostView>> {
    let host = own_host_or_404(&state, &me.user.id, host_id).await?;
    Ok(Json(HostView::new(&state, &host)))
}

/// Recreates one of the caller's hosts from the managed image; the home volume is kept unless `wipe`.
#[utoipa::path(post, path = "/v1/user/hosts/{host_id}/rebuild", tag = "portal", security(("bearer" = [])),
    params(("host_id" = Uuid, Path)), request_body(content = Option<RebuildOptions>),
    responses((status = 202, body = Task), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn rebuild_own_host(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Path(host_id): Path<Uuid>,
    body: Option<Json<RebuildOptions>>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let host = own_host_or_404(&state, &me.user.id, host_id).await?;
    let wipe = body.map(|Json(o)| o.wipe).unwrap_or(false);
    queue_action(
        &state,
        &me.actor(),
        &host,
        TaskKind::Rebuild,
        serde_json::json!({ "wipe": wipe }),
    )
    .await
}
