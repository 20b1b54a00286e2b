//! SSH gateways and the client keys they log in to hosts with.

use super::UtcTime;

/// Enrols a gateway under `name` with the credential whose hash is given; it has no key until it
/// registers one. A name held by an enrolled gateway is refused (false); a gateway from before
/// enrolment is taken over, its old key dropped.
pub async fn enrol(
    db: impl crate::db::Db<'_>,
    name: &str,
    credential_hash: &str,
    now: UtcTime,
) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "INSERT INTO gateways (name, client_key, host_key, registered_at, last_seen_at, credential_hash) \
         VALUES (?, '', NULL, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET credential_hash = excluded.credential_hash, client_key = '', \
           host_key = NULL, registered_at = excluded.registered_at \
         WHERE gateways.credential_hash IS NULL",
        |exec, sql| sqlx::query(sql)
            .bind(name)
            .bind(now)
            .bind(now)
            .bind(credential_hash)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() > 0)
}

/// Gives the gateway embedded in the control plane, `name`, a new credential whatever it held.
pub async fn enrol_embedded(
    db: impl crate::db::Db<'_>,
    name: &str,
    credential_hash: &str,
    now: UtcTime,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "INSERT INTO gateways (name, client_key, host_key, registered_at, last_seen_at, credential_hash) \
         VALUES (?, '', NULL, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET credential_hash = excluded.credential_hash",
        |exec, sql| sqlx::query(sql)
            .bind(name)
            .bind(now)
            .bind(now)
            .bind(credential_hash)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

/// The name of the enrolled gateway holding the credential whose hash is given.
pub async fn by_credential(
    db: impl crate::db::Db<'_>,
    credential_hash: &str,
) -> Result<Option<String>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT name FROM gateways WHERE credential_hash = ?",
        |exec, sql| sqlx::query_scalar(sql)
            .bind(credential_hash)
            .fetch_optional(exec)
            .await
    )
}

/// Records the gateway's own client key and, when it sent one, its host key. Answers the client
/// key it replaced (`None`: the gateway is gone).
pub async fn register(
    conn: &mut crate::db::Connection,
    name: &str,
    client_key: &str,
    host_key: Option<&str>,
    now: UtcTime,
) -> Result<Option<String>, sqlx::Error> {
    let before: Option<String> = crate::db::on_db!(
        &mut *conn,
        "SELECT client_key FROM gateways WHERE name = ?",
        |exec, sql| sqlx::query_scalar(sql).bind(name).fetch_optional(exec).await
    )?;
    if before.is_some() {
        crate::db::on_db!(
            &mut *conn,
            "UPDATE gateways SET client_key = ?, host_key = COALESCE(?, host_key), last_seen_at = ? WHERE name = ?",
            |exec, sql| sqlx::query(sql)
                .bind(client_key)
                .bind(host_key.map(bare_key))
                .bind(now)
                .bind(name)
                .execute(exec)
                .await
                .map(crate::db::Done::from)
        )?;
    }
    Ok(before)
}

/// Removes a gateway: its credential stops working and its key is no longer given to hosts.
/// Answers its client key (`None`: no such gateway).
pub async fn remove(conn: &mut crate::db::Connection, name: &str) -> Result<Option<String>, sqlx::Error> {
    crate::db::on_db!(
        conn,
        "DELETE FROM gateways WHERE name = ? RETURNING client_key",
        |exec, sql| sqlx::query_scalar(sql).bind(name).fetch_optional(exec).await
    )
}

/// Whether `host_key` (an OpenSSH line) is the host key of a registered gateway.
pub async fn knows_host_key(db: impl crate::db::Db<'_>, host_key: &str) -> Result<bool, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT EXISTS (SELECT 1 FROM gateways WHERE host_key = ? AND credential_hash IS NOT NULL)",
        |exec, sql| sqlx::query_scalar(sql)
            .bind(bare_key(host_key))
            .fetch_one(exec)
            .await
    )
}

/// An OpenSSH public key line without its comment: `algorithm base64`.
fn bare_key(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// Every enrolled gateway's key, deduplicated: installed in each host's root-owned authorized_keys.
pub async fn client_keys(db: impl crate::db::Db<'_>) -> Result<Vec<String>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT DISTINCT client_key FROM gateways \
         WHERE credential_hash IS NOT NULL AND client_key != '' ORDER BY client_key",
        |exec, sql| sqlx::query_scalar(sql).fetch_all(exec).await
    )
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
    let rows = crate::db::on_db!(
        db,
        "SELECT name, client_key, registered_at, last_seen_at, credential_hash IS NOT NULL AS enrolled \
         FROM gateways ORDER BY name LIMIT ? OFFSET ?",
        |exec, sql| sqlx::query_as(sql)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(exec)
            .await
    )?;
    let total = crate::db::on_db!(db, "SELECT COUNT(*) FROM gateways", |exec, sql| {
        sqlx::query_scalar(sql).fetch_one(exec).await
    })?;
    Ok((rows, total))
}

/// Gateways known: how many, and how many of them were heard from since `since`.
pub async fn seen_counts(db: impl crate::db::Db<'_>, since: UtcTime) -> Result<(i64, i64), sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN last_seen_at >= ? THEN 1 ELSE 0 END), 0) \
         FROM gateways",
        |exec, sql| sqlx::query_as(sql).bind(since).fetch_one(exec).await
    )
}
