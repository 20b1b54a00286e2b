//! Accounts: the operator (role `admin`) and tenants (role `user`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Page, UtcTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Disabled,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub status: Status,
    pub expires_at: Option<UtcTime>,
    pub token_version: i64,
    pub created_at: UtcTime,
    pub updated_at: UtcTime,
    /// A second factor (TOTP) is enrolled and confirmed.
    pub totp_enabled: bool,
}

impl User {
    pub fn is_expired(&self, now: UtcTime) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
    /// Whether the account may sign in and use its tokens right now.
    pub fn is_usable(&self, now: UtcTime) -> bool {
        self.status == Status::Active && !self.is_expired(now)
    }
}

/// Tenants whose expiry has passed and has not been acted on yet: `(id, expires_at)`.
pub async fn newly_expired(
    db: impl crate::db::Db<'_>,
    now: UtcTime,
) -> Result<Vec<(String, UtcTime)>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT id, expires_at FROM users WHERE role = 'user' AND expires_at IS NOT NULL AND expires_at <= ? \
         AND (expiry_handled_for IS NULL OR expiry_handled_for <> expires_at)",
        |exec, sql| sqlx::query_as(sql).bind(now).fetch_all(exec).await
    )
}

/// Remembers that the hosts of `id` were stopped for the expiry `expires_at`.
pub async fn mark_expiry_handled(
    db: impl crate::db::Db<'_>,
    id: &str,
    expires_at: UtcTime,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE users SET expiry_handled_for = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(expires_at)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

const COLUMNS: &str = "id, username, password_hash, role, status, expires_at, token_version, created_at, \
     updated_at, totp_enabled_at IS NOT NULL AS totp_enabled";

pub fn username_key(username: &str) -> String {
    username.to_lowercase()
}

pub async fn insert(
    db: impl crate::db::Db<'_>,
    username: &str,
    password_hash: &str,
    role: Role,
    expires_at: Option<UtcTime>,
    now: UtcTime,
) -> Result<User, sqlx::Error> {
    let sql = format!(
        "INSERT INTO users (id, username, username_key, password_hash, role, status, expires_at, \
         token_version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'active', ?, 0, ?, ?) RETURNING {COLUMNS}"
    );
    crate::db::on_db!(db, &sql, |exec, sql| sqlx::query_as(sql)
        .bind(super::new_id())
        .bind(username)
        .bind(username_key(username))
        .bind(password_hash)
        .bind(role)
        .bind(expires_at)
        .bind(now)
        .bind(now)
        .fetch_one(exec)
        .await)
}

/// Every username: a new one is checked against them for the account name it gets in hosts.
pub async fn all_usernames(db: impl crate::db::Db<'_>) -> Result<Vec<String>, sqlx::Error> {
    crate::db::on_db!(db, "SELECT username FROM users", |exec, sql| sqlx::query_scalar(
        sql
    )
    .fetch_all(exec)
    .await)
}

pub async fn get(db: impl crate::db::Db<'_>, id: &str) -> Result<Option<User>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM users WHERE id = ?"),
        |exec, sql| sqlx::query_as(sql).bind(id).fetch_optional(exec).await
    )
}

/// A tenant account (role `user`) by id; operator accounts are not tenants.
pub async fn get_tenant(db: impl crate::db::Db<'_>, id: &str) -> Result<Option<User>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM users WHERE id = ? AND role = 'user'"),
        |exec, sql| sqlx::query_as(sql).bind(id).fetch_optional(exec).await
    )
}

pub async fn get_by_username(
    db: impl crate::db::Db<'_>,
    username: &str,
) -> Result<Option<User>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM users WHERE username_key = ?"),
        |exec, sql| sqlx::query_as(sql)
            .bind(username_key(username))
            .fetch_optional(exec)
            .await
    )
}

