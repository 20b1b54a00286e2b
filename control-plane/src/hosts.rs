//! Hosts as the control plane sees them: short ids, resource limits, the access commands handed to
//! users, and every action on a host recorded as a durable task for a node agent to carry out.

use rand::Rng;
use serde::Serialize;
use utoipa::ToSchema;

use crate::Settings;
use crate::db::events::{Actor, NewEvent};
use crate::db::hosts::{Host, HostStatus};
use crate::db::tasks::{Task, TaskKind};
use crate::db::{self, Tx, UtcTime};
use crate::error::ApiError;

pub const DEFAULT_MEMORY_MB: i64 = 2048;
pub const DEFAULT_CPU_MILLIS: i64 = 1000;
pub const DEFAULT_PIDS_LIMIT: i64 = 1024;
pub const MEMORY_MB_RANGE: std::ops::RangeInclusive<i64> = 256..=65536;
pub const CPU_MILLIS_RANGE: std::ops::RangeInclusive<i64> = 100..=32000;
pub const PIDS_RANGE: std::ops::RangeInclusive<i64> = 64..=32768;

/// Lower-case letters and digits without look-alikes (no 0/o, 1/l/i), so a short id survives being
/// read aloud or typed from a screenshot.
const SHORT_ID_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
pub const SHORT_ID_LEN: usize = 8;

pub fn new_short_id(rng: &mut impl Rng) -> String {
    (0..SHORT_ID_LEN)
        .map(|_| char::from(SHORT_ID_ALPHABET[rng.gen_range(0..SHORT_ID_ALPHABET.len())]))
        .collect()
}

pub fn is_short_id(s: &str) -> bool {
    s.len() == SHORT_ID_LEN && s.bytes().all(|b| SHORT_ID_ALPHABET.contains(&b))
}

/// How a user reaches a host.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Access {
    /// The short link of the host (its id changes when the link is rotated).
    pub entry_url: String,
    /// One line to paste into a terminal: asks for the password and opens a shell in the host.
    pub entry_command: String,
    /// Plain SSH through the gateway; the login name picks the host (`user+shortid`).
    pub ssh_command: Option<String>,
    /// The entry link is switched off: it answers like an unknown link.
    pub entry_disabled: bool,
    /// When the entry link stops working, if it has an expiry.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub entry_expires_at: Option<UtcTime>,
}

pub fn access(settings: &Settings, host: &Host) -> Access {
    let entry_url = format!("{}/entry/{}", settings.public_base_url, host.entry_id);
    let entry_command = format!("curl -sSf {entry_url} | bash");
    let ssh_command = host.username.as_ref().map(|user| {
        let ssh_host = if settings.ssh_host.contains(':') {
            format!("[{}]", settings.ssh_host)
        } else {
            settings.ssh_host.clone()
        };
        format!("ssh -p {} {user}+{}@{ssh_host}", settings.ssh_port, host.short_id)
    });
    Access {
        entry_url,
        entry_command,
        ssh_command,
        entry_disabled: host.entry_disabled,
        entry_expires_at: host.entry_expires_at,
    }
}

/// Records `kind` on `host` as a queued task (and an event), in the caller's transaction.
/// A host on its way out accepts nothing but the delete already under way.
pub async fn request(
    tx: &mut Tx,
    actor: &Actor,
    host: &Host,
    kind: TaskKind,
    params: serde_json::Value,
    now: UtcTime,
) -> Result<Task, ApiError> {
    if host.status == HostStatus::Deleting {
        return Err(ApiError::conflict("host_deleting", "the host is being deleted"));
    }
    if kind == TaskKind::Delete {
        db::tasks::cancel_queued_for_host(&mut **tx, &host.id, now).await?;
        db::hosts::set_status(&mut **tx, &host.id, HostStatus::Deleting, now).await?;
    }
    let task = db::tasks::insert(&mut **tx, &host.id, kind, &params, actor.id.as_deref(), now).await?;
    let mut event = NewEvent::success(event_kind(kind))
        .host(&host.id)
        .details(serde_json::json!({ "task_id": task.id, "short_id": host.short_id }));
    event.user_id = host.user_id.clone();
    db::events::record(&mut **tx, actor, event, now).await?;
    Ok(task)
}

fn event_kind(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Create => "host.create_requested",
        TaskKind::Start => "host.start_requested",
        TaskKind::Stop => "host.stop_requested",
        TaskKind::Rebuild => "host.rebuild_requested",
        TaskKind::Delete => "host.delete_requested",
        TaskKind::RotateSshPassword => "host.ssh_password_rotated",
        TaskKind::ApplySecrets => "host.secrets_refresh_requested",
    }
}

