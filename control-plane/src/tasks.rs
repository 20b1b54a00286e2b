//! The durable task queue as the agents see it: claiming with leases, progress, results, recovery
//! of attempts whose agent vanished, and the expiry scanner. Decisions are plain functions of their
//! inputs (`after_failure`, `host_status_after`); the rest applies them in one transaction each.

use std::time::Duration;

use crate::AppState;
use crate::db::events::{Actor, NewEvent};
use crate::db::hosts::HostStatus;
use crate::db::tasks::{Finish, Task, TaskKind};
use crate::db::{self, UtcTime};

/// How long a claimed attempt lives without a progress report before it is taken back.
pub const LEASE: Duration = Duration::from_secs(45);
/// Seconds between agent heartbeats; a node unheard for three of them counts as gone.
pub const HEARTBEAT_SECS: u64 = 5;
const BACKOFF_BASE_SECS: i64 = 5;
const BACKOFF_MAX_SECS: i64 = 120;

fn system() -> Actor {
    Actor {
        id: None,
        name: Some("system".into()),
        ip: None,
    }
}

/// What happens to an attempt that failed: another attempt after an exponential back-off while the
/// budget lasts and the error is worth retrying, else the task fails for good.
pub fn after_failure(
    attempts: i64,
    max_attempts: i64,
    retryable: bool,
    error: String,
    now: UtcTime,
) -> Finish {
    if retryable && attempts < max_attempts {
        let exp = u32::try_from(attempts.clamp(1, 10) - 1).unwrap_or(0);
        let delay = BACKOFF_BASE_SECS
            .saturating_mul(2_i64.saturating_pow(exp))
            .min(BACKOFF_MAX_SECS);
        Finish::Retry {
            error,
            not_before: UtcTime::from(now.0 + chrono::Duration::seconds(delay)),
        }
    } else {
        Finish::Failed { error }
    }
}

/// The host's status once a task ended; `None` means the host row goes (a finished delete).
pub fn host_status_after(
    kind: TaskKind,
    finish: &Finish,
    observed: Option<wire::ContainerState>,
) -> Option<HostStatus> {
    let from_docker = |fallback: HostStatus| match observed {
        Some(wire::ContainerState::Running) => HostStatus::Running,
        Some(wire::ContainerState::Stopped | wire::ContainerState::Created) => HostStatus::Stopped,
        Some(wire::ContainerState::Missing | wire::ContainerState::Broken) => HostStatus::Error,
        None => fallback,
    };
    match (kind, finish) {
        (TaskKind::Delete, Finish::Succeeded) => None,
        (TaskKind::Delete, _) => Some(HostStatus::Deleting),
        (TaskKind::Create | TaskKind::Start | TaskKind::Rebuild, Finish::Succeeded) => {
            Some(HostStatus::Running)
        }
        (TaskKind::Stop, Finish::Succeeded) => Some(HostStatus::Stopped),
        (TaskKind::RotateSshPassword | TaskKind::ApplySecrets, Finish::Succeeded) => {
            Some(from_docker(HostStatus::Running))
        }
        (TaskKind::Create, Finish::Failed { .. }) => Some(from_docker(HostStatus::Error)),
        (_, Finish::Retry { .. }) => Some(from_docker(HostStatus::Error)),
        (_, _) => Some(from_docker(HostStatus::Error)),
    }
}

/// Claims the next task for `node_id`, if any: the task goes to running under a fresh lease and the
/// host is placed on the node.
pub async fn claim_next(state: &AppState, node_id: &str) -> Result<Option<Task>, sqlx::Error> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let Some(candidate) = db::tasks::next_for_node(&mut *tx, node_id, now).await? else {
        return Ok(None);
    };
    let lease = db::new_id();
    let until =
        UtcTime::from(now.0 + chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::seconds(45)));
    let Some(task) = db::tasks::claim(&mut *tx, &candidate.id, node_id, &lease, until, now).await? else {
        return Ok(None);
    };
    db::hosts::place(&mut *tx, &task.host_id, node_id, now).await?;
    if matches!(task.kind, TaskKind::Create | TaskKind::Rebuild) {
        db::hosts::set_status(&mut *tx, &task.host_id, HostStatus::Creating, now).await?;
    }
    tx.commit().await?;
    state.publish_task(&task);
    Ok(Some(task))
}

