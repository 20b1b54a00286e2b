//! The SSH gateway link: `/v1/gateway/…`, called by SSH gateways, each with the credential it got at
//! enrolment.
//! Every login decision is made here, so all gateways share one policy, one set of rate limits
//! (shared with the API's sign-in) and one audit log.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use utoipa_axum::{router::OpenApiRouter, routes};
use wire::gateway::{
    AuthReply, AuthRequest, Credential, Register, SessionEvent, SessionEventKind, Target, WebLogin,
};

use crate::AppState;
use crate::auth;
use crate::auth::login::{self, Given};
use crate::auth::policy::{Decision, HostPick, Refusal, Way};
use crate::db::events::{Actor, NewEvent};
use crate::db::hosts::{Host, HostStatus};
use crate::db::users::User;
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::hosts;

/// A caller holding the credential of an enrolled gateway: that gateway's name.
#[derive(Debug, Clone)]
pub struct GatewayAuth(pub String);

impl FromRequestParts<AppState> for GatewayAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let credential =
            super::agent::presented(parts, wire::GATEWAY_TOKEN_HEADER).ok_or_else(ApiError::unauthorized)?;
        db::gateways::by_credential(&state.db, &crate::enrolment::hash(credential))
            .await?
            .map(Self)
            .ok_or_else(ApiError::unauthorized)
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(auth))
        .routes(routes!(session_event))
}

/// A gateway announces the key it logs in to hosts with; hosts get it at their next create,
/// start or rebuild. Only the credential's own gateway changes; when its key changed, running hosts
/// get their keys rewritten, so the old one stops working there.
#[utoipa::path(post, path = "/v1/gateway/register", tag = "gateway", security(("gateway_token" = [])),
    request_body(content = Object, description = "wire::gateway::Register"),
    responses((status = 204), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    GatewayAuth(name): GatewayAuth,
    Json(req): Json<Register>,
) -> ApiResult<StatusCode> {
    if req.name != name {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_gateway",
            "this credential belongs to another gateway",
        ));
    }
    let key = ssh_key::PublicKey::from_openssh(&req.client_key)
        .map_err(|_| ApiError::invalid("client_key", "not an OpenSSH public key"))?;
    if req.name.is_empty() || req.name.len() > 128 {
        return Err(ApiError::invalid("name", "must be 1-128 characters"));
    }
    let line = key
        .to_openssh()
        .map_err(|_| ApiError::internal("cannot encode a public key"))?;
    let host_key = match &req.host_key {
        Some(host_key) => Some(
            ssh_key::PublicKey::from_openssh(host_key)
                .and_then(|k| k.to_openssh())
                .map_err(|_| ApiError::invalid("host_key", "not an OpenSSH public key"))?,
        ),
        None => None,
    };
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let before = db::gateways::register(&mut tx, &name, &line, host_key.as_deref(), now)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    if before != line {
        let actor = Actor {
            id: None,
            name: Some(format!("gateway:{name}")),
            ip: None,
        };
        let queued = if before.is_empty() {
            0
        } else {
            hosts::apply_secrets_everywhere(&mut tx, &actor, "gateway_key_changed", now).await?
        };
        let event = NewEvent::success("gateway.key_registered")
            .details(serde_json::json!({ "name": name, "hosts_refreshed": queued }));
        db::events::record(&mut *tx, &actor, event, now).await?;
        tx.commit().await?;
        if queued > 0 {
            state.wake_agents();
        }
    } else {
        tx.commit().await?;
    }
    tracing::debug!(gateway = %name, "ssh gateway registered");
    Ok(StatusCode::NO_CONTENT)
}

/// `user` or `user+shortid`.
fn parse_login(login: &str) -> Option<(&str, Option<&str>)> {
    let (user, short) = match login.split_once('+') {
        Some((u, s)) => (u, Some(s)),
        None => (login, None),
    };
    // No account name holds a control character (and PostgreSQL text cannot hold NUL).
    let user_ok = !user.is_empty() && user.len() <= 64 && !user.chars().any(char::is_control);
    let short_ok = short.is_none_or(hosts::is_short_id);
    (user_ok && short_ok).then_some((user, short))
}

/// The host a login names: the one given by short id, else the user's only host.
fn pick_host(hosts: Vec<Host>, short: Option<&str>) -> Result<Host, HostPick> {
    let mut live = hosts.into_iter().filter(|h| h.status != HostStatus::Deleting);
    match short {
        Some(short) => live.find(|h| h.short_id == short).ok_or(HostPick::NoSuchHost),
        None => {
            let first = live.next().ok_or(HostPick::NoHost)?;
            match live.next() {
                Some(_) => Err(HostPick::Ambiguous),
                None => Ok(first),
            }
        }
    }
}

