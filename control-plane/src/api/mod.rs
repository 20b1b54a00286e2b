//! The HTTP API: one module per resource, each exposing `router()`, merged here together with the
//! OpenAPI document that is generated from the same handlers.

pub mod access;
pub mod agent;
pub mod api_tokens;
pub mod auth;
pub mod bindings;
pub mod dashboard;
mod document;
pub mod egress_ips;
pub mod enrolment;
pub mod entry_links;
pub mod events;
pub mod gateway;
pub mod health;
pub mod hosts;
pub mod metrics;
pub mod nodes;
pub mod portal;
pub mod recordings;
pub mod ssh_keys;
pub mod ssh_sessions;
pub mod tasks;
pub mod terminal;
pub mod totp;
pub mod traffic;
pub mod users;
pub mod vnc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use tower_http::trace::TraceLayer;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::db::Page;
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cloud-cli-proxy",
        description = "Control-plane API of cloud-cli-proxy."
    ),
    components(schemas(crate::error::ErrorBody))
)]
struct ApiDoc;

/// Every route with its documentation; the router and `/openapi.json` both come from here.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(metrics::router())
        .merge(auth::router())
        .merge(totp::router())
        .merge(api_tokens::router())
        .merge(users::router())
        .merge(ssh_keys::router())
        .merge(egress_ips::router())
        .merge(hosts::router())
        .merge(ssh_sessions::router())
        .merge(entry_links::router())
        .merge(bindings::router())
        .merge(tasks::router())
        .merge(gateway::router())
        .merge(events::router())
        .merge(recordings::router())
        .merge(dashboard::router())
        .merge(nodes::router())
        .merge(enrolment::router())
        .merge(portal::router())
        .merge(vnc::router())
        .merge(terminal::router())
        .merge(traffic::router())
        .merge(agent::router())
        .merge(access::router())
}

/// The router of every route, and the OpenAPI document served at `/openapi.json`.
fn parts() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = routes().split_for_parts();
    document::complete(&mut doc);
    (router, doc)
}

/// The OpenAPI document served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

/// The complete application.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let (router, doc) = parts();
    let doc = std::sync::Arc::new(doc);
    let router = router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .merge(crate::web::router());
    finish(router, max_body_bytes, &state).with_state(state)
}

/// Only the bootstrap and entry routes, for the `ENTRY_ADDR` listener (short links on port 80
/// without opening the whole API there).
pub fn access_router(state: AppState, max_body_bytes: usize) -> Router {
    let (router, _) = OpenApiRouter::<AppState>::new()
        .merge(access::router())
        .split_for_parts();
    finish(router, max_body_bytes, &state).with_state(state)
}

/// Only the agent and gateway routes, for the loopback listener the embedded agent and gateway
/// use while the public listeners serve HTTPS.
pub fn machine_router(state: AppState, max_body_bytes: usize) -> Router {
    let (router, _) = OpenApiRouter::<AppState>::new()
        .merge(agent::router())
        .merge(gateway::router())
        .merge(recordings::gateway_router())
        .split_for_parts();
    finish(router, max_body_bytes, &state).with_state(state)
}

/// Only `GET /metrics`, without a credential, for the `METRICS_ADDR` listener.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |State(state): State<AppState>| async move { metrics::exposition(&state).await },
            ),
        )
        .fallback(route_not_found)
        .with_state(state)
}

/// The fallbacks, body limit, response headers and request span every listener shares.
fn finish(router: Router<AppState>, max_body_bytes: usize, state: &AppState) -> Router<AppState> {
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::new(tokio::sync::Semaphore::new(
                crate::auth::login::SIGN_INS_IN_FLIGHT,
            )),
            crate::auth::login::gate,
        ))
        .layer(axum::middleware::map_response(crate::web::security_headers))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            strict_transport,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                // The path only: query strings may carry filters but never secrets; keep them out anyway.
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
            }),
        )
        // Outermost, so the time counted includes every other layer.
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
}

/// `Strict-Transport-Security` when users reach the API over HTTPS, so browsers that saw it once
/// refuse plain HTTP to this host for a year, whatever link they follow.
async fn strict_transport(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    if state.settings.serves_tls() {
        response.headers_mut().insert(
            axum::http::header::STRICT_TRANSPORT_SECURITY,
            axum::http::HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

async fn route_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;

/// The highest page number: the document's page is a 32-bit integer.
pub const MAX_PAGE: u32 = 2_147_483_647;

/// `page` (from 1) and `page_size` (1-500, default 50); `limit` is accepted as another name for
/// `page_size` (when both are given, `page_size` counts; each must be in bounds).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The page to return, from 1.
    #[param(minimum = 1, maximum = 2_147_483_647)]
    pub page: Option<u32>,
    /// Items per page, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub page_size: Option<u32>,
    /// Another name for `page_size`.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

impl PageQuery {
    pub fn resolve(&self) -> Result<Page, ApiError> {
        let page = self.page.unwrap_or(1);
        if !(1..=MAX_PAGE).contains(&page) {
            return Err(ApiError {
                field: Some("page".into()),
                ..ApiError::bad_request("invalid_query", format!("page must be 1 to {MAX_PAGE}"))
            });
        }
        for (field, size) in [("page_size", self.page_size), ("limit", self.limit)] {
            if size.is_some_and(|size| !(1..=MAX_PAGE_SIZE).contains(&size)) {
                return Err(ApiError {
                    field: Some(field.into()),
                    ..ApiError::bad_request("invalid_query", format!("{field} must be 1 to {MAX_PAGE_SIZE}"))
                });
            }
        }
        Ok(Page {
            page,
            page_size: self.page_size.or(self.limit).unwrap_or(DEFAULT_PAGE_SIZE),
        })
    }
}

/// The longest `q` of a list, in characters.
pub const MAX_SEARCH_CHARS: usize = 100;

/// A list's `q`: at most 100 characters, none of them a control character (no name holds one);
/// trimmed, `None` when that leaves nothing.
pub fn search_text(q: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(q) = q else { return Ok(None) };
    if q.chars().count() > MAX_SEARCH_CHARS || q.chars().any(char::is_control) {
        return Err(ApiError {
            field: Some("q".into()),
            ..ApiError::bad_request(
                "invalid_query",
                format!("q is at most {MAX_SEARCH_CHARS} characters, none of them a control character"),
            )
        });
    }
    let q = q.trim();
    Ok((!q.is_empty()).then(|| q.to_owned()))
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paginated<T: ToSchema> {
    pub data: Vec<T>,
    pub page: u32,
    pub page_size: u32,
    pub total_records: i64,
    pub total_pages: i64,
}

impl<T: ToSchema> Paginated<T> {
    pub fn new(data: Vec<T>, page: Page, total_records: i64) -> Self {
        let size = i64::from(page.page_size);
        Self {
            data,
            page: page.page,
            page_size: page.page_size,
            total_records,
            total_pages: (total_records + size - 1) / size,
        }
    }
}

impl<T: ToSchema + Serialize> IntoResponse for Paginated<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self).into_response()
    }
}

/// Parses an id from the path or body; anything but a UUID is 400 `invalid_id`.
pub fn parse_id(field: &str, raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| ApiError {
            field: Some(field.to_owned()),
            ..ApiError::bad_request("invalid_id", format!("`{field}` must be a UUID"))
        })
}
