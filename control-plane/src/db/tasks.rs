//! Durable host tasks: one row per requested action, executed per host in creation order.

use serde::{Deserialize, Serialize};
use sqlx::SqliteExecutor;
use utoipa::ToSchema;

use super::{Page, UtcTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Create,
    Start,
    Stop,
    Rebuild,
    Delete,
    RotateSshPassword,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Rebuild => "rebuild",
            Self::Delete => "delete",
            Self::RotateSshPassword => "rotate_ssh_password",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Task {
    pub id: String,
    pub host_id: String,
    pub kind: TaskKind,
    pub status: TaskStatus,
    /// 0-100.
    pub progress: i64,
    /// What the task is doing now, in words.
    pub stage: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub error: Option<String>,
    pub requested_by: Option<String>,
    /// Cancellation was asked for while the task was running; it stops at its next safe point.
    pub cancel_requested: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UtcTime,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: UtcTime,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<UtcTime>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<UtcTime>,
    #[serde(skip)]
    #[sqlx(json)]
    pub params: serde_json::Value,
}

const COLUMNS: &str = "id, host_id, kind, status, progress, stage, attempts, max_attempts, error, \
    requested_by, cancel_requested, created_at, updated_at, started_at, finished_at, params";

/// Retries a task gets before it is failed for good.
pub const MAX_ATTEMPTS: i64 = 3;

pub async fn insert(
    db: impl SqliteExecutor<'_>,
    host_id: &str,
    kind: TaskKind,
    params: &serde_json::Value,
    requested_by: Option<&str>,
    now: UtcTime,
) -> Result<Task, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO tasks (id, host_id, kind, status, progress, stage, params, attempts, max_attempts, \
         requested_by, created_at, updated_at) VALUES (?, ?, ?, 'queued', 0, 'queued', ?, 0, ?, ?, ?, ?) \
         RETURNING {COLUMNS}"
    ))
    .bind(super::new_id())
    .bind(host_id)
    .bind(kind)
    .bind(params.to_string())
    .bind(MAX_ATTEMPTS)
    .bind(requested_by)
    .bind(now)
    .bind(now)
    .fetch_one(db)
    .await
}

pub async fn get(db: impl SqliteExecutor<'_>, id: &str) -> Result<Option<Task>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?"))
        .bind(id)
        .fetch_optional(db)
        .await
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub host_id: Option<String>,
    pub status: Option<TaskStatus>,
    pub kind: Option<TaskKind>,
}

/// Newest first.
pub async fn list(db: &super::Pool, filter: &Filter, page: Page) -> Result<(Vec<Task>, i64), sqlx::Error> {
    let cond = "(? IS NULL OR host_id = ?) AND (? IS NULL OR status = ?) AND (? IS NULL OR kind = ?)";
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE {cond} ORDER BY created_at DESC, id LIMIT ? OFFSET ?"
    ))
    .bind(&filter.host_id)
    .bind(&filter.host_id)
    .bind(filter.status)
    .bind(filter.status)
    .bind(filter.kind)
    .bind(filter.kind)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM tasks WHERE {cond}"))
        .bind(&filter.host_id)
        .bind(&filter.host_id)
        .bind(filter.status)
        .bind(filter.status)
        .bind(filter.kind)
        .bind(filter.kind)
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}

/// Cancels a queued task outright, or marks a running one for cancellation at its next safe point.
/// Returns the task as it now is; finished tasks are returned unchanged.
pub async fn cancel(
    db: impl SqliteExecutor<'_>,
    id: &str,
    now: UtcTime,
) -> Result<Option<Task>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE tasks SET \
           status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, \
           stage = CASE WHEN status = 'queued' THEN 'cancelled' ELSE stage END, \
           finished_at = CASE WHEN status = 'queued' THEN ? ELSE finished_at END, \
           cancel_requested = CASE WHEN status = 'running' THEN 1 ELSE cancel_requested END, \
           updated_at = ? \
         WHERE id = ? RETURNING {COLUMNS}"
    ))
    .bind(now)
    .bind(now)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Cancels every queued task of a host (used when the host is being deleted).
pub async fn cancel_queued_for_host(
    db: impl SqliteExecutor<'_>,
    host_id: &str,
    now: UtcTime,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE tasks SET status = 'cancelled', stage = 'superseded by delete', finished_at = ?, updated_at = ? \
         WHERE host_id = ? AND status = 'queued'",
    )
    .bind(now)
    .bind(now)
    .bind(host_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

#[derive(Debug, Default, Clone, Copy, Serialize, ToSchema)]
pub struct Counts {
    pub queued: i64,
    pub running: i64,
    /// Tasks that failed in the last 24 hours.
    pub failed_24h: i64,
}

pub async fn counts(db: &super::Pool, day_ago: UtcTime) -> Result<Counts, sqlx::Error> {
    let (queued, running, failed_24h): (i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), 0), \
                COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0), \
                COALESCE(SUM(CASE WHEN status = 'failed' AND finished_at >= ? THEN 1 ELSE 0 END), 0) \
         FROM tasks",
    )
    .bind(day_ago)
    .fetch_one(db)
    .await?;
    Ok(Counts {
        queued,
        running,
        failed_24h,
    })
}