/// A progress report. `Ok(None)` when the lease is stale.
pub async fn report_progress(
    state: &AppState,
    task_id: &str,
    lease: &str,
    percent: u8,
    stage: &str,
) -> Result<Option<Task>, sqlx::Error> {
    let now = UtcTime::now();
    let until =
        UtcTime::from(now.0 + chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::seconds(45)));
    let stage: String = stage.chars().filter(|c| !c.is_control()).take(200).collect();
    let task = db::tasks::progress(&state.db, task_id, lease, i64::from(percent), &stage, until, now).await?;
    if let Some(t) = &task {
        state.publish_task(t);
    }
    Ok(task)
}

/// A final report from the agent. `Ok(None)` when the lease is stale.
pub async fn report_result(
    state: &AppState,
    task_id: &str,
    result: &wire::TaskResult,
) -> Result<Option<Task>, sqlx::Error> {
    let now = UtcTime::now();
    let Some(current) = db::tasks::get(&state.db, task_id).await? else {
        return Ok(None);
    };
    if current.lease.as_deref() != Some(result.lease.as_str()) {
        return Ok(None);
    }
    let finish = match &result.outcome {
        wire::Outcome::Succeeded => Finish::Succeeded,
        wire::Outcome::Cancelled => Finish::Cancelled,
        wire::Outcome::Failed { error, retryable } => {
            let error: String = error.chars().take(2000).collect();
            after_failure(current.attempts, current.max_attempts, *retryable, error, now)
        }
    };
    let observed = result.observed.as_ref();
    apply_finish(
        state,
        &current,
        &result.lease,
        finish,
        Observed {
            state: observed.map(|o| o.state),
            address: observed.and_then(|o| o.address.as_deref()),
            host_key: observed.and_then(|o| o.ssh_host_key.as_deref()),
        },
        now,
    )
    .await
}

/// What the agent saw of the host as the task ended.
#[derive(Debug, Clone, Copy, Default)]
struct Observed<'a> {
    state: Option<wire::ContainerState>,
    address: Option<&'a str>,
    host_key: Option<&'a str>,
}

async fn apply_finish(
    state: &AppState,
    task: &Task,
    lease: &str,
    finish: Finish,
    observed: Observed<'_>,
    now: UtcTime,
) -> Result<Option<Task>, sqlx::Error> {
    let Observed {
        state: observed,
        address,
        host_key,
    } = observed;
    let mut tx = state.db.begin().await?;
    let Some(done) = db::tasks::finish(&mut *tx, &task.id, lease, &finish, now).await? else {
        return Ok(None);
    };
    let host = db::hosts::get(&mut *tx, &task.host_id).await?;
    match host_status_after(task.kind, &finish, observed) {
        None => {
            db::hosts::delete(&mut *tx, &task.host_id).await?;
        }
        Some(status) => {
            let error = match &finish {
                Finish::Failed { error } | Finish::Retry { error, .. } => Some(error.as_str()),
                _ => None,
            };
            db::hosts::set_outcome(&mut *tx, &task.host_id, status, error, address, now).await?;
        }
    }
    let (kind, outcome) = match &finish {
        Finish::Succeeded => ("task.succeeded", db::events::Outcome::Success),
        Finish::Cancelled => ("task.cancelled", db::events::Outcome::Success),
        Finish::Failed { .. } => ("task.failed", db::events::Outcome::Failure),
        Finish::Retry { .. } => ("task.retry_scheduled", db::events::Outcome::Failure),
    };
    let mut event = NewEvent {
        outcome,
        ..NewEvent::success(kind)
    }
    .host(&task.host_id)
    .details(serde_json::json!({
        "task_id": task.id, "kind": task.kind, "attempt": task.attempts, "error": done.error,
    }));
    event.user_id = host.as_ref().and_then(|h| h.user_id.clone());
    db::events::record(&mut *tx, &system(), event, now).await?;
    if let (Some(key), Some(host)) = (host_key, &host) {
        // Only a create or a rebuild may bring a new key; a different one at any other time is a
        // different machine answering for the host, and the pin stays (the gateways refuse it).
        let may_change = matches!(task.kind, TaskKind::Create | TaskKind::Rebuild);
        if db::hosts::pin_host_key(&mut tx, &host.id, key, may_change).await? == db::hosts::Pin::Refused {
            tracing::warn!(host_id = %host.id, "the agent reported another SSH host key; the pin stays");
            let mut event = NewEvent::failure("host.ssh_host_key_changed")
                .host(&host.id)
                .details(
                    serde_json::json!({ "task_id": task.id, "reported": key, "pinned": host.ssh_host_key }),
                );
            event.user_id = host.user_id.clone();
            db::events::record(&mut *tx, &system(), event, now).await?;
        }
    }
    tx.commit().await?;
    state.publish_task(&done);
    if matches!(finish, Finish::Retry { .. }) {
        state.wake_agents();
    }
    Ok(Some(done))
}

