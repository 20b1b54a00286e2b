//! Enrolment keys: made by the operator, each traded by nodes or gateways for credentials of their
//! own, up to its usage limit, until it expires or is revoked.

use serde::Serialize;
use utoipa::ToSchema;

use super::UtcTime;
use crate::enrolment::{KeyKind, KeyState};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct EnrolmentKey {
    pub id: String,
    pub kind: KeyKind,
    pub name: String,
    /// The secret's first characters, to tell keys apart.
    pub prefix: String,
    /// Enrolments the key allows (1: single-use).
    pub usage_limit: i64,
    /// Enrolments made with it so far.
    pub uses: i64,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: UtcTime,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<UtcTime>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UtcTime,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<UtcTime>,
}

impl EnrolmentKey {
    pub fn state(&self) -> KeyState {
        KeyState {
            usage_limit: self.usage_limit,
            uses: self.uses,
            expires_at: self.expires_at,
            revoked: self.revoked_at.is_some(),
        }
    }
}

const COLUMNS: &str =
    "id, kind, name, prefix, usage_limit, uses, expires_at, revoked_at, created_at, last_used_at";

/// What a new key is made of.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub kind: KeyKind,
    pub name: &'a str,
    pub secret_hash: &'a str,
    pub prefix: &'a str,
    pub usage_limit: i64,
    pub expires_at: UtcTime,
}

pub async fn insert(
    db: impl crate::db::Db<'_>,
    key: &NewKey<'_>,
    now: UtcTime,
) -> Result<EnrolmentKey, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "INSERT INTO enrolment_keys (id, kind, name, secret_hash, prefix, usage_limit, expires_at, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(super::new_id())
            .bind(key.kind)
            .bind(key.name)
            .bind(key.secret_hash)
            .bind(key.prefix)
            .bind(key.usage_limit)
            .bind(key.expires_at)
            .bind(now)
            .fetch_one(exec)
            .await
    )
}

/// Keys, newest first.
pub async fn list(db: &super::Pool, page: super::Page) -> Result<(Vec<EnrolmentKey>, i64), sqlx::Error> {
    let rows = crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM enrolment_keys ORDER BY created_at DESC, id LIMIT ? OFFSET ?"),
        |exec, sql| sqlx::query_as(sql)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(exec)
            .await
    )?;
    let total = crate::db::on_db!(db, "SELECT COUNT(*) FROM enrolment_keys", |exec, sql| {
        sqlx::query_scalar(sql).fetch_one(exec).await
    })?;
    Ok((rows, total))
}

pub async fn by_hash(
    db: impl crate::db::Db<'_>,
    secret_hash: &str,
) -> Result<Option<EnrolmentKey>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM enrolment_keys WHERE secret_hash = ?"),
        |exec, sql| sqlx::query_as(sql).bind(secret_hash).fetch_optional(exec).await
    )
}

/// Counts one enrolment against the key, only while it is still usable (checked again here so
/// that two enrolments racing for the last use cannot both win). False: it was not.
pub async fn use_once(db: impl crate::db::Db<'_>, id: &str, now: UtcTime) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "UPDATE enrolment_keys SET uses = uses + 1, last_used_at = ? \
         WHERE id = ? AND revoked_at IS NULL AND expires_at > ? AND uses < usage_limit",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .bind(id)
            .bind(now)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() == 1)
}

/// Revokes a key (kept, so the list shows what it enrolled); `None` when there is no such key.
pub async fn revoke(
    db: impl crate::db::Db<'_>,
    id: &str,
    now: UtcTime,
) -> Result<Option<EnrolmentKey>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "UPDATE enrolment_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql).bind(now).bind(id).fetch_optional(exec).await
    )
}
