//! Sign-in limits that a stranger cannot turn against an account's owner.
//!
//! Three sliding windows of failures:
//! - per client address (IPv6 by /64): stops one address guessing across many accounts;
//! - per (account, client address): stops one address guessing one account;
//! - per account, from clients it does not know: a slower, account-wide brake on guessing spread
//!   over many addresses. A client the account signed in from before (its address, or a browser
//!   holding the account's device cookie) is not held by it, so failures from elsewhere never keep
//!   the owner out.
//!
//! The per-address and account-wide windows count an attempt when it is admitted, before its proof
//! is checked, so concurrent attempts cannot slip past them; an attempt that turns out not to be a
//! guess is forgiven afterwards. The (account, address) window counts failures as they settle, so
//! one client's right password sent on many connections at once is never refused by it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept per map before a sweep of the expired ones; bounds memory under a spray of random
/// usernames or addresses.
const SWEEP_AT: usize = 50_000;
/// Addresses remembered per account as known clients.
const KNOWN_PER_ACCOUNT: usize = 16;
/// How long a client stays known after its last sign-in.
pub const KNOWN_FOR: Duration = Duration::from_secs(90 * 24 * 3600);
/// A refusal about load (already limited, busy) is written to the audit log at most once in this
/// long per client address and per account.
pub const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// Failure times per key; a key is blocked once `max` of them fall inside `window`.
#[derive(Debug)]
struct Windows {
    max: usize,
    window: Duration,
    entries: HashMap<String, VecDeque<Instant>>,
}

impl Windows {
    fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max.max(1) as usize,
            window,
            entries: HashMap::new(),
        }
    }

    /// `Some(retry_after)` while `key` is blocked.
    fn blocked(&mut self, key: &str, now: Instant) -> Option<Duration> {
        let times = self.entries.get_mut(key)?;
        prune(times, now, self.window);
        (times.len() >= self.max).then(|| {
            let oldest = times.front().copied().unwrap_or(now);
            (oldest + self.window).saturating_duration_since(now)
        })
    }

    fn add(&mut self, key: &str, now: Instant) {
        if self.entries.len() >= SWEEP_AT {
            let window = self.window;
            self.entries.retain(|_, times| {
                prune(times, now, window);
                !times.is_empty()
            });
        }
        let times = self.entries.entry(key.to_owned()).or_default();
        prune(times, now, self.window);
        times.push_back(now);
    }

    /// Takes back one failure counted at `at`.
    fn remove(&mut self, key: &str, at: Instant) {
        if let Some(times) = self.entries.get_mut(key) {
            if let Some(i) = times.iter().rposition(|t| *t == at) {
                times.remove(i);
            }
            if times.is_empty() {
                self.entries.remove(key);
            }
        }
    }

    fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

/// The limits, in failures per window.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_ip: u32,
    pub per_account_client: u32,
    pub per_account: u32,
    pub window: Duration,
}

#[derive(Debug)]
struct State {
    per_ip: Windows,
    per_pair: Windows,
    per_account: Windows,
    /// Per account: the client addresses it signed in from, with the time of the last one.
    known: HashMap<String, Vec<(String, Instant)>>,
    /// When a load refusal was last written to the audit log, per client address and per account.
    logged: HashMap<String, Instant>,
}

/// The sign-in limiter shared by every way in.
#[derive(Debug)]
pub struct LoginLimiter {
    state: Mutex<State>,
}

/// An admitted attempt, counted as a failure until it is forgiven.
#[derive(Debug)]
#[must_use = "an admitted attempt is settled with `settle`"]
pub struct Ticket {
    ip: String,
    pair: String,
    account: String,
    /// Counted in the account-wide window (the client was not known).
    account_wide: bool,
    at: Instant,
}

/// How an admitted attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The account was opened: forgive the attempt, clear this client's failures and remember it.
    Succeeded,
    /// Refused, but not for a failed proof: forgive the attempt.
    NotAGuess,
    /// A failed proof: it stays counted.
    Guess,
}

