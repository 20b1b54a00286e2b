//! Personal API tokens: long random secrets for scripts, stored only as keyed hashes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Page, UtcTime};

/// What a token may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Only reads: `GET` requests (not `/metrics`).
    Read,
    /// Everything its owner may do.
    #[default]
    Full,
    /// Only `GET /metrics`, for a Prometheus server; the operator's alone.
    Metrics,
}

impl Scope {
    /// Whether everything a token of scope `other` may do, one of this scope may do too.
    pub fn covers(self, other: Scope) -> bool {
        self == Scope::Full || self == other
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct ApiToken {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The first characters of the token, to recognise it in a list.
    pub prefix: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UtcTime,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: UtcTime,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<UtcTime>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<UtcTime>,
    pub scope: Scope,
    /// The account's `token_version` at creation; a password change makes the token stale.
    #[serde(skip)]
    pub token_version: i64,
}

const COLUMNS: &str =
    "id, user_id, name, prefix, created_at, expires_at, last_used_at, revoked_at, token_version, scope";

/// A token about to be stored.
#[derive(Debug)]
pub struct NewToken<'a> {
    pub name: &'a str,
    pub token_hash: &'a str,
    pub prefix: &'a str,
    pub scope: Scope,
    pub expires_at: UtcTime,
}

pub async fn insert(
    db: impl crate::db::Db<'_>,
    user: &super::users::User,
    new: NewToken<'_>,
    now: UtcTime,
) -> Result<ApiToken, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, prefix, token_version, created_at, expires_at, \
         scope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(super::new_id())
            .bind(&user.id)
            .bind(new.name)
            .bind(new.token_hash)
            .bind(new.prefix)
            .bind(user.token_version)
            .bind(now)
            .bind(new.expires_at)
            .bind(new.scope)
            .fetch_one(exec)
            .await
    )
}

pub async fn find_by_hash(
    db: impl crate::db::Db<'_>,
    token_hash: &str,
) -> Result<Option<ApiToken>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM api_tokens WHERE token_hash = ?"),
        |exec, sql| sqlx::query_as(sql).bind(token_hash).fetch_optional(exec).await
    )
}

pub async fn touch(db: impl crate::db::Db<'_>, id: &str, now: UtcTime) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE api_tokens SET last_used_at = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

pub async fn list_for_user(
    db: &super::Pool,
    user_id: &str,
    page: Page,
) -> Result<(Vec<ApiToken>, i64), sqlx::Error> {
    let rows = crate::db::on_db!(
        db,
        &format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE user_id = ? ORDER BY created_at DESC, id LIMIT ? OFFSET ?"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(user_id)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(exec)
            .await
    )?;
    let total = crate::db::on_db!(
        db,
        "SELECT COUNT(*) FROM api_tokens WHERE user_id = ?",
        |exec, sql| sqlx::query_scalar(sql).bind(user_id).fetch_one(exec).await
    )?;
    Ok((rows, total))
}

/// Tokens of a user that still work at `now`: neither revoked nor expired.
pub async fn count_live(db: impl crate::db::Db<'_>, user_id: &str, now: UtcTime) -> Result<i64, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT COUNT(*) FROM api_tokens WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?",
        |exec, sql| sqlx::query_scalar(sql)
            .bind(user_id)
            .bind(now)
            .fetch_one(exec)
            .await
    )
}

/// Revokes a token of `user_id`; `None` when there is no such token of theirs.
pub async fn revoke(
    db: impl crate::db::Db<'_>,
    user_id: &str,
    id: &str,
    now: UtcTime,
) -> Result<Option<ApiToken>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND user_id = ? \
         RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(now)
            .bind(id)
            .bind(user_id)
            .fetch_optional(exec)
            .await
    )
}
