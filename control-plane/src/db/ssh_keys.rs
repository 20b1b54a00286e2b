//! Public keys users sign in to the SSH gateway with.

use serde::Serialize;
use sqlx::SqliteExecutor;
use utoipa::ToSchema;

use super::{Page, UtcTime};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct SshKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// e.g. `ssh-ed25519`.
    pub key_type: String,
    /// OpenSSH one-line form, with the comment.
    pub public_key: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UtcTime,
}

const COLUMNS: &str = "id, user_id, name, key_type, public_key, fingerprint, created_at";

pub struct NewKey<'a> {
    pub user_id: &'a str,
    pub name: &'a str,
    pub key_type: &'a str,
    pub public_key: &'a str,
    pub fingerprint: &'a str,
}

pub async fn insert(
    db: impl SqliteExecutor<'_>,
    key: NewKey<'_>,
    now: UtcTime,
) -> Result<SshKey, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO ssh_keys (id, user_id, name, key_type, public_key, fingerprint, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
    ))
    .bind(super::new_id())
    .bind(key.user_id)
    .bind(key.name)
    .bind(key.key_type)
    .bind(key.public_key)
    .bind(key.fingerprint)
    .bind(now)
    .fetch_one(db)
    .await
}

pub async fn list_for_user(
    db: &super::Pool,
    user_id: &str,
    page: Page,
) -> Result<(Vec<SshKey>, i64), sqlx::Error> {
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM ssh_keys WHERE user_id = ? ORDER BY created_at, id LIMIT ? OFFSET ?"
    ))
    .bind(user_id)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar("SELECT COUNT(*) FROM ssh_keys WHERE user_id = ?")
        .bind(user_id)
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}

/// Deletes a key of `user_id`; false when that user has no such key.
/// How many keys a user has.
pub async fn count_for_user(db: impl SqliteExecutor<'_>, user_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM ssh_keys WHERE user_id = ?")
        .bind(user_id)
        .fetch_one(db)
        .await
}

pub async fn delete(db: impl SqliteExecutor<'_>, user_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM ssh_keys WHERE id = ? AND user_id = ?")
        .bind(id)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether `user_id` has a key with this `SHA256:…` fingerprint.
pub async fn has_fingerprint(
    db: impl SqliteExecutor<'_>,
    user_id: &str,
    fingerprint: &str,
) -> Result<bool, sqlx::Error> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT id FROM ssh_keys WHERE user_id = ? AND fingerprint = ?")
            .bind(user_id)
            .bind(fingerprint)
            .fetch_optional(db)
            .await?;
    Ok(found.is_some())
}
