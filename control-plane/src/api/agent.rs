//! The agent link: `/v1/agent/…`, called by node agents, each with the credential its node got at
//! enrolment. The node is always the credential's: an agent sees and changes only its own hosts.

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
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::tasks;

/// An agent holding the credential of an enrolled node: the node it speaks for.
#[derive(Debug, Clone)]
pub struct AgentAuth(pub db::nodes::Node);

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let credential = presented(parts, wire::AGENT_TOKEN_HEADER).ok_or_else(ApiError::unauthorized)?;
        db::nodes::by_credential(&state.db, &crate::enrolment::hash(credential))
            .await?
            .map(Self)
            .ok_or_else(ApiError::unauthorized)
    }
}

/// The credential a machine caller (agent, gateway) sends in `header`, if any. It is looked up by
/// its hash, so no comparison of the secret itself happens here.
pub(crate) fn presented<'a>(parts: &'a Parts, header: &str) -> Option<&'a str> {
    parts
        .headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with(crate::enrolment::CREDENTIAL_PREFIX))
}

/// A node-scoped request naming another node than the credential's.
fn wrong_node() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "wrong_node",
        "this credential belongs to another node",
    )
}

fn check_node(auth: &AgentAuth, node_id: &str) -> ApiResult<()> {
    if auth.0.id == node_id {
        Ok(())
    } else {
        Err(wrong_node())
    }
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

fn agent_actor(node: &str) -> Actor {
    Actor {
        id: None,
        name: Some(format!("agent:{node}")),
        ip: None,
    }
}

/// An agent announces itself; answers the node id to use in later calls.
#[utoipa::path(post, path = "/v1/agent/register", tag = "agent", security(("agent_token" = [])),
    request_body(content = Object, description = "wire::Register"),
    responses((status = 200, description = "wire::Registered"), (status = 401, body = crate::error::ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    AgentAuth(node): AgentAuth,
    Json(req): Json<wire::Register>,
) -> ApiResult<Json<wire::Registered>> {
    let subnet = match req.hosts_subnet.as_deref() {
        Some(text) => Some(
            crate::enrolment::Subnet::parse_hosts(text)
                .map_err(|e| ApiError::invalid("hosts_subnet", format!("hosts_subnet {e}")))?
                .to_string(),
        ),
        None => None,
    };
    let now = UtcTime::now();
    let node = db::nodes::register(
        &state.db,
        &node.id,
        &req.agent_version,
        req.reach_address.as_deref(),
        subnet.as_deref(),
        now,
    )
    .await?
    .ok_or_else(ApiError::unauthorized)?;
    if subnet.is_some() && node.hosts_subnet != subnet {
        tracing::warn!(node = %node.name, known = ?node.hosts_subnet, reported = ?subnet,
            "the agent reports another hosts subnet than at its enrolment; the known one stays");
    }
    let event = NewEvent::success("node.registered").details(serde_json::json!({
        "node_id": node.id, "name": node.name, "agent_version": node.agent_version,
        "hosts_subnet": node.hosts_subnet,
    }));
    db::events::record(&state.db, &agent_actor(&node.name), event, now).await?;
    let recovered = tasks::recover_node(&state, &node.id).await?;
    tracing::info!(node = %node.name, node_id = %node.id, recovered, "agent registered");
    Ok(Json(wire::Registered {
        node_id: node.id,
        heartbeat_secs: tasks::HEARTBEAT_SECS,
    }))
}

/// Liveness and what Docker holds on the node; answers the hosts placed there. Drift between the
/// database and Docker is repaired with ordinary tasks, so it stays ordered with everything else.
#[utoipa::path(post, path = "/v1/agent/heartbeat", tag = "agent", security(("agent_token" = [])),
    request_body(content = Object, description = "wire::Heartbeat"),
    responses((status = 200, description = "wire::HeartbeatReply"), (status = 404, body = crate::error::ErrorBody)))]
