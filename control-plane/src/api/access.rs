//! Bootstrap and entry access (`/v1/bootstrap/…`, `/entry/{short_id}`, `/v1/entry/{short_id}/auth`):
//! the scripts users pipe into bash, and the routes they call. No bearer token: the password in the
//! body, then the session's own id and secret, authenticate these calls.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::access::script::{self, Mode};
use crate::access::session::{self, Attempt, Flow};
use crate::access::{self, Progress, SessionStatus};
use crate::auth::ClientIp;
use crate::auth::policy::HostPick;
use crate::auth::ratelimit::{Outcome, client_key};
use crate::db::bootstrap::Session;
use crate::db::events::{Actor, NewEvent};
use crate::db::hosts::{Host, HostStatus};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::hosts;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryRequest {
    /// The password of the host owner's account.
    pub password: String,
}

/// A bootstrap session: follow `status_url` until `succeeded`, then take the SSH login from
/// `handoff_url` with the session secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionCreated {
    /// The session's id: the `task_id` of the bootstrap routes (not a host task's id).
    pub task_id: String,
    pub status_url: String,
    pub handoff_url: String,
    /// Send as `X-Bootstrap-Secret` to the handoff; shown only here.
    pub session_secret: String,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: UtcTime,
    /// The host the session reaches.
    pub short_id: String,
}

/// The SSH login of a session whose host is up.
#[derive(Debug, Serialize, ToSchema)]
pub struct Handoff {
    /// The SSH gateway.
    pub host: String,
    pub port: u16,
    /// `username+short_id`.
    pub user: String,
    /// Single-use SSH secret: only with the session secret, and only the first time.
    pub password: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub password_expires_at: Option<UtcTime>,
}

/// SSH parameters for an entry link, with the session that follows a start when one was needed.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryGranted {
    pub ssh_user: String,
    /// Single-use SSH secret; `null` while the host is being started (then take it from
    /// `handoff_url` once `status_url` says `succeeded`).
    pub ssh_pass: Option<String>,
    pub ssh_host: String,
    pub ssh_port: u16,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ssh_pass_expires_at: Option<UtcTime>,
    #[serde(flatten)]
    pub session: SessionCreated,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(bootstrap_script))
        .routes(routes!(create_session))
        .routes(routes!(task_status))
        .routes(routes!(handoff))
        .routes(routes!(entry_script))
        .routes(routes!(entry_auth))
}

fn shell_script(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Secrets must not sit in any cache on the way.
fn no_store<T: Serialize>(status: StatusCode, body: T) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// The access script: asks for username and password, starts the host if needed, opens SSH.
#[utoipa::path(get, path = "/v1/bootstrap/script", tag = "access",
    responses((status = 200, description = "bash script", content_type = "text/x-shellscript", body = String)))]
async fn bootstrap_script(State(state): State<AppState>) -> ApiResult<Response> {
    let text =
        script::render(&state.settings.public_base_url, Mode::Bootstrap).map_err(ApiError::internal)?;
    Ok(shell_script(text))
}

/// The access script of one host: asks for its owner's password, starts it if needed, opens SSH.
#[utoipa::path(get, path = "/entry/{short_id}", tag = "access", params(("short_id" = String, Path)),
    responses((status = 200, description = "bash script", content_type = "text/x-shellscript", body = String),
              (status = 404, body = crate::error::ErrorBody)))]
async fn entry_script(State(state): State<AppState>, Path(short_id): Path<String>) -> ApiResult<Response> {
    // Any well-formed short id gets the script, so the route tells nothing about which hosts exist.
    if !hosts::is_short_id(&short_id) {
        return Err(ApiError::not_found("entry link"));
    }
    let text = script::render(
        &state.settings.public_base_url,
        Mode::Entry { short_id: &short_id },
    )
    .map_err(ApiError::internal)?;
    Ok(shell_script(text))
}

