//! The agent link: `/v1/agent/…`, called by node agents with the shared `AGENT_TOKEN`.

use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::db::events::{Actor, NewEvent};
use crate::db::hosts::HostStatus;
use crate::db::tasks::TaskKind;
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::tasks;

/// A caller holding the agent token.
#[derive(Debug, Clone, Copy)]
pub struct AgentAuth;

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        shared_secret(parts, wire::AGENT_TOKEN_HEADER, state.agent_token.as_deref()).map(|()| Self)
    }
}

/// Checks the shared secret a machine caller (agent, gateway) sends in `header`, in constant time.
/// No configured secret refuses everyone.
pub(crate) fn shared_secret(parts: &Parts, header: &str, expected: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::unauthorized());
    };
    let given = parts
        .headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(heartbeat))
        .routes(routes!(claim))
        .routes(routes!(progress))
        .routes(routes!(result))
        .routes(routes!(claim_egress_test))
        .routes(routes!(egress_test_result))
}

fn unknown_node() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_node",
        "this node is not registered; register again",
    )
}

fn agent_actor(node: &str) -> Actor {
    Actor {
        id: None,
        name: Some(format!("agent:{node}")),
        ip: None,
    }
}

/// An agent announces itself; answers the node id to use in later calls.
#[utoipa::path(post, path = "/v1/agent/register", tag = "agent",
    request_body(content = Object, description = "wire::Register"),
    responses((status = 200, description = "wire::Registered"), (status = 401, body = crate::error::ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    _: AgentAuth,
    Json(req): Json<wire::Register>,
) -> ApiResult<Json<wire::Registered>> {
    let name = req.node_name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(ApiError::invalid(
            "node_name",
            "node_name must be 1-64 letters, digits, `.`, `_`, `-`",
        ));
    }
    let now = UtcTime::now();
    let node = db::nodes::register(
        &state.db,
        name,
        &req.agent_version,
        req.reach_address.as_deref(),
        now,
    )
    .await?;
    let event = NewEvent::success("node.registered").details(
        serde_json::json!({ "node_id": node.id, "name": node.name, "agent_version": node.agent_version }),
    );
    db::events::record(&state.db, &agent_actor(name), event, now).await?;
    let recovered = tasks::recover_node(&state, &node.id).await?;
    tracing::info!(node = %node.name, node_id = %node.id, recovered, "agent registered");
    Ok(Json(wire::Registered {
        node_id: node.id,
        heartbeat_secs: tasks::HEARTBEAT_SECS,
    }))
}

/// Liveness and what Docker holds on the node; answers the hosts placed there. Drift between the
/// database and Docker is repaired with ordinary tasks, so it stays ordered with everything else.
#[utoipa::path(post, path = "/v1/agent/heartbeat", tag = "agent",
    request_body(content = Object, description = "wire::Heartbeat"),
    responses((status = 200, description = "wire::HeartbeatReply"), (status = 404, body = crate::error::ErrorBody)))]
async fn heartbeat(
    State(state): State<AppState>,
    _: AgentAuth,
    Json(req): Json<wire::Heartbeat>,
) -> ApiResult<Json<wire::HeartbeatReply>> {
    let now = UtcTime::now();
    if !db::nodes::touch(&state.db, &req.node_id, now).await? {
        return Err(unknown_node());
    }
    let hosts = db::hosts::on_node(&state.db, &req.node_id).await?;
    let mut desired = Vec::with_capacity(hosts.len());
    let mut repaired = false;
    for host in &hosts {
        let busy = db::tasks::host_busy(&state.db, &host.id).await?;
        desired.push(wire::DesiredHost {
            host_id: host.id.clone(),
            busy,
        });
        if busy {
            continue;
        }
        let seen = req.observed.iter().find(|o| o.host_id == host.id);
        record_egress_health(&state, host, seen.and_then(|o| o.egress.as_ref()), now).await?;
        // Hosts made before keys were pinned get theirs at the first report; a pinned key changes
        // only through a create or rebuild task's result.
        if let (None, Some(key)) = (&host.ssh_host_key, seen.and_then(|o| o.ssh_host_key.as_deref())) {
            let mut conn = state.db.acquire().await?;
            db::hosts::pin_host_key(&mut conn, &host.id, key, false).await?;
        }
        let repair = match (host.status, seen.map(|o| o.state)) {
            (HostStatus::Running, Some(wire::ContainerState::Stopped | wire::ContainerState::Created)) => {
                Some(TaskKind::Start)
            }
            (HostStatus::Stopped, Some(wire::ContainerState::Running)) => Some(TaskKind::Stop),
            _ => None,
        };
        if let Some(kind) = repair {
            let mut tx = state.db.begin().await?;
            crate::hosts::request(
                &mut tx,
                &agent_actor("reconciler"),
                host,
                kind,
                serde_json::json!({ "reason": "drift" }),
                now,
            )
            .await?;
            tx.commit().await?;
            tracing::info!(host_id = %host.id, kind = kind.as_str(), "queued a task to repair drift");
            repaired = true;
        }
    }
    if repaired {
        state.work.notify_waiters();
    }
    Ok(Json(wire::HeartbeatReply {
        hosts: desired,
        probe: Some(state.settings.egress_probe.clone()),
    }))
}

