//! How many long-lived connections (desktop and terminal WebSockets, task-progress event streams)
//! one account holds open at once in this process. Each one pins a relay task, an upstream socket
//! or a broadcast receiver for as long as the browser keeps it, so without a cap one account (or
//! one stolen token) could hold the process's memory and file descriptors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::ApiError;

/// Seconds a refused client is told to wait: long enough for a closed tab to let go.
const RETRY_AFTER_SECS: u64 = 5;

/// The open live connections of every account.
#[derive(Debug)]
pub struct LiveConnections {
    per_user: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open live connection; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<LiveConnections>,
    user_id: String,
}

impl LiveConnections {
    /// `per_user` connections per account; 0 is read as 1, since none at all would turn the
    /// dashboard's desktop and terminal off rather than bound them.
    pub fn new(per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            per_user: per_user.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for `user_id`, or answers 429 `too_many_connections` with `Retry-After`.
    pub fn open(self: &Arc<Self>, user_id: &str) -> Result<Slot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(user_id.to_owned()).or_insert(0);
        if *count >= self.per_user {
            return Err(too_many(self.per_user));
        }
        *count += 1;
        Ok(Slot {
            owner: Arc::clone(self),
            user_id: user_id.to_owned(),
        })
    }

    /// Connections `user_id` holds open now.
    pub fn count(&self, user_id: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(user_id).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
            // Accounts with nothing open take no memory.
            if *count == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

fn too_many(limit: usize) -> ApiError {
    ApiError {
        retry_after_secs: Some(RETRY_AFTER_SECS),
        ..ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            format!(
                "this account already holds {limit} desktop, terminal and progress connections open \
                 (MAX_LIVE_CONNECTIONS_PER_USER); close one and retry"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_account_is_refused_and_others_are_not() {
        let live = LiveConnections::new(2);
        let a1 = live.open("alice").unwrap();
        let _a2 = live.open("alice").unwrap();
        let refused = live.open("alice").unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.code, "too_many_connections");
        assert_eq!(refused.retry_after_secs, Some(RETRY_AFTER_SECS));
        // Another account has its own allowance.
        let _b = live.open("bob").unwrap();
        // Closing one frees its slot.
        drop(a1);
        assert_eq!(live.count("alice"), 1);
        let _a3 = live.open("alice").unwrap();
        assert!(live.open("alice").is_err());
    }

    #[test]
    fn accounts_with_nothing_open_are_forgotten() {
        let live = LiveConnections::new(3);
        drop(live.open("carol").unwrap());
        assert_eq!(live.count("carol"), 0);
        assert!(live.open.lock().unwrap().is_empty());
    }

    #[test]
    fn zero_means_one() {
        let live = LiveConnections::new(0);
        let _one = live.open("dave").unwrap();
        assert!(live.open("dave").is_err());
    }
}
