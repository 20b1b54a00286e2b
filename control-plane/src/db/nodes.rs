//! Docker nodes, as their agents announce themselves.

use serde::Serialize;
use utoipa::ToSchema;

use super::UtcTime;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub agent_version: String,
    pub reach_address: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub registered_at: UtcTime,
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: UtcTime,
    /// When the operator revoked the node's credential; it enrols again with a new key.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<UtcTime>,
    /// The node's hosts network, as its agent reported it at its first registration.
    pub hosts_subnet: Option<String>,
}

const COLUMNS: &str =
    "id, name, agent_version, reach_address, registered_at, last_seen_at, revoked_at, hosts_subnet";

/// Enrols a node under `name` with the credential whose hash is given. A name already held by an
/// enrolled node is refused (`None`); one whose credential was revoked, or a node from before
/// enrolment, is taken over with its id, so its hosts stay placed on it. Its hosts subnet is
/// forgotten, to be reported again.
pub async fn enrol(
    db: impl crate::db::Db<'_>,
    name: &str,
    credential_hash: &str,
    now: UtcTime,
) -> Result<Option<Node>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "INSERT INTO nodes (id, name, agent_version, reach_address, registered_at, last_seen_at, credential_hash) \
         VALUES (?, ?, '', NULL, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET credential_hash = excluded.credential_hash, revoked_at = NULL, \
           hosts_subnet = NULL, registered_at = excluded.registered_at \
         WHERE nodes.credential_hash IS NULL \
         RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(super::new_id())
            .bind(name)
            .bind(now)
            .bind(now)
            .bind(credential_hash)
            .fetch_optional(exec)
            .await
    )
}

/// Gives the node named `name` a new credential whatever it held before: for the agent embedded
/// in the control plane, which is enrolled anew at every start.
pub async fn enrol_embedded(
    db: impl crate::db::Db<'_>,
    name: &str,
    credential_hash: &str,
    now: UtcTime,
) -> Result<Node, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "INSERT INTO nodes (id, name, agent_version, reach_address, registered_at, last_seen_at, credential_hash) \
         VALUES (?, ?, '', NULL, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET credential_hash = excluded.credential_hash, revoked_at = NULL, \
           hosts_subnet = NULL \
         RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(super::new_id())
            .bind(name)
            .bind(now)
            .bind(now)
            .bind(credential_hash)
            .fetch_one(exec)
            .await
    )
}

/// The enrolled node holding the credential whose hash is given.
pub async fn by_credential(
    db: impl crate::db::Db<'_>,
    credential_hash: &str,
) -> Result<Option<Node>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM nodes WHERE credential_hash = ? AND revoked_at IS NULL"),
        |exec, sql| sqlx::query_as(sql)
            .bind(credential_hash)
            .fetch_optional(exec)
            .await
    )
}

/// An agent's registration: its version and reach address, and its hosts subnet if none is known
/// yet (a later, different one is not taken).
pub async fn register(
    db: impl crate::db::Db<'_>,
    id: &str,
    agent_version: &str,
    reach_address: Option<&str>,
    hosts_subnet: Option<&str>,
    now: UtcTime,
) -> Result<Option<Node>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!(
            "UPDATE nodes SET agent_version = ?, reach_address = ?, last_seen_at = ?, \
           hosts_subnet = COALESCE(hosts_subnet, ?) \
         WHERE id = ? AND revoked_at IS NULL RETURNING {COLUMNS}"
        ),
        |exec, sql| sqlx::query_as(sql)
            .bind(agent_version)
            .bind(reach_address)
            .bind(now)
            .bind(hosts_subnet)
            .bind(id)
            .fetch_optional(exec)
            .await
    )
}

/// Revokes the node's credential: the agent is refused from its next request on. False when there
/// is no such node.
pub async fn revoke(db: impl crate::db::Db<'_>, id: &str, now: UtcTime) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "UPDATE nodes SET credential_hash = NULL, revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() > 0)
}

/// Marks the node alive; false when no such node is registered.
pub async fn touch(db: impl crate::db::Db<'_>, id: &str, now: UtcTime) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "UPDATE nodes SET last_seen_at = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() > 0)
}

pub async fn get(db: impl crate::db::Db<'_>, id: &str) -> Result<Option<Node>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM nodes WHERE id = ?"),
        |exec, sql| sqlx::query_as(sql).bind(id).fetch_optional(exec).await
    )
}

/// Enrolled nodes heard from since `since`.
pub async fn live(db: impl crate::db::Db<'_>, since: UtcTime) -> Result<Vec<Node>, sqlx::Error> {
    crate::db::on_db!(
        db,
        &format!("SELECT {COLUMNS} FROM nodes WHERE last_seen_at >= ? AND revoked_at IS NULL ORDER BY name"),
        |exec, sql| sqlx::query_as(sql).bind(since).fetch_all(exec).await
    )
}

/// Nodes not revoked: how many, and how many of them were heard from since `since`.
pub async fn seen_counts(db: impl crate::db::Db<'_>, since: UtcTime) -> Result<(i64, i64), sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN last_seen_at >= ? THEN 1 ELSE 0 END), 0) \
         FROM nodes WHERE revoked_at IS NULL",
        |exec, sql| sqlx::query_as(sql).bind(since).fetch_one(exec).await
    )
}

/// A node with the number of hosts placed on it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeWithHosts {
    #[sqlx(flatten)]
    pub node: Node,
    pub hosts: i64,
    /// Holds a credential.
    pub enrolled: bool,
}

/// Nodes by name, with their host counts.
pub async fn list(db: &super::Pool, page: super::Page) -> Result<(Vec<NodeWithHosts>, i64), sqlx::Error> {
    let rows = crate::db::on_db!(
        db,
        "SELECT n.id, n.name, n.agent_version, n.reach_address, n.registered_at, n.last_seen_at, \
         n.revoked_at, n.hosts_subnet, n.credential_hash IS NOT NULL AS enrolled, \
         (SELECT COUNT(*) FROM hosts h WHERE h.node_id = n.id) AS hosts \
         FROM nodes n ORDER BY n.name LIMIT ? OFFSET ?",
        |exec, sql| sqlx::query_as(sql)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(exec)
            .await
    )?;
    let total = crate::db::on_db!(db, "SELECT COUNT(*) FROM nodes", |exec, sql| sqlx::query_scalar(
        sql
    )
    .fetch_one(exec)
    .await)?;
    Ok((rows, total))
}
