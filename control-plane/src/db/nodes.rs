//! Docker nodes, as their agents announce themselves.

use serde::Serialize;
use sqlx::SqliteExecutor;
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
}

const COLUMNS: &str = "id, name, agent_version, reach_address, registered_at, last_seen_at";

/// Registers a node by name, keeping its id across agent restarts.
pub async fn register(
    db: impl SqliteExecutor<'_>,
    name: &str,
    agent_version: &str,
    reach_address: Option<&str>,
    now: UtcTime,
) -> Result<Node, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO nodes (id, name, agent_version, reach_address, registered_at, last_seen_at) \
         VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET agent_version = excluded.agent_version, \
           reach_address = excluded.reach_address, last_seen_at = excluded.last_seen_at \
         RETURNING {COLUMNS}"
    ))
    .bind(super::new_id())
    .bind(name)
    .bind(agent_version)
    .bind(reach_address)
    .bind(now)
    .bind(now)
    .fetch_one(db)
    .await
}

/// Marks the node alive; false when no such node is registered.
pub async fn touch(db: impl SqliteExecutor<'_>, id: &str, now: UtcTime) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE nodes SET last_seen_at = ? WHERE id = ?")
        .bind(now)
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn get(db: impl SqliteExecutor<'_>, id: &str) -> Result<Option<Node>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM nodes WHERE id = ?"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Nodes heard from since `since`.
pub async fn live(db: impl SqliteExecutor<'_>, since: UtcTime) -> Result<Vec<Node>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM nodes WHERE last_seen_at >= ? ORDER BY name"
    ))
    .bind(since)
    .fetch_all(db)
    .await
}

/// A node with the number of hosts placed on it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeWithHosts {
    #[sqlx(flatten)]
    pub node: Node,
    pub hosts: i64,
}

/// Nodes by name, with their host counts.
pub async fn list(db: &super::Pool, page: super::Page) -> Result<(Vec<NodeWithHosts>, i64), sqlx::Error> {
    let rows = sqlx::query_as(
        "SELECT n.id, n.name, n.agent_version, n.reach_address, n.registered_at, n.last_seen_at, \
         (SELECT COUNT(*) FROM hosts h WHERE h.node_id = n.id) AS hosts \
         FROM nodes n ORDER BY n.name LIMIT ? OFFSET ?",
    )
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar("SELECT COUNT(*) FROM nodes")
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}