async fn heartbeat(
    State(state): State<AppState>,
    auth: AgentAuth,
    Json(req): Json<wire::Heartbeat>,
) -> ApiResult<Json<wire::HeartbeatReply>> {
    check_node(&auth, &req.node_id)?;
    let now = UtcTime::now();
    db::nodes::touch(&state.db, &auth.0.id, now).await?;
    let hosts = db::hosts::on_node(&state.db, &auth.0.id).await?;
    let busy = db::tasks::busy_on_node(&state.db, &auth.0.id).await?;
    let desired = hosts
        .iter()
        .map(|h| wire::DesiredHost {
            host_id: h.id.clone(),
            busy: busy.contains(&h.id),
            egress_cut: h.egress_cut_by.is_some(),
        })
        .collect();
    crate::traffic::record_readings(&state, &auth.0.id, &hosts, &req.observed, now).await?;
    for host in hosts.iter().filter(|h| !busy.contains(&h.id)) {
        let seen = req.observed.iter().find(|o| o.host_id == host.id);
        record_egress_health(&state, host, seen.and_then(|o| o.egress.as_ref()), now).await?;
        // Hosts made before keys were pinned get theirs at the first report; a pinned key changes
        // only through a create or rebuild task's result.
        if let (None, Some(key)) = (&host.ssh_host_key, seen.and_then(|o| o.ssh_host_key.as_deref())) {
            let mut conn = state.db.acquire().await?;
            db::hosts::pin_host_key(&mut conn, &host.id, key, false).await?;
        }
    }
    let repairs = crate::hosts::plan_repairs(
        hosts.iter().map(|h| (h.id.as_str(), h.status)),
        &req.observed,
        &busy,
    );
    for repair in &repairs {
        let Some(host) = hosts.iter().find(|h| h.id == repair.host_id) else {
            continue;
        };
        let mut tx = state.db.begin().await?;
        crate::hosts::request(
            &mut tx,
            &agent_actor("reconciler"),
            host,
            repair.kind,
            serde_json::json!({ "reason": "drift" }),
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(host_id = %host.id, kind = repair.kind.as_str(), "queued a task to repair drift");
    }
    let repaired = !repairs.is_empty();
    if repaired {
        state.wake_agents();
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

/// Account names of the host image's own users and groups, which a tenant must never get.
const RESERVED_LINUX_NAMES: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "sshd",
    "messagebus",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "polkitd",
    "user",
];

/// The account inside the container for an API username. A lower-cased name that is already a
/// valid Linux account name (and not one of the image's own) is kept; any other gets `u_` and 24
/// hex digits of its SHA-256, so two usernames never share an account. (Usernames are unique
/// without regard to case, so lower-casing joins nothing.) A username chosen to equal another's
/// derived name is refused when the user is created: see [`linux_user_taken`].
pub fn linux_user(username: Option<&str>) -> String {
    let Some(username) = username else {
        return "user".to_owned();
    };
    let name = username.to_lowercase();
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && !RESERVED_LINUX_NAMES.contains(&name.as_str());
    if plain {
        name
    } else {
        let digest = crate::enrolment::hash(&name);
        format!("u_{}", &digest[..24])
    }
}

/// Whether a new `username` would land in the same Linux account as one of `existing`.
pub fn linux_user_taken<'a>(username: &str, existing: impl IntoIterator<Item = &'a str>) -> bool {
    let wanted = linux_user(Some(username));
    existing
        .into_iter()
        .any(|other| !other.eq_ignore_ascii_case(username) && linux_user(Some(other)) == wanted)
}

/// Waits (up to `wait_secs`, at most 25) for a task this node may run.
#[utoipa::path(post, path = "/v1/agent/claim", tag = "agent", security(("agent_token" = [])),
    request_body(content = Object, description = "wire::Claim"),
    responses((status = 200, description = "wire::Assignment"), (status = 204, description = "no work"),
              (status = 404, body = crate::error::ErrorBody)))]
async fn claim(
    State(state): State<AppState>,
    auth: AgentAuth,
    Json(req): Json<wire::Claim>,
) -> ApiResult<Response> {
    check_node(&auth, &req.node_id)?;
    long_poll(&state, req.wait_secs, || next_assignment(&state, &auth.0.id)).await
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
            kind: task.kind,
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
                egress_cut: host.egress_cut_by.is_some(),
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

/// Progress of a running attempt; renews its lease. Tells the agent to stop when the task was
/// cancelled or the lease is no longer its own.
#[utoipa::path(post, path = "/v1/agent/tasks/{task_id}/progress", tag = "agent", security(("agent_token" = [])),
    params(("task_id" = Uuid, Path)), request_body(content = Object, description = "wire::Progress"),
    responses((status = 200, description = "wire::ProgressReply")))]
async fn progress(
    State(state): State<AppState>,
    auth: AgentAuth,
    Path(task_id): Path<Uuid>,
    Json(req): Json<wire::Progress>,
) -> ApiResult<Json<wire::ProgressReply>> {
    own_task(&state, &auth, &task_id.to_string()).await?;
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
#[utoipa::path(post, path = "/v1/agent/tasks/{task_id}/result", tag = "agent", security(("agent_token" = [])),
    params(("task_id" = Uuid, Path)), request_body(content = Object, description = "wire::TaskResult"),
    responses((status = 204), (status = 409, body = crate::error::ErrorBody)))]
