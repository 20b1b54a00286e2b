//! Traffic accounting and quotas: the agents' counter readings folded into per-host totals and
//! hours, and the periodic pass that fires quotas, stops hosts and cuts or restores their egress.
//! The agent carries a cut out (its firewall lets nothing leave the host's namespace); here is only
//! what is decided, and the events that tell of it.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use crate::AppState;
use crate::db::events::{Actor, NewEvent};
use crate::db::hosts::{Host, HostStatus};
use crate::db::tasks::TaskKind;
use crate::db::traffic::{self as store, Action, Quota};
use crate::db::{self, UtcTime};
use crate::error::ApiError;

fn actor() -> Actor {
    Actor {
        id: None,
        name: Some("traffic-quota".into()),
        ip: None,
    }
}

/// Takes the counter readings of a heartbeat: each host of `node_id` that reported counters
/// which moved gets its totals and current hour raised. A host not on this node is ignored.
pub async fn record_readings(
    state: &AppState,
    node_id: &str,
    hosts: &[Host],
    observed: &[wire::ObservedHost],
    now: UtcTime,
) -> Result<(), ApiError> {
    let readings: Vec<(&Host, &wire::TrafficCounters)> = observed
        .iter()
        .filter_map(|o| {
            let host = hosts.iter().find(|h| h.id == o.host_id)?;
            Some((host, o.traffic.as_ref()?))
        })
        .collect();
    if readings.is_empty() {
        return Ok(());
    }
    let cursors: HashMap<String, store::Cursor> = store::cursors_on_node(&state.db, node_id)
        .await?
        .into_iter()
        .map(|c| (c.host_id.clone(), c))
        .collect();
    let moved: Vec<_> = readings
        .into_iter()
        .filter_map(|(host, sample)| {
            let prev = cursors.get(&host.id);
            store::fold(prev, sample).map(|delta| (host, prev, sample, delta))
        })
        .collect();
    if moved.is_empty() {
        return Ok(());
    }
    let mut tx = state.db.begin().await?;
    for (host, prev, sample, delta) in moved {
        if !store::record(
            &mut tx,
            &host.id,
            host.user_id.as_deref(),
            prev,
            sample,
            delta,
            now,
        )
        .await?
        {
            tracing::debug!(host_id = %host.id, "traffic reading raced another; skipped");
        }
    }
    tx.commit().await?;
    Ok(())
}

/// What one pass over the quotas changes in the cuts: hosts to cut (by which quota) and hosts to
/// restore. `wanted`: host → quota of each fired cut-egress quota's hosts, in quota order (the
/// first to cut a host is named); `current`: host → quota as the hosts hold it now. A host keeps
/// the quota it is cut by as long as that quota still wants it cut.
pub fn plan_cuts(
    wanted: &[(String, String)],
    current: &HashMap<String, String>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut want: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (host, quota) in wanted {
        want.entry(host.as_str()).or_default().push(quota.as_str());
    }
    let mut cut = Vec::new();
    for (host, quotas) in &want {
        match current.get(*host) {
            Some(by) if quotas.contains(&by.as_str()) => {}
            _ => cut.push(((*host).to_owned(), quotas[0].to_owned())),
        }
    }
    let mut restore: Vec<String> = current
        .keys()
        .filter(|h| !want.contains_key(h.as_str()))
        .cloned()
        .collect();
    restore.sort();
    (cut, restore)
}

/// One pass over every quota at `now`: a quota whose period ended is armed again (with an event
/// if it had fired); one over its limit fires (event, and its action); then the cuts are made to
/// match the fired cut-egress quotas. Returns whether anything changed that the agents must hear.
pub async fn enforce_quotas(state: &AppState, now: UtcTime) -> Result<bool, ApiError> {
    let mut changed = false;
    let mut wanted: Vec<(String, String)> = Vec::new();
    for quota in store::all_quotas(&state.db).await? {
        let period = quota.period.start(now);
        let mut fired = quota.fired_in_period(now);
        if quota.fired_period.is_some() && !fired {
            rearm(state, &quota, period, now).await?;
        }
        if !fired {
            let used = quota
                .direction
                .of(store::usage(&state.db, &quota.scope(), period).await?);
            if used > quota.limit_bytes {
                fire(state, &quota, period, used, now).await?;
                fired = true;
                changed = true;
            }
        }
        if fired && quota.action == Action::CutEgress {
            for host in store::hosts_in_scope(&state.db, &quota.scope()).await? {
                wanted.push((host, quota.id.clone()));
            }
        }
    }
    let current: HashMap<String, String> = store::cut_hosts(&state.db).await?.into_iter().collect();
    let (cut, restore) = plan_cuts(&wanted, &current);
    for (host_id, quota_id) in cut {
        let mut tx = state.db.begin().await?;
        if store::set_cut(&mut *tx, &host_id, Some(&quota_id)).await? {
            let event = NewEvent::success("host.egress_cut")
                .host(&host_id)
                .details(json!({ "quota_id": quota_id }));
            db::events::record(&mut *tx, &actor(), with_owner(state, event).await?, now).await?;
        }
        tx.commit().await?;
        tracing::info!(host_id = %host_id, quota_id = %quota_id, "traffic quota cut the host's egress");
        changed = true;
    }
    for host_id in restore {
        restore_host(state, &host_id, "quota no longer exceeded", now).await?;
        changed = true;
    }
    if changed {
        state.wake_agents();
    }
    Ok(changed)
}

