//! Database access: the pool, embedded migrations, and plain async functions per aggregate.

pub mod api_tokens;
pub mod bindings;
pub mod bootstrap;
pub mod egress_ips;
pub mod egress_tests;
pub mod enrolment_keys;
pub mod events;
pub mod gateways;
pub mod handoffs;
pub mod hosts;
pub mod nodes;
pub mod ssh_keys;
pub mod tasks;
pub mod time;
pub mod totp;
pub mod users;
pub mod web_sessions;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use time::UtcTime;

pub type Pool = sqlx::SqlitePool;
pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported DATABASE_URL `{0}`: only sqlite:// is built in")]
    UnsupportedUrl(String),
    #[error("cannot open database: {0}")]
    Open(#[source] sqlx::Error),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Opens (creating if needed) the database and applies every pending migration.
pub async fn connect(url: &str) -> Result<Pool, Error> {
    if !url.starts_with("sqlite:") {
        return Err(Error::UnsupportedUrl(url.to_owned()));
    }
    let options = SqliteConnectOptions::from_str(url)
        .map_err(Error::Open)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        // Deleted and overwritten content is zeroed, not left in free space: a secret replaced by
        // its sealed form (or a rotated key's ciphertext) must not linger in the file.
        .pragma("secure_delete", "on")
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(Error::Open)?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(Error::Migrate)?;
    Ok(pool)
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