/// Takes back attempts whose lease ran out: retried within the budget, else failed.
pub async fn recover_expired(state: &AppState) -> Result<usize, sqlx::Error> {
    let now = UtcTime::now();
    let expired = db::tasks::expired_leases(&state.db, now).await?;
    take_back(state, expired, "the agent stopped reporting", now).await
}

/// Takes back every attempt running on `node_id`: called when its agent registers again after a
/// restart, so a killed agent's work is retried at once instead of after the lease runs out.
pub async fn recover_node(state: &AppState, node_id: &str) -> Result<usize, sqlx::Error> {
    let running = db::tasks::running_on_node(&state.db, node_id).await?;
    take_back(state, running, "the agent restarted", UtcTime::now()).await
}

/// Ends running attempts nobody is carrying out any more, as a retryable failure; returns how many.
async fn take_back(
    state: &AppState,
    attempts: Vec<Task>,
    reason: &str,
    now: UtcTime,
) -> Result<usize, sqlx::Error> {
    let mut n = 0;
    for task in attempts {
        let Some(lease) = task.lease.clone() else { continue };
        let finish = after_failure(task.attempts, task.max_attempts, true, reason.to_owned(), now);
        if apply_finish(state, &task, &lease, finish, Observed::default(), now)
            .await?
            .is_some()
        {
            n += 1;
        }
    }
    Ok(n)
}

/// Stops the hosts of accounts whose expiry has passed, once per expiry, with an event.
pub async fn stop_expired(state: &AppState) -> Result<usize, crate::error::ApiError> {
    let now = UtcTime::now();
    let mut stopped = 0;
    for (user_id, expires_at) in db::users::newly_expired(&state.db, now).await? {
        let mut tx = state.db.begin().await?;
        let filter = db::hosts::Filter {
            user_id: Some(user_id.clone()),
            status: None,
            q: None,
        };
        let hosts = db::hosts::list(
            &state.db,
            &filter,
            db::Page {
                page: 1,
                page_size: 500,
            },
        )
        .await?
        .0;
        let mut host_ids = Vec::new();
        for host in hosts.iter().filter(|h| {
            matches!(
                h.status,
                HostStatus::Running | HostStatus::Creating | HostStatus::Pending | HostStatus::Error
            )
        }) {
            crate::hosts::request(
                &mut tx,
                &system(),
                host,
                TaskKind::Stop,
                serde_json::json!({ "reason": "expired" }),
                now,
            )
            .await?;
            host_ids.push(host.id.clone());
        }
        db::users::mark_expiry_handled(&mut *tx, &user_id, expires_at).await?;
        let event = NewEvent::success("user.expired")
            .user(&user_id)
            .details(serde_json::json!({ "expires_at": expires_at, "hosts_stopping": host_ids }));
        db::events::record(&mut *tx, &system(), event, now).await?;
        tx.commit().await?;
        stopped += host_ids.len();
    }
    if stopped > 0 {
        state.wake_agents();
    }
    Ok(stopped)
}

