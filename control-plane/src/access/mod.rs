//! Bootstrap and entry access: how a right password turns into an SSH login to the user's host.
//! The decisions are plain functions here (`plan`, `progress`); [`session`] applies them to the
//! database, and [`script`] renders the shell script users pipe into bash.

pub mod script;
pub mod session;

use serde::Serialize;
use utoipa::ToSchema;

use crate::db::hosts::HostStatus;
use crate::db::tasks::{Task, TaskKind, TaskStatus};

/// How long a bootstrap session (its task id and session secret) stays usable: long enough for a
/// host to be created or started, short enough that a forgotten one is soon worthless.
pub const SESSION_TTL: chrono::Duration = chrono::Duration::minutes(15);
/// Length of the session secret and of the single-use SSH secret (letters and digits: ~238 bits).
pub const SECRET_LEN: usize = 40;
/// Header carrying the session secret to the handoff route.
pub const SESSION_SECRET_HEADER: &str = "x-bootstrap-secret";

/// What a session has to do before the host can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The host runs and nothing is queued for it: reachable now.
    Ready,
    /// A task already queued or running brings the host up: wait for it.
    Follow(String),
    /// The host is (or will be) down: queue a start.
    Start,
    /// The host is on its way out.
    NoHost,
}

/// The plan for a host in `status` whose newest queued or running task is `active`.
pub fn plan(status: HostStatus, active: Option<&Task>) -> Plan {
    if status == HostStatus::Deleting {
        return Plan::NoHost;
    }
    match active.map(|t| (t.kind, t)) {
        Some((TaskKind::Delete, _)) => Plan::NoHost,
        Some((TaskKind::Create | TaskKind::Start | TaskKind::Rebuild, t)) => Plan::Follow(t.id.clone()),
        // A stop that has not happened yet: the start goes in after it.
        Some((TaskKind::Stop, _)) => Plan::Start,
        Some((TaskKind::RotateSshPassword | TaskKind::ApplySecrets, _)) | None
            if status == HostStatus::Running =>
        {
            Plan::Ready
        }
        Some((TaskKind::RotateSshPassword | TaskKind::ApplySecrets, _)) | None => Plan::Start,
    }
}

/// A session's state as `GET /v1/bootstrap/tasks/{task_id}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Queued,
    Running,
    /// The host is up: the handoff answers.
    Succeeded,
    /// The host could not be brought up (the task failed or was cancelled).
    Failed,
}

/// Progress of a session: only what the script shows, nothing of the task's internals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Progress {
    pub task_id: String,
    pub status: SessionStatus,
    /// 0-100.
    pub progress: i64,
    /// What is happening, in words.
    pub stage: String,
}

/// Progress of session `session_id` that waits for `task` (`None`: the host was running already).
pub fn progress(session_id: &str, task: Option<&Task>) -> Progress {
    let (status, progress, stage) = match task {
        None => (SessionStatus::Succeeded, 100, "your host is running".to_owned()),
        Some(t) => {
            let status = match t.status {
                TaskStatus::Queued => SessionStatus::Queued,
                TaskStatus::Running => SessionStatus::Running,
                TaskStatus::Succeeded => SessionStatus::Succeeded,
                TaskStatus::Failed | TaskStatus::Cancelled => SessionStatus::Failed,
            };
            (status, t.progress.clamp(0, 100), t.stage.clone())
        }
    };
    Progress {
        task_id: session_id.to_owned(),
        status,
        progress,
        stage,
    }
}

/// The SSH gateway's login name for one host of a user.
pub fn ssh_login(username: &str, short_id: &str) -> String {
    format!("{username}+{short_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::UtcTime;

    fn task(kind: TaskKind, status: TaskStatus) -> Task {
        Task {
            id: "t1".into(),
            host_id: "h1".into(),
            kind,
            status,
            progress: 40,
            stage: "pulling".into(),
            attempts: 1,
            max_attempts: 3,
            error: None,
            requested_by: None,
            cancel_requested: false,
            created_at: UtcTime::now(),
            updated_at: UtcTime::now(),
            started_at: None,
            finished_at: None,
            node_id: None,
            params: serde_json::json!({}),
            lease: None,
        }
    }

    #[test]
    fn plans() {
        use HostStatus as H;
        use TaskKind as K;
        let q = |k| task(k, TaskStatus::Queued);
        assert_eq!(plan(H::Running, None), Plan::Ready);
        assert_eq!(plan(H::Running, Some(&q(K::RotateSshPassword))), Plan::Ready);
        assert_eq!(plan(H::Stopped, None), Plan::Start);
        assert_eq!(plan(H::Error, None), Plan::Start);
        assert_eq!(plan(H::Running, Some(&q(K::Stop))), Plan::Start);
        assert_eq!(plan(H::Pending, Some(&q(K::Create))), Plan::Follow("t1".into()));
        assert_eq!(plan(H::Stopped, Some(&q(K::Start))), Plan::Follow("t1".into()));
        assert_eq!(plan(H::Running, Some(&q(K::Rebuild))), Plan::Follow("t1".into()));
        assert_eq!(plan(H::Deleting, None), Plan::NoHost);
        assert_eq!(plan(H::Running, Some(&q(K::Delete))), Plan::NoHost);
    }

    #[test]
    fn progress_shows_only_status_percent_and_stage() {
        let p = progress("s1", None);
        assert_eq!((p.status, p.progress), (SessionStatus::Succeeded, 100));
        let p = progress("s1", Some(&task(TaskKind::Start, TaskStatus::Running)));
        assert_eq!(
            p,
            Progress {
                task_id: "s1".into(),
                status: SessionStatus::Running,
                progress: 40,
                stage: "pulling".into()
            }
        );
        for s in [TaskStatus::Failed, TaskStatus::Cancelled] {
            assert_eq!(
                progress("s1", Some(&task(TaskKind::Start, s))).status,
                SessionStatus::Failed
            );
        }
        let json = serde_json::to_value(progress("s1", None)).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 4, "{json}");
    }
}