/// The key of a client address: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64, since one
/// machine commonly holds a whole /64.
pub fn client_key(ip: Option<IpAddr>) -> String {
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => "unknown".to_owned(),
    }
}

pub(crate) fn account_key(account: &str) -> String {
    account.chars().take(64).collect::<String>().to_lowercase()
}

pub(crate) fn pair_key(account: &str, ip: &str) -> String {
    format!("{account}\n{ip}")
}

impl LoginLimiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            state: Mutex::new(State {
                per_ip: Windows::new(limits.per_ip, limits.window),
                per_pair: Windows::new(limits.per_account_client, limits.window),
                per_account: Windows::new(limits.per_account, limits.window),
                known: HashMap::new(),
                logged: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `account` signed in from the client `ip` (a [`client_key`]) within [`KNOWN_FOR`].
    pub fn is_known(&self, account: &str, ip: &str, now: Instant) -> bool {
        self.lock()
            .known
            .get(&account_key(account))
            .is_some_and(|clients| {
                clients
                    .iter()
                    .any(|(c, at)| c == ip && now.saturating_duration_since(*at) < KNOWN_FOR)
            })
    }

    /// Admits and counts an attempt on `account` from the client `ip` (a [`client_key`]), or
    /// answers how long it must wait. `known`: the client signed in to this account before, so the
    /// account-wide window does not hold it.
    pub fn admit(&self, ip: &str, account: &str, known: bool, now: Instant) -> Result<Ticket, Duration> {
        let account = account_key(account);
        let pair = pair_key(&account, ip);
        let mut state = self.lock();
        let waits = [
            state.per_ip.blocked(ip, now),
            state.per_pair.blocked(&pair, now),
            if known {
                None
            } else {
                state.per_account.blocked(&account, now)
            },
        ];
        if let Some(wait) = waits.into_iter().flatten().max() {
            return Err(wait);
        }
        // The address's and the account's windows count the attempt now, so a burst cannot slip
        // past them. The (account, address) window counts it once it failed: one client's right
        // password sent on many connections at once (parallel SSH sessions) must not trip it, and
        // a burst of guesses is still held by the other two.
        state.per_ip.add(ip, now);
        if !known {
            state.per_account.add(&account, now);
        }
        Ok(Ticket {
            ip: ip.to_owned(),
            pair,
            account,
            account_wide: !known,
            at: now,
        })
    }

    /// Only the per-address window, unchanged: for proofs that cannot be guessed (a signed key
    /// offer), which a busy account must not hold up but a guessing address still may.
    pub fn check_ip(&self, ip: &str, now: Instant) -> Result<(), Duration> {
        self.lock().per_ip.blocked(ip, now).map_or(Ok(()), Err)
    }

    /// Settles an admitted attempt.
    pub fn settle(&self, ticket: Ticket, outcome: Outcome, now: Instant) {
        let mut state = self.lock();
        if outcome == Outcome::Guess {
            state.per_pair.add(&ticket.pair, now);
            return;
        }
        state.per_ip.remove(&ticket.ip, ticket.at);
        if ticket.account_wide {
            state.per_account.remove(&ticket.account, ticket.at);
        }
        if outcome == Outcome::NotAGuess {
            return;
        }
        state.per_pair.reset(&ticket.pair);
        remember(&mut state, &ticket.account, &ticket.ip, now);
    }

    /// Whether a refusal about load (the attempt was already limited, or every password check was
    /// busy) of `account` from the client `ip` should be written to the audit log: only when neither
    /// that address nor that account had one written within [`REFUSALS_LOGGED_EVERY`]. A flood of
    /// such attempts, from one address or spread over many at one account, then writes one event a
    /// minute instead of one per request; the limiter still answers every one.
    pub fn log_load_refusal(&self, account: &str, ip: &str, now: Instant) -> bool {
        let keys = [format!("ip\n{ip}"), format!("account\n{}", account_key(account))];
        let mut state = self.lock();
        let logged = &mut state.logged;
        if logged.len() >= SWEEP_AT {
            logged.retain(|_, at| now.saturating_duration_since(*at) < REFUSALS_LOGGED_EVERY);
        }
        let recent = |k: &String| {
            logged
                .get(k)
                .is_some_and(|at| now.saturating_duration_since(*at) < REFUSALS_LOGGED_EVERY)
        };
        if keys.iter().any(recent) {
            return false;
        }
        for k in keys {
            logged.insert(k, now);
        }
        true
    }

    /// Remembers a sign-in that did not pass through `admit` (a key login).
    pub fn remember(&self, account: &str, ip: &str, now: Instant) {
        remember(&mut self.lock(), &account_key(account), ip, now);
    }
}

fn remember(state: &mut State, account: &str, ip: &str, now: Instant) {
    if state.known.len() >= SWEEP_AT && !state.known.contains_key(account) {
        state.known.retain(|_, clients| {
            clients.retain(|(_, at)| now.saturating_duration_since(*at) < KNOWN_FOR);
            !clients.is_empty()
        });
    }
    let clients = state.known.entry(account.to_owned()).or_default();
    clients.retain(|(c, _)| c != ip);
    if clients.len() >= KNOWN_PER_ACCOUNT {
        // The least recently used goes.
        if let Some(oldest) = clients
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, at))| *at)
            .map(|(i, _)| i)
        {
            clients.swap_remove(oldest);
        }
    }
    clients.push((ip.to_owned(), now));
}

