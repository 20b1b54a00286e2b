//! Traffic accounting: each host's counters as last read, its bytes per UTC hour, and the quotas
//! on them (see `docs/traffic.md`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Done, Page, UtcTime};

/// A host's counters as last read, and the totals they added up to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Cursor {
    pub host_id: String,
    pub epoch: String,
    pub rx_counter: i64,
    pub tx_counter: i64,
}

/// The bytes a new reading adds to the totals, or `None` when it adds nothing. Counters that
/// started again (another epoch, or a value below the last) count from zero: what they held
/// between the last reading and their restart is lost, everything else is kept.
pub fn fold(prev: Option<&Cursor>, sample: &wire::TrafficCounters) -> Option<(i64, i64)> {
    let rx = i64::try_from(sample.rx_bytes).unwrap_or(i64::MAX);
    let tx = i64::try_from(sample.tx_bytes).unwrap_or(i64::MAX);
    let delta = match prev {
        Some(p) if p.epoch == sample.epoch && rx >= p.rx_counter && tx >= p.tx_counter => {
            (rx - p.rx_counter, tx - p.tx_counter)
        }
        _ => (rx, tx),
    };
    let unchanged = prev.is_some_and(|p| p.epoch == sample.epoch && p.rx_counter == rx && p.tx_counter == tx);
    (!unchanged).then_some(delta)
}

/// The start of the UTC hour `t` falls in.
pub fn hour_of(t: UtcTime) -> UtcTime {
    use chrono::{DurationRound as _, TimeDelta};
    UtcTime::from(t.0.duration_trunc(TimeDelta::hours(1)).unwrap_or(t.0))
}

/// The counters last read of the hosts on `node_id`.
pub async fn cursors_on_node(db: impl crate::db::Db<'_>, node_id: &str) -> Result<Vec<Cursor>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT c.host_id, c.epoch, c.rx_counter, c.tx_counter FROM traffic_counters c \
         JOIN hosts h ON h.id = c.host_id WHERE h.node_id = ?",
        |exec, sql| sqlx::query_as(sql).bind(node_id).fetch_all(exec).await
    )
}

/// Takes a new reading of a host's counters: moves its cursor from `prev` (compare-and-set, so a
/// reading taken twice counts once) and adds `delta` to its totals and to the hour of `now`.
/// `false` when the cursor had moved meanwhile (nothing written).
pub async fn record(
    conn: &mut crate::db::Connection,
    host_id: &str,
    user_id: Option<&str>,
    prev: Option<&Cursor>,
    sample: &wire::TrafficCounters,
    delta: (i64, i64),
    now: UtcTime,
) -> Result<bool, sqlx::Error> {
    let rx = i64::try_from(sample.rx_bytes).unwrap_or(i64::MAX);
    let tx = i64::try_from(sample.tx_bytes).unwrap_or(i64::MAX);
    let moved: Done = match prev {
        None => crate::db::on_db!(
            &mut *conn,
            "INSERT INTO traffic_counters (host_id, epoch, rx_counter, tx_counter, rx_total, tx_total, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (host_id) DO NOTHING",
            |exec, sql| sqlx::query(sql)
                .bind(host_id)
                .bind(&sample.epoch)
                .bind(rx)
                .bind(tx)
                .bind(delta.0)
                .bind(delta.1)
                .bind(now)
                .execute(exec)
                .await
                .map(Done::from)
        )?,
        Some(p) => crate::db::on_db!(
            &mut *conn,
            "UPDATE traffic_counters SET epoch = ?, rx_counter = ?, tx_counter = ?, \
             rx_total = rx_total + ?, tx_total = tx_total + ?, updated_at = ? \
             WHERE host_id = ? AND epoch = ? AND rx_counter = ? AND tx_counter = ?",
            |exec, sql| sqlx::query(sql)
                .bind(&sample.epoch)
                .bind(rx)
                .bind(tx)
                .bind(delta.0)
                .bind(delta.1)
                .bind(now)
                .bind(host_id)
                .bind(&p.epoch)
                .bind(p.rx_counter)
                .bind(p.tx_counter)
                .execute(exec)
                .await
                .map(Done::from)
        )?,
    };
    if moved.rows_affected() == 0 {
        return Ok(false);
    }
    if delta != (0, 0) {
        crate::db::on_db!(
            &mut *conn,
            "INSERT INTO traffic_hours (host_id, user_id, hour, rx_bytes, tx_bytes) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (host_id, hour) DO UPDATE SET rx_bytes = traffic_hours.rx_bytes + excluded.rx_bytes, \
             tx_bytes = traffic_hours.tx_bytes + excluded.tx_bytes, user_id = excluded.user_id",
            |exec, sql| sqlx::query(sql)
                .bind(host_id)
                .bind(user_id)
                .bind(hour_of(now))
                .bind(delta.0)
                .bind(delta.1)
                .execute(exec)
                .await
                .map(Done::from)
        )?;
    }
    Ok(true)
}

