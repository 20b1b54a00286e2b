//! Bindings of a host to the egress IP its traffic must leave from (at most one per host).

use sqlx::SqliteExecutor;

use super::{Page, UtcTime};
use crate::secrets::Sealed;

/// The stored row; `wg_private_key` is a sealed secret the API never shows (see the API's binding view).
#[derive(Clone, sqlx::FromRow)]
pub struct Binding {
    pub id: String,
    pub host_id: String,
    pub egress_ip_id: String,
    /// The host's own WireGuard key pair (WireGuard egress IPs only).
    pub wg_private_key: Option<Sealed>,
    /// The host's tunnel address, when it differs from the egress IP's `wg_peer_address`.
    pub wg_peer_address: Option<String>,
    pub created_at: UtcTime,
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("id", &self.id)
            .field("host_id", &self.host_id)
            .field("egress_ip_id", &self.egress_ip_id)
            .field("wg_peer_address", &self.wg_peer_address)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, host_id, egress_ip_id, wg_private_key, wg_peer_address, created_at";

pub async fn insert(
    db: impl SqliteExecutor<'_>,
    host_id: &str,
    egress_ip_id: &str,
    wg_private_key: Option<&Sealed>,
    wg_peer_address: Option<&str>,
    now: UtcTime,
) -> Result<Binding, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO bindings (id, host_id, egress_ip_id, wg_private_key, wg_peer_address, created_at) \
         VALUES (?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
    ))
    .bind(super::new_id())
    .bind(host_id)
    .bind(egress_ip_id)
    .bind(wg_private_key)
    .bind(wg_peer_address)
    .bind(now)
    .fetch_one(db)
    .await
}

/// Replaces the binding's WireGuard key pair.
pub async fn set_wg_key(
    db: impl SqliteExecutor<'_>,
    id: &str,
    wg_private_key: &Sealed,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE bindings SET wg_private_key = ? WHERE id = ?")
        .bind(wg_private_key)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn get(db: impl SqliteExecutor<'_>, id: &str) -> Result<Option<Binding>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM bindings WHERE id = ?"))
        .bind(id)
        .fetch_optional(db)
        .await
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub host_id: Option<String>,
    pub egress_ip_id: Option<String>,
}

pub async fn list(db: &super::Pool, filter: &Filter, page: Page) -> Result<(Vec<Binding>, i64), sqlx::Error> {
    let cond = "(? IS NULL OR host_id = ?) AND (? IS NULL OR egress_ip_id = ?)";
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM bindings WHERE {cond} ORDER BY created_at, id LIMIT ? OFFSET ?"
    ))
    .bind(&filter.host_id)
    .bind(&filter.host_id)
    .bind(&filter.egress_ip_id)
    .bind(&filter.egress_ip_id)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM bindings WHERE {cond}"))
        .bind(&filter.host_id)
        .bind(&filter.host_id)
        .bind(&filter.egress_ip_id)
        .bind(&filter.egress_ip_id)
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}

pub async fn delete(db: impl SqliteExecutor<'_>, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM bindings WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn count_for_egress(db: impl SqliteExecutor<'_>, egress_ip_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM bindings WHERE egress_ip_id = ?")
        .bind(egress_ip_id)
        .fetch_one(db)
        .await
}

/// The binding of a host, if it has one (a host has at most one).
pub async fn for_host(db: impl SqliteExecutor<'_>, host_id: &str) -> Result<Option<Binding>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM bindings WHERE host_id = ?"))
        .bind(host_id)
        .fetch_optional(db)
        .await
}