fn session_created(state: &AppState, opened: &session::Opened, host: &Host) -> SessionCreated {
    let base = &state.settings.public_base_url;
    let id = &opened.session.id;
    SessionCreated {
        task_id: id.clone(),
        status_url: format!("{base}/v1/bootstrap/tasks/{id}"),
        handoff_url: format!("{base}/v1/bootstrap/tasks/{id}/handoff"),
        session_secret: opened.secret.clone(),
        expires_at: opened.session.expires_at,
        short_id: host.short_id.clone(),
    }
}

/// Signs in with username and password and opens a bootstrap session for the account's host (its
/// oldest), queuing a start when the host is down.
#[utoipa::path(post, path = "/v1/bootstrap/sessions", tag = "access", request_body = BootstrapRequest,
    responses((status = 201, body = SessionCreated), (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "`account_disabled` or `account_expired` (right password only)",
               body = crate::error::ErrorBody),
              (status = 404, description = "`no_host` (right password only)", body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
async fn create_session(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(req): Json<BootstrapRequest>,
) -> ApiResult<Response> {
    // Bounded so a huge username cannot bloat the limiter or the log.
    let account = crate::auth::login::recordable(&req.username, 64);
    let user = db::users::get_by_username(&state.db, &account).await?;
    let host = match &user {
        Some(u) => db::hosts::first_of_user(&state.db, &u.id).await?,
        None => None,
    };
    let attempt = Attempt {
        flow: Flow::Bootstrap,
        ip,
        account,
        user,
        short_id: None,
        host: if host.is_some() {
            HostPick::Found
        } else {
            HostPick::NoHost
        },
        password: req.password,
    };
    let user = session::authenticate(&state, &attempt).await?;
    let Some(host) = host else {
        return Err(ApiError::internal("a bootstrap login passed without a host"));
    };
    let opened = session::open(&state, &attempt, &user, &host, false).await?;
    Ok(no_store(
        StatusCode::CREATED,
        session_created(&state, &opened, &host),
    ))
}

/// Signs in to one host with its owner's password. Answers the SSH parameters; when the host has to
/// be started first, `ssh_pass` is `null` and the session's routes deliver it once the host is up.
#[utoipa::path(post, path = "/v1/entry/{short_id}/auth", tag = "access", params(("short_id" = String, Path)),
    request_body = EntryRequest,
    responses((status = 200, body = EntryGranted), (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "`account_disabled` or `account_expired` (right password only)",
               body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
async fn entry_auth(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(short_id): Path<String>,
    Json(req): Json<EntryRequest>,
) -> ApiResult<Response> {
    if !hosts::is_short_id(&short_id) {
        return Err(ApiError::not_found("entry link"));
    }
    // A switched-off, expired or rotated-away link finds no host, so it is refused exactly like a
    // link that never existed: same password check against a decoy, same 401.
    let host = db::hosts::get_by_entry_id(&state.db, &short_id)
        .await?
        .filter(|h| h.entry_open(UtcTime::now()));
    let user = match host.as_ref().and_then(|h| h.user_id.as_deref()) {
        Some(user_id) => db::users::get(&state.db, user_id).await?,
        None => None,
    };
    let account = user
        .as_ref()
        .map_or_else(|| format!("entry:{short_id}"), |u| u.username.clone());
    let attempt = Attempt {
        flow: Flow::Entry,
        ip,
        account,
        user,
        short_id: Some(short_id),
        host: HostPick::Found,
        password: req.password,
    };
    let user = session::authenticate(&state, &attempt).await?;
    let Some(host) = host else {
        return Err(ApiError::internal("an entry login passed without a host"));
    };
    let opened = session::open(&state, &attempt, &user, &host, true).await?;
    let (ssh_pass, ssh_pass_expires_at) = opened.ssh_secret.clone().unzip();
    let granted = EntryGranted {
        ssh_user: access::ssh_login(&user.username, &host.short_id),
        ssh_pass,
        ssh_host: state.settings.ssh_host.clone(),
        ssh_port: state.settings.ssh_port,
        ssh_pass_expires_at,
        session: session_created(&state, &opened, &host),
    };
    Ok(no_store(StatusCode::OK, granted))
}

async fn live_session(state: &AppState, id: Uuid) -> ApiResult<(Session, Progress)> {
    let session = db::bootstrap::get_live(&state.db, &id.to_string(), UtcTime::now())
        .await?
        .ok_or_else(|| ApiError::not_found("bootstrap task"))?;
    let task = match &session.task_id {
        Some(task_id) => db::tasks::get(&state.db, task_id).await?,
        None => None,
    };
    if session.task_id.is_some() && task.is_none() {
        return Err(ApiError::not_found("bootstrap task"));
    }
    let progress = access::progress(&session.id, task.as_ref());
    Ok((session, progress))
}

/// Progress of a bootstrap session: status, percent and stage of bringing the host up.
#[utoipa::path(get, path = "/v1/bootstrap/tasks/{task_id}", tag = "access", params(("task_id" = Uuid, Path)),
    responses((status = 200, body = Progress), (status = 404, body = crate::error::ErrorBody)))]
async fn task_status(State(state): State<AppState>, Path(task_id): Path<Uuid>) -> ApiResult<Json<Progress>> {
    live_session(&state, task_id).await.map(|(_, p)| Json(p))
}

/// The SSH login once the host is up. With `X-Bootstrap-Secret` (the session secret) the first call
/// also carries a single-use SSH secret; without it, only host, port and user.
#[utoipa::path(get, path = "/v1/bootstrap/tasks/{task_id}/handoff", tag = "access",
    params(("task_id" = Uuid, Path),
           ("X-Bootstrap-Secret" = Option<String>, Header, description = "the session secret")),
    responses((status = 200, body = Handoff), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "`not_ready`, `start_failed` or `handoff_used`",
               body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
async fn handoff(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(task_id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (session, progress) = live_session(&state, task_id).await?;
    match progress.status {
        SessionStatus::Succeeded => {}
        SessionStatus::Failed => {
            return Err(ApiError::conflict(
                "start_failed",
                "the host could not be started",
            ));
        }
        SessionStatus::Queued | SessionStatus::Running => {
            return Err(ApiError::conflict("not_ready", "the host is not up yet"));
        }
    }
    let host = db::hosts::get(&state.db, &session.host_id)
        .await?
        .filter(|h| h.status != HostStatus::Deleting)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no_host", "the host is gone"))?;
    let user = db::users::get(&state.db, &session.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("bootstrap task"))?;
    let mut answer = Handoff {
        host: state.settings.ssh_host.clone(),
        port: state.settings.ssh_port,
        user: access::ssh_login(&user.username, &host.short_id),
        password: None,
        password_expires_at: None,
    };
    let Some(secret) = headers.get(access::SESSION_SECRET_HEADER) else {
        return Ok(no_store(StatusCode::OK, answer));
    };
    let secret = secret.to_str().unwrap_or_default();
    let limit_key = format!("session:{}", session.id);
    let actor = Actor {
        id: Some(user.id.clone()),
        name: Some(user.username.clone()),
        ip: ip.map(|i| i.to_string()),
    };
    let ticket = state
        .limiter
        .admit(&client_key(ip), &limit_key, false)
        .await
        .map_err(|wait| ApiError::rate_limited(wait.as_secs() + 1))?;
    if db::handoffs::hash(secret) != session.secret_hash {
        state.limiter.settle(ticket, Outcome::Guess).await;
        let event = NewEvent::failure("access.handoff_refused")
            .user(&user.id)
            .host(&host.id)
            .details(serde_json::json!({ "session_id": session.id, "reason": "wrong_session_secret" }));
        db::events::record(&state.db, &actor, event, UtcTime::now()).await?;
        return Err(ApiError::unauthorized());
    }
    state.limiter.settle(ticket, Outcome::NotAGuess).await;
    if !user.is_usable(UtcTime::now()) {
        let code = if user.status == db::users::Status::Active {
            "account_expired"
        } else {
            "account_disabled"
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            code,
            "this account may not log in",
        ));
    }
    match session::hand_off(&state, &actor, &session, secret, &user, &host).await? {
        Some((password, expires_at)) => {
            answer.password = Some(password);
            answer.password_expires_at = Some(expires_at);
            Ok(no_store(StatusCode::OK, answer))
        }
        None => Err(ApiError::conflict(
            "handoff_used",
            "the SSH secret of this session was already handed out",
        )),
    }
}