/// Keeps the host's egress health as its agent reports it, with an event when it turns healthy or
/// unhealthy (not on every re-check).
async fn record_egress_health(
    state: &AppState,
    host: &db::hosts::Host,
    health: Option<&wire::EgressHealth>,
    now: UtcTime,
) -> ApiResult<()> {
    let Some(health) = health else {
        // A running bound host keeps its last report until a new one; others lose it.
        let keep = host.egress_ip_id.is_some() && host.status == HostStatus::Running;
        if host.egress_health.is_some() && !keep {
            db::hosts::set_egress_health(&state.db, &host.id, None).await?;
        }
        return Ok(());
    };
    // Stored as this same serialization: an unchanged report costs no parse and no write.
    let raw = serde_json::to_string(health).map_err(ApiError::internal)?;
    if host.egress_health.as_deref() == Some(raw.as_str()) {
        return Ok(());
    }
    let before: Option<wire::EgressHealth> = host
        .egress_health
        .as_deref()
        .and_then(|stored| serde_json::from_str(stored).ok());
    let mut tx = state.db.begin().await?;
    db::hosts::set_egress_health(&mut *tx, &host.id, Some(&raw)).await?;
    if before.as_ref().map(|b| b.healthy) != Some(health.healthy) {
        let failed: Vec<&str> = health
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect();
        let mut event = NewEvent {
            outcome: if health.healthy {
                db::events::Outcome::Success
            } else {
                db::events::Outcome::Failure
            },
            ..NewEvent::success("host.egress_health_changed")
        }
        .host(&host.id)
        .details(serde_json::json!({
            "healthy": health.healthy, "tunnel": health.tunnel, "exit_ip": health.exit_ip,
            "failed_checks": failed, "egress_ip_id": host.egress_ip_id,
        }));
        event.user_id = host.user_id.clone();
        db::events::record(&mut *tx, &agent_actor("egress-health"), event, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The account inside the container for an API username: plain lower-case names keep theirs.
pub fn linux_user(username: Option<&str>) -> String {
    let name = username.unwrap_or("user").to_lowercase();
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok && name != "root" {
        name
    } else {
        "user".to_owned()
    }
}

/// Waits (up to `wait_secs`, at most 25) for a task this node may run.
#[utoipa::path(post, path = "/v1/agent/claim", tag = "agent",
    request_body(content = Object, description = "wire::Claim"),
    responses((status = 200, description = "wire::Assignment"), (status = 204, description = "no work"),
              (status = 404, body = crate::error::ErrorBody)))]
async fn claim(
    State(state): State<AppState>,
    _: AgentAuth,
    Json(req): Json<wire::Claim>,
) -> ApiResult<Response> {
    if db::nodes::get(&state.db, &req.node_id).await?.is_none() {
        return Err(unknown_node());
    }
    long_poll(&state, req.wait_secs, || next_assignment(&state, &req.node_id)).await
}

/// Answers `wait_secs` (at most 25) of long polling: `attempt` is tried, and again whenever new work
/// is announced (or every second, for back-offs coming due), until it has an answer; 204 when the
/// time is up or the server stops.
async fn long_poll<F, Fut>(state: &AppState, wait_secs: u64, mut attempt: F) -> ApiResult<Response>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ApiResult<Option<Response>>>,
{
    let deadline = Instant::now() + Duration::from_secs(wait_secs.min(25));
    loop {
        let notified = state.work.notified();
        if let Some(answer) = attempt().await? {
            return Ok(answer);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::select! {
            _ = tokio::time::timeout(left.min(Duration::from_secs(1)), notified) => {}
            () = state.stopping.cancelled() => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

/// The next task for the node, as an assignment; `None` when there is none now.
async fn next_assignment(state: &AppState, node_id: &str) -> ApiResult<Option<Response>> {
    loop {
        let Some(task) = tasks::claim_next(state, node_id).await? else {
            return Ok(None);
        };
        let Some(host) = db::hosts::get(&state.db, &task.host_id).await? else {
            return Err(ApiError::internal("claimed a task whose host is gone"));
        };
        let egress = match bound_egress(state, &host.id).await? {
            Ok(egress) => egress,
            Err(unusable) => {
                // Never run a bound host without its tunnel: the task fails, saying why.
                let result = wire::TaskResult {
                    lease: task.lease.clone().unwrap_or_default(),
                    outcome: wire::Outcome::Failed {
                        error: unusable.to_string(),
                        retryable: false,
                    },
                    observed: None,
                };
                tasks::report_result(state, &task.id, &result).await?;
                continue;
            }
        };
        let vnc_secret = host
            .vnc_secret
            .open(&state.secrets, crate::secrets::field::HOST_VNC_SECRET)
            .map_err(|e| ApiError::internal(format_args!("host {}: VNC secret: {e}", host.id)))?;
        let assignment = wire::Assignment {
            task_id: task.id.clone(),
            lease: task.lease.clone().unwrap_or_default(),
            kind: wire_kind(task.kind),
            attempt: u32::try_from(task.attempts).unwrap_or(u32::MAX),
            wipe: task
                .params
                .get("wipe")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            host: wire::HostSpec {
                host_id: host.id.clone(),
                short_id: host.short_id.clone(),
                linux_user: linux_user(host.username.as_deref()),
                memory_mb: u64::try_from(host.memory_mb).unwrap_or(0),
                cpu_millis: u64::try_from(host.cpu_millis).unwrap_or(0),
                pids_limit: u64::try_from(host.pids_limit).unwrap_or(0),
                password_crypt: host.password_crypt.clone(),
                authorized_keys: db::gateways::client_keys(&state.db).await?,
                vnc_secret,
                egress,
            },
        };
        tracing::info!(task_id = %task.id, host_id = %host.id, kind = task.kind.as_str(), node_id, "task claimed");
        return Ok(Some(Json(assignment).into_response()));
    }
}

/// The tunnel spec of the egress IP the host is bound to; `Ok(Ok(None))` when unbound.
async fn bound_egress(
    state: &AppState,
    host_id: &str,
) -> Result<Result<Option<wire::EgressSpec>, crate::egress::spec::Unusable>, sqlx::Error> {
    let Some(binding) = db::bindings::for_host(&state.db, host_id).await? else {
        return Ok(Ok(None));
    };
    let Some(egress) = db::egress_ips::get(&state.db, &binding.egress_ip_id).await? else {
        return Ok(Ok(None));
    };
    Ok(crate::egress::spec::of(
        &egress,
        Some(&binding),
        &state.secrets,
        state.settings.egress_dns_server,
    )
    .map(Some))
}

fn wire_kind(kind: TaskKind) -> wire::TaskKind {
    match kind {
        TaskKind::Create => wire::TaskKind::Create,
        TaskKind::Start => wire::TaskKind::Start,
        TaskKind::Stop => wire::TaskKind::Stop,
        TaskKind::Rebuild => wire::TaskKind::Rebuild,
        TaskKind::Delete => wire::TaskKind::Delete,
        TaskKind::RotateSshPassword => wire::TaskKind::RotateSshPassword,
    }
}

/// Progress of a running attempt; renews its lease. Tells the agent to stop when the task was
/// cancelled or the lease is no longer its own.
#[utoipa::path(post, path = "/v1/agent/tasks/{task_id}/progress", tag = "agent",
    params(("task_id" = Uuid, Path)), request_body(content = Object, description = "wire::Progress"),
    responses((status = 200, description = "wire::ProgressReply")))]
async fn progress(
    State(state): State<AppState>,
    _: AgentAuth,
    Path(task_id): Path<Uuid>,
    Json(req): Json<wire::Progress>,
) -> ApiResult<Json<wire::ProgressReply>> {
    let task = tasks::report_progress(
        &state,
        &task_id.to_string(),
        &req.lease,
        req.percent.min(100),
        &req.stage,
    )
    .await?;
    Ok(Json(match task {
        Some(t) => wire::ProgressReply {
            cancel_requested: t.cancel_requested,
            lease_lost: false,
        },
        None => wire::ProgressReply {
            cancel_requested: false,
            lease_lost: true,
        },
    }))
}

/// The end of an attempt. A stale lease is answered 409 and changes nothing.
#[utoipa::path(post, path = "/v1/agent/tasks/{task_id}/result", tag = "agent",
    params(("task_id" = Uuid, Path)), request_body(content = Object, description = "wire::TaskResult"),
    responses((status = 204), (status = 409, body = crate::error::ErrorBody)))]
async fn result(
    State(state): State<AppState>,
    _: AgentAuth,
    Path(task_id): Path<Uuid>,
    Json(req): Json<wire::TaskResult>,
) -> ApiResult<StatusCode> {
    match tasks::report_result(&state, &task_id.to_string(), &req).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::conflict(
            "stale_lease",
            "this attempt is no longer current",
        )),
    }
}

