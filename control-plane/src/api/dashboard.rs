//! Counts for the operator's dashboard: `GET /v1/admin/dashboard/stats`.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::auth::Admin;
use crate::db::hosts::HostStatus;
use crate::db::{self, UtcTime};
use crate::error::ApiResult;
use crate::extract::Json;

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub users: db::users::Counts,
    pub hosts: HostCounts,
    pub egress_ips: db::egress_ips::Counts,
    pub tasks: db::tasks::Counts,
    pub agents: AgentCounts,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HostCounts {
    pub total: i64,
    /// Every status, zero included.
    pub by_status: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentCounts {
    pub connected: i64,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stats))
}

/// Users, hosts, egress IPs, tasks and agents at a glance.
#[utoipa::path(get, path = "/v1/admin/dashboard/stats", tag = "dashboard", security(("bearer" = [])),
    responses((status = 200, body = Stats)))]
async fn stats(State(state): State<AppState>, Admin(_): Admin) -> ApiResult<Json<Stats>> {
    let now = UtcTime::now();
    let users = db::users::counts(&state.db, now).await?;
    let mut by_status: BTreeMap<String, i64> = HostStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for (status, n) in db::hosts::count_by_status(&state.db).await? {
        by_status.insert(status.as_str().to_owned(), n);
    }
    let total = by_status.values().sum();
    let egress_ips = db::egress_ips::counts(&state.db).await?;
    let tasks = db::tasks::counts(&state.db, UtcTime::from(now.0 - chrono::Duration::hours(24))).await?;
    Ok(Json(Stats {
        users,
        hosts: HostCounts { total, by_status },
        egress_ips,
        tasks,
        agents: AgentCounts {
            connected: live_agents(&state).await?,
        },
    }))
}

/// Agents heard from within three heartbeats.
pub async fn live_agents(state: &AppState) -> Result<i64, sqlx::Error> {
    let since = agents_live_since(UtcTime::now());
    Ok(i64::try_from(db::nodes::live(&state.db, since).await?.len()).unwrap_or(i64::MAX))
}

/// The oldest heartbeat of an agent that still counts as connected at `now`: three heartbeats ago.
pub fn agents_live_since(now: UtcTime) -> UtcTime {
    let horizon = chrono::Duration::seconds(i64::try_from(3 * crate::tasks::HEARTBEAT_SECS).unwrap_or(15));
    UtcTime::from(now.0 - horizon)
}