/// One hour of a host's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Hour {
    pub hour: UtcTime,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
}

/// A host's hours from `since` (inclusive) to `until` (exclusive), oldest first; only hours with
/// traffic have a row.
pub async fn hours(
    db: impl crate::db::Db<'_>,
    host_id: &str,
    since: UtcTime,
    until: UtcTime,
) -> Result<Vec<Hour>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT hour, rx_bytes, tx_bytes FROM traffic_hours WHERE host_id = ? AND hour >= ? AND hour < ? \
         ORDER BY hour",
        |exec, sql| sqlx::query_as(sql)
            .bind(host_id)
            .bind(since)
            .bind(until)
            .fetch_all(exec)
            .await
    )
}

/// Whose traffic a quota counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Host(String),
    /// Every host of the user, deleted ones included.
    User(String),
}

/// Bytes received and sent in `scope` since `since`.
pub async fn usage(
    db: impl crate::db::Db<'_>,
    scope: &Scope,
    since: UtcTime,
) -> Result<(i64, i64), sqlx::Error> {
    let (column, id) = match scope {
        Scope::Host(id) => ("host_id", id),
        Scope::User(id) => ("user_id", id),
    };
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(rx_bytes), 0) AS BIGINT), CAST(COALESCE(SUM(tx_bytes), 0) AS BIGINT) \
         FROM traffic_hours WHERE {column} = ? AND hour >= ?"
    );
    crate::db::on_db!(db, &sql, |exec, sql| sqlx::query_as(sql)
        .bind(id)
        .bind(since)
        .fetch_one(exec)
        .await)
}

/// Deletes the hours before `cutoff`; how many went.
pub async fn purge_hours_before(db: impl crate::db::Db<'_>, cutoff: UtcTime) -> Result<u64, sqlx::Error> {
    let done: Done = crate::db::on_db!(db, "DELETE FROM traffic_hours WHERE hour < ?", |exec, sql| {
        sqlx::query(sql).bind(cutoff).execute(exec).await.map(Done::from)
    })?;
    Ok(done.rows_affected())
}

/// Which bytes a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received by the host.
    In,
    /// Sent by the host.
    Out,
    /// Both.
    Total,
}

impl Direction {
    pub fn of(self, (rx, tx): (i64, i64)) -> i64 {
        match self {
            Self::In => rx,
            Self::Out => tx,
            Self::Total => rx.saturating_add(tx),
        }
    }
}

/// How often a quota starts again from zero (UTC; weeks start on Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

impl Period {
    /// The start of the period `now` falls in.
    pub fn start(self, now: UtcTime) -> UtcTime {
        use chrono::{Datelike as _, NaiveTime, TimeZone as _, Utc};
        let day = now.0.date_naive();
        let first = match self {
            Self::Daily => day,
            Self::Weekly => day - chrono::Days::new(u64::from(day.weekday().num_days_from_monday())),
            Self::Monthly => day.with_day(1).unwrap_or(day),
        };
        UtcTime::from(Utc.from_utc_datetime(&first.and_time(NaiveTime::MIN)))
    }

    /// The start of the period after the one `now` falls in.
    pub fn next_start(self, now: UtcTime) -> UtcTime {
        let start = self.start(now).0;
        let next = match self {
            Self::Daily => start + chrono::Days::new(1),
            Self::Weekly => start + chrono::Days::new(7),
            Self::Monthly => start + chrono::Months::new(1),
        };
        UtcTime::from(next)
    }
}

/// What a quota does when the traffic passes its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Only record an event.
    Event,
    /// Stop the host (each of the user's running hosts).
    Stop,
    /// Cut the host's egress until the period ends or the quota is removed: nothing leaves but
    /// replies to SSH and the desktop.
    CutEgress,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Stop => "stop",
            Self::CutEgress => "cut_egress",
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Quota {
    pub id: String,
    pub host_id: Option<String>,
    pub user_id: Option<String>,
    pub limit_bytes: i64,
    pub direction: Direction,
    pub period: Period,
    pub action: Action,
    pub created_at: UtcTime,
    pub fired_period: Option<UtcTime>,
    pub fired_at: Option<UtcTime>,
}

