//! Dashboard sessions: a row per signed-in browser, found by the hash of the cookie's secret.

use super::UtcTime;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebSession {
    pub id: String,
    pub user_id: String,
    /// The account's `token_version` at sign-in; a password change or a disable ends the session.
    pub token_version: i64,
    pub csrf_token: String,
    pub created_at: UtcTime,
    pub last_seen_at: UtcTime,
    pub expires_at: UtcTime,
}

const COLUMNS: &str = "id, user_id, token_version, csrf_token, created_at, last_seen_at, expires_at";

/// What a new session row holds besides its generated id.
#[derive(Debug)]
pub struct NewWebSession<'a> {
    pub secret_hash: &'a str,
    pub user_id: &'a str,
    pub token_version: i64,
    pub csrf_token: &'a str,
    pub ip: Option<&'a str>,
    pub expires_at: UtcTime,
}

pub async fn insert(
    db: impl crate::db::Db<'_>,
    new: &NewWebSession<'_>,
    now: UtcTime,
) -> Result<WebSession, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "INSERT INTO web_sessions (id, secret_hash, user_id, token_version, csrf_token, ip, created_at, \
         last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(super::new_id())
            .bind(new.secret_hash)
            .bind(new.user_id)
            .bind(new.token_version)
            .bind(new.csrf_token)
            .bind(new.ip)
            .bind(now)
            .bind(now)
            .bind(new.expires_at)
            .fetch_one(exec)
            .await
    )
}

/// The unexpired session whose cookie secret hashes to `secret_hash`.
pub async fn find(
    db: impl crate::db::Db<'_>,
    secret_hash: &str,
    now: UtcTime,
) -> Result<Option<WebSession>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM web_sessions WHERE secret_hash = ? AND expires_at > ?"),
        |exec, sql| sqlx::query_as(sql)
            .bind(secret_hash)
            .bind(now)
            .fetch_optional(exec)
            .await
    )
}

/// Notes that the session was used; written at most once a minute per session.
pub async fn touch(db: impl crate::db::Db<'_>, id: &str, now: UtcTime) -> Result<(), sqlx::Error> {
    let stale = UtcTime::from(now.0 - chrono::Duration::seconds(60));
    crate::db::on_db!(
        db,
        "UPDATE web_sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .bind(id)
            .bind(stale)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

/// Ends one session; `false` when it was already gone.
pub async fn delete(db: impl crate::db::Db<'_>, id: &str) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(db, "DELETE FROM web_sessions WHERE id = ?", |exec, sql| {
        sqlx::query(sql)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    })?;
    Ok(done.rows_affected() > 0)
}

/// Removes sessions past their expiry.
pub async fn delete_expired(db: impl crate::db::Db<'_>, now: UtcTime) -> Result<u64, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "DELETE FROM web_sessions WHERE expires_at <= ?",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected())
}
