//! The task loop: claim work from the control plane, run it (up to `max_tasks` at once, one at a time
//! per host), report progress (which also renews the lease and carries cancellation), and deliver
//! the result, retrying until the control plane has it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use wire::{Assignment, Outcome, TaskResult};

use crate::control_plane::{self, ControlPlane};
use crate::hosts::{self, Hosts, Interrupt, Progress};
use crate::{Backoff, Session, sleep_or_cancel};

/// How long the control plane may hold a claim open.
pub const CLAIM_WAIT_SECS: u64 = 20;
/// Progress is re-sent at least this often while a task runs, to keep its lease.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// Hosts with a task running here, and when the last one ended: the reconciler leaves them alone
/// while its view of the control plane may predate the task.
#[derive(Debug, Default)]
pub struct Inflight {
    inner: Mutex<HashMap<String, Option<Instant>>>,
}

impl Inflight {
    fn begin(&self, host_id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host_id.to_owned(), None);
    }

    fn end(&self, host_id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host_id.to_owned(), Some(Instant::now()));
    }

    /// Hosts running a task now or whose task ended after `since`; older entries are forgotten.
    pub fn protected(&self, since: Instant) -> HashSet<String> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, ended| ended.is_none_or(|t| t >= since));
        map.keys().cloned().collect()
    }
}