/// Long-polls for an egress test to run on this node: 200 with the job (secrets included: agents
/// only), or 204 when none came within `wait_secs`.
#[utoipa::path(post, path = "/v1/agent/egress-tests/claim", tag = "agent",
    request_body(content = Object, description = "wire::EgressTestClaim"),
    responses((status = 200, description = "wire::EgressTestJob"), (status = 204),
              (status = 404, body = crate::error::ErrorBody)))]
async fn claim_egress_test(
    State(state): State<AppState>,
    _: AgentAuth,
    Json(req): Json<wire::EgressTestClaim>,
) -> ApiResult<Response> {
    if db::nodes::get(&state.db, &req.node_id).await?.is_none() {
        return Err(unknown_node());
    }
    long_poll(&state, req.wait_secs, || next_egress_test(&state, &req.node_id)).await
}

/// The next egress test for the node; `None` when there is none now.
async fn next_egress_test(state: &AppState, node_id: &str) -> ApiResult<Option<Response>> {
    loop {
        let now = db::UtcTime::now();
        let Some(test) = db::egress_tests::claim(&state.db, node_id, now).await? else {
            return Ok(None);
        };
        let egress = db::egress_ips::get(&state.db, &test.egress_ip_id).await?;
        let spec = egress
            .as_ref()
            .map(|e| crate::egress::spec::of(e, None, &state.secrets, state.settings.egress_dns_server));
        let Some(Ok(egress)) = spec else {
            // Checked when queued; gone or changed since: the waiting request answers for it.
            db::egress_tests::expire(&state.db, &test.id, now).await?;
            continue;
        };
        let left = (test.deadline.0 - now.0).num_milliseconds().max(0);
        let job = wire::EgressTestJob {
            test_id: test.id.clone(),
            egress,
            targets: state.settings.egress_probe.clone(),
            budget_ms: u64::try_from(left).unwrap_or(0),
        };
        tracing::info!(test_id = %test.id, node_id, "egress test claimed");
        return Ok(Some(Json(job).into_response()));
    }
}

