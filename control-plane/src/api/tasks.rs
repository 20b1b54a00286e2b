//! Host tasks as the operator sees them: `/v1/admin/tasks…`.

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
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
        .routes(routes!(task_events))
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
    // A queued task ends here; a running one ends when its agent reports (`publish_task`).
    state.metrics.task_finished(&task);
    Ok(Json(task))
}

/// Progress of one task as server-sent events: the current state first, then every change, until
/// the task finishes. Each event is named `task` and carries the task as JSON.
#[utoipa::path(get, path = "/v1/admin/tasks/{task_id}/events", tag = "tasks", security(("bearer" = [])),
    params(("task_id" = Uuid, Path)),
    responses((status = 200, description = "text/event-stream of task states"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 429, description = "the account holds too many live connections open", body = crate::error::ErrorBody)))]
async fn task_events(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(task_id): Path<Uuid>,
) -> ApiResult<Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>> + use<>>> {
    let slot = state.live.open(&admin.user.id)?;
    // Subscribe before reading the row so no change between the two is missed.
    let updates = state.task_updates.subscribe();
    let current = db::tasks::get(&state.db, &task_id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    Ok(progress_stream(&state, slot, updates, current))
}

/// How long a progress stream waits for a change before it reads its task again.
const REREAD_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// What a progress stream follows.
struct Watch {
    id: String,
    /// The time of the last state sent.
    seen: crate::db::UtcTime,
    finished: bool,
    db: crate::db::Pool,
}

/// The `task` events of one task, from `current` until it finishes. `updates` must have been
/// subscribed before `current` was read, so that no change between the two is missed. `slot` is
/// the account's live connection, held until the stream ends.
pub fn progress_stream(
    state: &AppState,
    slot: crate::live::Slot,
    updates: tokio::sync::broadcast::Receiver<Task>,
    current: Task,
) -> Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>> + use<>> {
    use tokio::sync::broadcast::error::RecvError;

    let to_event = |t: &Task| {
        Event::default()
            .event("task")
            .json_data(t)
            .unwrap_or_else(|_| Event::default())
    };
    let first = to_event(&current);
    let watch = Watch {
        finished: current.status.is_finished(),
        id: current.id.clone(),
        seen: current.updated_at,
        db: state.db.clone(),
    };
    let stream = futures::stream::unfold(
        (Some(first), watch, updates),
        move |(pending, mut watch, mut updates)| async move {
            if let Some(event) = pending {
                return Some((Ok(event), (None, watch, updates)));
            }
            if watch.finished {
                return None;
            }
            loop {
                // A change made through another replica arrives as a notification; should that be
                // lost, the task is read again after a quiet spell.
                let task = match tokio::time::timeout(REREAD_AFTER, updates.recv()).await {
                    Ok(Ok(task)) if task.id == watch.id => task,
                    Ok(Ok(_)) => continue,
                    Ok(Err(RecvError::Closed)) => return None,
                    // Fell behind, or heard nothing for a while: read it from the database.
                    Ok(Err(RecvError::Lagged(_))) | Err(_) => {
                        match db::tasks::get(&watch.db, &watch.id).await {
                            Ok(Some(task)) => task,
                            _ => return None,
                        }
                    }
                };
                // Changes already sent (or in the first snapshot) are not sent twice.
                if task.updated_at <= watch.seen {
                    continue;
                }
                watch.seen = task.updated_at;
                watch.finished = task.status.is_finished();
                return Some((Ok(to_event(&task)), (None, watch, updates)));
            }
        },
    );
    // The slot lives inside the stream, so it is given back when the client goes away.
    let stream = futures::StreamExt::map(stream, move |event| {
        let _held = &slot;
        event
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
