//! Durable host tasks: one row per requested action, executed per host in creation order.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Page, UtcTime};

/// The kind of a task: the agent link's own type, kept in the database by its name.
pub use wire::TaskKind;

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
    #[sqlx(try_from = "String")]
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
    /// The node the task runs or ran on.
    pub node_id: Option<String>,
    #[serde(skip)]
    #[sqlx(try_from = "super::JsonText")]
    pub params: serde_json::Value,
    #[serde(skip)]
    pub lease: Option<String>,
}

const COLUMNS: &str = "id, host_id, kind, status, progress, stage, attempts, max_attempts, error, \
    requested_by, cancel_requested, created_at, updated_at, started_at, finished_at, node_id, params, lease";

/// Retries a task gets before it is failed for good.
pub const MAX_ATTEMPTS: i64 = 3;

pub async fn insert(
    db: impl crate::db::Db<'_>,
    host_id: &str,
    kind: TaskKind,
    params: &serde_json::Value,
    requested_by: Option<&str>,
    now: UtcTime,
) -> Result<Task, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "INSERT INTO tasks (id, host_id, kind, status, progress, stage, params, attempts, max_attempts, \
         requested_by, created_at, updated_at) VALUES (?, ?, ?, 'queued', 0, 'queued', ?, 0, ?, ?, ?, ?) \
         RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(super::new_id())
            .bind(host_id)
            .bind(kind.as_str())
            .bind(params.to_string())
            .bind(MAX_ATTEMPTS)
            .bind(requested_by)
            .bind(now)
            .bind(now)
            .fetch_one(exec)
            .await
    )
}

pub async fn get(db: impl crate::db::Db<'_>, id: &str) -> Result<Option<Task>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?"),
        |exec, sql| sqlx::query_as(sql).bind(id).fetch_optional(exec).await
    )
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
    let rows = crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM tasks WHERE {cond} ORDER BY created_at DESC, id LIMIT ? OFFSET ?"),
        |exec, sql| sqlx::query_as(sql)
            .bind(&filter.host_id)
            .bind(&filter.host_id)
            .bind(filter.status)
            .bind(filter.status)
            .bind(filter.kind.map(TaskKind::as_str))
            .bind(filter.kind.map(TaskKind::as_str))
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(exec)
            .await
    )?;
    let total = crate::db::on_db!(
        db,
        &format!("SELECT COUNT(*) FROM tasks WHERE {cond}"),
        |exec, sql| sqlx::query_scalar(sql)
            .bind(&filter.host_id)
            .bind(&filter.host_id)
            .bind(filter.status)
            .bind(filter.status)
            .bind(filter.kind.map(TaskKind::as_str))
            .bind(filter.kind.map(TaskKind::as_str))
            .fetch_one(exec)
            .await
    )?;
    Ok((rows, total))
}

/// Cancels a queued task outright, or marks a running one for cancellation at its next safe point.
/// Returns the task as it now is; finished tasks are returned unchanged.
pub async fn cancel(db: impl crate::db::Db<'_>, id: &str, now: UtcTime) -> Result<Option<Task>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "UPDATE tasks SET \
           status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, \
           stage = CASE WHEN status = 'queued' THEN 'cancelled' ELSE stage END, \
           finished_at = CASE WHEN status = 'queued' THEN ? ELSE finished_at END, \
           cancel_requested = CASE WHEN status = 'running' THEN TRUE ELSE cancel_requested END, \
           updated_at = ? \
         WHERE id = ? RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(now)
            .bind(now)
            .bind(id)
            .fetch_optional(exec)
            .await
    )
}

/// Cancels every queued task of a host (used when the host is being deleted).
pub async fn cancel_queued_for_host(
    db: impl crate::db::Db<'_>,
    host_id: &str,
    now: UtcTime,
) -> Result<u64, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "UPDATE tasks SET status = 'cancelled', stage = 'superseded by delete', finished_at = ?, updated_at = ? \
         WHERE host_id = ? AND status = 'queued'",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .bind(now)
            .bind(host_id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected())
}

