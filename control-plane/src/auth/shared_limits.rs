//! The sign-in limiter's windows and known clients kept in the database, so that every replica
//! on one PostgreSQL database counts the same failures: the rules are those of
//! `ratelimit::LoginLimiter` (see there), the state is rows. An admission takes the address's (and,
//! for an unknown client, the account's) lock for the rest of its transaction, counts, and writes
//! its own row before anyone else may count, so concurrent attempts on several replicas cannot slip
//! past a limit either.

use std::time::Duration;

use super::ratelimit::{KNOWN_FOR, Limits, Outcome, account_key, pair_key};
use crate::db::{self, Connection, Pool, UtcTime};

/// Known clients remembered per account.
const KNOWN_PER_ACCOUNT: i64 = 16;

#[derive(Debug, Clone)]
pub struct SharedLimiter {
    db: Pool,
    limits: Limits,
}

/// An admitted attempt: the rows that count it until it is forgiven.
#[derive(Debug)]
pub struct SharedTicket {
    ip_row: String,
    account_row: Option<String>,
    ip: String,
    account: String,
    pair: String,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Ip,
    Pair,
    Account,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Pair => "pair",
            Self::Account => "account",
        }
    }
}

fn later(now: UtcTime, d: Duration) -> UtcTime {
    UtcTime::from(now.0 + chrono::Duration::from_std(d).unwrap_or_default())
}

fn earlier(now: UtcTime, d: Duration) -> UtcTime {
    UtcTime::from(now.0 - chrono::Duration::from_std(d).unwrap_or_default())
}

impl SharedLimiter {
    pub fn new(db: Pool, limits: Limits) -> Self {
        Self { db, limits }
    }

    fn max(&self, kind: Kind) -> i64 {
        i64::from(
            match kind {
                Kind::Ip => self.limits.per_ip,
                Kind::Pair => self.limits.per_account_client,
                Kind::Account => self.limits.per_account,
            }
            .max(1),
        )
    }

    /// `Some(retry_after)` while `key` has its limit of failures inside the window.
    async fn blocked(
        &self,
        conn: &mut Connection,
        kind: Kind,
        key: &str,
        now: UtcTime,
    ) -> Result<Option<Duration>, sqlx::Error> {
        let (count, oldest): (i64, Option<UtcTime>) = db::on_db!(
            &mut *conn,
            "SELECT COUNT(*), MIN(at) FROM login_failures WHERE kind = ? AND key = ? AND at > ?",
            |exec, sql| sqlx::query_as(sql)
                .bind(kind.as_str())
                .bind(key)
                .bind(earlier(now, self.limits.window))
                .fetch_one(exec)
                .await
        )?;
        if count < self.max(kind) {
            return Ok(None);
        }
        let until = later(oldest.unwrap_or(now), self.limits.window);
        Ok(Some((until.0 - now.0).to_std().unwrap_or_default()))
    }

    async fn add(
        &self,
        conn: &mut Connection,
        kind: Kind,
        key: &str,
        now: UtcTime,
    ) -> Result<String, sqlx::Error> {
        let id = db::new_id();
        db::on_db!(
            &mut *conn,
            "INSERT INTO login_failures (id, kind, key, at) VALUES (?, ?, ?, ?)",
            |exec, sql| sqlx::query(sql)
                .bind(&id)
                .bind(kind.as_str())
                .bind(key)
                .bind(now)
                .execute(exec)
                .await
                .map(db::Done::from)
        )?;
        Ok(id)
    }

