//! Sliding-window failure counting for sign-in attempts, per client IP and per account.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts failures per key; once `max` failures fall inside `window`, the key is blocked until the
/// oldest of them leaves the window.
#[derive(Debug)]
pub struct FailureWindow {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Keys kept before a sweep of the expired ones; bounds memory under a spray of random usernames.
const SWEEP_AT: usize = 50_000;

impl FailureWindow {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max.max(1),
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` while `key` is blocked.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Some(times) = entries.get_mut(key) else {
            return Ok(());
        };
        prune(times, now, self.window);
        if times.len() >= self.max as usize {
            let oldest = times.front().copied().unwrap_or(now);
            return Err((oldest + self.window).saturating_duration_since(now));
        }
        Ok(())
    }

    pub fn record_failure(&self, key: &str, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= SWEEP_AT {
            let window = self.window;
            entries.retain(|_, times| {
                prune(times, now, window);
                !times.is_empty()
            });
        }
        let times = entries.entry(key.to_owned()).or_default();
        prune(times, now, self.window);
        times.push_back(now);
    }

    pub fn reset(&self, key: &str) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
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

/// The two windows a sign-in passes through.
#[derive(Debug)]
pub struct LoginLimiter {
    pub per_ip: FailureWindow,
    pub per_account: FailureWindow,
}

impl LoginLimiter {
    pub fn new(max_per_ip: u32, max_per_account: u32, window: Duration) -> Self {
        Self {
            per_ip: FailureWindow::new(max_per_ip, window),
            per_account: FailureWindow::new(max_per_account, window),
        }
    }

    /// `Err(retry_after)` when either the IP or the account is blocked.
    pub fn check(&self, ip: &str, account: &str, now: Instant) -> Result<(), Duration> {
        let ip_wait = self.per_ip.check(ip, now).err();
        let account_wait = self.per_account.check(&account.to_lowercase(), now).err();
        match ip_wait.max(account_wait) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    pub fn failed(&self, ip: &str, account: &str, now: Instant) {
        self.per_ip.record_failure(ip, now);
        self.per_account.record_failure(&account.to_lowercase(), now);
    }

    pub fn succeeded(&self, account: &str) {
        self.per_account.reset(&account.to_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_and_recovers_after_window() {
        let w = FailureWindow::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(w.check("k", t0 + Duration::from_secs(i)).is_ok());
            w.record_failure("k", t0 + Duration::from_secs(i));
        }
        let wait = w.check("k", t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(w.check("other", t0).is_ok());
        assert!(w.check("k", t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn success_resets_the_account_but_not_the_ip() {
        let l = LoginLimiter::new(2, 2, Duration::from_secs(60));
        let t0 = Instant::now();
        l.failed("1.2.3.4", "Alice", t0);
        l.succeeded("alice");
        l.failed("1.2.3.4", "alice", t0);
        assert!(l.check("9.9.9.9", "ALICE", t0).is_ok());
        assert!(l.check("1.2.3.4", "bob", t0).is_err());
    }
}