/// Deletes SSH handoff secrets and bootstrap sessions that have expired: they can never be used
/// again, and keeping their hashes serves nobody.
pub async fn purge_access_secrets(state: &AppState) -> Result<u64, sqlx::Error> {
    let now = UtcTime::now();
    let handoffs = db::handoffs::purge_expired(&state.db, now).await?;
    let sessions = db::bootstrap::purge_expired(&state.db, now).await?;
    Ok(handoffs + sessions)
}

/// The oldest event time kept at `now` with a retention of `days` (`None`: keep every event).
pub fn event_cutoff(now: UtcTime, days: u32) -> Option<UtcTime> {
    (days > 0).then(|| UtcTime::from(now.0 - chrono::Duration::days(i64::from(days))))
}

/// Deletes the audit events older than `EVENT_RETENTION_DAYS`.
pub async fn purge_old_events(state: &AppState, now: UtcTime) -> Result<u64, sqlx::Error> {
    match event_cutoff(now, state.settings.event_retention_days) {
        Some(cutoff) => db::events::purge_before(&state.db, cutoff).await,
        None => Ok(0),
    }
}

/// Deletes the session recordings older than `RECORDING_RETENTION_DAYS`.
pub async fn purge_old_recordings(state: &AppState, now: UtcTime) -> Result<u64, sqlx::Error> {
    match event_cutoff(now, state.settings.recording.retention_days) {
        Some(cutoff) => db::recordings::purge_before(&state.db, cutoff).await,
        None => Ok(0),
    }
}

/// The lease on the periodic jobs: one replica runs them; another takes over within
/// [`SCHEDULER_LEASE`] of its holder's death.
const SCHEDULER: &str = "scheduler";
pub const SCHEDULER_LEASE: Duration = Duration::from_secs(10);
const SCHEDULER_TICK: Duration = Duration::from_secs(2);

/// Takes or renews this process's lease on the periodic jobs; `false` while another holds it.
async fn hold_scheduler(state: &AppState) -> Result<bool, sqlx::Error> {
    let now = UtcTime::now();
    let until = UtcTime::from(now.0 + chrono::Duration::from_std(SCHEDULER_LEASE).unwrap_or_default());
    db::leases::hold(&state.db, SCHEDULER, &state.instance, now, until).await
}

