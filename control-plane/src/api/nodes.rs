//! The machines the control plane works through, as the operator sees them: Docker nodes (their
//! agents' heartbeats) and SSH gateways (theirs).

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::auth::Admin;
use crate::db::{self, UtcTime};
use crate::error::ApiResult;
use crate::extract::Query;

use super::{PageQuery, Paginated};

/// Seconds of silence after which a gateway counts as gone: it re-registers every
/// `wire::gateway::HEARTBEAT_SECS`.
const GATEWAY_SILENCE_SECS: i64 = 3 * wire::gateway::HEARTBEAT_SECS as i64;

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
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_nodes))
        .routes(routes!(list_gateways))
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
            connected: row.node.last_seen_at >= since,
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
            connected: g.last_seen_at >= since,
            name: g.name,
            registered_at: g.registered_at,
            last_seen_at: g.last_seen_at,
        })
        .collect();
    Ok(Paginated::new(data, page, total))
}
