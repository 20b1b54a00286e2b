//! A host's entry short link (`/entry/{entry_id}`), managed by the operator:
//! `/v1/admin/hosts/{host_id}/entry-link…`. A link can be switched off, given an expiry, or rotated
//! to a new id; a closed or replaced link answers exactly like one that never existed.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Admin;
use crate::db::events::NewEvent;
use crate::db::hosts::{Host, HostStatus};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{Json, Path};
use crate::hosts;

/// A host's entry link and its state.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryLinkView {
    pub host_id: String,
    /// The id in the link; the host's short id until the link is first rotated.
    pub entry_id: String,
    pub entry_url: String,
    pub entry_command: String,
    /// Switched on by the operator (the default).
    pub enabled: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<UtcTime>,
    /// Whether the link works right now: enabled and not expired.
    pub open: bool,
}

impl EntryLinkView {
    fn new(state: &AppState, h: &Host, now: UtcTime) -> Self {
        let access = hosts::access(&state.settings, h);
        Self {
            host_id: h.id.clone(),
            entry_id: h.entry_id.clone(),
            entry_url: access.entry_url,
            entry_command: access.entry_command,
            enabled: !h.entry_disabled,
            expires_at: h.entry_expires_at,
            open: h.entry_open(now),
        }
    }
}

/// Only the fields sent change; `"expires_at": null` removes the expiry.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEntryLink {
    pub enabled: Option<bool>,
    /// RFC 3339 time after which the link stops working; must be in the future.
    #[serde(default, deserialize_with = "super::egress_ips::nullable")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<chrono::DateTime<chrono::Utc>>>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_entry_link, update_entry_link))
        .routes(routes!(rotate_entry_link))
}

async fn host_or_404(db: impl crate::db::Db<'_>, id: Uuid) -> ApiResult<Host> {
    db::hosts::get(db, &id.to_string())
        .await?
        .filter(|h| h.status != HostStatus::Deleting)
        .ok_or_else(|| ApiError::not_found("host"))
}

/// The host's entry link and whether it works now.
#[utoipa::path(get, path = "/v1/admin/hosts/{host_id}/entry-link", tag = "hosts", security(("bearer" = [])),
    params(("host_id" = Uuid, Path)),
    responses((status = 200, body = EntryLinkView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_entry_link(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(host_id): Path<Uuid>,
) -> ApiResult<Json<EntryLinkView>> {
    let host = host_or_404(&state.db, host_id).await?;
    Ok(Json(EntryLinkView::new(&state, &host, UtcTime::now())))
}

/// Switches the entry link on or off, and sets or removes its expiry.
#[utoipa::path(patch, path = "/v1/admin/hosts/{host_id}/entry-link", tag = "hosts", security(("bearer" = [])),
    params(("host_id" = Uuid, Path)), request_body = UpdateEntryLink,
    responses((status = 200, body = EntryLinkView), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
async fn update_entry_link(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(host_id): Path<Uuid>,
    Json(req): Json<UpdateEntryLink>,
) -> ApiResult<Json<EntryLinkView>> {
    let now = UtcTime::now();
    if let Some(Some(at)) = req.expires_at
        && at <= now.0
    {
        return Err(ApiError::invalid(
            "expires_at",
            "expires_at must be in the future",
        ));
    }
    let mut tx = state.db.begin().await?;
    let mut host = host_or_404(&mut *tx, host_id).await?;
    if let Some(enabled) = req.enabled {
        host.entry_disabled = !enabled;
    }
    if let Some(expires_at) = req.expires_at {
        host.entry_expires_at = expires_at.map(UtcTime::from);
    }
    db::hosts::set_entry_state(
        &mut *tx,
        &host.id,
        host.entry_disabled,
        host.entry_expires_at,
        now,
    )
    .await?;
    let mut event = NewEvent::success("host.entry_link_updated")
        .host(&host.id)
        .details(serde_json::json!({
            "enabled": !host.entry_disabled, "expires_at": host.entry_expires_at,
        }));
    event.user_id = host.user_id.clone();
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok(Json(EntryLinkView::new(&state, &host, now)))
}

/// Issues a new id for the entry link; the old link stops working at once. State and expiry stay.
#[utoipa::path(post, path = "/v1/admin/hosts/{host_id}/entry-link/rotate", tag = "hosts",
    security(("bearer" = [])), params(("host_id" = Uuid, Path)),
    responses((status = 200, body = EntryLinkView), (status = 404, body = crate::error::ErrorBody)))]
async fn rotate_entry_link(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(host_id): Path<Uuid>,
) -> ApiResult<Json<EntryLinkView>> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let mut host = host_or_404(&mut *tx, host_id).await?;
    // A clash with another host's link is rare (31^8 ids); a few tries settle it.
    let mut rotated = false;
    for _ in 0..5 {
        let entry_id = hosts::new_short_id(&mut rand::thread_rng());
        if entry_id == host.entry_id {
            continue;
        }
        match db::hosts::set_entry_id(&mut *tx, &host.id, &entry_id, now).await {
            Ok(()) => {
                host.entry_id = entry_id;
                rotated = true;
                break;
            }
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if !rotated {
        return Err(ApiError::internal("no free entry link id after 5 tries"));
    }
    // The id itself is left out of the log: it is what lets a caller in.
    let mut event = NewEvent::success("host.entry_link_rotated").host(&host.id);
    event.user_id = host.user_id.clone();
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok(Json(EntryLinkView::new(&state, &host, now)))
}
