//! The task queue on a real SQLite file: per-host order, one attempt at a time per host, leases,
//! retries with back-off, recovery of a restarted node's attempts, and cancellation.
#![expect(clippy::expect_used, reason = "test fixtures fail loudly")]

use control_plane::db::tasks::{Finish, TaskKind, TaskStatus};
use control_plane::db::{self, UtcTime};
use control_plane::{AppState, tasks};

mod common;

async fn state() -> (AppState, tempfile::TempDir) {
    let (state, _config, dir) = common::state().await;
    (state, dir)
}

/// A tenant with one host; returns the host id.
async fn host(state: &AppState, name: &str) -> String {
    let now = UtcTime::now();
    let user = db::users::insert(&state.db, name, "x", db::users::Role::User, None, now)
        .await
        .expect("user");
    let new = db::hosts::NewHost {
        short_id: &name[..8.min(name.len())],
        user_id: &user.id,
        name,
        memory_mb: 512,
        cpu_millis: 1000,
        pids_limit: 256,
        ssh_password_hash: "x",
        password_crypt: "x",
        vnc_secret: &control_plane::secrets::Sealed::seal(
            &state.secrets,
            control_plane::secrets::field::HOST_VNC_SECRET,
            "x",
        ),
    };
    db::hosts::insert(&state.db, new, now).await.expect("host")
}

async fn enqueue(state: &AppState, host_id: &str, kind: TaskKind) -> String {
    db::tasks::insert(
        &state.db,
        host_id,
        kind,
        &serde_json::json!({}),
        None,
        UtcTime::now(),
    )
    .await
    .expect("task")
    .id
}

async fn node(state: &AppState, name: &str) -> String {
    let credential = control_plane::enrolment::new_secret(control_plane::enrolment::CREDENTIAL_PREFIX);
    let hash = control_plane::enrolment::hash(&credential);
    db::nodes::enrol(&state.db, name, &hash, UtcTime::now())
        .await
        .expect("node")
        .expect("a free name")
        .id
}

#[tokio::test]
async fn one_attempt_at_a_time_per_host_in_order() {
    let (state, _dir) = state().await;
    let n1 = node(&state, "n1").await;
    let h = host(&state, "hostaaaa").await;
    let other = host(&state, "hostbbbb").await;
    let create = enqueue(&state, &h, TaskKind::Create).await;
    let start = enqueue(&state, &h, TaskKind::Start).await;
    enqueue(&state, &h, TaskKind::Stop).await;
    let other_create = enqueue(&state, &other, TaskKind::Create).await;

    let first = tasks::claim_next(&state, &n1)
        .await
        .expect("claim")
        .expect("work");
    assert_eq!(first.id, create);
    // The host is busy: the next claim skips its later tasks and takes the other host's.
    let second = tasks::claim_next(&state, &n1)
        .await
        .expect("claim")
        .expect("work");
    assert_eq!(second.id, other_create);
    assert!(tasks::claim_next(&state, &n1).await.expect("claim").is_none());

    let lease = first.lease.clone().expect("lease");
    let result = wire::TaskResult {
        lease,
        outcome: wire::Outcome::Succeeded,
        observed: None,
    };
    tasks::report_result(&state, &create, &result)
        .await
        .expect("result")
        .expect("current lease");
    let third = tasks::claim_next(&state, &n1)
        .await
        .expect("claim")
        .expect("work");
    assert_eq!(
        third.id, start,
        "tasks of a host run in the order they were asked for"
    );
    let host_row = db::hosts::get(&state.db, &h).await.expect("db").expect("host");
    assert_eq!(host_row.status, db::hosts::HostStatus::Running);
    assert_eq!(
        host_row.node_id.as_deref(),
        Some(n1.as_str()),
        "the host is placed on the node that built it"
    );
}

