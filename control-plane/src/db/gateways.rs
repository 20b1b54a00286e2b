//! SSH gateways and the client keys they log in to hosts with.

use sqlx::SqliteExecutor;

use super::UtcTime;

/// Enrols a gateway under `name` with the credential whose hash is given; it has no key until it
/// registers one. A name held by an enrolled gateway is refused (false); a gateway from before
/// enrolment is taken over, its old key dropped.
pub async fn enrol(
    db: impl SqliteExecutor<'_>,
    name: &str,
    credential_hash: &str,
    now: UtcTime,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO gateways (name, client_key, host_key, registered_at, last_seen_at, credential_hash) \
         VALUES (?, '', NULL, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET credential_hash = excluded.credential_hash, client_key = '', \
           host_key = NULL, registered_at = excluded.registered_at \
         WHERE gateways.credential_hash IS NULL",
    )
    .bind(name)
    .bind(now)
    .bind(now)
    .bind(credential_hash)
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Gives the gateway embedded in the control plane, `name`, a new credential whatever it held.
pub async fn enrol_embedded(
    db: impl SqliteExecutor<'_>,
    name: &str,
    credential_hash: &str,
    now: UtcTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO gateways (name, client_key, host_key, registered_at, last_seen_at, credential_hash) \
         VALUES (?, '', NULL, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET credential_hash = excluded.credential_hash",
    )
    .bind(name)
    .bind(now)
    .bind(now)
    .bind(credential_hash)
    .execute(db)
    .await?;
    Ok(())
}

/// The name of the enrolled gateway holding the credential whose hash is given.
pub async fn by_credential(
    db: impl SqliteExecutor<'_>,
    credential_hash: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM gateways WHERE credential_hash = ?")
        .bind(credential_hash)
        .fetch_optional(db)
        .await
}

/// Records the gateway's own client key and, when it sent one, its host key. Answers the client
/// key it replaced (`None`: the gateway is gone).
pub async fn register(
    conn: &mut sqlx::SqliteConnection,
    name: &str,
    client_key: &str,
    host_key: Option<&str>,
    now: UtcTime,
) -> Result<Option<String>, sqlx::Error> {
    let before: Option<String> = sqlx::query_scalar("SELECT client_key FROM gateways WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    if before.is_some() {
        sqlx::query(
            "UPDATE gateways SET client_key = ?, host_key = COALESCE(?, host_key), last_seen_at = ? WHERE name = ?",
        )
        .bind(client_key)
        .bind(host_key.map(bare_key))
        .bind(now)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    }
    Ok(before)
}

/// Removes a gateway: its credential stops working and its key is no longer given to hosts.
/// Answers its client key (`None`: no such gateway).
pub async fn remove(conn: &mut sqlx::SqliteConnection, name: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("DELETE FROM gateways WHERE name = ? RETURNING client_key")
        .bind(name)
        .fetch_optional(conn)
        .await
}

/// Whether `host_key` (an OpenSSH line) is the host key of a registered gateway.
pub async fn knows_host_key(db: impl SqliteExecutor<'_>, host_key: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM gateways WHERE host_key = ? AND credential_hash IS NOT NULL)",
    )
    .bind(bare_key(host_key))
    .fetch_one(db)
    .await
}

/// An OpenSSH public key line without its comment: `algorithm base64`.
fn bare_key(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// Every enrolled gateway's key, deduplicated: installed in each host's root-owned authorized_keys.
pub async fn client_keys(db: impl SqliteExecutor<'_>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT client_key FROM gateways \
         WHERE credential_hash IS NOT NULL AND client_key != '' ORDER BY client_key",
    )
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
    /// Holds a credential; a gateway from before enrolment keys does not, and is ignored.
    pub enrolled: bool,
}

/// Gateways by name.
pub async fn list(db: &super::Pool, page: super::Page) -> Result<(Vec<Gateway>, i64), sqlx::Error> {
    let rows = sqlx::query_as(
        "SELECT name, client_key, registered_at, last_seen_at, credential_hash IS NOT NULL AS enrolled \
         FROM gateways ORDER BY name LIMIT ? OFFSET ?",
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