/// Gives a host its egress back, with an event.
pub async fn restore_host(
    state: &AppState,
    host_id: &str,
    reason: &str,
    now: UtcTime,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    if store::set_cut(&mut *tx, host_id, None).await? {
        let event = NewEvent::success("host.egress_restored")
            .host(host_id)
            .details(json!({ "reason": reason }));
        db::events::record(&mut *tx, &actor(), with_owner(state, event).await?, now).await?;
    }
    tx.commit().await?;
    tracing::info!(host_id, reason, "host's egress restored");
    Ok(())
}

/// The event with the user of its host filled in.
async fn with_owner(state: &AppState, mut event: NewEvent) -> Result<NewEvent, ApiError> {
    if event.user_id.is_none()
        && let Some(host_id) = event.host_id.as_deref()
        && let Some(host) = db::hosts::get(&state.db, host_id).await?
    {
        event.user_id = host.user_id;
    }
    Ok(event)
}

fn scope_of(event: NewEvent, quota: &Quota) -> NewEvent {
    let event = match &quota.host_id {
        Some(h) => event.host(h),
        None => event,
    };
    match &quota.user_id {
        Some(u) => event.user(u),
        None => event,
    }
}

async fn rearm(state: &AppState, quota: &Quota, period: UtcTime, now: UtcTime) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    store::set_fired(&mut *tx, &quota.id, None, None).await?;
    let event = scope_of(NewEvent::success("traffic.quota_reset"), quota).details(json!({
        "quota_id": quota.id,
        "period_start": period,
    }));
    db::events::record(&mut *tx, &actor(), with_owner(state, event).await?, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn fire(
    state: &AppState,
    quota: &Quota,
    period: UtcTime,
    used: i64,
    now: UtcTime,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    store::set_fired(&mut *tx, &quota.id, Some(period), Some(now)).await?;
    let mut stopping = Vec::new();
    if quota.action == Action::Stop {
        for host_id in store::hosts_in_scope(&mut *tx, &quota.scope()).await? {
            let Some(host) = db::hosts::get(&mut *tx, &host_id).await? else {
                continue;
            };
            if matches!(
                host.status,
                HostStatus::Running | HostStatus::Creating | HostStatus::Pending
            ) {
                crate::hosts::request(
                    &mut tx,
                    &actor(),
                    &host,
                    TaskKind::Stop,
                    json!({ "reason": "traffic_quota", "quota_id": quota.id }),
                    now,
                )
                .await?;
                stopping.push(host.id.clone());
            }
        }
    }
    let event = scope_of(NewEvent::success("traffic.quota_exceeded"), quota).details(json!({
        "quota_id": quota.id,
        "period": quota.period,
        "period_start": period,
        "direction": quota.direction,
        "limit_bytes": quota.limit_bytes,
        "used_bytes": used,
        "action": quota.action.as_str(),
        "hosts_stopping": stopping,
    }));
    db::events::record(&mut *tx, &actor(), with_owner(state, event).await?, now).await?;
    tx.commit().await?;
    tracing::info!(quota_id = %quota.id, used, limit = quota.limit_bytes, action = quota.action.as_str(), "traffic quota exceeded");
    Ok(())
}

/// The oldest hour kept at `now` with a retention of `days` (`None`: keep every hour).
pub fn hours_cutoff(now: UtcTime, days: u32) -> Option<UtcTime> {
    (days > 0).then(|| UtcTime::from(now.0 - chrono::Duration::days(i64::from(days))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn cuts_follow_the_fired_quotas() {
        let current: HashMap<String, String> = pairs(&[("h1", "q1"), ("h2", "q9")]).into_iter().collect();
        // h1 stays cut by q1; h3 gets cut by its first quota; h2's quota no longer wants it.
        let (cut, restore) = plan_cuts(&pairs(&[("h1", "q1"), ("h3", "q2"), ("h3", "q3")]), &current);
        assert_eq!(cut, pairs(&[("h3", "q2")]));
        assert_eq!(restore, vec!["h2".to_owned()]);
        // A host cut by a quota that went away but wanted by another moves to the other.
        let (cut, restore) = plan_cuts(&pairs(&[("h2", "q4")]), &current);
        assert_eq!(cut, pairs(&[("h2", "q4")]));
        assert_eq!(restore, vec!["h1".to_owned()]);
        // Nothing fired, nothing cut: nothing to do.
        let (cut, restore) = plan_cuts(&[], &HashMap::new());
        assert!(cut.is_empty() && restore.is_empty());
    }
}
