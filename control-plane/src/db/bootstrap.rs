//! Bootstrap sessions: one per right password on the bootstrap or entry route, naming the host the
//! caller may reach, the host task that brings it up, and whether the single-use SSH secret was
//! already handed out.

use super::UtcTime;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub host_id: String,
    pub task_id: Option<String>,
    pub secret_hash: String,
    pub created_at: UtcTime,
    pub expires_at: UtcTime,
    pub handoff_at: Option<UtcTime>,
}

const COLUMNS: &str = "id, user_id, host_id, task_id, secret_hash, created_at, expires_at, handoff_at";

pub struct NewSession<'a> {
    pub user_id: &'a str,
    pub host_id: &'a str,
    pub task_id: Option<&'a str>,
    /// The session secret in clear; only its hash is stored.
    pub secret: &'a str,
    pub expires_at: UtcTime,
    /// Set when the SSH secret goes out with the answer that creates the session.
    pub handoff_at: Option<UtcTime>,
}

pub async fn insert(
    db: impl crate::db::Db<'_>,
    s: NewSession<'_>,
    now: UtcTime,
) -> Result<Session, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "INSERT INTO bootstrap_sessions (id, user_id, host_id, task_id, secret_hash, created_at, expires_at, \
         handoff_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(super::new_id())
            .bind(s.user_id)
            .bind(s.host_id)
            .bind(s.task_id)
            .bind(super::handoffs::hash(s.secret))
            .bind(now)
            .bind(s.expires_at)
            .bind(s.handoff_at)
            .fetch_one(exec)
            .await
    )
}

/// A session that has not expired yet.
pub async fn get_live(
    db: impl crate::db::Db<'_>,
    id: &str,
    now: UtcTime,
) -> Result<Option<Session>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM bootstrap_sessions WHERE id = ? AND expires_at > ?"),
        |exec, sql| sqlx::query_as(sql).bind(id).bind(now).fetch_optional(exec).await
    )
}

/// Marks the handoff of a live session done if `secret` is its secret and it was not done before;
/// true when this call did it. One statement, so two racing calls cannot both get an SSH secret.
pub async fn take_handoff(
    db: impl crate::db::Db<'_>,
    id: &str,
    secret: &str,
    now: UtcTime,
) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "UPDATE bootstrap_sessions SET handoff_at = ? \
         WHERE id = ? AND secret_hash = ? AND handoff_at IS NULL AND expires_at > ?",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .bind(id)
            .bind(super::handoffs::hash(secret))
            .bind(now)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() == 1)
}

/// Deletes sessions that expired before `before`.
pub async fn purge_expired(db: impl crate::db::Db<'_>, before: UtcTime) -> Result<u64, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "DELETE FROM bootstrap_sessions WHERE expires_at < ?",
        |exec, sql| sqlx::query(sql)
            .bind(before)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected())
}