impl Quota {
    pub fn scope(&self) -> Scope {
        match (&self.host_id, &self.user_id) {
            (Some(h), _) => Scope::Host(h.clone()),
            (None, Some(u)) => Scope::User(u.clone()),
            // The table's CHECK makes one of them set.
            (None, None) => Scope::Host(String::new()),
        }
    }

    /// Whether it fired in the period `now` falls in.
    pub fn fired_in_period(&self, now: UtcTime) -> bool {
        self.fired_period == Some(self.period.start(now))
    }
}

const QUOTA_COLUMNS: &str = "id, host_id, user_id, limit_bytes, direction, period, action, created_at, \
    fired_period, fired_at";

pub struct NewQuota<'a> {
    pub host_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub limit_bytes: i64,
    pub direction: Direction,
    pub period: Period,
    pub action: Action,
}

pub async fn insert_quota(
    db: impl crate::db::Db<'_>,
    q: &NewQuota<'_>,
    now: UtcTime,
) -> Result<String, sqlx::Error> {
    let id = super::new_id();
    crate::db::on_db!(
        db,
        "INSERT INTO traffic_quotas (id, host_id, user_id, limit_bytes, direction, period, action, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        |exec, sql| sqlx::query(sql)
            .bind(&id)
            .bind(q.host_id)
            .bind(q.user_id)
            .bind(q.limit_bytes)
            .bind(q.direction)
            .bind(q.period)
            .bind(q.action)
            .bind(now)
            .execute(exec)
            .await
            .map(Done::from)
    )?;
    Ok(id)
}

pub async fn get_quota(db: impl crate::db::Db<'_>, id: &str) -> Result<Option<Quota>, sqlx::Error> {
    let sql = format!("SELECT {QUOTA_COLUMNS} FROM traffic_quotas WHERE id = ?");
    crate::db::on_db!(db, &sql, |exec, sql| sqlx::query_as(sql)
        .bind(id)
        .fetch_optional(exec)
        .await)
}

/// Quotas filtered by host and user, newest first, and how many match.
pub async fn list_quotas(
    db: &crate::db::Pool,
    host_id: Option<&str>,
    user_id: Option<&str>,
    page: Page,
) -> Result<(Vec<Quota>, i64), sqlx::Error> {
    let filter = "WHERE (?1 IS NULL OR host_id = ?1) AND (?2 IS NULL OR user_id = ?2)";
    let sql = format!(
        "SELECT {QUOTA_COLUMNS} FROM traffic_quotas {filter} ORDER BY created_at DESC, id LIMIT ?3 OFFSET ?4"
    );
    let rows: Vec<Quota> = crate::db::on_db!(db, &sql, |exec, sql| sqlx::query_as(sql)
        .bind(host_id)
        .bind(user_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(exec)
        .await)?;
    let count = format!("SELECT COUNT(*) FROM traffic_quotas {filter}");
    let total: i64 = crate::db::on_db!(db, &count, |exec, sql| sqlx::query_scalar(sql)
        .bind(host_id)
        .bind(user_id)
        .fetch_one(exec)
        .await)?;
    Ok((rows, total))
}

/// Every quota, for the evaluation pass.
pub async fn all_quotas(db: impl crate::db::Db<'_>) -> Result<Vec<Quota>, sqlx::Error> {
    let sql = format!("SELECT {QUOTA_COLUMNS} FROM traffic_quotas ORDER BY created_at, id");
    crate::db::on_db!(db, &sql, |exec, sql| sqlx::query_as(sql).fetch_all(exec).await)
}

pub async fn delete_quota(db: impl crate::db::Db<'_>, id: &str) -> Result<bool, sqlx::Error> {
    let done: Done = crate::db::on_db!(db, "DELETE FROM traffic_quotas WHERE id = ?", |exec, sql| {
        sqlx::query(sql).bind(id).execute(exec).await.map(Done::from)
    })?;
    Ok(done.rows_affected() > 0)
}

/// Records that the quota fired in the period starting `period` (`None`: it is armed again).
pub async fn set_fired(
    db: impl crate::db::Db<'_>,
    id: &str,
    period: Option<UtcTime>,
    at: Option<UtcTime>,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE traffic_quotas SET fired_period = ?, fired_at = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(period)
            .bind(at)
            .bind(id)
            .execute(exec)
            .await
            .map(Done::from)
    )?;
    Ok(())
}

