//! Password hashing (argon2id) and generation.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng;
use rand::distributions::Alphanumeric;

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

fn hasher() -> Argon2<'static> {
    // OWASP's first recommended argon2id setting: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// PHC-string argon2id hash of `password`. CPU-heavy: call from a blocking thread.
pub fn hash(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches `phc`. A malformed stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Hashes on the blocking pool so request threads stay free. Unbounded: for callers that are
/// already signed in; every unauthenticated check goes through a [`Verifier`].
pub async fn hash_async(password: String) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| HashError(e.to_string()))?
}

/// All of the hashing slots stayed taken for the queue's whole deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every password check slot is busy")]
pub struct Busy {
    pub retry_after: std::time::Duration,
}

/// Runs password checks a few at a time. Each argon2id check holds 19 MiB for its whole run, so
/// `slots` of them bound the memory that sign-ins can take, whatever the number of requests; a
/// check waits for a slot up to `deadline`, and at most `queue` checks wait at once — past
/// either, the sign-in is answered 429 at once instead of piling up.
#[derive(Debug)]
pub struct Verifier {
    slots: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    queue: usize,
    deadline: std::time::Duration,
}

/// Memory one argon2id check takes, in bytes (the `m` parameter of [`hasher`]).
pub const CHECK_MEMORY: u64 = 19 * 1024 * 1024;

impl Verifier {
    pub fn new(slots: usize, queue: usize, deadline: std::time::Duration) -> Self {
        Self {
            slots: tokio::sync::Semaphore::new(slots.max(1)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            queue,
            deadline,
        }
    }

    /// Whether `password` matches any of `hashes` (checked in order on one slot, so an SSH
    /// password tried against the account's and the host's own hash still costs one slot).
    pub async fn verify(&self, password: String, hashes: Vec<String>) -> Result<bool, Busy> {
        use std::sync::atomic::Ordering;
        let busy = Busy {
            retry_after: self.deadline.max(std::time::Duration::from_secs(1)),
        };
        let permit = match self.slots.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(busy);
                }
                let waited = tokio::time::timeout(self.deadline, self.slots.acquire()).await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                match waited {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(busy),
                }
            }
        };
        let matched = tokio::task::spawn_blocking(move || hashes.iter().any(|h| verify(&password, h)))
            .await
            .unwrap_or(false);
        drop(permit);
        Ok(matched)
    }
}

/// crypt(3) SHA-512 hash (`$6$…`) of `password`, the form Linux accounts take, so a host container
/// gets the password without ever seeing it in clear.
pub fn crypt_sha512(password: &str) -> Result<String, HashError> {
    let params =
        sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT).map_err(|e| HashError(format!("{e:?}")))?;
    sha_crypt::sha512_simple(password, &params).map_err(|e| HashError(format!("{e:?}")))
}

/// A random password of `len` letters and digits.
pub fn generate(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A syntactically valid hash of a random password, verified against when the account does not exist
/// so that an unknown username costs the same time as a wrong password.
pub fn decoy_hash() -> String {
    hash(&generate(24)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(!verify("correct horse", "not-a-hash"));
    }

    #[tokio::test]
    async fn the_verifier_bounds_how_many_check_at_once() {
        let h = hash("right").unwrap();
        let v = std::sync::Arc::new(Verifier::new(1, 2, std::time::Duration::from_secs(30)));
        assert_eq!(v.verify("right".into(), vec!["junk".into(), h.clone()]).await, Ok(true));
        assert_eq!(v.verify("wrong".into(), vec![h.clone()]).await, Ok(false));
        // One slot, two waiting at most: of ten at once, seven are turned away without waiting.
        let all: Vec<_> = (0..10)
            .map(|_| {
                let (v, h) = (v.clone(), h.clone());
                tokio::spawn(async move { v.verify("wrong".into(), vec![h]).await })
            })
            .collect();
        let mut busy = 0;
        for r in all {
            if r.await.unwrap().is_err() {
                busy += 1;
            }
        }
        assert_eq!(busy, 7);
        // A deadline shorter than a check: the waiter gives up.
        let v = std::sync::Arc::new(Verifier::new(1, 8, std::time::Duration::from_millis(1)));
        let first = {
            let (v, h) = (v.clone(), h.clone());
            tokio::spawn(async move { v.verify("wrong".into(), vec![h]).await })
        };
        tokio::task::yield_now().await;
        let second = v.verify("wrong".into(), vec![h]).await;
        assert_eq!(first.await.unwrap(), Ok(false));
        assert!(second.is_err());
    }

    #[test]
    fn crypt_hashes_verify() {
        let h = crypt_sha512("s3cret-pass").unwrap();
        assert!(h.starts_with("$6$"));
        assert!(sha_crypt::sha512_check("s3cret-pass", &h).is_ok());
        assert!(sha_crypt::sha512_check("other", &h).is_err());
    }

    #[test]
    fn generated_passwords_have_the_asked_length() {
        let p = generate(20);
        assert_eq!(p.len(), 20);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
