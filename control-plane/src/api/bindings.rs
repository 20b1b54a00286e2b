//! Bindings of hosts to egress IPs: `/v1/admin/bindings…`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Admin;
use crate::db::bindings::Binding;
use crate::db::egress_ips::TunnelType;
use crate::db::events::NewEvent;
use crate::db::hosts::HostStatus;
use crate::db::{self, UtcTime};
use crate::egress::wireguard;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{Json, Path, Query};
use crate::secrets::{Sealed, SecretsKey, field};

use super::{PageQuery, Paginated, parse_id};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBinding {
    #[schema(format = Uuid)]
    pub host_id: String,
    #[schema(format = Uuid)]
    pub egress_ip_id: String,
    /// WireGuard only: this host's tunnel address (CIDR), when the provider gave each peer its own;
    /// default: the egress IP's `wg_peer_address`.
    pub wg_peer_address: Option<String>,
}

/// A binding as the API shows it. For a WireGuard egress IP the host has its own key pair:
/// `wg_public_key` is its public half, to register with the provider as a peer (with
/// `wg_peer_address`, or the egress IP's when null).
#[derive(Debug, Serialize, ToSchema)]
pub struct BindingView {
    pub id: String,
    pub host_id: String,
    pub egress_ip_id: String,
    pub wg_public_key: Option<String>,
    pub wg_peer_address: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UtcTime,
}

impl BindingView {
    fn new(b: &Binding, secrets: &SecretsKey) -> Self {
        Self {
            id: b.id.clone(),
            host_id: b.host_id.clone(),
            egress_ip_id: b.egress_ip_id.clone(),
            wg_public_key: wireguard::public_key_of_sealed(
                secrets,
                field::BINDING_WG_PRIVATE_KEY,
                b.wg_private_key.as_ref(),
            ),
            wg_peer_address: b.wg_peer_address.clone(),
            created_at: b.created_at,
        }
    }
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
        .routes(routes!(rotate_binding_wg_key))
}

/// Binds a host to an egress IP. A running host picks the binding up when it is next started.
#[utoipa::path(post, path = "/v1/admin/bindings", tag = "bindings", security(("bearer" = [])),
    request_body = CreateBinding,
    responses((status = 201, body = BindingView), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
async fn create_binding(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(req): Json<CreateBinding>,
) -> ApiResult<(StatusCode, Json<BindingView>)> {
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
    let wireguard_egress = egress.tunnel_type == TunnelType::Wireguard;
    let peer_address = match req.wg_peer_address.as_deref() {
        Some(_) if !wireguard_egress => {
            return Err(ApiError::invalid(
                "wg_peer_address",
                "only a binding to a WireGuard egress IP has a tunnel address",
            ));
        }
        Some(a) => Some(
            wireguard::validate_peer_address("wg_peer_address", a)
                .map_err(|e| ApiError::invalid(e.field, e.message))?,
        ),
        None => None,
    };
    let private_key = wireguard_egress.then(|| {
        Sealed::seal(
            &state.secrets,
            field::BINDING_WG_PRIVATE_KEY,
            &wireguard::generate_keypair().0,
        )
    });
    let inserted = db::bindings::insert(
        &mut *tx,
        &host.id,
        &egress.id,
        private_key.as_ref(),
        peer_address.as_deref(),
        now,
    )
    .await;
    let binding = match inserted {
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
    Ok((
        StatusCode::CREATED,
        Json(BindingView::new(&binding, &state.secrets)),
    ))
}

/// Lists bindings.
#[utoipa::path(get, path = "/v1/admin/bindings", tag = "bindings", security(("bearer" = [])),
    params(PageQuery, BindingFilter), responses((status = 200, body = Paginated<BindingView>)))]
async fn list_bindings(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(page): Query<PageQuery>,
    Query(filter): Query<BindingFilter>,
) -> ApiResult<Paginated<BindingView>> {
    let page = page.resolve()?;
    let filter = db::bindings::Filter {
        host_id: filter.host_id.map(|u| u.to_string()),
        egress_ip_id: filter.egress_ip_id.map(|u| u.to_string()),
    };
    let (rows, total) = db::bindings::list(&state.db, &filter, page).await?;
    Ok(Paginated::new(
        rows.iter().map(|b| BindingView::new(b, &state.secrets)).collect(),
        page,
        total,
    ))
}

/// One binding.
#[utoipa::path(get, path = "/v1/admin/bindings/{binding_id}", tag = "bindings", security(("bearer" = [])),
    params(("binding_id" = Uuid, Path)),
    responses((status = 200, body = BindingView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_binding(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(binding_id): Path<Uuid>,
) -> ApiResult<Json<BindingView>> {
    db::bindings::get(&state.db, &binding_id.to_string())
        .await?
        .map(|b| Json(BindingView::new(&b, &state.secrets)))
        .ok_or_else(|| ApiError::not_found("binding"))
}

/// Replaces the host's WireGuard key pair for this binding; the answer shows the new public key to
/// register with the provider. The host uses it from its next start (stop, then start).
#[utoipa::path(post, path = "/v1/admin/bindings/{binding_id}/rotate-wg-key", tag = "bindings",
    security(("bearer" = [])), params(("binding_id" = Uuid, Path)),
    responses((status = 200, body = BindingView), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn rotate_binding_wg_key(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(binding_id): Path<Uuid>,
) -> ApiResult<Json<BindingView>> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let mut binding = db::bindings::get(&mut *tx, &binding_id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("binding"))?;
    let egress = db::egress_ips::get(&mut *tx, &binding.egress_ip_id)
        .await?
        .ok_or_else(|| ApiError::not_found("egress IP"))?;
    if egress.tunnel_type != TunnelType::Wireguard {
        return Err(ApiError::conflict(
            "not_wireguard",
            "only a binding to a WireGuard egress IP has a key pair to rotate",
        ));
    }
    let old_public = wireguard::public_key_of_sealed(
        &state.secrets,
        field::BINDING_WG_PRIVATE_KEY,
        binding.wg_private_key.as_ref(),
    );
    let key = Sealed::seal(
        &state.secrets,
        field::BINDING_WG_PRIVATE_KEY,
        &wireguard::generate_keypair().0,
    );
    db::bindings::set_wg_key(&mut *tx, &binding.id, &key).await?;
    binding.wg_private_key = Some(key);
    let view = BindingView::new(&binding, &state.secrets);
    let owner = db::hosts::get(&mut *tx, &binding.host_id)
        .await?
        .and_then(|h| h.user_id);
    let mut event = NewEvent::success("binding.wg_key_rotated")
        .host(&binding.host_id)
        .details(serde_json::json!({
            "binding_id": binding.id, "egress_ip_id": binding.egress_ip_id,
            "old_public_key": old_public, "new_public_key": view.wg_public_key,
        }));
    event.user_id = owner;
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok(Json(view))
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
