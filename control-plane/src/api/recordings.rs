//! Session recordings: the operator's list and downloads (`/v1/admin/recordings`), the tenant's own
//! when the operator shares them (`RECORDINGS_TENANT_ACCESS`), the per-user and per-host overrides
//! of `SESSION_RECORDING`, and the routes gateways upload recordings through.

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use wire::gateway::{RECORDING_CHUNK_MAX_BYTES, RecordingEnd, RecordingOpen, RecordingOpened};

use super::gateway::GatewayAuth;
use super::{PageQuery, Paginated};
use crate::AppState;
use crate::auth::{Admin, Tenant};
use crate::db::events::{Actor, NewEvent};
use crate::db::recordings::{Filter, NewRecording, Owner, Recording};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::recording::{self, Source};

/// The media type of an asciicast file.
pub const CAST_TYPE: &str = "application/x-asciicast";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_recordings))
        .routes(routes!(get_recording))
        .routes(routes!(admin_cast))
        .routes(routes!(list_own_recordings))
        .routes(routes!(own_cast))
        .routes(routes!(get_user_setting, put_user_setting))
        .routes(routes!(get_host_setting, put_host_setting))
        .merge(gateway_router())
}

/// Only the gateways' routes (also served on the loopback listener of the embedded gateway).
pub fn gateway_router() -> OpenApiRouter<AppState> {
    // Chunks are larger than the API's usual bodies; the limit is the gateway's own bound.
    let chunks = OpenApiRouter::new()
        .routes(routes!(gateway_chunk))
        .layer(DefaultBodyLimit::max(RECORDING_CHUNK_MAX_BYTES));
    OpenApiRouter::new()
        .routes(routes!(gateway_open))
        .routes(routes!(gateway_end))
        .merge(chunks)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordingFilter {
    pub user_id: Option<Uuid>,
    pub host_id: Option<Uuid>,
    /// Recordings started at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Recordings started at or before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<chrono::DateTime<chrono::FixedOffset>>,
}

impl RecordingFilter {
    fn resolve(self) -> ApiResult<Filter> {
        let since = self.since.map(|t| UtcTime::from(t.to_utc()));
        let until = self.until.map(|t| UtcTime::from(t.to_utc()));
        if let (Some(s), Some(u)) = (since, until)
            && s > u
        {
            return Err(ApiError {
                field: Some("since".into()),
                ..ApiError::bad_request("invalid_query", "`since` is after `until`")
            });
        }
        Ok(Filter {
            user_id: self.user_id.map(|u| u.to_string()),
            host_id: self.host_id.map(|u| u.to_string()),
            since,
            until,
        })
    }
}

/// Lists session recordings, newest first.
#[utoipa::path(get, path = "/v1/admin/recordings", tag = "recordings", security(("bearer" = [])),
    params(PageQuery, RecordingFilter),
    responses((status = 200, body = Paginated<Recording>)))]
async fn list_recordings(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(page): Query<PageQuery>,
    Query(filter): Query<RecordingFilter>,
) -> ApiResult<Paginated<Recording>> {
    let page = page.resolve()?;
    let (rows, total) = db::recordings::list(&state.db, &filter.resolve()?, page).await?;
    Ok(Paginated::new(rows, page, total))
}

/// One session recording.
#[utoipa::path(get, path = "/v1/admin/recordings/{recording_id}", tag = "recordings",
    security(("bearer" = [])), params(("recording_id" = Uuid, Path)),
    responses((status = 200, body = Recording)))]
async fn get_recording(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Recording>> {
    db::recordings::get(&state.db, &id.to_string())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("recording"))
}

/// The recording as an asciicast v2 file: a header line, then one `[time, code, data]` line per
/// event (`o` output, `r` resize).
#[utoipa::path(get, path = "/v1/admin/recordings/{recording_id}/cast", tag = "recordings",
    security(("bearer" = [])), params(("recording_id" = Uuid, Path)),
    responses((status = 200, description = "asciicast v2", content_type = "application/x-asciicast", body = String)))]
async fn admin_cast(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<Uuid>,
) -> ApiResult<Response> {
    let rec = db::recordings::get(&state.db, &id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("recording"))?;
    cast(state, rec).await
}

/// The refusal of a tenant's recording routes while the operator does not share recordings.
fn not_shared() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "recordings_not_shared",
        "the operator does not share session recordings with tenants",
    )
}

