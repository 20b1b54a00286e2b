//! SSH gateways and the client keys they log in to hosts with.

use sqlx::SqliteExecutor;

use super::UtcTime;

/// Records (or refreshes) a gateway's client key and, when it sent one, its host key.
pub async fn upsert(
    db: impl SqliteExecutor<'_>,
    name: &str,
    client_key: &str,
    host_key: Option<&str>,
    now: UtcTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO gateways (name, client_key, host_key, registered_at, last_seen_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET client_key = excluded.client_key, \
         host_key = COALESCE(excluded.host_key, gateways.host_key), last_seen_at = excluded.last_seen_at",
    )
    .bind(name)
    .bind(client_key)
    .bind(host_key.map(bare_key))
    .bind(now)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Whether `host_key` (an OpenSSH line) is the host key of a registered gateway.
pub async fn knows_host_key(db: impl SqliteExecutor<'_>, host_key: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM gateways WHERE host_key = ?)")
        .bind(bare_key(host_key))
        .fetch_one(db)
        .await
}

/// An OpenSSH public key line without its comment: `algorithm base64`.
fn bare_key(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// Every gateway's key, deduplicated: installed in each host's root-owned authorized_keys.
pub async fn client_keys(db: impl SqliteExecutor<'_>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT client_key FROM gateways ORDER BY client_key")
        .fetch_all(db)
        .await
}

/// A registered SSH gateway.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Gateway {
    pub name: String,
    pub client_key: String,
    pub registered_at: UtcTime,
    pub last_seen_at: UtcTime,
}

/// Gateways by name.
pub async fn list(db: &super::Pool, page: super::Page) -> Result<(Vec<Gateway>, i64), sqlx::Error> {
    let rows = sqlx::query_as(
        "SELECT name, client_key, registered_at, last_seen_at FROM gateways ORDER BY name LIMIT ? OFFSET ?",
    )
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar("SELECT COUNT(*) FROM gateways")
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}
