//! `GET /metrics`: the Prometheus exposition (docs/metrics.md), for the operator and for API tokens
//! with the `metrics` scope.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::auth::MetricsReader;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The control plane's metrics (and those of the agent and SSH gateway running in its process) in
/// the Prometheus text format. Every series is listed in docs/metrics.md.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 401, body = crate::error::ErrorBody),
        (status = 403, description = "not the operator, or an API token without the `metrics` scope", body = crate::error::ErrorBody)))]
async fn metrics(State(state): State<AppState>, _reader: MetricsReader) -> impl IntoResponse {
    exposition(&state).await
}

/// The exposition with its content type; also served, without a credential, on `METRICS_ADDR`.
pub async fn exposition(state: &AppState) -> impl IntoResponse + use<> {
    let text = state.metrics.render(&state.db).await;
    ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}
