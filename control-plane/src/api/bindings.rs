//! Bindings of hosts to egress IPs: `/v1/admin/bindings…`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Admin;
use crate::db::bindings::Binding;
use crate::db::events::NewEvent;
use crate::db::hosts::HostStatus;
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{Json, Path, Query};

use super::{PageQuery, Paginated, parse_id};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBinding {
    pub host_id: String,
    pub egress_ip_id: String,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BindingFilter {
    pub host_id: Option<Uuid>,
    pub egress_ip_id: Option<Uuid>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_binding, list_bindings))
        .routes(routes!(get_binding, delete_binding))
}

/// Binds a host to an egress IP. A running host picks the binding up when it is next started.
#[utoipa::path(post, path = "/v1/admin/bindings", tag = "bindings", security(("bearer" = [])),
    request_body = CreateBinding,
    responses((status = 201, body = Binding), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn create_binding(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(req): Json<CreateBinding>,
) -> ApiResult<(StatusCode, Json<Binding>)> {
    let host_id = parse_id("host_id", &req.host_id)?;
    let egress_ip_id = parse_id("egress_ip_id", &req.egress_ip_id)?;
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let host = db::hosts::get(&mut *tx, &host_id)
        .await?
        .ok_or_else(|| ApiError::not_found("host"))?;
    if host.status == HostStatus::Deleting {
        return Err(ApiError::conflict("host_deleting", "the host is being deleted"));
    }
    let egress = db::egress_ips::get(&mut *tx, &egress_ip_id)
        .await?
        .ok_or_else(|| ApiError::not_found("egress IP"))?;
    let binding = match db::bindings::insert(&mut *tx, &host.id, &egress.id, now).await {
        Ok(b) => b,
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict(
                "host_already_bound",
                "the host is already bound to an egress IP",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    db::hosts::set_egress_health(&mut *tx, &host.id, None).await?;
    let mut event = NewEvent::success("binding.created").host(&host.id).details(
        serde_json::json!({ "binding_id": binding.id, "egress_ip_id": egress.id, "label": egress.label }),
    );
    event.user_id = host.user_id.clone();
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(binding)))
}

/// Lists bindings.
#[utoipa::path(get, path = "/v1/admin/bindings", tag = "bindings", security(("bearer" = [])),
    params(PageQuery, BindingFilter), responses((status = 200, body = Paginated<Binding>)))]
async fn list_bindings(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(page): Query<PageQuery>,
    Query(filter): Query<BindingFilter>,
) -> ApiResult<Paginated<Binding>> {
    let page = page.resolve()?;
    let filter = db::bindings::Filter {
        host_id: filter.host_id.map(|u| u.to_string()),
        egress_ip_id: filter.egress_ip_id.map(|u| u.to_string()),
    };
    let (rows, total) = db::bindings::list(&state.db, &filter, page).await?;
    Ok(Paginated::new(rows, page, total))
}

/// One binding.
#[utoipa::path(get, path = "/v1/admin/bindings/{binding_id}", tag = "bindings", security(("bearer" = [])),
    params(("binding_id" = Uuid, Path)),
    responses((status = 200, body = Binding), (status = 404, body = crate::error::ErrorBody)))]
async fn get_binding(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(binding_id): Path<Uuid>,
) -> ApiResult<Json<Binding>> {
    db::bindings::get(&state.db, &binding_id.to_string())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("binding"))
}

/// Removes a binding. A running host keeps its tunnel until it is next started.
#[utoipa::path(delete, path = "/v1/admin/bindings/{binding_id}", tag = "bindings", security(("bearer" = [])),
    params(("binding_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
async fn delete_binding(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(binding_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let binding = db::bindings::get(&mut *tx, &binding_id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("binding"))?;
    db::bindings::delete(&mut *tx, &binding.id).await?;
    // The health was about the old egress: none until the agent checks the new state.
    db::hosts::set_egress_health(&mut *tx, &binding.host_id, None).await?;
    let owner = db::hosts::get(&mut *tx, &binding.host_id)
        .await?
        .and_then(|h| h.user_id);
    let mut event = NewEvent::success("binding.deleted")
        .host(&binding.host_id)
        .details(serde_json::json!({ "binding_id": binding.id, "egress_ip_id": binding.egress_ip_id }));
    event.user_id = owner;
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