/// May this login, with this credential, open a session, and to which host?
#[utoipa::path(post, path = "/v1/gateway/auth", tag = "gateway", security(("gateway_token" = [])),
    request_body(content = Object, description = "wire::gateway::AuthRequest"),
    responses((status = 200, description = "wire::gateway::AuthReply"), (status = 401, body = crate::error::ErrorBody)))]
async fn auth(
    State(state): State<AppState>,
    _: GatewayAuth,
    Json(req): Json<AuthRequest>,
) -> ApiResult<Json<AuthReply>> {
    let now = UtcTime::now();
    // A key offer only asks whether the key would do: it proves nothing and costs nothing, so it is
    // neither counted against the limits nor logged as a success.
    let probe = matches!(req.credential, Credential::PublicKey { verified: false, .. });
    let method = match req.credential {
        Credential::Password { .. } => "password",
        Credential::PublicKey { .. } => "publickey",
    };
    let login = crate::auth::login::recordable(&req.login, 80);
    let mut actor = Actor {
        id: None,
        name: Some(login.clone()),
        ip: Some(crate::auth::login::recordable(&req.client_ip, 64)),
    };
    let refuse = |refusal: Refusal, user: Option<&User>, host: Option<&Host>| {
        let mut event = NewEvent::failure("ssh.login_failed").details(serde_json::json!({
            "reason": refusal.as_str(),
            "method": method,
            "login": login,
            "connection_id": req.connection_id,
        }));
        event.user_id = user.map(|u| u.id.clone());
        event.host_id = host.map(|h| h.id.clone());
        event
    };

    let Some((username, short)) = parse_login(&req.login) else {
        let event = refuse(Refusal::BadLogin, None, None);
        db::events::record(&state.db, &actor, event, now).await?;
        return Ok(Json(denied(Refusal::BadLogin)));
    };
    let ip = req.client_ip.parse().ok();
    let user = db::users::get_by_username(&state.db, username).await?;
    let host = match &user {
        Some(u) => pick_host(db::hosts::of_user(&state.db, &u.id).await?, short),
        None => Err(HostPick::NotAsked),
    };
    let pick = match &host {
        Ok(_) => HostPick::Found,
        Err(pick) => *pick,
    };
    // A single-use secret from the access scripts or the dashboard's terminal travels as the
    // password; it is looked up (cheaply) first, once the address is not held back.
    let mut handoff = None;
    if let (Credential::Password { password: given }, Ok(h)) = (&req.credential, &host)
        && state
            .limiter
            .check_ip(&auth::ratelimit::client_key(ip))
            .await
            .is_ok()
    {
        handoff = db::handoffs::redeem(&state.db, &h.id, given, now).await?;
    }
    let (way, given) = match (&req.credential, &handoff) {
        (_, Some(db::handoffs::Purpose::WebTerminal { .. })) => (Way::WebTerminal, Given::Secret(true)),
        (_, Some(db::handoffs::Purpose::Entry | db::handoffs::Purpose::Cli { .. })) => {
            (Way::SshPassword, Given::Secret(true))
        }
        (Credential::Password { password }, None) => (
            Way::SshPassword,
            Given::Password {
                password,
                host_hash: host.as_ref().ok().map(|h| h.ssh_password_hash.as_str()),
            },
        ),
        (Credential::PublicKey { public_key, verified }, None) => {
            let known = match (&user, ssh_key::PublicKey::from_openssh(public_key)) {
                (Some(u), Ok(key)) => {
                    let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
                    db::ssh_keys::has_fingerprint(&state.db, &u.id, &fingerprint).await?
                }
                _ => false,
            };
            (
                Way::SshKey,
                Given::Key {
                    known,
                    signed: *verified,
                },
            )
        }
    };
    let facts = login::Facts {
        way,
        ip,
        account_key: username,
        user: user.as_ref(),
        host: pick,
        device_known: false,
    };
    let decision = login::check(&state, facts, given, None).await?;
    if let Decision::Refuse(refusal) = decision
        && let Some(wait) = refusal.retry_after()
    {
        if !probe && login::worth_recording(&state, &facts, refusal) {
            let event = refuse(refusal, user.as_ref(), None);
            db::events::record(&state.db, &actor, event, now).await?;
        }
        return Ok(Json(AuthReply::RateLimited {
            retry_after_secs: wait.as_secs() + 1,
        }));
    }
    actor.id = user.as_ref().map(|u| u.id.clone());
    if let Decision::Refuse(refusal) = decision {
        let event = refuse(refusal, user.as_ref(), host.as_ref().ok());
        db::events::record(&state.db, &actor, event, now).await?;
        tracing::info!(reason = refusal.as_str(), method, "ssh login refused");
        return Ok(Json(denied(refusal)));
    }
    let (Some(user), Ok(host)) = (user, host) else {
        return Err(ApiError::internal("login accepted without a user and a host"));
    };
    // A secret the CLI asked for names who asked (an operator may open a tenant's host).
    let cli_opened_by = match &handoff {
        Some(db::handoffs::Purpose::Cli { opened_by }) => Some(opened_by.clone()),
        _ => None,
    };
    // A dashboard terminal's login: the control plane is the peer; the browser is the client.
    let web = match handoff {
        Some(db::handoffs::Purpose::WebTerminal { client_ip, opened_by }) => {
            Some(WebLogin { client_ip, opened_by })
        }
        _ => None,
    };
    if !probe {
        let mut details = serde_json::json!({
            "method": method,
            "login": login,
            "connection_id": req.connection_id,
        });
        if let Some(web) = &web {
            details["via"] = "web".into();
            details["opened_by"] = web.opened_by.clone().into();
            details["gateway_peer"] = req.client_ip.clone().into();
            actor.ip.clone_from(&web.client_ip);
        }
        if let Some(opened_by) = cli_opened_by {
            details["via"] = "cli".into();
            details["opened_by"] = opened_by.into();
        }
        let event = NewEvent::success("ssh.login_succeeded")
            .user(&user.id)
            .host(&host.id)
            .details(details);
        db::events::record(&state.db, &actor, event, now).await?;
    }
    let recording = super::recordings::policy_for(&state, &user.id, &host.id).await?;
    Ok(Json(AuthReply::Allowed(Box::new(Target {
        user_id: user.id.clone(),
        username: user.username.clone(),
        host_id: host.id.clone(),
        short_id: host.short_id.clone(),
        linux_user: super::agent::linux_user(Some(&user.username)),
        status: host.status.as_str().to_owned(),
        address: host.address.clone(),
        host_key: host.ssh_host_key.clone(),
        web,
        recording,
    }))))
}

