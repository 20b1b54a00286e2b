//! Hosts, managed by the operator: `/v1/admin/hosts…`. Every action is a durable task.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Admin, password};
use crate::db::events::Actor;
use crate::db::hosts::{Host, HostStatus, NewHost};
use crate::db::tasks::{Task, TaskKind};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{Json, Path, Query};
use crate::hosts::{self, Access};

use super::{PageQuery, Paginated};

/// A host as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostView {
    pub id: String,
    /// Eight characters; names the host in short links and SSH login names.
    pub short_id: String,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub name: String,
    pub status: HostStatus,
    pub memory_mb: i64,
    pub cpu_millis: i64,
    pub pids_limit: i64,
    pub egress_ip_id: Option<String>,
    pub node_id: Option<String>,
    pub last_error: Option<String>,
    /// For a bound host: its egress as last checked from inside its namespace (`healthy`,
    /// `tunnel`, `exit_ip`, `checks`, `checked_at`); `null` when unbound or not checked yet.
    #[schema(value_type = Option<Object>)]
    pub egress_health: Option<serde_json::Value>,
    pub access: Access,
    /// Bytes the host exchanged with the world outside its node since it was made.
    pub traffic: TrafficTotals,
    /// A traffic quota cut the host's egress: nothing leaves it until the quota's period ends or
    /// the quota is removed.
    pub egress_cut: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UtcTime,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: UtcTime,
}

/// Bytes received and sent by a host.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct TrafficTotals {
    #[schema(minimum = 0)]
    pub rx_bytes: i64,
    #[schema(minimum = 0)]
    pub tx_bytes: i64,
}