/// Lists the recordings of the caller's own sessions, newest first, when the operator shares them
/// (`RECORDINGS_TENANT_ACCESS`); 403 `recordings_not_shared` otherwise.
#[utoipa::path(get, path = "/v1/user/recordings", tag = "recordings", security(("bearer" = [])),
    params(PageQuery, RecordingFilter),
    responses((status = 200, body = Paginated<Recording>)))]
async fn list_own_recordings(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Query(page): Query<PageQuery>,
    Query(filter): Query<RecordingFilter>,
) -> ApiResult<Paginated<Recording>> {
    let page = page.resolve()?;
    let mut filter = filter.resolve()?;
    if !state.settings.recording.tenant_access {
        return Err(not_shared());
    }
    if filter.user_id.as_ref().is_some_and(|u| *u != me.user.id) {
        return Ok(Paginated::new(Vec::new(), page, 0));
    }
    filter.user_id = Some(me.user.id.clone());
    let (rows, total) = db::recordings::list(&state.db, &filter, page).await?;
    Ok(Paginated::new(rows, page, total))
}

/// One of the caller's own recordings as an asciicast v2 file, when the operator shares them.
#[utoipa::path(get, path = "/v1/user/recordings/{recording_id}/cast", tag = "recordings",
    security(("bearer" = [])), params(("recording_id" = Uuid, Path)),
    responses((status = 200, description = "asciicast v2", content_type = "application/x-asciicast", body = String)))]
async fn own_cast(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Path(id): Path<Uuid>,
) -> ApiResult<Response> {
    if !state.settings.recording.tenant_access {
        return Err(not_shared());
    }
    let rec = db::recordings::get(&state.db, &id.to_string())
        .await?
        .filter(|r| r.user_id == me.user.id)
        .ok_or_else(|| ApiError::not_found("recording"))?;
    cast(state, rec).await
}