/// The sign-in limiter of an installation: in this process when it is the only one (SQLite), or in
/// the database every replica shares (PostgreSQL). The throttle on audit events of refusals stays
/// in the process either way.
#[derive(Debug)]
pub enum Limiter {
    Local(LoginLimiter),
    Shared {
        store: super::shared_limits::SharedLimiter,
        local: LoginLimiter,
    },
}

/// An admitted attempt, of either limiter.
#[derive(Debug)]
#[must_use = "an admitted attempt is settled with `settle`"]
pub enum Admitted {
    Local(Ticket),
    Shared(super::shared_limits::SharedTicket),
}

/// A limiter that cannot reach its database refuses, for a second, rather than let guesses through.
fn closed(e: &sqlx::Error) -> Duration {
    tracing::error!(error = %e, "the sign-in limiter cannot reach the database: refusing");
    Duration::from_secs(1)
}

impl Limiter {
    pub fn new(limits: Limits, db: &crate::db::Pool) -> Self {
        match db {
            crate::db::Pool::Sqlite(_) => Self::Local(LoginLimiter::new(limits)),
            crate::db::Pool::Postgres(_) => Self::Shared {
                store: super::shared_limits::SharedLimiter::new(db.clone(), limits),
                local: LoginLimiter::new(limits),
            },
        }
    }

    fn local(&self) -> &LoginLimiter {
        match self {
            Self::Local(l) | Self::Shared { local: l, .. } => l,
        }
    }

