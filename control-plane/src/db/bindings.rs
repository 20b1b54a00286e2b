//! Bindings of a host to the egress IP its traffic must leave from (at most one per host).

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
    db: impl crate::db::Db<'_>,
    host_id: &str,
    egress_ip_id: &str,
    wg_private_key: Option<&Sealed>,
    wg_peer_address: Option<&str>,
    now: UtcTime,
) -> Result<Binding, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "INSERT INTO bindings (id, host_id, egress_ip_id, wg_private_key, wg_peer_address, created_at) \
         VALUES (?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(super::new_id())
            .bind(host_id)
            .bind(egress_ip_id)
            .bind(wg_private_key)
            .bind(wg_peer_address)
            .bind(now)
            .fetch_one(exec)
            .await
    )
}

/// Replaces the binding's WireGuard key pair.
pub async fn set_wg_key(
    db: impl crate::db::Db<'_>,
    id: &str,
    wg_private_key: &Sealed,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE bindings SET wg_private_key = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(wg_private_key)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

pub async fn get(db: impl crate::db::Db<'_>, id: &str) -> Result<Option<Binding>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM bindings WHERE id = ?"),
        |exec, sql| sqlx::query_as(sql).bind(id).fetch_optional(exec).await
    )
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub host_id: Option<String>,
    pub egress_ip_id: Option<String>,
}

pub async fn list(db: &super::Pool, filter: &Filter, page: Page) -> Result<(Vec<Binding>, i64), sqlx::Error> {
    let cond = "(? IS NULL OR host_id = ?) AND (? IS NULL OR egress_ip_id = ?)";
    let rows = crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM bindings WHERE {cond} ORDER BY created_at, id LIMIT ? OFFSET ?"),
        |exec, sql| sqlx::query_as(sql)
            .bind(&filter.host_id)
            .bind(&filter.host_id)
            .bind(&filter.egress_ip_id)
            .bind(&filter.egress_ip_id)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(exec)
            .await
    )?;
    let total = crate::db::on_db!(
        db,
        &format!("SELECT COUNT(*) FROM bindings WHERE {cond}"),
        |exec, sql| sqlx::query_scalar(sql)
            .bind(&filter.host_id)
            .bind(&filter.host_id)
            .bind(&filter.egress_ip_id)
            .bind(&filter.egress_ip_id)
            .fetch_one(exec)
            .await
    )?;
    Ok((rows, total))
}

pub async fn delete(db: impl crate::db::Db<'_>, id: &str) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(db, "DELETE FROM bindings WHERE id = ?", |exec, sql| sqlx::query(
        sql
    )
    .bind(id)
    .execute(exec)
    .await
    .map(crate::db::Done::from))?;
    Ok(done.rows_affected() > 0)
}

pub async fn count_for_egress(db: impl crate::db::Db<'_>, egress_ip_id: &str) -> Result<i64, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT COUNT(*) FROM bindings WHERE egress_ip_id = ?",
        |exec, sql| sqlx::query_scalar(sql).bind(egress_ip_id).fetch_one(exec).await
    )
}

/// The binding of a host, if it has one (a host has at most one).
pub async fn for_host(db: impl crate::db::Db<'_>, host_id: &str) -> Result<Option<Binding>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM bindings WHERE host_id = ?"),
        |exec, sql| sqlx::query_as(sql).bind(host_id).fetch_optional(exec).await
    )
}
