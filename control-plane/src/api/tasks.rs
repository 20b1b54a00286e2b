//! Host tasks as the operator sees them: `/v1/admin/tasks…`.

use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Admin;
use crate::db::events::NewEvent;
use crate::db::tasks::{Task, TaskKind, TaskStatus};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};

use super::{PageQuery, Paginated};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskFilter {
    pub host_id: Option<Uuid>,
    pub status: Option<TaskStatus>,
    pub kind: Option<TaskKind>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks))
        .routes(routes!(get_task))
        .routes(routes!(cancel_task))
}

/// Lists tasks, newest first.
#[utoipa::path(get, path = "/v1/admin/tasks", tag = "tasks", security(("bearer" = [])),
    params(PageQuery, TaskFilter), responses((status = 200, body = Paginated<Task>)))]
async fn list_tasks(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(page): Query<PageQuery>,
    Query(filter): Query<TaskFilter>,
) -> ApiResult<Paginated<Task>> {
    let page = page.resolve()?;
    let filter = db::tasks::Filter {
        host_id: filter.host_id.map(|h| h.to_string()),
        status: filter.status,
        kind: filter.kind,
    };
    let (rows, total) = db::tasks::list(&state.db, &filter, page).await?;
    Ok(Paginated::new(rows, page, total))
}

/// One task with its progress.
#[utoipa::path(get, path = "/v1/admin/tasks/{task_id}", tag = "tasks", security(("bearer" = [])),
    params(("task_id" = Uuid, Path)),
    responses((status = 200, body = Task), (status = 404, body = crate::error::ErrorBody)))]
async fn get_task(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(task_id): Path<Uuid>,
) -> ApiResult<Json<Task>> {
    db::tasks::get(&state.db, &task_id.to_string())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("task"))
}

/// Cancels a queued task, or asks a running one to stop at its next safe point.
#[utoipa::path(post, path = "/v1/admin/tasks/{task_id}/cancel", tag = "tasks", security(("bearer" = [])),
    params(("task_id" = Uuid, Path)),
    responses((status = 200, body = Task), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn cancel_task(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(task_id): Path<Uuid>,
) -> ApiResult<Json<Task>> {
    let id = task_id.to_string();
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let before = db::tasks::get(&mut *tx, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    if before.status.is_finished() {
        return Err(ApiError::conflict(
            "task_finished",
            "the task has already finished",
        ));
    }
    let task = db::tasks::cancel(&mut *tx, &id, now)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    let event = NewEvent::success("task.cancel_requested")
        .host(&task.host_id)
        .details(serde_json::json!({ "task_id": task.id, "kind": task.kind, "status": task.status }));
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok(Json(task))
}