/// Tasks waiting, running and recently failed, for the dashboard.
#[derive(Debug, Default, Clone, Copy, Serialize, ToSchema)]
#[schema(as = TaskCounts)]
pub struct Counts {
    pub queued: i64,
    pub running: i64,
    /// Tasks that failed in the last 24 hours.
    pub failed_24h: i64,
}

pub async fn counts(db: &super::Pool, day_ago: UtcTime) -> Result<Counts, sqlx::Error> {
    let (queued, running, failed_24h): (i64, i64, i64) = crate::db::on_db!(
        db,
        "SELECT COALESCE(SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), 0), \
                COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0), \
                COALESCE(SUM(CASE WHEN status = 'failed' AND finished_at >= ? THEN 1 ELSE 0 END), 0) \
         FROM tasks",
        |exec, sql| sqlx::query_as(sql).bind(day_ago).fetch_one(exec).await
    )?;
    Ok(Counts {
        queued,
        running,
        failed_24h,
    })
}

/// Queued and running tasks, counted by kind and status.
pub async fn active_by_kind(db: &super::Pool) -> Result<Vec<(String, TaskStatus, i64)>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT kind, status, COUNT(*) FROM tasks WHERE status IN ('queued', 'running') GROUP BY kind, status",
        |exec, sql| sqlx::query_as(sql).fetch_all(exec).await
    )
}

/// The next task `node_id` may run: the oldest queued task of a host placed on that node (or not
/// placed yet), due (past its back-off), with no other task of that host running and none queued
/// before it. The caller claims it with [`claim`].
pub async fn next_for_node(
    db: impl crate::db::Db<'_>,
    node_id: &str,
    now: UtcTime,
) -> Result<Option<Task>, sqlx::Error> {
    let cols = COLUMNS
        .split(", ")
        .map(|c| format!("t.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let select = format!(
        "SELECT {cols} FROM tasks t JOIN hosts h ON h.id = t.host_id \
         WHERE t.status = 'queued' AND (t.not_before IS NULL OR t.not_before <= ?) \
           AND (h.node_id IS NULL OR h.node_id = ?) \
           AND NOT EXISTS (SELECT 1 FROM tasks r WHERE r.host_id = t.host_id AND r.status = 'running') \
           AND NOT EXISTS (SELECT 1 FROM tasks q WHERE q.host_id = t.host_id AND q.status = 'queued' \
                           AND (q.created_at < t.created_at OR (q.created_at = t.created_at AND q.id < t.id))) \
         ORDER BY t.created_at, t.id LIMIT 1"
    );
    // On PostgreSQL agents of several replicas claim at once: each locks its candidate and passes
    // over the ones others hold. A host's later task never slips ahead: while its earlier one is
    // queued (locked or not) the later one is not a candidate.
    let locking = format!("{select} FOR UPDATE OF t SKIP LOCKED");
    crate::db::on_db!(
        db,
        sqlite: &select,
        postgres: &locking,
        |exec, sql| sqlx::query_as(sql)
            .bind(now)
            .bind(node_id)
            .fetch_optional(exec)
            .await
    )
}

/// Moves a queued task to running under a new lease. `None` if someone else claimed it first.
pub async fn claim(
    db: impl crate::db::Db<'_>,
    id: &str,
    node_id: &str,
    lease: &str,
    lease_until: UtcTime,
    now: UtcTime,
) -> Result<Option<Task>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "UPDATE tasks SET status = 'running', attempts = attempts + 1, lease = ?, lease_until = ?, node_id = ?, \
           stage = 'starting', started_at = COALESCE(started_at, ?), updated_at = ? \
         WHERE id = ? AND status = 'queued' RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(lease)
            .bind(lease_until)
            .bind(node_id)
            .bind(now)
            .bind(now)
            .bind(id)
            .fetch_optional(exec)
            .await
    )
}

