//! Egress IPs: the declared exit addresses and the tunnel settings that reach them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Page, UtcTime};
use crate::secrets::Sealed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    Wireguard,
    Proxy,
}

/// The stored row. Secrets (`wg_preshared_key`, `wg_private_key`, and `proxy_config` as a whole, as it
/// carries passwords) are sealed; the API layer opens them only to mask them or to hand them to an agent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EgressIp {
    pub id: String,
    pub label: String,
    pub ip_address: String,
    pub tunnel_type: TunnelType,
    pub provider: String,
    pub wg_endpoint: Option<String>,
    pub wg_public_key: Option<String>,
    pub wg_preshared_key: Option<Sealed>,
    pub wg_allowed_ips: Option<String>,
    pub wg_dns_server: Option<String>,
    pub wg_peer_address: Option<String>,
    pub wg_private_key: Option<Sealed>,
    /// sing-box outbound JSON, sealed.
    pub proxy_config: Option<Sealed>,
    pub dns_server: Option<String>,
    pub observed_ip: Option<String>,
    pub last_test_at: Option<UtcTime>,
    pub last_test_result: Option<String>,
    pub created_at: UtcTime,
    pub updated_at: UtcTime,
    /// Hosts bound to it (computed).
    pub bound_hosts: i64,
}

const SELECT: &str = "SELECT e.id, e.label, e.ip_address, e.tunnel_type, e.provider, e.wg_endpoint, \
    e.wg_public_key, e.wg_preshared_key, e.wg_allowed_ips, e.wg_dns_server, e.wg_peer_address, \
    e.wg_private_key, e.proxy_config, e.dns_server, e.observed_ip, e.last_test_at, e.last_test_result, \
    e.created_at, e.updated_at, \
    (SELECT COUNT(*) FROM bindings b WHERE b.egress_ip_id = e.id) AS bound_hosts \
    FROM egress_ips e";

/// Inserts `e` as given (id and times included).
pub async fn insert(db: impl crate::db::Db<'_>, e: &EgressIp) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "INSERT INTO egress_ips (id, label, ip_address, tunnel_type, provider, wg_endpoint, wg_public_key, \
         wg_preshared_key, wg_allowed_ips, wg_dns_server, wg_peer_address, wg_private_key, proxy_config, \
         dns_server, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        |exec, sql| sqlx::query(sql)
            .bind(&e.id)
            .bind(&e.label)
            .bind(&e.ip_address)
            .bind(e.tunnel_type)
            .bind(&e.provider)
            .bind(&e.wg_endpoint)
            .bind(&e.wg_public_key)
            .bind(&e.wg_preshared_key)
            .bind(&e.wg_allowed_ips)
            .bind(&e.wg_dns_server)
            .bind(&e.wg_peer_address)
            .bind(&e.wg_private_key)
            .bind(&e.proxy_config)
            .bind(&e.dns_server)
            .bind(e.created_at)
            .bind(e.updated_at)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

/// Writes every operator-editable column of `e`.
pub async fn update(db: impl crate::db::Db<'_>, e: &EgressIp) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE egress_ips SET label = ?, ip_address = ?, tunnel_type = ?, provider = ?, wg_endpoint = ?, \
         wg_public_key = ?, wg_preshared_key = ?, wg_allowed_ips = ?, wg_dns_server = ?, wg_peer_address = ?, \
         wg_private_key = ?, proxy_config = ?, dns_server = ?, updated_at = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(&e.label)
            .bind(&e.ip_address)
            .bind(e.tunnel_type)
            .bind(&e.provider)
            .bind(&e.wg_endpoint)
            .bind(&e.wg_public_key)
            .bind(&e.wg_preshared_key)
            .bind(&e.wg_allowed_ips)
            .bind(&e.wg_dns_server)
            .bind(&e.wg_peer_address)
            .bind(&e.wg_private_key)
            .bind(&e.proxy_config)
            .bind(&e.dns_server)
            .bind(e.updated_at)
            .bind(&e.id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

/// Records a test: what it observed (kept apart from the declared `ip_address`, never copied into
/// it) and the checks.
pub async fn record_test(
    db: impl crate::db::Db<'_>,
    id: &str,
    observed_ip: Option<&str>,
    result: &str,
    at: UtcTime,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE egress_ips SET observed_ip = ?, last_test_at = ?, last_test_result = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(observed_ip)
            .bind(at)
            .bind(result)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

pub async fn get(db: impl crate::db::Db<'_>, id: &str) -> Result<Option<EgressIp>, sqlx::Error> {
    crate::db::on_db!(db, &format!("{SELECT} WHERE e.id = ?"), |exec, sql| {
        sqlx::query_as(sql).bind(id).fetch_optional(exec).await
    })
}

pub async fn list(
    db: &super::Pool,
    tunnel_type: Option<TunnelType>,
    page: Page,
) -> Result<(Vec<EgressIp>, i64), sqlx::Error> {
    let rows = crate::db::on_db!(
        db,
        &format!(
            "{SELECT} WHERE (? IS NULL OR e.tunnel_type = ?) ORDER BY e.created_at, e.id LIMIT ? OFFSET ?"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(tunnel_type)
            .bind(tunnel_type)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(exec)
            .await
    )?;
    let total = crate::db::on_db!(
        db,
        "SELECT COUNT(*) FROM egress_ips WHERE (? IS NULL OR tunnel_type = ?)",
        |exec, sql| sqlx::query_scalar(sql)
            .bind(tunnel_type)
            .bind(tunnel_type)
            .fetch_one(exec)
            .await
    )?;
    Ok((rows, total))
}

pub async fn delete(db: impl crate::db::Db<'_>, id: &str) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(db, "DELETE FROM egress_ips WHERE id = ?", |exec, sql| {
        sqlx::query(sql)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    })?;
    Ok(done.rows_affected() > 0)
}

/// Egress IPs by kind and use, for the dashboard.
#[derive(Debug, Default, Clone, Copy, Serialize, ToSchema)]
#[schema(as = EgressIpCounts)]
pub struct Counts {
    pub total: i64,
    /// Egress IPs with at least one host bound.
    pub bound: i64,
    pub wireguard: i64,
    pub proxy: i64,
}

pub async fn counts(db: &super::Pool) -> Result<Counts, sqlx::Error> {
    let (total, bound, wireguard, proxy): (i64, i64, i64, i64) = crate::db::on_db!(
        db,
        "SELECT COUNT(*), \
           COALESCE(SUM(CASE WHEN EXISTS (SELECT 1 FROM bindings b WHERE b.egress_ip_id = e.id) THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN tunnel_type = 'wireguard' THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN tunnel_type = 'proxy' THEN 1 ELSE 0 END), 0) \
         FROM egress_ips e",
        |exec, sql| sqlx::query_as(sql).fetch_one(exec).await
    )?;
    Ok(Counts {
        total,
        bound,
        wireguard,
        proxy,
    })
}
