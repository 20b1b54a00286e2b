//! What control-plane replicas sharing one PostgreSQL database tell each other: a task changed (so
//! progress streams on every replica follow it), and there is work (so agents long-polling any
//! replica, and callers waiting on an agent's answer, look again). Carried by LISTEN/NOTIFY; a
//! watchdog pings itself through the channel and reconnects when its own pings stop arriving. On
//! SQLite there is one process, and both stay in it.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgNotification};
use tokio::time::Instant;

use crate::AppState;
use crate::db::{self, Pool};

/// A task changed: `INSTANCE:TASK_ID`.
const TASKS: &str = "ccp_tasks";
/// Work to look at: `INSTANCE:wake`, or the watchdog's `INSTANCE:ping`.
const WORK: &str = "ccp_work";
/// How often the watchdog pings itself, and how long it waits for a ping before reconnecting.
const PING_EVERY: Duration = Duration::from_secs(5);
const SILENT_AFTER: Duration = Duration::from_secs(20);

impl AppState {
    /// Wakes the agents long-polling for tasks, and whoever waits on their answers, on every replica.
    pub fn wake_agents(&self) {
        self.work.notify_waiters();
        self.notify(WORK, "wake");
    }

    /// Tells the progress streams of every replica that `task` changed.
    pub fn publish_task(&self, task: &db::tasks::Task) {
        self.metrics.task_finished(task);
        let _ = self.task_updates.send(task.clone());
        self.notify(TASKS, &task.id);
    }

    fn notify(&self, channel: &'static str, what: &str) {
        let Pool::Postgres(pool) = &self.db else {
            return;
        };
        let pool = pool.clone();
        let payload = format!("{}:{what}", self.instance);
        tokio::spawn(async move {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(&payload)
                .execute(&pool)
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, channel, "notifying the other replicas failed");
            }
        });
    }
}

/// Listens for the other replicas until `shutdown`; returns at once on SQLite.
pub async fn run_listener(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Pool::Postgres(pool) = state.db.clone() else {
        return;
    };
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all([TASKS, WORK]).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listening.await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for the other replicas; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        // Whatever was said while not listening is lost: look again at everything.
        state.work.notify_waiters();
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ping.tick() => {
                    if heard.elapsed() > SILENT_AFTER {
                        tracing::error!(
                            silent_secs = heard.elapsed().as_secs(),
                            "the replicas' notification channel went silent; reconnecting"
                        );
                        break;
                    }
                    state.notify(WORK, "ping");
                }
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => {
                        if handle(&state, &n) {
                            heard = Instant::now();
                        }
                    }
                    // The connection dropped; the listener reconnects on the next call.
                    Ok(None) => {
                        tracing::warn!("the replicas' notification channel reconnected");
                        state.work.notify_waiters();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "listening for the other replicas failed; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

/// Acts on one notification; `true` for this process's own ping.
fn handle(state: &AppState, n: &PgNotification) -> bool {
    let Some((instance, what)) = n.payload().split_once(':') else {
        return false;
    };
    let own = instance == &*state.instance;
    match n.channel() {
        WORK if own => what == "ping",
        WORK if what == "wake" => {
            state.work.notify_waiters();
            false
        }
        TASKS if !own => {
            let (state, id) = (state.clone(), what.to_owned());
            tokio::spawn(async move {
                match db::tasks::get(&state.db, &id).await {
                    Ok(Some(task)) => {
                        let _ = state.task_updates.send(task);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, task_id = %id, "reading a task another replica changed")
                    }
                }
            });
            false
        }
        _ => false,
    }
}