/// Queues a rewrite of the secret files of every running host, so a change of the gateways' keys
/// reaches hosts that are up now (the others get the current keys when they next start). Returns
/// how many were queued.
pub async fn apply_secrets_everywhere(
    tx: &mut Tx,
    actor: &Actor,
    reason: &str,
    now: UtcTime,
) -> Result<usize, ApiError> {
    let hosts = db::hosts::running(&mut **tx).await?;
    for host in &hosts {
        request(
            tx,
            actor,
            host,
            TaskKind::ApplySecrets,
            serde_json::json!({ "reason": reason }),
            now,
        )
        .await?;
    }
    Ok(hosts.len())
}

/// Queues the deletion of every host of a user (when the user is deleted). Returns their ids.
pub async fn delete_all_of_user(
    tx: &mut Tx,
    actor: &Actor,
    user_id: &str,
    now: UtcTime,
) -> Result<Vec<String>, ApiError> {
    let ids = db::hosts::ids_of_user(&mut **tx, user_id).await?;
    for id in &ids {
        if let Some(host) = db::hosts::get(&mut **tx, id).await? {
            request(tx, actor, &host, TaskKind::Delete, serde_json::json!({}), now).await?;
        }
    }
    Ok(ids)
}

/// A task that brings a host back to the state the database says it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    pub host_id: String,
    pub kind: TaskKind,
}

/// The repairs of drift between the hosts placed on a node and what its agent saw in Docker: a
/// host that should run but was found stopped is started, one that should be stopped but runs is
/// stopped. A host with a task queued or running (`busy`) is left to it, and one the agent did not
/// report is not guessed at.
pub fn plan_repairs<'a>(
    hosts: impl IntoIterator<Item = (&'a str, HostStatus)>,
    observed: &[wire::ObservedHost],
    busy: &std::collections::HashSet<String>,
) -> Vec<Repair> {
    hosts
        .into_iter()
        .filter(|(id, _)| !busy.contains(*id))
        .filter_map(|(id, status)| {
            let seen = observed.iter().find(|o| o.host_id == id)?;
            let kind = match (status, seen.state) {
                (HostStatus::Running, wire::ContainerState::Stopped | wire::ContainerState::Created) => {
                    TaskKind::Start
                }
                (HostStatus::Stopped, wire::ContainerState::Running) => TaskKind::Stop,
                _ => return None,
            };
            Some(Repair {
                host_id: id.to_owned(),
                kind,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_use_the_alphabet() {
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            let id = new_short_id(&mut rng);
            assert!(is_short_id(&id), "{id}");
        }
        assert!(!is_short_id("abcdefg0"));
        assert!(!is_short_id("abc"));
    }

    fn seen(id: &str, state: wire::ContainerState) -> wire::ObservedHost {
        wire::ObservedHost {
            host_id: id.to_owned(),
            state,
            address: None,
            ssh_host_key: None,
            egress: None,
            traffic: None,
        }
    }

    #[test]
    fn drift_is_repaired_only_where_it_is_seen_and_nothing_else_is_under_way() {
        use wire::ContainerState as C;
        let cases = [
            // (status in the database, what the agent saw, busy, repair)
            (
                HostStatus::Running,
                Some(C::Stopped),
                false,
                Some(TaskKind::Start),
            ),
            (
                HostStatus::Running,
                Some(C::Created),
                false,
                Some(TaskKind::Start),
            ),
            (HostStatus::Running, Some(C::Running), false, None),
            (HostStatus::Running, None, false, None),
            (HostStatus::Running, Some(C::Stopped), true, None),
            (HostStatus::Stopped, Some(C::Running), false, Some(TaskKind::Stop)),
            (HostStatus::Stopped, Some(C::Running), true, None),
            (HostStatus::Stopped, Some(C::Stopped), false, None),
            (HostStatus::Creating, Some(C::Stopped), false, None),
            (HostStatus::Deleting, Some(C::Running), false, None),
            (HostStatus::Error, Some(C::Running), false, None),
        ];
        for (status, observed, busy, want) in cases {
            let observed: Vec<_> = observed.map(|s| seen("h1", s)).into_iter().collect();
            let busy: std::collections::HashSet<String> = busy.then(|| "h1".to_owned()).into_iter().collect();
            let got = plan_repairs([("h1", status)], &observed, &busy);
            let want: Vec<_> = want
                .map(|kind| Repair {
                    host_id: "h1".to_owned(),
                    kind,
                })
                .into_iter()
                .collect();
            assert_eq!(got, want, "{status:?} seen {observed:?} busy {busy:?}");
        }
    }

    #[test]
    fn each_host_is_planned_on_its_own() {
        use wire::ContainerState as C;
        let observed = [
            seen("a", C::Stopped),
            seen("b", C::Running),
            seen("c", C::Stopped),
        ];
        let busy = ["c".to_owned()].into_iter().collect();
        let got = plan_repairs(
            [
                ("a", HostStatus::Running),
                ("b", HostStatus::Stopped),
                ("c", HostStatus::Running),
            ],
            &observed,
            &busy,
        );
        let kinds: Vec<_> = got.iter().map(|r| (r.host_id.as_str(), r.kind)).collect();
        assert_eq!(kinds, [("a", TaskKind::Start), ("b", TaskKind::Stop)]);
    }
}