async fn result(
    State(state): State<AppState>,
    auth: AgentAuth,
    Path(task_id): Path<Uuid>,
    Json(req): Json<wire::TaskResult>,
) -> ApiResult<StatusCode> {
    let task = own_task(&state, &auth, &task_id.to_string()).await?;
    let address = req.observed.as_ref().and_then(|o| o.address.as_deref());
    if let Some(address) = address
        && !crate::enrolment::address_allowed(auth.0.hosts_subnet.as_deref(), address)
    {
        // The gateways and the VNC proxy dial this address: one outside the node's own network
        // would send tenants' sessions elsewhere.
        let event = NewEvent {
            outcome: db::events::Outcome::Failure,
            ..NewEvent::success("node.address_refused")
        }
        .host(&task.host_id)
        .details(serde_json::json!({
            "node_id": auth.0.id, "task_id": task.id, "address": address,
            "hosts_subnet": auth.0.hosts_subnet,
        }));
        db::events::record(&state.db, &agent_actor(&auth.0.name), event, UtcTime::now()).await?;
        tracing::warn!(node = %auth.0.name, task_id = %task.id, address, "host address outside the node's network refused");
        return Err(ApiError::invalid(
            "observed.address",
            "the host address is not inside this node's hosts network",
        ));
    }
    match tasks::report_result(&state, &task_id.to_string(), &req).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::conflict(
            "stale_lease",
            "this attempt is no longer current",
        )),
    }
}

/// The task, if it was claimed by the caller's node; another node's task is not found.
async fn own_task(state: &AppState, auth: &AgentAuth, task_id: &str) -> ApiResult<db::tasks::Task> {
    db::tasks::get(&state.db, task_id)
        .await?
        .filter(|t| t.node_id.as_deref() == Some(auth.0.id.as_str()))
        .ok_or_else(|| ApiError::not_found("task"))
}

/// Long-polls for an egress test to run on this node: 200 with the job (secrets included: agents
/// only), or 204 when none came within `wait_secs`.
#[utoipa::path(post, path = "/v1/agent/egress-tests/claim", tag = "agent", security(("agent_token" = [])),
    request_body(content = Object, description = "wire::EgressTestClaim"),
    responses((status = 200, description = "wire::EgressTestJob"), (status = 204),
              (status = 404, body = crate::error::ErrorBody)))]
async fn claim_egress_test(
    State(state): State<AppState>,
    auth: AgentAuth,
    Json(req): Json<wire::EgressTestClaim>,
) -> ApiResult<Response> {
    check_node(&auth, &req.node_id)?;
    long_poll(&state, req.wait_secs, || next_egress_test(&state, &auth.0.id)).await
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
#[utoipa::path(post, path = "/v1/agent/egress-tests/{test_id}/result", tag = "agent", security(("agent_token" = [])),
    params(("test_id" = Uuid, Path)), request_body(content = Object, description = "wire::EgressTestReport"),
    responses((status = 204), (status = 409, body = crate::error::ErrorBody)))]
async fn egress_test_result(
    State(state): State<AppState>,
    AgentAuth(node): AgentAuth,
    Path(test_id): Path<Uuid>,
    Json(req): Json<wire::EgressTestReport>,
) -> ApiResult<StatusCode> {
    let test_id = test_id.to_string();
    let Some(test) = db::egress_tests::get(&state.db, &test_id).await? else {
        return Err(ApiError::not_found("egress test"));
    };
    if test.node_id.as_deref() != Some(node.id.as_str()) {
        return Err(ApiError::not_found("egress test"));
    }
    let node_id = node.id;
    let checks = serde_json::to_string(&req.checks).map_err(ApiError::internal)?;
    if db::egress_tests::finish(&state.db, &test_id, &node_id, &checks, db::UtcTime::now()).await? {
        state.wake_agents();
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
    use super::{linux_user, linux_user_taken};

    #[test]
    fn linux_user_names_are_safe_and_distinct() {
        let derived = |name: &str| linux_user(Some(name));
        let cases: &[(&str, &str)] = &[
            ("alice", "alice"),
            ("Alice", "alice"),
            ("bob_2", "bob_2"),
            ("x-y", "x-y"),
        ];
        for &(name, want) in cases {
            assert_eq!(derived(name), want, "{name}");
        }
        // Names that are no valid account, or one of the image's: a derived name each.
        for name in [
            "bob.smith",
            "bob.Smith",
            "9lives",
            "root",
            "user",
            "sshd",
            &"a".repeat(40),
        ] {
            let got = derived(name);
            assert!(got.starts_with("u_") && got.len() == 26, "{name} -> {got}");
            assert!(
                got.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
        }
        assert_eq!(derived("bob.smith"), derived("BOB.SMITH"));
        let distinct = [
            "bob.smith",
            "bob.smit",
            "jane.doe",
            "9lives",
            "8lives",
            "root",
            "user",
        ];
        let names: std::collections::HashSet<String> = distinct.iter().map(|n| derived(n)).collect();
        assert_eq!(names.len(), distinct.len());
        assert_eq!(linux_user(None), "user");
    }

    #[test]
    fn a_username_equal_to_another_derived_name_is_taken() {
        let derived = linux_user(Some("bob.smith"));
        assert!(linux_user_taken(&derived, ["bob.smith"]));
        assert!(linux_user_taken("bob.smith", [derived.as_str()]));
        assert!(!linux_user_taken("jane.doe", ["bob.smith", "alice"]));
        // The same user (any case) is not a collision with itself.
        assert!(!linux_user_taken("Alice", ["alice"]));
    }
}
