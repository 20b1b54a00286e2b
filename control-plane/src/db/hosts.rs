//! Hosts: one row per user container, with its short id and limits.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Page, UtcTime};
use crate::secrets::Sealed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Recorded; the create task has not run yet.
    Pending,
    Creating,
    Running,
    Stopped,
    Error,
    /// Being removed; the row goes when the delete task has removed everything.
    Deleting,
}

impl HostStatus {
    pub const ALL: [HostStatus; 6] = [
        Self::Pending,
        Self::Creating,
        Self::Running,
        Self::Stopped,
        Self::Error,
        Self::Deleting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Error => "error",
            Self::Deleting => "deleting",
        }
    }
}

/// A host joined with its owner's name and its binding.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Host {
    pub id: String,
    pub short_id: String,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub name: String,
    pub status: HostStatus,
    pub memory_mb: i64,
    pub cpu_millis: i64,
    pub pids_limit: i64,
    pub ssh_password_hash: String,
    pub node_id: Option<String>,
    pub container_id: Option<String>,
    pub last_error: Option<String>,
    pub egress_ip_id: Option<String>,
    /// crypt(3) hash of the SSH password, for the container's account.
    pub password_crypt: String,
    /// Sealed.
    pub vnc_secret: Sealed,
    /// Where the gateways reach the host (reported by its agent).
    pub address: Option<String>,
    /// JSON of `wire::EgressHealth`, as the agent last reported it.
    pub egress_health: Option<String>,
    /// The host sshd's pinned key (OpenSSH line), once its agent reported one.
    pub ssh_host_key: Option<String>,
    pub created_at: UtcTime,
    pub updated_at: UtcTime,
    /// The id in the host's entry link `/entry/{entry_id}`; the short id until first rotated.
    pub entry_id: String,
    pub entry_disabled: bool,
    pub entry_expires_at: Option<UtcTime>,
    /// Bytes received and sent through its egress since it was made (see `db::traffic`).
    pub traffic_rx_bytes: i64,
    pub traffic_tx_bytes: i64,
    /// The traffic quota that cut its egress.
    pub egress_cut_by: Option<String>,
}

impl Host {
    /// Whether the entry link opens at `now`. A closed link answers exactly like an unknown one.
    pub fn entry_open(&self, now: UtcTime) -> bool {
        !self.entry_disabled && self.entry_expires_at.is_none_or(|at| now < at)
    }
}

const SELECT: &str = "SELECT h.id, h.short_id, h.user_id, u.username, h.name, h.status, h.memory_mb, \
    h.cpu_millis, h.pids_limit, h.ssh_password_hash, h.node_id, h.container_id, h.last_error, \
    b.egress_ip_id, h.password_crypt, h.vnc_secret, h.address, h.egress_health, h.ssh_host_key, h.created_at, \
    h.updated_at, COALESCE(h.entry_id, h.short_id) AS entry_id, h.entry_disabled, h.entry_expires_at, \
    COALESCE(t.rx_total, 0) AS traffic_rx_bytes, COALESCE(t.tx_total, 0) AS traffic_tx_bytes, h.egress_cut_by \
    FROM hosts h LEFT JOIN users u ON u.id = h.user_id LEFT JOIN bindings b ON b.host_id = h.id \
    LEFT JOIN traffic_counters t ON t.host_id = h.id";

pub struct NewHost<'a> {
    pub short_id: &'a str,
    pub user_id: &'a str,
    pub name: &'a str,
    pub memory_mb: i64,
    pub cpu_millis: i64,
    pub pids_limit: i64,
    pub ssh_password_hash: &'a str,
    pub password_crypt: &'a str,
    pub vnc_secret: &'a Sealed,
}

