//! `GET /healthz`: database and agent checks in the seed's shape.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `degraded` (no agent connected) or `error` (database down).
    pub status: &'static str,
    pub checks: Checks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    pub database: &'static str,
    pub agent: &'static str,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz))
}

/// Health of the control plane and its dependencies.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn healthz(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    let database = match crate::db::on_db!(&state.db, "SELECT 1", |exec, sql| sqlx::query_scalar::<_, i32>(
        sql
    )
    .fetch_one(exec)
    .await)
    {
        Ok(_) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "health check: database does not answer");
            "error"
        }
    };
    let agent = match crate::api::dashboard::live_agents(&state).await {
        Ok(n) if n > 0 => "ok",
        _ => "unavailable",
    };
    let (code, status) = match (database, agent) {
        ("ok", "ok") => (StatusCode::OK, "ok"),
        ("ok", _) => (StatusCode::OK, "degraded"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "error"),
    };
    (
        code,
        axum::Json(Health {
            status,
            checks: Checks { database, agent },
        }),
    )
}
