//! Session recordings: one row per recorded pty session, its asciicast v2 events in gzip chunks
//! (`recording_chunks`, in `seq` order), and the per-user and per-host overrides of
//! `SESSION_RECORDING`.

use serde::Serialize;
use utoipa::ToSchema;

use super::{Page, UtcTime};

/// A recorded session, as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Recording {
    pub id: String,
    pub user_id: String,
    pub host_id: String,
    /// The gateway connection, as named in the session's audit events.
    pub connection_id: String,
    /// The gateway that recorded it.
    pub gateway: String,
    /// `ssh` (a client of the gateway) or `web` (the dashboard's terminal).
    pub via: String,
    /// For `web`: the account that opened the terminal.
    pub opened_by: Option<String>,
    /// Terminal size when the pty was granted (the asciicast header's).
    pub width: i64,
    pub height: i64,
    pub term: String,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: UtcTime,
    /// Unset while the session goes on, or when its gateway stopped without saying.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<UtcTime>,
    pub duration_ms: Option<i64>,
    /// Why the recording stopped before the session ended.
    pub error: Option<String>,
    pub chunks: i64,
    /// Bytes of asciicast events, uncompressed.
    pub size_bytes: i64,
    /// Bytes stored (compressed).
    pub stored_bytes: i64,
}

const COLUMNS: &str = "id, user_id, host_id, connection_id, gateway, via, opened_by, width, height, term, \
     started_at, ended_at, duration_ms, error, chunks, size_bytes, stored_bytes";

/// A recording about to be opened.
#[derive(Debug, Clone)]
pub struct NewRecording<'a> {
    pub user_id: &'a str,
    pub host_id: &'a str,
    pub connection_id: &'a str,
    pub gateway: &'a str,
    pub opened_by: Option<&'a str>,
    pub width: i64,
    pub height: i64,
    pub term: &'a str,
}