/// Inserts a host in `pending`; returns its id.
pub async fn insert(db: impl crate::db::Db<'_>, h: NewHost<'_>, now: UtcTime) -> Result<String, sqlx::Error> {
    let id = super::new_id();
    crate::db::on_db!(
        db,
        "INSERT INTO hosts (id, short_id, entry_id, user_id, name, status, memory_mb, cpu_millis, pids_limit, \
         ssh_password_hash, password_crypt, vnc_secret, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
        |exec, sql| sqlx::query(sql)
            .bind(&id)
            .bind(h.short_id)
            .bind(h.short_id)
            .bind(h.user_id)
            .bind(h.name)
            .bind(h.memory_mb)
            .bind(h.cpu_millis)
            .bind(h.pids_limit)
            .bind(h.ssh_password_hash)
            .bind(h.password_crypt)
            .bind(h.vnc_secret)
            .bind(now)
            .bind(now)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(id)
}

pub async fn get(db: impl crate::db::Db<'_>, id: &str) -> Result<Option<Host>, sqlx::Error> {
    crate::db::on_db!(db, &format!("{SELECT} WHERE h.id = ?"), |exec, sql| {
        sqlx::query_as(sql).bind(id).fetch_optional(exec).await
    })
}

/// The host whose entry link is `/entry/{entry_id}`, open or not.
pub async fn get_by_entry_id(
    db: impl crate::db::Db<'_>,
    entry_id: &str,
) -> Result<Option<Host>, sqlx::Error> {
    crate::db::on_db!(db, &format!("{SELECT} WHERE h.entry_id = ?"), |exec, sql| {
        sqlx::query_as(sql).bind(entry_id).fetch_optional(exec).await
    })
}

/// Gives the host a new entry link id; the old one stops resolving at once. A clash with another
/// host's link is a unique violation the caller retries.
pub async fn set_entry_id(
    db: impl crate::db::Db<'_>,
    id: &str,
    entry_id: &str,
    now: UtcTime,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE hosts SET entry_id = ?, updated_at = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(entry_id)
            .bind(now)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

/// Switches the entry link on or off and sets (or clears) its expiry.
pub async fn set_entry_state(
    db: impl crate::db::Db<'_>,
    id: &str,
    disabled: bool,
    expires_at: Option<UtcTime>,
    now: UtcTime,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE hosts SET entry_disabled = ?, entry_expires_at = ?, updated_at = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(disabled)
            .bind(expires_at)
            .bind(now)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

/// Every host of a user, oldest first.
pub async fn of_user(db: impl crate::db::Db<'_>, user_id: &str) -> Result<Vec<Host>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("{SELECT} WHERE h.user_id = ? ORDER BY h.created_at, h.id"),
        |exec, sql| sqlx::query_as(sql).bind(user_id).fetch_all(exec).await
    )
}

/// A host only if `user_id` owns it.
pub async fn get_owned(
    db: impl crate::db::Db<'_>,
    id: &str,
    user_id: &str,
) -> Result<Option<Host>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("{SELECT} WHERE h.id = ? AND h.user_id = ?"),
        |exec, sql| sqlx::query_as(sql)
            .bind(id)
            .bind(user_id)
            .fetch_optional(exec)
            .await
    )
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub user_id: Option<String>,
    pub status: Option<HostStatus>,
    /// Part of the host's name, short id or owner's username, in any case.
    pub q: Option<String>,
}

pub async fn list(db: &super::Pool, filter: &Filter, page: Page) -> Result<(Vec<Host>, i64), sqlx::Error> {
    let cond = "(? IS NULL OR h.user_id = ?) AND (? IS NULL OR h.status = ?) AND (? IS NULL \
        OR instr(lower(h.name), ?) > 0 OR instr(h.short_id, ?) > 0 OR instr(lower(u.username), ?) > 0)";
    let q = filter.q.as_deref().map(str::to_lowercase);
    let rows = crate::db::on_db!(
        db,
        &format!("{SELECT} WHERE {cond} ORDER BY h.created_at, h.id LIMIT ? OFFSET ?"),
        |exec, sql| sqlx::query_as(sql)
            .bind(&filter.user_id)
            .bind(&filter.user_id)
            .bind(filter.status)
            .bind(filter.status)
            .bind(&q)
            .bind(&q)
            .bind(&q)
            .bind(&q)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(exec)
            .await
    )?;
    let total = crate::db::on_db!(
        db,
        &format!("SELECT COUNT(*) FROM hosts h LEFT JOIN users u ON u.id = h.user_id WHERE {cond}"),
        |exec, sql| sqlx::query_scalar(sql)
            .bind(&filter.user_id)
            .bind(&filter.user_id)
            .bind(filter.status)
            .bind(filter.status)
            .bind(&q)
            .bind(&q)
            .bind(&q)
            .bind(&q)
            .fetch_one(exec)
            .await
    )?;
    Ok((rows, total))
}

/// Ids of every host of a user that is not already on its way out.
pub async fn ids_of_user(db: impl crate::db::Db<'_>, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT id FROM hosts WHERE user_id = ? AND status <> 'deleting' ORDER BY created_at",
        |exec, sql| sqlx::query_scalar(sql).bind(user_id).fetch_all(exec).await
    )
}