impl HostView {
    pub fn new(state: &AppState, h: &Host) -> Self {
        Self {
            id: h.id.clone(),
            short_id: h.short_id.clone(),
            user_id: h.user_id.clone(),
            username: h.username.clone(),
            name: h.name.clone(),
            status: h.status,
            memory_mb: h.memory_mb,
            cpu_millis: h.cpu_millis,
            pids_limit: h.pids_limit,
            egress_ip_id: h.egress_ip_id.clone(),
            node_id: h.node_id.clone(),
            last_error: h.last_error.clone(),
            egress_health: h
                .egress_health
                .as_deref()
                .and_then(|raw| serde_json::from_str(raw).ok()),
            access: hosts::access(&state.settings, h),
            traffic: TrafficTotals {
                rx_bytes: h.traffic_rx_bytes,
                tx_bytes: h.traffic_tx_bytes,
            },
            egress_cut: h.egress_cut_by.is_some(),
            created_at: h.created_at,
            updated_at: h.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHost {
    #[schema(format = Uuid)]
    pub user_id: String,
    /// Display name, 1-64 printable characters; defaults to the short id.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub name: Option<String>,
    /// Memory limit in MiB (256-65536, default 2048).
    #[schema(minimum = 256, maximum = 65536)]
    pub memory_mb: Option<i64>,
    /// CPU limit in thousandths of a core (100-32000, default 1000).
    #[schema(minimum = 100, maximum = 32000)]
    pub cpu_millis: Option<i64>,
    /// Process limit (64-32768, default 1024).
    #[schema(minimum = 64, maximum = 32768)]
    pub pids_limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedHost {
    #[serde(flatten)]
    pub host: HostView,
    /// The task that builds the container.
    pub task_id: String,
    /// The host's SSH password, shown only in this response.
    pub ssh_password: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebuildOptions {
    /// Also empty the home volume.
    #[serde(default)]
    pub wipe: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSshPassword {
    pub task: Task,
    /// The new SSH password, shown only in this response.
    pub ssh_password: String,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HostFilter {
    pub user_id: Option<Uuid>,
    pub status: Option<HostStatus>,
    /// Part of the host's name, short id or owner's username (any case, at most 100 characters, no control characters).
    #[param(max_length = 100, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub q: Option<String>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_host, list_hosts))
        .routes(routes!(get_host, delete_host))
        .routes(routes!(start_host))
        .routes(routes!(stop_host))
        .routes(routes!(rebuild_host))
        .routes(routes!(rotate_ssh_password))
}

fn limit(
    field: &str,
    value: Option<i64>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> ApiResult<i64> {
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::invalid(
            field,
            format!("{field} must be {} to {}", range.start(), range.end()),
        ))
    }
}

/// The argon2id hash the gateway checks and the crypt(3) hash the container's account gets.
async fn password_hashes(password: &str) -> ApiResult<(String, String)> {
    let hash = password::hash_async(password.to_owned())
        .await
        .map_err(ApiError::internal)?;
    let clear = password.to_owned();
    let crypt = tokio::task::spawn_blocking(move || password::crypt_sha512(&clear))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok((hash, crypt))
}

pub async fn host_or_404(state: &AppState, id: Uuid) -> ApiResult<Host> {
    db::hosts::get(&state.db, &id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("host"))
}

/// Records a host for a user and queues its creation.
#[utoipa::path(post, path = "/v1/admin/hosts", tag = "hosts", security(("bearer" = [])),
    request_body = CreateHost,
    responses((status = 201, body = CreatedHost), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
async fn create_host(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(req): Json<CreateHost>,
) -> ApiResult<(StatusCode, Json<CreatedHost>)> {
    let user_id = super::parse_id("user_id", &req.user_id)?;
    let memory_mb = limit(
        "memory_mb",
        req.memory_mb,
        hosts::DEFAULT_MEMORY_MB,
        hosts::MEMORY_MB_RANGE,
    )?;
    let cpu_millis = limit(
        "cpu_millis",
        req.cpu_millis,
        hosts::DEFAULT_CPU_MILLIS,
        hosts::CPU_MILLIS_RANGE,
    )?;
    let pids_limit = limit(
        "pids_limit",
        req.pids_limit,
        hosts::DEFAULT_PIDS_LIMIT,
        hosts::PIDS_RANGE,
    )?;
    if let Some(name) = &req.name {
        let len = name.chars().count();
        if !(1..=64).contains(&len) || name.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "name",
                "name must be 1-64 printable characters",
            ));
        }
    }
    let user = db::users::get_tenant(&state.db, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;

    let ssh_password = password::generate(20);
    let (hash, crypt) = password_hashes(&ssh_password).await?;
    // TigerVNC's VncAuth uses 8 characters; the port is reachable only from the node's gateway.
    let vnc_secret = crate::secrets::Sealed::seal(
        &state.secrets,
        crate::secrets::field::HOST_VNC_SECRET,
        &password::generate(8),
    );
    let now = UtcTime::now();
    let actor = admin.actor();
    let mut tx = state.db.begin().await?;
    // A short id collision is rare (31^8 ids); retry a few times before giving up.
    let mut host_id = None;
    for _ in 0..5 {
        let short_id = hosts::new_short_id(&mut rand::thread_rng());
        let name = req.name.clone().unwrap_or_else(|| short_id.clone());
        let new = NewHost {
            short_id: &short_id,
            user_id: &user.id,
            name: &name,
            memory_mb,
            cpu_millis,
            pids_limit,
            ssh_password_hash: &hash,
            password_crypt: &crypt,
            vnc_secret: &vnc_secret,
        };
        match db::hosts::insert(&mut *tx, new, now).await {
            Ok(id) => {
                host_id = Some(id);
                break;
            }
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let host_id = host_id.ok_or_else(|| ApiError::internal("no free short id after 5 tries"))?;
    let host = db::hosts::get(&mut *tx, &host_id)
        .await?
        .ok_or_else(|| ApiError::internal("host vanished"))?;
    let task = hosts::request(
        &mut tx,
        &actor,
        &host,
        TaskKind::Create,
        serde_json::json!({}),
        now,
    )
    .await?;
    tx.commit().await?;
    state.wake_agents();
    let created = CreatedHost {
        host: HostView::new(&state, &host),
        task_id: task.id,
        ssh_password,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists hosts.
#[utoipa::path(get, path = "/v1/admin/hosts", tag = "hosts", security(("bearer" = [])),
    params(PageQuery, HostFilter), responses((status = 200, body = Paginated<HostView>)))]
async fn list_hosts(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(page): Query<PageQuery>,
    Query(filter): Query<HostFilter>,
) -> ApiResult<Paginated<HostView>> {
    let page = page.resolve()?;
    let filter = db::hosts::Filter {
        user_id: filter.user_id.map(|u| u.to_string()),
        status: filter.status,
        q: super::search_text(filter.q)?,
    };
    let (rows, total) = db::hosts::list(&state.db, &filter, page).await?;
    Ok(Paginated::new(
        rows.iter().map(|h| HostView::new(&state, h)).collect(),
        page,
        total,
    ))
}

/// One host, with its access commands.
#[utoipa::path(get, path = "/v1/admin/hosts/{host_id}", tag = "hosts", security(("bearer" = [])),
    params(("host_id" = Uuid, Path)),
    responses((status = 200, body = HostView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_host(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(host_id): Path<Uuid>,
) -> ApiResult<Json<HostView>> {
    let host = host_or_404(&state, host_id).await?;
    Ok(Json(HostView::new(&state, &host)))
}

/// Queues an action on a host and answers 202 with its task.
pub async fn queue_action(
    state: &AppState,
    actor: &Actor,
    host: &Host,
    kind: TaskKind,
    params: serde_json::Value,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let task = hosts::request(&mut tx, actor, host, kind, params, now).await?;
    tx.commit().await?;
    state.wake_agents();
    Ok((StatusCode::ACCEPTED, Json(task)))
}

/// Removes the host: container, volumes and files. The row goes once the task is done.
#[utoipa::path(delete, path = "/v1/admin/hosts/{host_id}", tag = "hosts", security(("bearer" = [])),
    params(("host_id" = Uuid, Path)),
    responses((status = 202, body = Task), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn delete_host(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(host_id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let host = host_or_404(&state, host_id).await?;
    queue_action(
        &state,
        &admin.actor(),
        &host,
        TaskKind::Delete,
        serde_json::json!({}),
    )
    .await
}

/// Starts the host's container.
#[utoipa::path(post, path = "/v1/admin/hosts/{host_id}/start", tag = "hosts", security(("bearer" = [])),
    params(("host_id" = Uuid, Path)),
    responses((status = 202, body = Task), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn start_host(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(host_id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let host = host_or_404(&state, host_id).await?;
    queue_action(
        &state,
        &admin.actor(),
        &host,
        TaskKind::Start,
        serde_json::json!({}),
    )
    .await
}

/// Stops the host's container.
#[utoipa::path(post, path = "/v1/admin/hosts/{host_id}/stop", tag = "hosts", security(("bearer" = [])),
    params(("host_id" = Uuid, Path)),
    responses((status = 202, body = Task), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn stop_host(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(host_id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let host = host_or_404(&state, host_id).await?;
    queue_action(
        &state,
        &admin.actor(),
        &host,
        TaskKind::Stop,
        serde_json::json!({}),
    )
    .await
}

/// Recreates the container from the managed image; the home volume is kept unless `wipe` is set.
#[utoipa::path(post, path = "/v1/admin/hosts/{host_id}/rebuild", tag = "hosts", security(("bearer" = [])),
    params(("host_id" = Uuid, Path)), request_body(content = Option<RebuildOptions>),
    responses((status = 202, body = Task), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn rebuild_host(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(host_id): Path<Uuid>,
    body: Option<Json<RebuildOptions>>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let host = host_or_404(&state, host_id).await?;
    let wipe = body.map(|Json(o)| o.wipe).unwrap_or(false);
    queue_action(
        &state,
        &admin.actor(),
        &host,
        TaskKind::Rebuild,
        serde_json::json!({ "wipe": wipe }),
    )
    .await
}

/// Replaces the host's SSH password with a generated one, returned only here.
#[utoipa::path(post, path = "/v1/admin/hosts/{host_id}/rotate-ssh-password", tag = "hosts",
    security(("bearer" = [])), params(("host_id" = Uuid, Path)),
    responses((status = 202, body = RotatedSshPassword), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn rotate_ssh_password(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(host_id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<RotatedSshPassword>)> {
    let host = host_or_404(&state, host_id).await?;
    let ssh_password = password::generate(20);
    let (hash, crypt) = password_hashes(&ssh_password).await?;
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let task = hosts::request(
        &mut tx,
        &admin.actor(),
        &host,
        TaskKind::RotateSshPassword,
        serde_json::json!({}),
        now,
    )
    .await?;
    db::hosts::set_ssh_password(&mut *tx, &host.id, &hash, &crypt, now).await?;
    tx.commit().await?;
    state.wake_agents();
    Ok((
        StatusCode::ACCEPTED,
        Json(RotatedSshPassword { task, ssh_password }),
    ))
}