/// Runs the lease recovery, the purge of expired access secrets, the expiry scanner and the
/// retention of the audit log and the session recordings until `shutdown`, in whichever one of the
/// replicas holds the scheduler lease.
pub async fn run_scheduler(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SCHEDULER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Retention is measured in days: once a minute is plenty, and keeps the delete off the hot loop.
    let mut next_event_purge = tokio::time::Instant::now();
    let mut next_quota_check = tokio::time::Instant::now();
    let mut holding = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {
                if holding
                    && let Err(e) = db::leases::release(&state.db, SCHEDULER, &state.instance).await
                {
                    tracing::warn!(error = %e, "giving up the scheduler lease");
                }
                return;
            }
        }
        let held = match hold_scheduler(&state).await {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "renewing the scheduler lease failed");
                false
            }
        };
        if held != holding {
            holding = held;
            if held {
                tracing::info!(instance = %state.instance, "this replica runs the periodic jobs");
            } else {
                tracing::info!("another replica runs the periodic jobs");
            }
        }
        if !held {
            continue;
        }
        match recover_expired(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(tasks = n, "took back task attempts whose agent stopped reporting"),
            Err(e) => tracing::error!(error = %e, "lease recovery failed"),
        }
        match purge_access_secrets(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                rows = n,
                "purged expired SSH handoff secrets and bootstrap sessions"
            ),
            Err(e) => tracing::error!(error = %e, "purging expired access secrets failed"),
        }
        match stop_expired(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(hosts = n, "stopping hosts of expired accounts"),
            Err(e) => tracing::error!(error = ?e, "expiry scan failed"),
        }
        if tokio::time::Instant::now() >= next_quota_check {
            next_quota_check = tokio::time::Instant::now() + state.settings.traffic_quota_check;
            if let Err(e) = crate::traffic::enforce_quotas(&state, UtcTime::now()).await {
                tracing::error!(error = ?e, "traffic quota check failed");
            }
        }
        if tokio::time::Instant::now() >= next_event_purge {
            next_event_purge = tokio::time::Instant::now() + Duration::from_secs(60);
            match purge_old_events(&state, UtcTime::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "deleted audit events past their retention"),
                Err(e) => tracing::error!(error = %e, "audit event retention failed"),
            }
            let traffic_cutoff =
                crate::traffic::hours_cutoff(UtcTime::now(), state.settings.traffic_retention_days);
            if let Some(cutoff) = traffic_cutoff {
                match db::traffic::purge_hours_before(&state.db, cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(hours = n, "deleted hourly traffic past its retention"),
                    Err(e) => tracing::error!(error = %e, "traffic retention failed"),
                }
            }
            match purge_old_recordings(&state, UtcTime::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(recordings = n, "deleted session recordings past their retention"),
                Err(e) => tracing::error!(error = %e, "session recording retention failed"),
            }
            match state.limiter.purge().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "purged expired sign-in limiter rows"),
                Err(e) => tracing::error!(error = %e, "purging the sign-in limiter failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_retention_cutoff() {
        let now = UtcTime::from(chrono::DateTime::from_timestamp(1_000_000_000, 0).unwrap());
        let cases = [
            (0, None),
            (1, Some(1_000_000_000 - 86_400)),
            (90, Some(1_000_000_000 - 90 * 86_400)),
        ];
        for (days, want) in cases {
            assert_eq!(event_cutoff(now, days).map(|t| t.0.timestamp()), want, "{days}");
        }
    }

    #[test]
    fn failures_back_off_then_give_up() {
        let now = UtcTime::now();
        let Finish::Retry { not_before, .. } = after_failure(1, 3, true, "x".into(), now) else {
            panic!()
        };
        assert_eq!((not_before.0 - now.0).num_seconds(), 5);
        let Finish::Retry { not_before, .. } = after_failure(2, 3, true, "x".into(), now) else {
            panic!()
        };
        assert_eq!((not_before.0 - now.0).num_seconds(), 10);
        assert!(matches!(
            after_failure(3, 3, true, "x".into(), now),
            Finish::Failed { .. }
        ));
        assert!(matches!(
            after_failure(1, 3, false, "x".into(), now),
            Finish::Failed { .. }
        ));
    }

    #[test]
    fn host_status_follows_the_task() {
        use wire::ContainerState as C;
        assert_eq!(
            host_status_after(TaskKind::Delete, &Finish::Succeeded, None),
            None
        );
        assert_eq!(
            host_status_after(TaskKind::Stop, &Finish::Succeeded, Some(C::Stopped)),
            Some(HostStatus::Stopped)
        );
        assert_eq!(
            host_status_after(TaskKind::Start, &Finish::Succeeded, None),
            Some(HostStatus::Running)
        );
        let failed = Finish::Failed { error: "e".into() };
        assert_eq!(
            host_status_after(TaskKind::Start, &failed, Some(C::Stopped)),
            Some(HostStatus::Stopped)
        );
        assert_eq!(
            host_status_after(TaskKind::Create, &failed, None),
            Some(HostStatus::Error)
        );
        assert_eq!(
            host_status_after(TaskKind::Delete, &failed, None),
            Some(HostStatus::Deleting)
        );
    }
}
