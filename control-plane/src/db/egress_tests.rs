//! Egress tests in flight: queued by the API, claimed and answered by an agent.

use super::UtcTime;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EgressTest {
    pub id: String,
    pub egress_ip_id: String,
    pub status: String,
    pub node_id: Option<String>,
    /// JSON array of `wire::CheckResult`.
    pub checks: Option<String>,
    pub created_at: UtcTime,
    pub deadline: UtcTime,
    pub finished_at: Option<UtcTime>,
}

const COLUMNS: &str = "id, egress_ip_id, status, node_id, checks, created_at, deadline, finished_at";

pub async fn insert(
    db: impl crate::db::Db<'_>,
    egress_ip_id: &str,
    now: UtcTime,
    deadline: UtcTime,
) -> Result<EgressTest, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "INSERT INTO egress_tests (id, egress_ip_id, status, created_at, deadline) \
         VALUES (?, ?, 'queued', ?, ?) RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(super::new_id())
            .bind(egress_ip_id)
            .bind(now)
            .bind(deadline)
            .fetch_one(exec)
            .await
    )
}

pub async fn get(db: impl crate::db::Db<'_>, id: &str) -> Result<Option<EgressTest>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM egress_tests WHERE id = ?"),
        |exec, sql| sqlx::query_as(sql).bind(id).fetch_optional(exec).await
    )
}

/// Hands the oldest queued test that is still in time to `node_id`.
pub async fn claim(
    db: impl crate::db::Db<'_>,
    node_id: &str,
    now: UtcTime,
) -> Result<Option<EgressTest>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "UPDATE egress_tests SET status = 'running', node_id = ? \
         WHERE id = (SELECT id FROM egress_tests WHERE status = 'queued' AND deadline > ? \
                     ORDER BY created_at, id LIMIT 1) \
         RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(node_id)
            .bind(now)
            .fetch_optional(exec)
            .await
    )
}

/// Stores the agent's checks; only the node that claimed the test, and only once.
pub async fn finish(
    db: impl crate::db::Db<'_>,
    id: &str,
    node_id: &str,
    checks: &str,
    now: UtcTime,
) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "UPDATE egress_tests SET status = 'done', checks = ?, finished_at = ? \
         WHERE id = ? AND node_id = ? AND status = 'running'",
        |exec, sql| sqlx::query(sql)
            .bind(checks)
            .bind(now)
            .bind(id)
            .bind(node_id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() > 0)
}

/// Gives up on a test nobody answered in time (a late report is then refused).
pub async fn expire(db: impl crate::db::Db<'_>, id: &str, now: UtcTime) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "UPDATE egress_tests SET status = 'expired', finished_at = ? WHERE id = ? AND status IN ('queued', 'running')",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() > 0)
}

/// Removes finished tests older than `before`.
pub async fn purge(db: impl crate::db::Db<'_>, before: UtcTime) -> Result<u64, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "DELETE FROM egress_tests WHERE created_at < ?",
        |exec, sql| sqlx::query(sql)
            .bind(before)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected())
}