#[tokio::test]
async fn a_host_stays_on_its_node() {
    let (state, _dir) = state().await;
    let n1 = node(&state, "n1").await;
    let n2 = node(&state, "n2").await;
    let h = host(&state, "hostcccc").await;
    let create = enqueue(&state, &h, TaskKind::Create).await;
    let claimed = tasks::claim_next(&state, &n1)
        .await
        .expect("claim")
        .expect("work");
    let result = wire::TaskResult {
        lease: claimed.lease.expect("lease"),
        outcome: wire::Outcome::Succeeded,
        observed: None,
    };
    tasks::report_result(&state, &create, &result)
        .await
        .expect("result");
    enqueue(&state, &h, TaskKind::Stop).await;
    assert!(
        tasks::claim_next(&state, &n2).await.expect("claim").is_none(),
        "another node took the host's task"
    );
    assert!(tasks::claim_next(&state, &n1).await.expect("claim").is_some());
}

#[tokio::test]
async fn failures_retry_with_backoff_then_fail_and_stale_leases_are_ignored() {
    let (state, _dir) = state().await;
    let n1 = node(&state, "n1").await;
    let h = host(&state, "hostdddd").await;
    let id = enqueue(&state, &h, TaskKind::Create).await;
    let attempt = tasks::claim_next(&state, &n1)
        .await
        .expect("claim")
        .expect("work");
    let failed = wire::TaskResult {
        lease: attempt.lease.clone().expect("lease"),
        outcome: wire::Outcome::Failed {
            error: "docker timed out".into(),
            retryable: true,
        },
        observed: None,
    };
    let after = tasks::report_result(&state, &id, &failed)
        .await
        .expect("result")
        .expect("current");
    assert_eq!(after.status, TaskStatus::Queued);
    // Backing off: not claimable yet.
    assert!(tasks::claim_next(&state, &n1).await.expect("claim").is_none());
    // The same report again carries a stale lease and changes nothing.
    assert!(
        tasks::report_result(&state, &id, &failed)
            .await
            .expect("result")
            .is_none()
    );

    // Exhaust the budget: a non-retryable failure ends it.
    control_plane::on_db!(
        &state.db,
        "UPDATE tasks SET not_before = NULL WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(&id)
            .execute(exec)
            .await
            .map(control_plane::db::Done::from)
    )
    .expect("due");
    let attempt = tasks::claim_next(&state, &n1)
        .await
        .expect("claim")
        .expect("work");
    assert_eq!(attempt.attempts, 2);
    let fatal = wire::TaskResult {
        lease: attempt.lease.expect("lease"),
        outcome: wire::Outcome::Failed {
            error: "image missing".into(),
            retryable: false,
        },
        observed: None,
    };
    let done = tasks::report_result(&state, &id, &fatal)
        .await
        .expect("result")
        .expect("current");
    assert_eq!(done.status, TaskStatus::Failed);
    let host_row = db::hosts::get(&state.db, &h).await.expect("db").expect("host");
    assert_eq!(host_row.status, db::hosts::HostStatus::Error);
    assert_eq!(host_row.last_error.as_deref(), Some("image missing"));
}

#[tokio::test]
async fn a_restarted_node_gets_its_attempts_back_and_cancel_stops_queued_work() {
    let (state, _dir) = state().await;
    let n1 = node(&state, "n1").await;
    let h = host(&state, "hosteeee").await;
    let id = enqueue(&state, &h, TaskKind::Create).await;
    let queued_later = enqueue(&state, &h, TaskKind::Stop).await;
    tasks::claim_next(&state, &n1)
        .await
        .expect("claim")
        .expect("work");
    assert_eq!(tasks::recover_node(&state, &n1).await.expect("recover"), 1);
    let task = db::tasks::get(&state.db, &id).await.expect("db").expect("task");
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.error.as_deref(), Some("the agent restarted"));

    let cancelled = db::tasks::cancel(&state.db, &queued_later, UtcTime::now())
        .await
        .expect("db")
        .expect("task");
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert!(matches!(
        tasks::after_failure(3, 3, true, String::new(), UtcTime::now()),
        Finish::Failed { .. }
    ));
}