/// Records progress and renews the lease; `None` when `lease` is no longer the task's.
pub async fn progress(
    db: impl crate::db::Db<'_>,
    id: &str,
    lease: &str,
    percent: i64,
    stage: &str,
    lease_until: UtcTime,
    now: UtcTime,
) -> Result<Option<Task>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "UPDATE tasks SET progress = CASE WHEN progress > ?1 THEN progress ELSE ?1 END, stage = ?2, \
         lease_until = ?3, updated_at = ?4 WHERE id = ?5 AND lease = ?6 AND status = 'running' RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(percent.clamp(0, 100))
            .bind(stage)
            .bind(lease_until)
            .bind(now)
            .bind(id)
            .bind(lease)
            .fetch_optional(exec)
            .await
    )
}

/// Where a running attempt ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Succeeded,
    Cancelled,
    Failed {
        error: String,
    },
    /// Back to the queue, due at `not_before`.
    Retry {
        error: String,
        not_before: UtcTime,
    },
}

/// Ends the running attempt holding `lease`. `None` when the lease is stale (the report is ignored).
pub async fn finish(
    db: impl crate::db::Db<'_>,
    id: &str,
    lease: &str,
    finish: &Finish,
    now: UtcTime,
) -> Result<Option<Task>, sqlx::Error> {
    let (status, stage, progress, error, not_before, finished) = match finish {
        Finish::Succeeded => ("succeeded", "done".to_owned(), Some(100), None, None, Some(now)),
        Finish::Cancelled => ("cancelled", "cancelled".to_owned(), None, None, None, Some(now)),
        Finish::Failed { error } => (
            "failed",
            "failed".to_owned(),
            None,
            Some(error.clone()),
            None,
            Some(now),
        ),
        Finish::Retry { error, not_before } => (
            "queued",
            format!("retrying at {not_before}"),
            None,
            Some(error.clone()),
            Some(*not_before),
            None,
        ),
    };
    crate::db::on_db!(
        db,
        &format!(
            "UPDATE tasks SET status = ?, stage = ?, progress = COALESCE(?, progress), error = ?, not_before = ?, \
           finished_at = ?, lease = NULL, lease_until = NULL, updated_at = ? \
         WHERE id = ? AND lease = ? AND status = 'running' RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(status)
            .bind(stage)
            .bind(progress)
            .bind(error)
            .bind(not_before)
            .bind(finished)
            .bind(now)
            .bind(id)
            .bind(lease)
            .fetch_optional(exec)
            .await
    )
}

/// Running tasks whose lease ran out (their agent died or lost the control plane for too long).
pub async fn expired_leases(db: impl crate::db::Db<'_>, now: UtcTime) -> Result<Vec<Task>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "SELECT {COLUMNS} FROM tasks WHERE status = 'running' AND lease_until IS NOT NULL AND lease_until < ?"
        ),
        |exec, sql| sqlx::query_as(sql).bind(now).fetch_all(exec).await
    )
}

/// The hosts placed on `node_id` that have a task queued or running: one query for a heartbeat.
pub async fn busy_on_node(
    db: impl crate::db::Db<'_>,
    node_id: &str,
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let ids: Vec<String> = crate::db::on_db!(
        db,
        "SELECT DISTINCT t.host_id FROM tasks t JOIN hosts h ON h.id = t.host_id \
         WHERE h.node_id = ? AND t.status IN ('queued', 'running')",
        |exec, sql| sqlx::query_scalar(sql).bind(node_id).fetch_all(exec).await
    )?;
    Ok(ids.into_iter().collect())
}

/// Running tasks attempted on `node_id` (their agent restarted, so nobody is running them any more).
pub async fn running_on_node(db: impl crate::db::Db<'_>, node_id: &str) -> Result<Vec<Task>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM tasks WHERE status = 'running' AND node_id = ?"),
        |exec, sql| sqlx::query_as(sql).bind(node_id).fetch_all(exec).await
    )
}

/// The newest queued or running task of a host: the last thing that will happen to it.
pub async fn latest_active_for_host(
    db: impl crate::db::Db<'_>,
    host_id: &str,
) -> Result<Option<Task>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "SELECT {COLUMNS} FROM tasks WHERE host_id = ? AND status IN ('queued', 'running') \
         ORDER BY created_at DESC, id DESC LIMIT 1"
        ),
        |exec, sql| sqlx::query_as(sql).bind(host_id).fetch_optional(exec).await
    )
}
