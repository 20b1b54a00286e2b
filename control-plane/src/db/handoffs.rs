//! Single-use SSH secrets: the bootstrap and entry flows create one for a host, the SSH gateway
//! redeems it once as the password of a login to that host, before it expires.

use sha2::{Digest as _, Sha256};
use sqlx::SqliteExecutor;

use super::UtcTime;

/// SHA-256 of a secret, hex: what is stored and looked up.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Stores the hash of `secret` for a login to `host_id` until `expires_at`.
pub async fn create(
    db: impl SqliteExecutor<'_>,
    host_id: &str,
    user_id: &str,
    secret: &str,
    expires_at: UtcTime,
    now: UtcTime,
) -> Result<String, sqlx::Error> {
    let id = super::new_id();
    sqlx::query(
        "INSERT INTO ssh_handoffs (id, host_id, user_id, secret_hash, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(host_id)
    .bind(user_id)
    .bind(hash(secret))
    .bind(now)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(id)
}

/// Marks the secret used if it is a live, unused secret for `host_id`; true when it was. One
/// statement, so two gateways racing with the same secret cannot both succeed.
pub async fn redeem(
    db: impl SqliteExecutor<'_>,
    host_id: &str,
    secret: &str,
    now: UtcTime,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE ssh_handoffs SET used_at = ? \
         WHERE host_id = ? AND secret_hash = ? AND used_at IS NULL AND expires_at > ?",
    )
    .bind(now)
    .bind(host_id)
    .bind(hash(secret))
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes secrets that expired before `before` (used or not); they can never be redeemed again.
pub async fn purge_expired(db: impl SqliteExecutor<'_>, before: UtcTime) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM ssh_handoffs WHERE expires_at < ?")
        .bind(before)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
