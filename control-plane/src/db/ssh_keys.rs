//! Public keys users sign in to the SSH gateway with.

use serde::Serialize;
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
    db: impl crate::db::Db<'_>,
    key: NewKey<'_>,
    now: UtcTime,
) -> Result<SshKey, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "INSERT INTO ssh_keys (id, user_id, name, key_type, public_key, fingerprint, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(super::new_id())
            .bind(key.user_id)
            .bind(key.name)
            .bind(key.key_type)
            .bind(key.public_key)
            .bind(key.fingerprint)
            .bind(now)
            .fetch_one(exec)
            .await
    )
}

pub async fn list_for_user(
    db: &super::Pool,
    user_id: &str,
    page: Page,
) -> Result<(Vec<SshKey>, i64), sqlx::Error> {
    let rows = crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM ssh_keys WHERE user_id = ? ORDER BY created_at, id LIMIT ? OFFSET ?"),
        |exec, sql| sqlx::query_as(sql)
            .bind(user_id)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(exec)
            .await
    )?;
    let total = crate::db::on_db!(
        db,
        "SELECT COUNT(*) FROM ssh_keys WHERE user_id = ?",
        |exec, sql| sqlx::query_scalar(sql).bind(user_id).fetch_one(exec).await
    )?;
    Ok((rows, total))
}

/// Deletes a key of `user_id`; false when that user has no such key.
/// How many keys a user has.
pub async fn count_for_user(db: impl crate::db::Db<'_>, user_id: &str) -> Result<i64, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT COUNT(*) FROM ssh_keys WHERE user_id = ?",
        |exec, sql| sqlx::query_scalar(sql).bind(user_id).fetch_one(exec).await
    )
}

pub async fn delete(db: impl crate::db::Db<'_>, user_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "DELETE FROM ssh_keys WHERE id = ? AND user_id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(id)
            .bind(user_id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() > 0)
}

/// Whether `user_id` has a key with this `SHA256:…` fingerprint.
pub async fn has_fingerprint(
    db: impl crate::db::Db<'_>,
    user_id: &str,
    fingerprint: &str,
) -> Result<bool, sqlx::Error> {
    let found: Option<String> = crate::db::on_db!(
        db,
        "SELECT id FROM ssh_keys WHERE user_id = ? AND fingerprint = ?",
        |exec, sql| sqlx::query_scalar(sql)
            .bind(user_id)
            .bind(fingerprint)
            .fetch_optional(exec)
            .await
    )?;
    Ok(found.is_some())
}