/// Streams the header, then each chunk decompressed in turn, so a long recording is never held
/// in memory whole.
async fn cast(state: AppState, rec: Recording) -> ApiResult<Response> {
    let seqs = db::recordings::chunk_seqs(&state.db, &rec.id).await?;
    let header = Bytes::from(recording::header(&rec));
    let id = rec.id.clone();
    let chunks = futures::stream::iter(seqs).then(move |seq| {
        let (state, id) = (state.clone(), id.clone());
        async move {
            let gzip = db::recordings::chunk(&state.db, &id, seq)
                .await
                .map_err(std::io::Error::other)?
                .unwrap_or_default();
            let plain = tokio::task::spawn_blocking(move || recording::unpack(&gzip))
                .await
                .map_err(std::io::Error::other)?;
            plain.map(Bytes::from).map_err(|e| {
                tracing::error!(recording = %id, seq, error = %e, "a stored recording chunk cannot be read");
                std::io::Error::other(e)
            })
        }
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(header) }).chain(chunks);
    Ok((
        [
            (header::CONTENT_TYPE, CAST_TYPE.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.cast\"", rec.id),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// A user's or host's recording override, and what it comes to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordingSetting {
    /// `on` or `off` override the level above; `inherit` follows it (the host follows its owner,
    /// the owner the installation's `SESSION_RECORDING`).
    pub recording: Mode,
    /// Whether sessions are recorded, all levels considered (for a user: on hosts that have no
    /// override of their own).
    pub effective: bool,
    /// The level that decided `effective`.
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    On,
    Off,
    Inherit,
}

impl Mode {
    fn of(value: Option<bool>) -> Self {
        match value {
            Some(true) => Self::On,
            Some(false) => Self::Off,
            None => Self::Inherit,
        }
    }
    fn value(self) -> Option<bool> {
        match self {
            Self::On => Some(true),
            Self::Off => Some(false),
            Self::Inherit => None,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRecordingSetting {
    pub recording: Mode,
}

/// The override of a tenant or host; 404 for anything else (an operator account has no sessions).
async fn setting_of(state: &AppState, owner: Owner, id: &str) -> ApiResult<RecordingSetting> {
    let not_found = || ApiError::not_found(if owner == Owner::User { "user" } else { "host" });
    let all = state.settings.recording.all;
    match owner {
        Owner::User => {
            db::users::get_tenant(&state.db, id)
                .await?
                .ok_or_else(not_found)?;
            let user = db::recordings::setting(&state.db, Owner::User, id)
                .await?
                .ok_or_else(not_found)?;
            let (effective, source) = recording::decide(all, user, None);
            Ok(RecordingSetting {
                recording: Mode::of(user),
                effective,
                source,
            })
        }
        Owner::Host => {
            let host = db::hosts::get(&state.db, id).await?.ok_or_else(not_found)?;
            let own = db::recordings::setting(&state.db, Owner::Host, id)
                .await?
                .ok_or_else(not_found)?;
            let user = match &host.user_id {
                Some(u) => db::recordings::setting(&state.db, Owner::User, u)
                    .await?
                    .flatten(),
                None => None,
            };
            let (effective, source) = recording::decide(all, user, own);
            Ok(RecordingSetting {
                recording: Mode::of(own),
                effective,
                source,
            })
        }
    }
}

async fn put_setting(
    state: &AppState,
    admin: &crate::auth::Principal,
    owner: Owner,
    id: &str,
    mode: Mode,
) -> ApiResult<RecordingSetting> {
    setting_of(state, owner, id).await?;
    let mut tx = state.db.begin().await?;
    db::recordings::set_setting(&mut *tx, owner, id, mode.value()).await?;
    let event = match owner {
        Owner::User => NewEvent::success("user.recording_set").user(id),
        Owner::Host => NewEvent::success("host.recording_set").host(id),
    };
    let event = event.details(serde_json::json!({ "recording": mode }));
    db::events::record(&mut *tx, &admin.actor(), event, UtcTime::now()).await?;
    tx.commit().await?;
    setting_of(state, owner, id).await
}

/// A tenant's recording override.
#[utoipa::path(get, path = "/v1/admin/users/{user_id}/recording", tag = "recordings",
    security(("bearer" = [])), params(("user_id" = Uuid, Path)),
    responses((status = 200, body = RecordingSetting)))]
async fn get_user_setting(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<RecordingSetting>> {
    Ok(Json(setting_of(&state, Owner::User, &id.to_string()).await?))
}

/// Records a tenant's pty sessions (`on`), never (`off`), or as the installation says (`inherit`);
/// a host's own override still decides for that host.
#[utoipa::path(put, path = "/v1/admin/users/{user_id}/recording", tag = "recordings",
    security(("bearer" = [])), params(("user_id" = Uuid, Path)), request_body = PutRecordingSetting,
    responses((status = 200, body = RecordingSetting)))]
async fn put_user_setting(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<Uuid>,
    Json(req): Json<PutRecordingSetting>,
) -> ApiResult<Json<RecordingSetting>> {
    Ok(Json(
        put_setting(&state, &admin, Owner::User, &id.to_string(), req.recording).await?,
    ))
}

/// A host's recording override.
#[utoipa::path(get, path = "/v1/admin/hosts/{host_id}/recording", tag = "recordings",
    security(("bearer" = [])), params(("host_id" = Uuid, Path)),
    responses((status = 200, body = RecordingSetting)))]
async fn get_host_setting(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<RecordingSetting>> {
    Ok(Json(setting_of(&state, Owner::Host, &id.to_string()).await?))
}

/// Records the pty sessions on one host (`on`), never (`off`), or as its owner's setting says
/// (`inherit`).
#[utoipa::path(put, path = "/v1/admin/hosts/{host_id}/recording", tag = "recordings",
    security(("bearer" = [])), params(("host_id" = Uuid, Path)), request_body = PutRecordingSetting,
    responses((status = 200, body = RecordingSetting)))]
async fn put_host_setting(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<Uuid>,
    Json(req): Json<PutRecordingSetting>,
) -> ApiResult<Json<RecordingSetting>> {
    Ok(Json(
        put_setting(&state, &admin, Owner::Host, &id.to_string(), req.recording).await?,
    ))
}

/// Whether a login's sessions on `host_id` are recorded (for the gateway's login decision).
pub async fn policy_for(
    state: &AppState,
    user_id: &str,
    host_id: &str,
) -> Result<Option<wire::gateway::RecordingPolicy>, sqlx::Error> {
    let user = db::recordings::setting(&state.db, Owner::User, user_id)
        .await?
        .flatten();
    let host = db::recordings::setting(&state.db, Owner::Host, host_id)
        .await?
        .flatten();
    let (on, _) = recording::decide(state.settings.recording.all, user, host);
    Ok(on.then_some(wire::gateway::RecordingPolicy {
        on_failure: state.settings.recording.on_failure,
    }))
}

/// A gateway opens the recording of a pty session it was told to record.
#[utoipa::path(post, path = "/v1/gateway/recordings", tag = "gateway", security(("gateway_token" = [])),
    request_body(content = Object, description = "wire::gateway::RecordingOpen"),
    responses((status = 201, description = "wire::gateway::RecordingOpened")))]