pub async fn open(
    db: impl crate::db::Db<'_>,
    new: &NewRecording<'_>,
    now: UtcTime,
) -> Result<String, sqlx::Error> {
    let id = super::new_id();
    let via = if new.opened_by.is_some() { "web" } else { "ssh" };
    crate::db::on_db!(
        db,
        "INSERT INTO recordings (id, user_id, host_id, connection_id, gateway, via, opened_by, width, height, \
           term, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        |exec, sql| sqlx::query(sql)
            .bind(&id)
            .bind(new.user_id)
            .bind(new.host_id)
            .bind(new.connection_id)
            .bind(new.gateway)
            .bind(via)
            .bind(new.opened_by)
            .bind(new.width)
            .bind(new.height)
            .bind(new.term)
            .bind(now)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(id)
}

pub async fn get(db: impl crate::db::Db<'_>, id: &str) -> Result<Option<Recording>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM recordings WHERE id = ?");
    crate::db::on_db!(db, &sql, |exec, sql| sqlx::query_as::<_, Recording>(sql)
        .bind(id)
        .fetch_optional(exec)
        .await)
}

/// The gateway that opened recording `id`, if there is one.
pub async fn gateway_of(db: impl crate::db::Db<'_>, id: &str) -> Result<Option<(String, bool)>, sqlx::Error> {
    let row: Option<(String, Option<UtcTime>)> = crate::db::on_db!(
        db,
        "SELECT gateway, ended_at FROM recordings WHERE id = ?",
        |exec, sql| sqlx::query_as(sql).bind(id).fetch_optional(exec).await
    )?;
    Ok(row.map(|(gateway, ended)| (gateway, ended.is_some())))
}

/// Stores chunk `seq` of recording `id`; a chunk already stored is kept as it is (a gateway that
/// retried an upload whose answer it lost). Returns whether it was new.
pub async fn add_chunk(
    tx: &mut super::Connection,
    id: &str,
    seq: i64,
    size_bytes: i64,
    gzip: &[u8],
) -> Result<bool, sqlx::Error> {
    let stored = i64::try_from(gzip.len()).unwrap_or(i64::MAX);
    let added = crate::db::on_db!(
        &mut *tx,
        "INSERT INTO recording_chunks (recording_id, seq, size_bytes, data) VALUES (?, ?, ?, ?) \
         ON CONFLICT (recording_id, seq) DO NOTHING",
        |exec, sql| sqlx::query(sql)
            .bind(id)
            .bind(seq)
            .bind(size_bytes)
            .bind(gzip)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?
    .rows_affected()
        > 0;
    if added {
        crate::db::on_db!(
            &mut *tx,
            "UPDATE recordings SET chunks = chunks + 1, size_bytes = size_bytes + ?, \
               stored_bytes = stored_bytes + ? WHERE id = ?",
            |exec, sql| sqlx::query(sql)
                .bind(size_bytes)
                .bind(stored)
                .bind(id)
                .execute(exec)
                .await
                .map(crate::db::Done::from)
        )?;
    }
    Ok(added)
}

/// Marks recording `id` ended (once; a second end changes nothing).
pub async fn end(
    db: impl crate::db::Db<'_>,
    id: &str,
    now: UtcTime,
    duration_ms: i64,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "UPDATE recordings SET ended_at = ?, duration_ms = ?, error = ? WHERE id = ? AND ended_at IS NULL",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .bind(duration_ms)
            .bind(error)
            .bind(id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}

/// The sequence numbers of recording `id`'s chunks, in order.
pub async fn chunk_seqs(db: impl crate::db::Db<'_>, id: &str) -> Result<Vec<i64>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT seq FROM recording_chunks WHERE recording_id = ? ORDER BY seq",
        |exec, sql| sqlx::query_scalar(sql).bind(id).fetch_all(exec).await
    )
}

/// One chunk, as stored (gzip).
pub async fn chunk(db: impl crate::db::Db<'_>, id: &str, seq: i64) -> Result<Option<Vec<u8>>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT data FROM recording_chunks WHERE recording_id = ? AND seq = ?",
        |exec, sql| sqlx::query_scalar(sql)
            .bind(id)
            .bind(seq)
            .fetch_optional(exec)
            .await
    )
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub user_id: Option<String>,
    pub host_id: Option<String>,
    pub since: Option<UtcTime>,
    pub until: Option<UtcTime>,
}

/// Newest first.
pub async fn list(
    db: &super::Pool,
    filter: &Filter,
    page: Page,
) -> Result<(Vec<Recording>, i64), sqlx::Error> {
    let where_sql = "(? IS NULL OR user_id = ?) AND (? IS NULL OR host_id = ?) \
         AND (? IS NULL OR started_at >= ?) AND (? IS NULL OR started_at <= ?)";
    let select = format!(
        "SELECT {COLUMNS} FROM recordings WHERE {where_sql} ORDER BY started_at DESC, id LIMIT ? OFFSET ?"
    );
    let count = format!("SELECT COUNT(*) FROM recordings WHERE {where_sql}");
    macro_rules! bind_filter {
        ($q:expr) => {
            $q.bind(&filter.user_id)
                .bind(&filter.user_id)
                .bind(&filter.host_id)
                .bind(&filter.host_id)
                .bind(filter.since)
                .bind(filter.since)
                .bind(filter.until)
                .bind(filter.until)
        };
    }
    let rows = crate::db::on_db!(db, &select, |exec, sql| {
        bind_filter!(sqlx::query_as::<_, Recording>(sql))
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(exec)
            .await
    })?;
    let total: i64 = crate::db::on_db!(db, &count, |exec, sql| {
        bind_filter!(sqlx::query_scalar(sql)).fetch_one(exec).await
    })?;
    Ok((rows, total))
}

/// Deletes the recordings started before `cutoff` with their chunks, a few at a time so the
/// writer lock is never held long. Returns how many went.
pub async fn purge_before(db: &super::Pool, cutoff: UtcTime) -> Result<u64, sqlx::Error> {
    const BATCH: i64 = 20;
    let mut total = 0;
    loop {
        let ids: Vec<String> = crate::db::on_db!(
            db,
            "SELECT id FROM recordings WHERE started_at < ? ORDER BY started_at LIMIT ?",
            |exec, sql| sqlx::query_scalar(sql)
                .bind(cutoff)
                .bind(BATCH)
                .fetch_all(exec)
                .await
        )?;
        for id in &ids {
            let mut tx = db.begin().await?;
            crate::db::on_db!(
                &mut *tx,
                "DELETE FROM recording_chunks WHERE recording_id = ?",
                |exec, sql| sqlx::query(sql)
                    .bind(id)
                    .execute(exec)
                    .await
                    .map(crate::db::Done::from)
            )?;
            crate::db::on_db!(&mut *tx, "DELETE FROM recordings WHERE id = ?", |exec, sql| {
                sqlx::query(sql)
                    .bind(id)
                    .execute(exec)
                    .await
                    .map(crate::db::Done::from)
            })?;
            tx.commit().await?;
        }
        total += ids.len() as u64;
        if ids.len() < BATCH as usize {
            return Ok(total);
        }
    }
}

/// Whose recording setting: a user's or a host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    User,
    Host,
}

impl Owner {
    fn table(self) -> &'static str {
        match self {
            Self::User => "users",
            Self::Host => "hosts",
        }
    }
}

/// The override of a user or host: `Some(None)` follows the next level, `Some(Some(true))` records,
/// `Some(Some(false))` does not; `None` when there is no such row.
pub async fn setting(
    db: impl crate::db::Db<'_>,
    owner: Owner,
    id: &str,
) -> Result<Option<Option<bool>>, sqlx::Error> {
    let sql = format!("SELECT session_recording FROM {} WHERE id = ?", owner.table());
    let row: Option<Option<String>> = crate::db::on_db!(db, &sql, |exec, sql| sqlx::query_scalar(sql)
        .bind(id)
        .fetch_optional(exec)
        .await)?;
    Ok(row.map(|v| v.map(|v| v == "on")))
}

/// Sets the override of a user or host; false when there is no such row.
pub async fn set_setting(
    db: impl crate::db::Db<'_>,
    owner: Owner,
    id: &str,
    value: Option<bool>,
) -> Result<bool, sqlx::Error> {
    let sql = format!("UPDATE {} SET session_recording = ? WHERE id = ?", owner.table());
    let value = value.map(|on| if on { "on" } else { "off" });
    let done = crate::db::on_db!(db, &sql, |exec, sql| sqlx::query(sql)
        .bind(value)
        .bind(id)
        .execute(exec)
        .await
        .map(crate::db::Done::from))?;
    Ok(done.rows_affected() > 0)
}