    /// As [`LoginLimiter::is_known`]. A database error reads as unknown.
    pub async fn is_known(&self, account: &str, ip: &str) -> bool {
        match self {
            Self::Local(l) => l.is_known(account, ip, Instant::now()),
            Self::Shared { store, .. } => store.is_known(account, ip).await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "the sign-in limiter cannot reach the database");
                false
            }),
        }
    }

    /// As [`LoginLimiter::admit`].
    pub async fn admit(&self, ip: &str, account: &str, known: bool) -> Result<Admitted, Duration> {
        match self {
            Self::Local(l) => l.admit(ip, account, known, Instant::now()).map(Admitted::Local),
            Self::Shared { store, .. } => match store.admit(ip, account, known).await {
                Ok(admitted) => admitted.map(Admitted::Shared),
                Err(e) => Err(closed(&e)),
            },
        }
    }

    /// As [`LoginLimiter::check_ip`].
    pub async fn check_ip(&self, ip: &str) -> Result<(), Duration> {
        match self {
            Self::Local(l) => l.check_ip(ip, Instant::now()),
            Self::Shared { store, .. } => store.check_ip(ip).await.unwrap_or_else(|e| Err(closed(&e))),
        }
    }

    /// As [`LoginLimiter::settle`].
    pub async fn settle(&self, admitted: Admitted, outcome: Outcome) {
        match (self, admitted) {
            (Self::Shared { store, .. }, Admitted::Shared(t)) => {
                if let Err(e) = store.settle(t, outcome).await {
                    tracing::error!(error = %e, "settling a sign-in attempt in the database failed");
                }
            }
            (_, Admitted::Local(t)) => self.local().settle(t, outcome, Instant::now()),
            (Self::Local(_), Admitted::Shared(_)) => {}
        }
    }

    /// As [`LoginLimiter::remember`].
    pub async fn remember(&self, account: &str, ip: &str) {
        match self {
            Self::Local(l) => l.remember(account, ip, Instant::now()),
            Self::Shared { store, .. } => {
                if let Err(e) = store.remember(account, ip).await {
                    tracing::error!(error = %e, "remembering a sign-in's client failed");
                }
            }
        }
    }

    /// As [`LoginLimiter::log_load_refusal`], in this process.
    pub fn log_load_refusal(&self, account: &str, ip: &str) -> bool {
        self.local().log_load_refusal(account, ip, Instant::now())
    }

    /// Deletes the shared limiter's expired rows (nothing to do in memory); rows deleted.
    pub async fn purge(&self) -> Result<u64, sqlx::Error> {
        match self {
            Self::Local(_) => Ok(0),
            Self::Shared { store, .. } => store.purge().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_ip: u32, pair: u32, account: u32) -> LoginLimiter {
        LoginLimiter::new(Limits {
            per_ip,
            per_account_client: pair,
            per_account: account,
            window: Duration::from_secs(60),
        })
    }

    fn fail(l: &LoginLimiter, ip: &str, account: &str, known: bool, now: Instant) -> Result<(), Duration> {
        l.admit(ip, account, known, now)
            .map(|t| l.settle(t, Outcome::Guess, now))
    }

    #[test]
    fn load_refusals_are_logged_once_a_minute_per_address_and_per_account() {
        let l = limiter(5, 5, 5);
        let t0 = Instant::now();
        assert!(l.log_load_refusal("ann", "10.0.0.1", t0));
        // The same address, whatever the account, and the same account, from anywhere: not again.
        assert!(!l.log_load_refusal("bob", "10.0.0.1", t0));
        assert!(!l.log_load_refusal("ANN", "10.0.0.2", t0));
        // Neither seen: logged.
        assert!(l.log_load_refusal("cid", "10.0.0.3", t0));
        // A minute on, again.
        let later = t0 + REFUSALS_LOGGED_EVERY;
        assert!(l.log_load_refusal("bob", "10.0.0.1", later));
    }

    #[test]
    fn a_window_blocks_after_max_and_recovers() {
        let l = limiter(3, 100, 100);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(fail(&l, "a", &format!("u{i}"), false, t0 + Duration::from_secs(i)).is_ok());
        }
        let wait = fail(&l, "a", "u9", false, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(fail(&l, "b", "u9", false, t0).is_ok());
        assert!(fail(&l, "a", "u9", false, t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn attempts_count_when_admitted_not_when_settled() {
        let l = limiter(3, 100, 100);
        let t0 = Instant::now();
        // Three in flight at once: the fourth is refused before any of them was settled.
        let tickets: Vec<_> = (0..3)
            .map(|_| l.admit("a", "alice", false, t0).unwrap())
            .collect();
        assert!(l.admit("a", "alice", false, t0).is_err());
        // One turns out right: its count is taken back, and one more may try.
        let mut tickets = tickets.into_iter();
        l.settle(tickets.next().unwrap(), Outcome::Succeeded, t0);
        let t = l.admit("a", "bob", false, t0).unwrap();
        l.settle(t, Outcome::NotAGuess, t0);
        for t in tickets {
            l.settle(t, Outcome::Guess, t0);
        }
        assert!(l.admit("a", "carol", false, t0).is_ok());
    }

    #[test]
    fn strangers_cannot_lock_the_owner_out() {
        let l = limiter(30, 5, 20);
        let t0 = Instant::now();
        // The owner signs in from .1.
        let t = l.admit("10.0.0.1", "alice", false, t0).unwrap();
        l.settle(t, Outcome::Succeeded, t0);
        assert!(l.is_known("Alice", "10.0.0.1", t0));
        // 50 guesses from 50 other addresses.
        let mut refused = 0;
        for i in 0..50 {
            if fail(&l, &format!("10.0.1.{i}"), "alice", false, t0).is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 30, "the account-wide window stops guessers past 20");
        // A guessing address, and any unknown one, is held; the owner's client is not.
        assert!(l.admit("10.0.1.7", "alice", false, t0).is_err());
        assert!(l.admit("10.0.2.1", "alice", false, t0).is_err());
        let known = l.is_known("alice", "10.0.0.1", t0);
        let t = l.admit("10.0.0.1", "alice", known, t0).unwrap();
        l.settle(t, Outcome::Succeeded, t0);
        // Five guesses from one address stop that address for this account, not for others.
        for _ in 0..5 {
            fail(&l, "10.0.3.1", "bob", false, t0).unwrap();
        }
        assert!(l.admit("10.0.3.1", "bob", false, t0).is_err());
        assert!(l.admit("10.0.3.1", "carol", false, t0).is_ok());
        assert!(l.admit("10.0.3.2", "bob", false, t0).is_ok());
    }

    #[test]
    fn a_known_client_that_guesses_is_still_held() {
        let l = limiter(30, 3, 20);
        let t0 = Instant::now();
        l.remember("alice", "10.0.0.1", t0);
        for _ in 0..3 {
            fail(&l, "10.0.0.1", "alice", true, t0).unwrap();
        }
        assert!(l.admit("10.0.0.1", "alice", true, t0).is_err());
        // Known clients are forgotten after a while.
        assert!(!l.is_known("alice", "10.0.0.1", t0 + KNOWN_FOR));
    }

    #[test]
    fn one_client_may_try_many_at_once() {
        let l = limiter(30, 3, 20);
        let t0 = Instant::now();
        let tickets: Vec<_> = (0..20)
            .map(|_| l.admit("10.0.0.1", "alice", false, t0).unwrap())
            .collect();
        // The account-wide window counts them in flight.
        assert!(l.admit("10.0.0.2", "alice", false, t0).is_err());
        for t in tickets {
            l.settle(t, Outcome::Succeeded, t0);
        }
        assert!(l.admit("10.0.0.2", "alice", false, t0).is_ok());
    }

    #[test]
    fn the_ip_check_alone_counts_nothing() {
        let l = limiter(2, 100, 100);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.check_ip("a", t0).is_ok());
        }
        fail(&l, "a", "x", false, t0).unwrap();
        fail(&l, "a", "y", false, t0).unwrap();
        assert!(l.check_ip("a", t0).is_err());
    }

    #[test]
    fn client_keys() {
        assert_eq!(client_key(Some("10.1.2.3".parse().unwrap())), "10.1.2.3");
        assert_eq!(client_key(Some("::ffff:10.1.2.3".parse().unwrap())), "10.1.2.3");
        assert_eq!(
            client_key(Some("2001:db8:1:2:aaaa::1".parse().unwrap())),
            client_key(Some("2001:db8:1:2:bbbb::9".parse().unwrap()))
        );
        assert_eq!(client_key(None), "unknown");
    }

    #[test]
    fn known_clients_per_account_are_bounded() {
        let l = limiter(30, 5, 20);
        let t0 = Instant::now();
        for i in 0..40u64 {
            l.remember("alice", &format!("10.0.0.{i}"), t0 + Duration::from_secs(i));
        }
        let now = t0 + Duration::from_secs(40);
        assert!(l.is_known("alice", "10.0.0.39", now));
        assert!(!l.is_known("alice", "10.0.0.0", now));
        assert_eq!(l.lock().known["alice"].len(), KNOWN_PER_ACCOUNT);
    }
}