/// Serialises tasks per host on this agent (the control plane does too; this makes it local fact).
#[derive(Debug, Default)]
struct HostLocks {
    inner: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl HostLocks {
    fn get(&self, host_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        map.entry(host_id.to_owned()).or_default().clone()
    }
}

pub(crate) struct TaskLoop {
    pub session: Arc<Session>,
    pub hosts: Arc<Hosts>,
    pub inflight: Arc<Inflight>,
    pub max_tasks: usize,
    pub cancel: CancellationToken,
}

impl TaskLoop {
    pub async fn run(self) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.max_tasks));
        let locks = Arc::new(HostLocks::default());
        let mut running = JoinSet::new();
        let mut backoff = Backoff::new();
        loop {
            while running.try_join_next().is_some() {}
            let permit = tokio::select! {
                () = this.cancel.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let node_id = this.session.node_id().await;
            let asked = Instant::now();
            let claim = wire::Claim {
                node_id: node_id.clone(),
                wait_secs: CLAIM_WAIT_SECS,
            };
            let claimed = tokio::select! {
                () = this.cancel.cancelled() => break,
                r = this.session.control_plane().claim(&claim) => r,
            };
            match claimed {
                Ok(Some(assignment)) => {
                    backoff.reset();
                    let span = tracing::info_span!(
                        "task",
                        task_id = %assignment.task_id,
                        host_id = %assignment.host.host_id,
                        kind = ?assignment.kind,
                        attempt = assignment.attempt,
                    );
                    let (this, locks) = (this.clone(), locks.clone());
                    running.spawn(
                        async move {
                            let lock = locks.get(&assignment.host.host_id);
                            let _one_per_host = lock.lock().await;
                            this.run_task(assignment).await;
                            drop(permit);
                        }
                        .instrument(span),
                    );
                }
                Ok(None) => {
                    backoff.reset();
                    // A control plane that answers at once must not make us spin.
                    if asked.elapsed() < Duration::from_secs(1)
                        && !sleep_or_cancel(Duration::from_secs(1), &this.cancel).await
                    {
                        break;
                    }
                }
                Err(control_plane::Error::NodeUnknown(status)) => {
                    tracing::warn!(%status, "claim: node unknown to the control plane; registering again");
                    this.session.reregister(&node_id).await;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "claim failed");
                    if !sleep_or_cancel(delay, &this.cancel).await {
                        break;
                    }
                }
            }
        }
        // Every action is idempotent: a task cut short here is picked up again once its lease expires.
        running.abort_all();
        while running.join_next().await.is_some() {}
    }

    async fn run_task(&self, assignment: Assignment) {
        let host_id = assignment.host.host_id.clone();
        self.inflight.begin(&host_id);
        let started = Instant::now();
        tracing::info!("task started");
        let mut reporter = Reporter::new(self.session.control_plane().clone(), &assignment);
        let result = self
            .hosts
            .execute(assignment.kind, &assignment.host, assignment.wipe, &mut reporter)
            .await;
        reporter.finish();
        let outcome = match result {
            Ok(()) => Outcome::Succeeded,
            Err(hosts::Error::Interrupted(Interrupt::LeaseLost)) => {
                tracing::warn!("lease lost: another attempt owns the task; stopping without a result");
                self.inflight.end(&host_id);
                return;
            }
            Err(hosts::Error::Interrupted(Interrupt::Cancelled)) => Outcome::Cancelled,
            Err(e) => Outcome::Failed {
                error: e.to_string(),
                retryable: e.retryable(),
            },
        };
        let observed = match self.hosts.observe(&assignment.host).await {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(error = %e, "could not observe the host after the task");
                None
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &outcome {
            Outcome::Failed { error, retryable } => {
                tracing::warn!(%error, retryable, elapsed_ms, "task failed")
            }
            other => tracing::info!(outcome = ?other, elapsed_ms, "task finished"),
        }
        let result = TaskResult {
            lease: assignment.lease.clone(),
            outcome,
            observed,
        };
        self.deliver(&assignment.task_id, &result).await;
        self.inflight.end(&host_id);
    }

    /// Posts the result until the control plane takes it, refuses it for good, or we shut down.
    async fn deliver(&self, task_id: &str, result: &TaskResult) {
        let mut backoff = Backoff::new();
        loop {
            match self.session.control_plane().result(task_id, result).await {
                Ok(()) => return,
                Err(e) if e.is_definitive() => {
                    tracing::warn!(error = %e, "control plane refused the result (stale lease or unknown task)");
                    return;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "posting the result failed");
                    if !sleep_or_cancel(delay, &self.cancel).await {
                        return;
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct ReportState {
    percent: u8,
    stage: String,
    last_sent: Option<Instant>,
    interrupt: Option<Interrupt>,
}

/// Sends progress for one task; a background ticker re-sends the last step so long steps keep the
/// lease. Unreachable control plane: the task goes on (the result is retried later).
struct Reporter {
    cp: ControlPlane,
    task_id: String,
    lease: String,
    state: Arc<Mutex<ReportState>>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Reporter {
    fn new(cp: ControlPlane, a: &Assignment) -> Self {
        let state = Arc::new(Mutex::new(ReportState::default()));
        let ticker = {
            let (cp, state, task_id, lease) = (cp.clone(), state.clone(), a.task_id.clone(), a.lease.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(RENEW_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let due = {
                        let s = state.lock().unwrap_or_else(PoisonError::into_inner);
                        s.last_sent
                            .is_some_and(|t| t.elapsed() >= RENEW_EVERY)
                            .then(|| wire::Progress {
                                lease: lease.clone(),
                                percent: s.percent,
                                stage: s.stage.clone(),
                            })
                    };
                    if let Some(body) = due {
                        send(&cp, &task_id, &body, &state).await;
                    }
                }
            })
        };
        Self {
            cp,
            task_id: a.task_id.clone(),
            lease: a.lease.clone(),
            state,
            ticker,
        }
    }

    fn finish(self) {
        self.ticker.abort();
    }
}

impl Progress for Reporter {
    async fn step(&mut self, percent: u8, stage: &str) -> Result<(), Interrupt> {
        tracing::debug!(percent, stage, "progress");
        {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = s.interrupt {
                return Err(i);
            }
            s.percent = percent.min(100);
            s.stage = stage.to_owned();
        }
        let body = wire::Progress {
            lease: self.lease.clone(),
            percent: percent.min(100),
            stage: stage.to_owned(),
        };
        send(&self.cp, &self.task_id, &body, &self.state).await;
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .interrupt
            .map_or(Ok(()), Err)
    }
}

async fn send(cp: &ControlPlane, task_id: &str, body: &wire::Progress, state: &Mutex<ReportState>) {
    let reply = cp.progress(task_id, body).await;
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    s.last_sent = Some(Instant::now());
    match reply {
        Ok(r) if r.lease_lost => s.interrupt = Some(Interrupt::LeaseLost),
        Ok(r) if r.cancel_requested => s.interrupt = s.interrupt.or(Some(Interrupt::Cancelled)),
        Ok(_) => {}
        Err(e) if e.is_definitive() => s.interrupt = Some(Interrupt::LeaseLost),
        Err(e) => tracing::warn!(error = %e, "progress report failed; carrying on"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_protects_running_and_recent_hosts() {
        let inflight = Inflight::default();
        inflight.begin("a");
        inflight.begin("b");
        inflight.end("b");
        let before = Instant::now() - Duration::from_secs(1);
        assert_eq!(
            inflight.protected(before),
            HashSet::from(["a".to_owned(), "b".to_owned()])
        );
        let later = Instant::now() + Duration::from_secs(1);
        assert_eq!(inflight.protected(later), HashSet::from(["a".to_owned()]));
        // The ended entry was forgotten.
        assert_eq!(inflight.protected(before), HashSet::from(["a".to_owned()]));
    }

    #[tokio::test]
    async fn host_locks_serialise_one_host() {
        let locks = HostLocks::default();
        let a = locks.get("h");
        let guard = a.lock().await;
        assert!(locks.get("h").try_lock().is_err());
        assert!(locks.get("other").try_lock().is_ok());
        drop(guard);
        assert!(locks.get("h").try_lock().is_ok());
    }
}