async fn gateway_open(
    State(state): State<AppState>,
    GatewayAuth(gateway): GatewayAuth,
    Json(req): Json<RecordingOpen>,
) -> ApiResult<(StatusCode, Json<RecordingOpened>)> {
    let user_id = super::parse_id("user_id", &req.user_id)?;
    let host_id = super::parse_id("host_id", &req.host_id)?;
    if req.width == 0 || req.height == 0 || req.width > 10_000 || req.height > 10_000 {
        return Err(ApiError::invalid("width", "width and height must be 1-10000"));
    }
    let text_ok = |s: &str, max: usize| s.len() <= max && !s.chars().any(char::is_control);
    if !text_ok(&req.term, 64) || !text_ok(&req.connection_id, 64) {
        return Err(ApiError::invalid(
            "term",
            "at most 64 characters, none of them a control character",
        ));
    }
    let opened_by = req
        .web
        .as_ref()
        .map(|w| crate::auth::login::recordable(&w.opened_by, 80));
    let new = NewRecording {
        user_id: &user_id,
        host_id: &host_id,
        connection_id: &req.connection_id,
        gateway: &gateway,
        opened_by: opened_by.as_deref(),
        width: i64::from(req.width),
        height: i64::from(req.height),
        term: &req.term,
    };
    let id = db::recordings::open(&state.db, &new, UtcTime::now()).await?;
    Ok((StatusCode::CREATED, Json(RecordingOpened { id })))
}

/// The recording `recording_id` of the calling gateway (404 for another gateway's).
async fn own_recording(state: &AppState, gateway: &str, id: Uuid) -> ApiResult<(String, bool)> {
    let id = id.to_string();
    match db::recordings::gateway_of(&state.db, &id).await? {
        Some((owner, ended)) if owner == gateway => Ok((id, ended)),
        _ => Err(ApiError::not_found("recording")),
    }
}

/// A gateway uploads chunk `seq` (from 0) of a recording: gzip of asciicast v2 event lines. A
/// chunk sent twice is kept once.
#[utoipa::path(post, path = "/v1/gateway/recordings/{recording_id}/chunks/{seq}", tag = "gateway",
    security(("gateway_token" = [])),
    params(("recording_id" = Uuid, Path), ("seq" = u32, Path, minimum = 0)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "gzip of asciicast v2 event lines"),
    responses((status = 204), (status = 409, body = crate::error::ErrorBody)))]
async fn gateway_chunk(
    State(state): State<AppState>,
    GatewayAuth(gateway): GatewayAuth,
    Path((id, seq)): Path<(Uuid, u32)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let (id, ended) = own_recording(&state, &gateway, id).await?;
    if ended {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "recording_ended",
            "this recording has ended",
        ));
    }
    let gzip = body.clone();
    let plain = tokio::task::spawn_blocking(move || recording::unpack(&gzip))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::invalid("body", format!("a chunk is gzip of event lines: {e}")))?;
    let size = i64::try_from(plain.len()).unwrap_or(i64::MAX);
    let mut tx = state.db.begin().await?;
    db::recordings::add_chunk(&mut tx, &id, i64::from(seq), size, &body).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A gateway closes a recording: the session ended, or the recording failed (`error`, also
/// written to the audit log as `ssh.recording_failed`).
#[utoipa::path(post, path = "/v1/gateway/recordings/{recording_id}/end", tag = "gateway",
    security(("gateway_token" = [])), params(("recording_id" = Uuid, Path)),
    request_body(content = Object, description = "wire::gateway::RecordingEnd"),
    responses((status = 204)))]
async fn gateway_end(
    State(state): State<AppState>,
    GatewayAuth(gateway): GatewayAuth,
    Path(id): Path<Uuid>,
    Json(req): Json<RecordingEnd>,
) -> ApiResult<StatusCode> {
    let (id, _) = own_recording(&state, &gateway, id).await?;
    let error = req
        .error
        .as_deref()
        .map(|e| crate::db::events::bounded_text(e, 512).into_owned());
    let now = UtcTime::now();
    let duration = i64::try_from(req.duration_ms).unwrap_or(i64::MAX);
    db::recordings::end(&state.db, &id, now, duration, error.as_deref()).await?;
    if let Some(error) = error
        && let Some(rec) = db::recordings::get(&state.db, &id).await?
    {
        let actor = Actor {
            id: None,
            name: Some(format!("gateway:{gateway}")),
            ip: None,
        };
        let event = NewEvent::failure("ssh.recording_failed")
            .user(&rec.user_id)
            .host(&rec.host_id)
            .details(serde_json::json!({
                "recording_id": id,
                "connection_id": rec.connection_id,
                "error": error,
                "on_failure": state.settings.recording.on_failure,
            }));
        db::events::record(&state.db, &actor, event, now).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