pub async fn set_status(
    db: impl crate::db::Db<'_>,
    id: &str,
    status: HostStatus,
    now: UtcTime,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE hosts SET status = ?, updated_at = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(status)
            .bind(now)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

pub async fn set_ssh_password(
    db: impl crate::db::Db<'_>,
    id: &str,
    hash: &str,
    crypt: &str,
    now: UtcTime,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE hosts SET ssh_password_hash = ?, password_crypt = ?, updated_at = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(hash)
            .bind(crypt)
            .bind(now)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

/// Host count per status.
pub async fn count_by_status(db: &super::Pool) -> Result<Vec<(HostStatus, i64)>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT status, COUNT(*) FROM hosts GROUP BY status ORDER BY status",
        |exec, sql| sqlx::query_as(sql).fetch_all(exec).await
    )
}

/// The last egress health report (as stored) of every running host bound to an egress IP; `None`
/// where none came yet.
pub async fn bound_egress_health(db: &super::Pool) -> Result<Vec<Option<String>>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT h.egress_health FROM hosts h JOIN bindings b ON b.host_id = h.id WHERE h.status = 'running'",
        |exec, sql| sqlx::query_scalar(sql).fetch_all(exec).await
    )
}

/// Places a host on a node (first claim of its create task).
pub async fn place(
    db: impl crate::db::Db<'_>,
    id: &str,
    node_id: &str,
    now: UtcTime,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE hosts SET node_id = COALESCE(node_id, ?), updated_at = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(node_id)
            .bind(now)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

/// Records the outcome of a task: status, error and address as the agent saw them.
pub async fn set_outcome(
    db: impl crate::db::Db<'_>,
    id: &str,
    status: HostStatus,
    last_error: Option<&str>,
    address: Option<&str>,
    now: UtcTime,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE hosts SET status = ?, last_error = ?, address = COALESCE(?, address), updated_at = ? \
         WHERE id = ? AND status <> 'deleting'",
        |exec, sql| sqlx::query(sql)
            .bind(status)
            .bind(last_error)
            .bind(address)
            .bind(now)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

/// What became of a reported host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Stored: the first one, or a new one where a change was allowed.
    Pinned,
    /// The same as the pinned one.
    Same,
    /// Another key than the pinned one, where no change is allowed: the pin stays.
    Refused,
}

/// Pins `key` as the host's sshd key; a different key replaces a pinned one only when
/// `may_change` (the result of a create or rebuild).
pub async fn pin_host_key(
    db: &mut crate::db::Connection,
    id: &str,
    key: &str,
    may_change: bool,
) -> Result<Pin, sqlx::Error> {
    let current: Option<Option<String>> = crate::db::on_db!(
        &mut *db,
        "SELECT ssh_host_key FROM hosts WHERE id = ?",
        |exec, sql| sqlx::query_scalar(sql).bind(id).fetch_optional(exec).await
    )?;
    let pin = match current.flatten() {
        Some(pinned) if pinned == key => return Ok(Pin::Same),
        Some(_) if !may_change => return Ok(Pin::Refused),
        _ => Pin::Pinned,
    };
    crate::db::on_db!(
        &mut *db,
        "UPDATE hosts SET ssh_host_key = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(key)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(pin)
}

pub async fn delete(db: impl crate::db::Db<'_>, id: &str) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(db, "DELETE FROM hosts WHERE id = ?", |exec, sql| sqlx::query(sql)
        .bind(id)
        .execute(exec)
        .await
        .map(crate::db::Done::from))?;
    Ok(done.rows_affected() > 0)
}

/// Every running host, on any node.
pub async fn running(db: impl crate::db::Db<'_>) -> Result<Vec<Host>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("{SELECT} WHERE h.status = 'running' ORDER BY h.created_at"),
        |exec, sql| sqlx::query_as(sql).fetch_all(exec).await
    )
}

/// Every host placed on `node_id`.
pub async fn on_node(db: impl crate::db::Db<'_>, node_id: &str) -> Result<Vec<Host>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("{SELECT} WHERE h.node_id = ? ORDER BY h.created_at"),
        |exec, sql| sqlx::query_as(sql).bind(node_id).fetch_all(exec).await
    )
}

/// The oldest host of a user that is not on its way out: the one a login without a short id reaches.
pub async fn first_of_user(db: impl crate::db::Db<'_>, user_id: &str) -> Result<Option<Host>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "{SELECT} WHERE h.user_id = ? AND h.status <> 'deleting' ORDER BY h.created_at, h.id LIMIT 1"
        ),
        |exec, sql| sqlx::query_as(sql).bind(user_id).fetch_optional(exec).await
    )
}

/// Stores a host's egress health (JSON), `None` clearing it.
pub async fn set_egress_health(
    db: impl crate::db::Db<'_>,
    id: &str,
    health: Option<&str>,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE hosts SET egress_health = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(health)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}