/// Tenants, oldest first, optionally filtered by status.
/// Tenants, oldest first; `q` is part of the username, in any case.
pub async fn list_tenants(
    db: &super::Pool,
    status: Option<Status>,
    q: Option<&str>,
    page: Page,
) -> Result<(Vec<User>, i64), sqlx::Error> {
    let cond = "role = 'user' AND (? IS NULL OR status = ?) AND (? IS NULL OR instr(username_key, ?) > 0)";
    let q = q.map(str::to_lowercase);
    let rows = crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM users WHERE {cond} ORDER BY created_at, id LIMIT ? OFFSET ?"),
        |exec, sql| sqlx::query_as(sql)
            .bind(status)
            .bind(status)
            .bind(&q)
            .bind(&q)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(exec)
            .await
    )?;
    let total: i64 = crate::db::on_db!(
        db,
        &format!("SELECT COUNT(*) FROM users WHERE {cond}"),
        |exec, sql| sqlx::query_scalar(sql)
            .bind(status)
            .bind(status)
            .bind(&q)
            .bind(&q)
            .fetch_one(exec)
            .await
    )?;
    Ok((rows, total))
}

/// Changes the status. Disabling ends every outstanding session for good (they stay dead when the
/// account is enabled again); setting the status it already has changes nothing.
pub async fn set_status(
    db: impl crate::db::Db<'_>,
    id: &str,
    status: Status,
    now: UtcTime,
) -> Result<Option<User>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "UPDATE users SET token_version = token_version + \
           CASE WHEN ?1 = 'disabled' AND status <> 'disabled' THEN 1 ELSE 0 END, \
           status = ?1, updated_at = ?2 WHERE id = ?3 RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(status)
            .bind(now)
            .bind(id)
            .fetch_optional(exec)
            .await
    )
}

/// Replaces the password hash; every outstanding token of the user stops working.
pub async fn set_password(
    db: impl crate::db::Db<'_>,
    id: &str,
    password_hash: &str,
    now: UtcTime,
) -> Result<Option<User>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "UPDATE users SET password_hash = ?, token_version = token_version + 1, updated_at = ? \
         WHERE id = ? RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(password_hash)
            .bind(now)
            .bind(id)
            .fetch_optional(exec)
            .await
    )
}

pub async fn set_expiry(
    db: impl crate::db::Db<'_>,
    id: &str,
    expires_at: Option<UtcTime>,
    now: UtcTime,
) -> Result<Option<User>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("UPDATE users SET expires_at = ?, updated_at = ? WHERE id = ? RETURNING {COLUMNS}"),
        |exec, sql| sqlx::query_as(sql)
            .bind(expires_at)
            .bind(now)
            .bind(id)
            .fetch_optional(exec)
            .await
    )
}

pub async fn delete(db: impl crate::db::Db<'_>, id: &str) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(db, "DELETE FROM users WHERE id = ?", |exec, sql| sqlx::query(sql)
        .bind(id)
        .execute(exec)
        .await
        .map(crate::db::Done::from))?;
    Ok(done.rows_affected() > 0)
}

/// Tenant accounts by state, for the dashboard.
#[derive(Debug, Default, Clone, Copy, Serialize, ToSchema)]
#[schema(as = UserCounts)]
pub struct Counts {
    pub total: i64,
    pub active: i64,
    pub disabled: i64,
    pub expired: i64,
}

pub async fn counts(db: &super::Pool, now: UtcTime) -> Result<Counts, sqlx::Error> {
    let (total, active, disabled, expired): (i64, i64, i64, i64) = crate::db::on_db!(
        db,
        "SELECT COUNT(*), \
           COALESCE(SUM(CASE WHEN status = 'active' THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN status = 'disabled' THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN expires_at IS NOT NULL AND expires_at <= ? THEN 1 ELSE 0 END), 0) \
         FROM users WHERE role = 'user'",
        |exec, sql| sqlx::query_as(sql).bind(now).fetch_one(exec).await
    )?;
    Ok(Counts {
        total,
        active,
        disabled,
        expired,
    })
}
