//! `POST /v1/{admin,user}/hosts/{host_id}/ssh-session`: a single-use SSH secret for a signed-in
//! account, so a client on its machine (`cloud-cli-proxy ssh`) logs in through the gateway the way
//! the access scripts do, without the account's password or the host's SSH password.
//!
//! The operator may open any host, a tenant only its own (another tenant's is 404). The login is
//! always the owner's (`OWNER+SHORTID`): inside the host an operator is the owner's account, as
//! with the web terminal.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Admin, Principal, Tenant, password};
use crate::db::events::NewEvent;
use crate::db::hosts::{Host, HostStatus};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};

/// Where and how to log in once through the SSH gateway.
#[derive(Debug, Serialize, ToSchema)]
pub struct SshSession {
    pub host_id: String,
    pub short_id: String,
    /// The gateway's host name or address, as in the host's `access.ssh_command`.
    pub ssh_host: String,
    pub ssh_port: u16,
    /// The login: the owner's username, `+`, the host's short id.
    pub ssh_user: String,
    /// 40 letters and digits, the password of one login before `expires_at`; shown only here.
    pub secret: String,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: UtcTime,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin_ssh_session))
        .routes(routes!(user_ssh_session))
}

/// A single-use SSH secret for any host (operator); the login is the owner's.
#[utoipa::path(post, path = "/v1/admin/hosts/{host_id}/ssh-session", tag = "hosts",
    security(("bearer" = [])), params(("host_id" = Uuid, Path)),
    responses((status = 200, body = SshSession),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "`host_not_running`, `host_has_no_owner`", body = crate::error::ErrorBody)))]
async fn admin_ssh_session(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(host_id): Path<Uuid>,
) -> ApiResult<Json<SshSession>> {
    let host = super::hosts::host_or_404(&state, host_id).await?;
    issue(&state, &admin, &host, "admin").await.map(Json)
}

/// A single-use SSH secret for one of the caller's hosts.
#[utoipa::path(post, path = "/v1/user/hosts/{host_id}/ssh-session", tag = "portal",
    security(("bearer" = [])), params(("host_id" = Uuid, Path)),
    responses((status = 200, body = SshSession),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "`host_not_running`", body = crate::error::ErrorBody)))]
async fn user_ssh_session(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Path(host_id): Path<Uuid>,
) -> ApiResult<Json<SshSession>> {
    let host = db::hosts::get_owned(&state.db, &host_id.to_string(), &me.user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("host"))?;
    issue(&state, &me, &host, "user").await.map(Json)
}

/// Stores the secret's hash for `HANDOFF_TTL_SECS` and records who asked (never the secret).
async fn issue(state: &AppState, caller: &Principal, host: &Host, route: &str) -> ApiResult<SshSession> {
    if host.status != HostStatus::Running {
        return Err(ApiError::conflict(
            "host_not_running",
            format!("the host is {}: start it first", host.status.as_str()),
        ));
    }
    let (Some(owner_id), Some(owner)) = (&host.user_id, &host.username) else {
        return Err(ApiError::conflict(
            "host_has_no_owner",
            "the host has no owner account to log in as",
        ));
    };
    let secret = password::generate(crate::access::SECRET_LEN);
    let now = UtcTime::now();
    let ttl =
        chrono::Duration::from_std(state.settings.handoff_ttl).unwrap_or(chrono::Duration::seconds(120));
    let expires_at = UtcTime::from(now.0 + ttl);
    let purpose = db::handoffs::Purpose::Cli {
        opened_by: caller.user.username.clone(),
    };
    let mut tx = state.db.begin().await?;
    db::handoffs::create(&mut *tx, &host.id, owner_id, &secret, &purpose, expires_at, now).await?;
    let event = NewEvent::success("host.ssh_session_issued")
        .user(owner_id)
        .host(&host.id)
        .details(serde_json::json!({
            "short_id": host.short_id, "route": route, "expires_at": expires_at,
        }));
    db::events::record(&mut *tx, &caller.actor(), event, now).await?;
    tx.commit().await?;
    Ok(SshSession {
        host_id: host.id.clone(),
        short_id: host.short_id.clone(),
        ssh_host: state.settings.ssh_host.clone(),
        ssh_port: state.settings.ssh_port,
        ssh_user: format!("{owner}+{}", host.short_id),
        secret,
        expires_at,
    })
}