/// The checks of a claimed egress test. A test that is no longer running (answered, or given up
/// after its 30 s) is answered 409.
#[utoipa::path(post, path = "/v1/agent/egress-tests/{test_id}/result", tag = "agent",
    params(("test_id" = Uuid, Path)), request_body(content = Object, description = "wire::EgressTestReport"),
    responses((status = 204), (status = 409, body = crate::error::ErrorBody)))]
async fn egress_test_result(
    State(state): State<AppState>,
    _: AgentAuth,
    Path(test_id): Path<Uuid>,
    Json(req): Json<wire::EgressTestReport>,
) -> ApiResult<StatusCode> {
    let test_id = test_id.to_string();
    let Some(test) = db::egress_tests::get(&state.db, &test_id).await? else {
        return Err(ApiError::not_found("egress test"));
    };
    let node_id = test.node_id.unwrap_or_default();
    let checks = serde_json::to_string(&req.checks).map_err(ApiError::internal)?;
    if db::egress_tests::finish(&state.db, &test_id, &node_id, &checks, db::UtcTime::now()).await? {
        state.work.notify_waiters();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::conflict(
            "test_over",
            "this egress test is no longer running",
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn linux_user_names_are_safe() {
        assert_eq!(super::linux_user(Some("Alice")), "alice");
        assert_eq!(super::linux_user(Some("bob.smith")), "user");
        assert_eq!(super::linux_user(Some("root")), "user");
        assert_eq!(super::linux_user(Some("9lives")), "user");
        assert_eq!(super::linux_user(None), "user");
    }

    #[test]
    fn token_comparison() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"abcd"));
    }
}