fn denied(refusal: Refusal) -> AuthReply {
    AuthReply::Denied {
        reason: refusal.as_str().to_owned(),
    }
}

/// A session started, ended, or could not reach its host.
#[utoipa::path(post, path = "/v1/gateway/events", tag = "gateway", security(("gateway_token" = [])),
    request_body(content = Object, description = "wire::gateway::SessionEvent"),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody)))]
async fn session_event(
    State(state): State<AppState>,
    _: GatewayAuth,
    Json(req): Json<SessionEvent>,
) -> ApiResult<StatusCode> {
    let kind = match req.kind {
        SessionEventKind::Started => "ssh.session_started",
        SessionEventKind::Ended => "ssh.session_ended",
        SessionEventKind::Failed => "ssh.session_failed",
    };
    let mut event = if req.kind == SessionEventKind::Failed {
        NewEvent::failure(kind)
    } else {
        NewEvent::success(kind)
    };
    let mut details = serde_json::json!({
        "connection_id": req.connection_id,
        "bytes_in": req.bytes_in,
        "bytes_out": req.bytes_out,
        "duration_ms": req.duration_ms,
        "error": req.error,
    });
    if let Some(web) = &req.web {
        details["via"] = "web".into();
        details["opened_by"] = web.opened_by.clone().into();
    }
    event = event.user(&req.user_id).host(&req.host_id).details(details);
    let actor = Actor {
        id: Some(req.user_id.clone()),
        name: None,
        ip: Some(req.client_ip.clone()),
    };
    db::events::record(&state.db, &actor, event, UtcTime::now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_forms() {
        assert_eq!(parse_login("alice"), Some(("alice", None)));
        assert_eq!(parse_login("alice+abcdefgh"), Some(("alice", Some("abcdefgh"))));
        assert_eq!(parse_login("alice+short"), None);
        assert_eq!(parse_login("+abcdefgh"), None);
        assert_eq!(parse_login(""), None);
    }
}