/// Hosts whose egress is cut, with the quota that cut it.
pub async fn cut_hosts(db: impl crate::db::Db<'_>) -> Result<Vec<(String, String)>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT id, egress_cut_by FROM hosts WHERE egress_cut_by IS NOT NULL",
        |exec, sql| sqlx::query_as(sql).fetch_all(exec).await
    )
}

/// The hosts a quota of `scope` covers (a user's: every host of theirs not being deleted).
pub async fn hosts_in_scope(db: impl crate::db::Db<'_>, scope: &Scope) -> Result<Vec<String>, sqlx::Error> {
    let (sql, id) = match scope {
        Scope::Host(id) => ("SELECT id FROM hosts WHERE id = ? AND status <> 'deleting'", id),
        Scope::User(id) => (
            "SELECT id FROM hosts WHERE user_id = ? AND status <> 'deleting'",
            id,
        ),
    };
    crate::db::on_db!(db, sql, |exec, sql| sqlx::query_scalar(sql)
        .bind(id)
        .fetch_all(exec)
        .await)
}

/// Cuts (`Some(quota)`) or restores (`None`) the host's egress; `false` if the host is gone.
pub async fn set_cut(
    db: impl crate::db::Db<'_>,
    host_id: &str,
    by: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done: Done = crate::db::on_db!(
        db,
        "UPDATE hosts SET egress_cut_by = ? WHERE id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(by)
            .bind(host_id)
            .execute(exec)
            .await
            .map(Done::from)
    )?;
    Ok(done.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> UtcTime {
        UtcTime::from(
            chrono::DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&chrono::Utc),
        )
    }

    fn sample(epoch: &str, rx: u64, tx: u64) -> wire::TrafficCounters {
        wire::TrafficCounters {
            epoch: epoch.into(),
            rx_bytes: rx,
            tx_bytes: tx,
        }
    }

    fn cursor(epoch: &str, rx: i64, tx: i64) -> Cursor {
        Cursor {
            host_id: "h".into(),
            epoch: epoch.into(),
            rx_counter: rx,
            tx_counter: tx,
        }
    }

    #[test]
    fn readings_fold_into_totals_across_restarts() {
        // The first reading counts all it holds.
        assert_eq!(fold(None, &sample("a", 100, 10)), Some((100, 10)));
        // Growth counts the difference; the same reading again counts nothing.
        assert_eq!(
            fold(Some(&cursor("a", 100, 10)), &sample("a", 150, 12)),
            Some((50, 2))
        );
        assert_eq!(fold(Some(&cursor("a", 150, 12)), &sample("a", 150, 12)), None);
        // A new namespace: its counters count from zero.
        assert_eq!(
            fold(Some(&cursor("a", 150, 12)), &sample("b", 30, 3)),
            Some((30, 3))
        );
        // Counters that went down without a new epoch restarted all the same.
        assert_eq!(
            fold(Some(&cursor("a", 150, 12)), &sample("a", 20, 12)),
            Some((20, 12))
        );
    }

    #[test]
    fn periods_start_in_utc() {
        let now = at("2026-12-06T23:17:28.5Z");
        assert_eq!(hour_of(now), at("2026-12-06T23:00:00Z"));
        assert_eq!(Period::Daily.start(now), at("2026-12-06T00:00:00Z"));
        // 6 December 2026 is a Sunday: its week began on Monday the 30th of November.
        assert_eq!(Period::Weekly.start(now), at("2026-11-30T00:00:00Z"));
        assert_eq!(Period::Monthly.start(now), at("2026-12-01T00:00:00Z"));
        assert_eq!(Period::Monthly.next_start(now), at("2027-01-01T00:00:00Z"));
        assert_eq!(Period::Weekly.next_start(now), at("2026-12-07T00:00:00Z"));
        assert_eq!(Period::Daily.next_start(now), at("2026-12-07T00:00:00Z"));
    }

    #[test]
    fn directions_pick_their_bytes() {
        assert_eq!(Direction::In.of((5, 7)), 5);
        assert_eq!(Direction::Out.of((5, 7)), 7);
        assert_eq!(Direction::Total.of((5, 7)), 12);
    }
}
