//! Database access: the pool (SQLite or PostgreSQL), embedded migrations per backend, and plain async
//! functions per aggregate.

pub mod api_tokens;
pub mod bindings;
pub mod bootstrap;
pub mod copy;
pub mod egress_ips;
pub mod egress_tests;
pub mod enrolment_keys;
pub mod events;
pub mod gateways;
pub mod handoffs;
pub mod hosts;
pub mod leases;
pub mod nodes;
pub mod recordings;
pub mod ssh_keys;
pub mod tasks;
pub mod time;
pub mod totp;
pub mod traffic;
pub mod users;
pub mod web_sessions;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

pub use time::{JsonText, UtcTime};

/// Which database server holds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One file, one process: the quickstart.
    Sqlite,
    /// A server that several control-plane replicas share.
    Postgres,
}

/// The connection pool, of either backend. Every query in `db` is written once, in the SQL both
/// backends accept, and runs on the backend's own sqlx driver (see `docs/database.md`).
#[derive(Debug, Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// How many connections a pool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConnections {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

/// One connection taken from the pool, inside a transaction or not.
#[derive(Debug)]
pub enum Connection {
    SqliteTx(Transaction<'static, Sqlite>),
    PostgresTx(Transaction<'static, Postgres>),
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

/// A transaction; `&mut *tx` is its connection for the functions of `db`.
#[derive(Debug)]
pub struct Tx(Connection);

/// A connection held outside a transaction, for several statements in a row.
#[derive(Debug)]
pub struct Held(Connection);

/// Where a query runs: the pool, or one connection, of either backend.
#[derive(Debug)]
pub enum Exec<'c> {
    SqlitePool(&'c SqlitePool),
    Sqlite(&'c mut sqlx::SqliteConnection),
    PostgresPool(&'c PgPool),
    Postgres(&'c mut sqlx::PgConnection),
}

/// What the functions of `db` run on: `&state.db` (the pool) or `&mut *tx` (a transaction).
pub trait Db<'c>: Send {
    fn exec(self) -> Exec<'c>;
}

impl<'c> Db<'c> for &'c Pool {
    fn exec(self) -> Exec<'c> {
        match self {
            Pool::Sqlite(p) => Exec::SqlitePool(p),
            Pool::Postgres(p) => Exec::PostgresPool(p),
        }
    }
}

impl<'c> Db<'c> for &'c mut Connection {
    fn exec(self) -> Exec<'c> {
        match self {
            Connection::SqliteTx(t) => Exec::Sqlite(t),
            Connection::PostgresTx(t) => Exec::Postgres(t),
            Connection::Sqlite(c) => Exec::Sqlite(c),
            Connection::Postgres(c) => Exec::Postgres(c),
        }
    }
}

impl Connection {
    pub fn backend(&self) -> Backend {
        match self {
            Self::SqliteTx(_) | Self::Sqlite(_) => Backend::Sqlite,
            Self::PostgresTx(_) | Self::Postgres(_) => Backend::Postgres,
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0
    }
}

impl std::ops::Deref for Held {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl std::ops::DerefMut for Held {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.0 {
            Connection::SqliteTx(t) => t.commit().await,
            Connection::PostgresTx(t) => t.commit().await,
            Connection::Sqlite(_) | Connection::Postgres(_) => Ok(()),
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.0 {
            Connection::SqliteTx(t) => t.rollback().await,
            Connection::PostgresTx(t) => t.rollback().await,
            Connection::Sqlite(_) | Connection::Postgres(_) => Ok(()),
        }
    }
}

impl Pool {
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// A transaction. Every transaction here writes, most after reading: on SQLite it takes the
    /// write lock at `BEGIN` (`BEGIN IMMEDIATE`, waiting up to the busy timeout), since a deferred one
    /// fails with `SQLITE_BUSY_SNAPSHOT` when another connection wrote between its read and its
    /// write, which no busy timeout cures. On PostgreSQL it is an ordinary (read committed)
    /// transaction: its statements lock the rows they change, claims skip locked rows, and
    /// [`serialize`] orders the decisions taken on a read of many rows.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(Tx(match self {
            Self::Sqlite(p) => Connection::SqliteTx(p.begin_with("BEGIN IMMEDIATE").await?),
            Self::Postgres(p) => Connection::PostgresTx(p.begin().await?),
        }))
    }

    /// The pool's connections now: open, idle among them, and the most it may open.
    pub fn connections(&self) -> PoolConnections {
        let (open, idle, max) = match self {
            Self::Sqlite(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
            Self::Postgres(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        PoolConnections { open, idle, max }
    }

    /// One connection for several statements outside a transaction.
    pub async fn acquire(&self) -> Result<Held, sqlx::Error> {
        Ok(Held(match self {
            Self::Sqlite(p) => Connection::Sqlite(p.acquire().await?),
            Self::Postgres(p) => Connection::Postgres(p.acquire().await?),
        }))
    }

    pub async fn close(&self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }
}

/// Decisions that read many rows and then write, taken one at a time across every replica.
#[derive(Debug, Clone, Copy)]
pub enum Serial {
    /// A new account's name against every other's (their Linux account names must not collide).
    Usernames = 0x6363_7001,
}

/// Holds `what` until the transaction ends: a PostgreSQL transaction-scoped advisory lock. On
/// SQLite the transaction of [`Pool::begin`] already holds the only write lock.
pub async fn serialize(conn: &mut Connection, what: Serial) -> Result<(), sqlx::Error> {
    if let Connection::PostgresTx(tx) = conn {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(what as i64)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// What a statement that returns no rows did, on either backend.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    rows: u64,
}

impl Done {
    pub fn rows_affected(&self) -> u64 {
        self.rows
    }
}

impl From<sqlx::sqlite::SqliteQueryResult> for Done {
    fn from(r: sqlx::sqlite::SqliteQueryResult) -> Self {
        Self {
            rows: r.rows_affected(),
        }
    }
}

impl From<sqlx::postgres::PgQueryResult> for Done {
    fn from(r: sqlx::postgres::PgQueryResult) -> Self {
        Self {
            rows: r.rows_affected(),
        }
    }
}

/// Runs a query written once on whichever backend `$db` is: `$body` is compiled for each backend's
/// driver, with `$e` the executor and `$sql` the statement in that backend's form (`?` placeholders
/// become `$1`, `$2`, … for PostgreSQL).
#[macro_export]
macro_rules! on_db {
    ($db:expr, $sql:expr, |$e:ident, $s:ident| $body:expr) => {{
        let text: &str = $sql;
        $crate::on_db!($db, sqlite: text, postgres: text, |$e, $s| $body)
    }};
    // A statement that differs between the backends (e.g. row locks only PostgreSQL has).
    ($db:expr, sqlite: $sqlite:expr, postgres: $postgres:expr, |$e:ident, $s:ident| $body:expr) => {{
        match $crate::db::Db::exec($db) {
            $crate::db::Exec::SqlitePool($e) => {
                let $s: &str = $sqlite;
                $body
            }
            $crate::db::Exec::Sqlite($e) => {
                let $s: &str = $sqlite;
                $body
            }
            $crate::db::Exec::PostgresPool($e) => {
                let owned = $crate::db::postgres_sql($postgres);
                let $s: &str = &owned;
                $body
            }
            $crate::db::Exec::Postgres($e) => {
                let owned = $crate::db::postgres_sql($postgres);
                let $s: &str = &owned;
                $body
            }
        }
    }};
}
pub use on_db;

/// A statement as PostgreSQL takes it: each `?` placeholder (outside quoted text) numbered `$1`,
/// `$2`, …
pub fn postgres_sql(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 16);
    // As SQLite numbers them: `?N` is the N-th argument, a bare `?` the one after the highest so far.
    let mut highest = 0_usize;
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                let mut digits = String::new();
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    digits.push(d);
                }
                let n = match digits.parse::<usize>() {
                    Ok(n) => n,
                    Err(_) => highest + 1,
                };
                highest = highest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported DATABASE_URL `{0}`: use sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    #[error("cannot open database: {0}")]
    Open(#[source] sqlx::Error),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// The backend a `DATABASE_URL` names.
pub fn backend_of(url: &str) -> Option<Backend> {
    if url.starts_with("sqlite:") {
        Some(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(Backend::Postgres)
    } else {
        None
    }
}

/// Opens (creating if needed) the database and applies every pending migration.
pub async fn connect(url: &str) -> Result<Pool, Error> {
    let pool = open(url).await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Opens the database without touching its schema.
pub async fn open(url: &str) -> Result<Pool, Error> {
    match backend_of(url) {
        Some(Backend::Sqlite) => {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(Error::Open)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                // Deleted and overwritten content is zeroed, not left in free space: a secret
                // replaced by its sealed form (or a rotated key's ciphertext) must not linger.
                .pragma("secure_delete", "on")
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(Error::Open)?;
            Ok(Pool::Sqlite(pool))
        }
        Some(Backend::Postgres) => {
            // Times are text in UTC on both backends; the session zone only matters to
            // server-side defaults, of which there are none, but it is pinned all the same.
            let options = PgConnectOptions::from_str(url)
                .map_err(Error::Open)?
                .options([("timezone", "UTC")]);
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(Error::Open)?;
            Ok(Pool::Postgres(pool))
        }
        None => Err(Error::UnsupportedUrl(redact_url(url))),
    }
}

/// Applies the pending migrations of the pool's backend.
pub async fn migrate(pool: &Pool) -> Result<(), Error> {
    match pool {
        Pool::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await,
        Pool::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await,
    }
    .map_err(Error::Migrate)
}

/// A database URL fit for a log line: its password replaced.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// A fresh random id for a new row.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Rows per page and the page asked for, already clamped.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: u32,
    pub page_size: u32,
}

impl Page {
    pub fn offset(self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.page_size)
    }
    pub fn limit(self) -> i64 {
        i64::from(self.page_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(postgres_sql("SELECT 1"), "SELECT 1");
        assert_eq!(
            postgres_sql("UPDATE t SET a = ?, b = '?' WHERE c = ? AND d = ?"),
            "UPDATE t SET a = $1, b = '?' WHERE c = $2 AND d = $3"
        );
        assert_eq!(
            postgres_sql("SET a = CASE WHEN ?1 = 'x' THEN ?2 ELSE ?1 END WHERE id = ?"),
            "SET a = CASE WHEN $1 = 'x' THEN $2 ELSE $1 END WHERE id = $3"
        );
    }

    #[test]
    fn urls_name_their_backend_and_hide_their_password() {
        assert_eq!(backend_of("sqlite:///var/lib/x.db"), Some(Backend::Sqlite));
        assert_eq!(backend_of("postgres://u:p@h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of("postgresql://u@h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of("mysql://h/db"), None);
        assert!(!redact_url("postgres://ccp:s3cret@db:5432/ccp").contains("s3cret"));
    }
}
