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
}
