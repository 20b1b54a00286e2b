//! The machines the control plane works through, as the operator sees them: Docker nodes (their
//! agents' heartbeats) and SSH gateways (theirs).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::auth::Admin;
use crate::db::events::NewEvent;
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Query};

use super::{PageQuery, Paginated};

/// Seconds of silence after which a gateway counts as gone: it re-registers every
/// `wire::gateway::HEARTBEAT_SECS`.
pub(crate) const GATEWAY_SILENCE_SECS: i64 = 3 * wire::gateway::HEARTBEAT_SECS as i64;

/// A Docker node and its agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    pub agent_version: String,
    /// Where the node's hosts are reached from the control plane, when the agent said.
    pub reach_address: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub registered_at: UtcTime,
    /// The agent's last heartbeat.
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: UtcTime,
    /// Heard from within three heartbeats.
    pub connected: bool,
    /// Hosts placed on the node.
    pub hosts: i64,
    /// When its credential was revoked; until it enrols again, its agent is refused.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<UtcTime>,
    /// Holds a credential (enrolled and not revoked).
    pub enrolled: bool,
    /// The node's hosts network: host addresses its agent reports must lie inside it.
    pub hosts_subnet: Option<String>,
}

/// An SSH gateway.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayView {
    pub name: String,
    /// SHA-256 fingerprint of the key the gateway logs in to hosts with.
    pub client_key_fingerprint: String,
    #[schema(value_type = String, format = DateTime)]
    pub registered_at: UtcTime,
    /// The gateway's last heartbeat.
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: UtcTime,
    /// Heard from within three heartbeats.
    pub connected: bool,
    /// Holds a credential; a gateway from before enrolment keys does not, and its key is not
    /// given to hosts.
    pub enrolled: bool,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_nodes))
        .routes(routes!(revoke_node))
        .routes(routes!(list_gateways))
        .routes(routes!(remove_gateway))
}

/// Docker nodes by name, with their heartbeats and host counts.
#[utoipa::path(get, path = "/v1/admin/nodes", tag = "nodes", security(("bearer" = [])),
    params(PageQuery), responses((status = 200, body = Paginated<NodeView>)))]
async fn list_nodes(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(page): Query<PageQuery>,
) -> ApiResult<Paginated<NodeView>> {
    let page = page.resolve()?;
    let (rows, total) = db::nodes::list(&state.db, page).await?;
    let since = super::dashboard::agents_live_since(UtcTime::now());
    let data = rows
        .into_iter()
        .map(|row| NodeView {
            connected: row.node.last_seen_at >= since && row.node.revoked_at.is_none(),
            enrolled: row.node.revoked_at.is_none() && row.enrolled,
            revoked_at: row.node.revoked_at,
            hosts_subnet: row.node.hosts_subnet,
            id: row.node.id,
            name: row.node.name,
            agent_version: row.node.agent_version,
            reach_address: row.node.reach_address,
            registered_at: row.node.registered_at,
            last_seen_at: row.node.last_seen_at,
            hosts: row.hosts,
        })
        .collect();
    Ok(Paginated::new(data, page, total))
}

/// SSH gateways by name, with their heartbeats.
#[utoipa::path(get, path = "/v1/admin/gateways", tag = "nodes", security(("bearer" = [])),
    params(PageQuery), responses((status = 200, body = Paginated<GatewayView>)))]
async fn list_gateways(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(page): Query<PageQuery>,
) -> ApiResult<Paginated<GatewayView>> {
    let page = page.resolve()?;
    let (rows, total) = db::gateways::list(&state.db, page).await?;
    let since = UtcTime::from(UtcTime::now().0 - chrono::Duration::seconds(GATEWAY_SILENCE_SECS));
    let data = rows
        .into_iter()
        .map(|g| GatewayView {
            client_key_fingerprint: ssh_key::PublicKey::from_openssh(&g.client_key)
                .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
                .unwrap_or_default(),
            connected: g.last_seen_at >= since && g.enrolled,
            enrolled: g.enrolled,
            name: g.name,
            registered_at: g.registered_at,
            last_seen_at: g.last_seen_at,
        })
        .collect();
    Ok(Paginated::new(data, page, total))
}

/// Revokes a node's credential: its agent is refused from its next request on, and sees no task,
/// secret or host of the node any more. The node and its hosts stay; an agent enrolling again
/// under the same name (with a new key) takes them over.
#[utoipa::path(delete, path = "/v1/admin/nodes/{node_id}", tag = "nodes", security(("bearer" = [])),
    params(("node_id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
async fn revoke_node(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(node_id): Path<uuid::Uuid>,
) -> ApiResult<StatusCode> {
    let node_id = node_id.to_string();
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    if !db::nodes::revoke(&mut *tx, &node_id, now).await? {
        return Err(ApiError::not_found("node"));
    }
    let event = NewEvent::success("node.revoked").details(serde_json::json!({ "node_id": node_id }));
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    tracing::info!(node_id, "node credential revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an SSH gateway: its credential stops working at once, and its key leaves every host
/// (running hosts get their keys rewritten by a task; the others get the current keys when they
/// start).
#[utoipa::path(delete, path = "/v1/admin/gateways/{name}", tag = "nodes", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
async fn remove_gateway(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let Some(key) = db::gateways::remove(&mut tx, &name).await? else {
        return Err(ApiError::not_found("gateway"));
    };
    let queued = if key.is_empty() {
        0
    } else {
        crate::hosts::apply_secrets_everywhere(&mut tx, &admin.actor(), "gateway_removed", now).await?
    };
    let event = NewEvent::success("gateway.removed")
        .details(serde_json::json!({ "name": name, "hosts_refreshed": queued }));
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    if queued > 0 {
        state.wake_agents();
    }
    tracing::info!(gateway = %name, hosts_refreshed = queued, "gateway removed");
    Ok(StatusCode::NO_CONTENT)
}