    /// Holds `key` for the rest of the transaction (PostgreSQL; SQLite's transaction holds the
    /// only write lock already).
    async fn lock(conn: &mut Connection, key: &str) -> Result<(), sqlx::Error> {
        if let Connection::PostgresTx(tx) = conn {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(key)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub async fn is_known(&self, account: &str, ip: &str) -> Result<bool, sqlx::Error> {
        let now = UtcTime::now();
        let at: Option<UtcTime> = db::on_db!(
            &self.db,
            "SELECT at FROM login_clients WHERE account = ? AND client = ?",
            |exec, sql| sqlx::query_scalar(sql)
                .bind(account_key(account))
                .bind(ip)
                .fetch_optional(exec)
                .await
        )?;
        Ok(at.is_some_and(|at| at > earlier(now, KNOWN_FOR)))
    }

    /// As `LoginLimiter::admit`.
    pub async fn admit(
        &self,
        ip: &str,
        account: &str,
        known: bool,
    ) -> Result<Result<SharedTicket, Duration>, sqlx::Error> {
        let now = UtcTime::now();
        let account = account_key(account);
        let pair = pair_key(&account, ip);
        let mut tx = self.db.begin().await?;
        // Always the address first, then the account: no two admissions wait on each other in
        // opposite orders.
        Self::lock(&mut tx, &format!("login ip\n{ip}")).await?;
        if !known {
            Self::lock(&mut tx, &format!("login account\n{account}")).await?;
        }
        let mut waits = vec![
            self.blocked(&mut tx, Kind::Ip, ip, now).await?,
            self.blocked(&mut tx, Kind::Pair, &pair, now).await?,
        ];
        if !known {
            waits.push(self.blocked(&mut tx, Kind::Account, &account, now).await?);
        }
        if let Some(wait) = waits.into_iter().flatten().max() {
            tx.rollback().await?;
            return Ok(Err(wait));
        }
        let ip_row = self.add(&mut tx, Kind::Ip, ip, now).await?;
        let account_row = match known {
            true => None,
            false => Some(self.add(&mut tx, Kind::Account, &account, now).await?),
        };
        tx.commit().await?;
        Ok(Ok(SharedTicket {
            ip_row,
            account_row,
            ip: ip.to_owned(),
            account,
            pair,
        }))
    }

    /// As `LoginLimiter::check_ip`.
    pub async fn check_ip(&self, ip: &str) -> Result<Result<(), Duration>, sqlx::Error> {
        let mut conn = self.db.acquire().await?;
        Ok(self
            .blocked(&mut conn, Kind::Ip, ip, UtcTime::now())
            .await?
            .map_or(Ok(()), Err))
    }

    /// As `LoginLimiter::settle`.
    pub async fn settle(&self, ticket: SharedTicket, outcome: Outcome) -> Result<(), sqlx::Error> {
        let now = UtcTime::now();
        let mut tx = self.db.begin().await?;
        if outcome == Outcome::Guess {
            self.add(&mut tx, Kind::Pair, &ticket.pair, now).await?;
            return tx.commit().await;
        }
        for id in std::iter::once(&ticket.ip_row).chain(ticket.account_row.as_ref()) {
            db::on_db!(
                &mut *tx,
                "DELETE FROM login_failures WHERE id = ?",
                |exec, sql| sqlx::query(sql).bind(id).execute(exec).await.map(db::Done::from)
            )?;
        }
        if outcome == Outcome::Succeeded {
            db::on_db!(
                &mut *tx,
                "DELETE FROM login_failures WHERE kind = 'pair' AND key = ?",
                |exec, sql| sqlx::query(sql)
                    .bind(&ticket.pair)
                    .execute(exec)
                    .await
                    .map(db::Done::from)
            )?;
            remember(&mut tx, &ticket.account, &ticket.ip, now).await?;
        }
        tx.commit().await
    }

    /// As `LoginLimiter::remember`.
    pub async fn remember(&self, account: &str, ip: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        remember(&mut tx, &account_key(account), ip, UtcTime::now()).await?;
        tx.commit().await
    }

    /// Deletes what no window or known-client list looks at any more; returns the rows deleted.
    pub async fn purge(&self) -> Result<u64, sqlx::Error> {
        let now = UtcTime::now();
        let failures = db::on_db!(
            &self.db,
            "DELETE FROM login_failures WHERE at <= ?",
            |exec, sql| sqlx::query(sql)
                .bind(earlier(now, self.limits.window))
                .execute(exec)
                .await
                .map(db::Done::from)
        )?;
        let clients = db::on_db!(
            &self.db,
            "DELETE FROM login_clients WHERE at <= ?",
            |exec, sql| sqlx::query(sql)
                .bind(earlier(now, KNOWN_FOR))
                .execute(exec)
                .await
                .map(db::Done::from)
        )?;
        Ok(failures.rows_affected() + clients.rows_affected())
    }
}

/// Remembers `ip` as a client of `account` (already a key), keeping the newest few.
async fn remember(conn: &mut Connection, account: &str, ip: &str, now: UtcTime) -> Result<(), sqlx::Error> {
    db::on_db!(
        &mut *conn,
        "INSERT INTO login_clients (account, client, at) VALUES (?, ?, ?) \
         ON CONFLICT (account, client) DO UPDATE SET at = excluded.at",
        |exec, sql| sqlx::query(sql)
            .bind(account)
            .bind(ip)
            .bind(now)
            .execute(exec)
            .await
            .map(db::Done::from)
    )?;
    db::on_db!(
        &mut *conn,
        "DELETE FROM login_clients WHERE account = ?1 AND client NOT IN \
         (SELECT client FROM login_clients WHERE account = ?1 ORDER BY at DESC LIMIT ?2)",
        |exec, sql| sqlx::query(sql)
            .bind(account)
            .bind(KNOWN_PER_ACCOUNT)
            .execute(exec)
            .await
            .map(db::Done::from)
    )?;
    Ok(())
}
