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

/// Whether `password` matches `phc`, computed in `memory` (reused from check to check, so a
/// thread that checks passwords keeps one block instead of the allocator keeping several); a hash
/// whose parameters need more memory than `memory` holds is checked the ordinary way.
pub fn verify_in(memory: &mut Vec<argon2::Block>, password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed))
    else {
        return false;
    };
    let version = parsed
        .version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .unwrap_or(Version::V0x13);
    if params.block_count() > memory.len() {
        if params.block_count() > CHECK_BLOCKS {
            return verify(password, phc);
        }
        memory.resize(params.block_count(), argon2::Block::default());
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt,
        &mut out,
        &mut memory[..blocks],
    );
    computed.is_ok()
        && out
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Blocks (1 KiB each) of the parameters [`hasher`] uses.
const CHECK_BLOCKS: usize = 19 * 1024;

/// Whether `password` matches `phc`. A malformed stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Hashes on a thread of its own, one password at a time, so request threads stay free. For
/// callers that are already signed in (creating users and hosts, changing passwords); every
/// unauthenticated check goes through a [`Verifier`].
///
/// Not on the blocking pool: the allocator keeps each freed 19 MiB block in the arena of the
/// thread that used it, and hashes spread over the pool's many threads left one block behind per
/// thread — about 8 MiB of the control plane's memory per host created, 930 MiB after 100 hosts.
/// One thread keeps at most one block.
pub async fn hash_async(password: String) -> Result<String, HashError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    hashing_thread()?
        .send(HashJob { password, answer })
        .map_err(|_| HashError("the hashing thread is gone".into()))?;
    answered
        .await
        .map_err(|_| HashError("the hashing thread is gone".into()))?
}

struct HashJob {
    password: String,
    answer: tokio::sync::oneshot::Sender<Result<String, HashError>>,
}

/// The hashing thread's inbox, started on first use.
fn hashing_thread() -> Result<&'static std::sync::mpsc::Sender<HashJob>, HashError> {
    static INBOX: std::sync::OnceLock<Option<std::sync::mpsc::Sender<HashJob>>> = std::sync::OnceLock::new();
    INBOX
        .get_or_init(|| {
            let (jobs, inbox) = std::sync::mpsc::channel::<HashJob>();
            let spawned = std::thread::Builder::new()
                .name("password-hash".into())
                .spawn(move || {
                    while let Ok(job) = inbox.recv() {
                        let _ = job.answer.send(hash(&job.password));
                    }
                });
            match spawned {
                Ok(_) => Some(jobs),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the password-hash thread");
                    None
                }
            }
        })
        .as_ref()
        .ok_or_else(|| HashError("no password-hash thread".into()))
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
///
/// The checks run on `slots` threads of their own rather than the blocking pool: the allocator
/// keeps a freed 19 MiB block in the arena of the thread that used it, so checks spread over the
/// blocking pool's many threads would leave one block behind per thread (hundreds of MiB after a
/// burst); on a fixed set of threads the blocks kept are at most `slots`.
#[derive(Debug)]
pub struct Verifier {
    slots: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    queue: usize,
    deadline: std::time::Duration,
    jobs: std::sync::mpsc::SyncSender<Job>,
}

struct Job {
    password: String,
    hashes: Vec<String>,
    answer: tokio::sync::oneshot::Sender<bool>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Verifier {
    pub fn new(slots: usize, queue: usize, deadline: std::time::Duration) -> Self {
        let slots = slots.max(1);
        let (jobs, inbox) = std::sync::mpsc::sync_channel::<Job>(slots);
        let inbox = std::sync::Arc::new(std::sync::Mutex::new(inbox));
        for i in 0..slots {
            let inbox = inbox.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        let job = match inbox.lock() {
                            Ok(inbox) => inbox.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let matched = job
                            .hashes
                            .iter()
                            .any(|h| verify_in(&mut memory, &job.password, h));
                        let _ = job.answer.send(matched);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-check thread");
            }
        }
        Self {
            slots: tokio::sync::Semaphore::new(slots),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            queue,
            deadline,
            jobs,
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
        let (answer, answered) = tokio::sync::oneshot::channel();
        // Holding a permit, a thread is free: the channel (as long as the slots) never blocks.
        let sent = self.jobs.try_send(Job {
            password,
            hashes,
            answer,
        });
        let matched = match sent {
            Ok(()) => answered.await.unwrap_or(false),
            Err(_) => return Err(busy),
        };
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_from_many_tasks_all_come_back_right() {
        let all: Vec<_> = (0..4)
            .map(|i| tokio::spawn(async move { (i, hash_async(format!("pw-{i}")).await) }))
            .collect();
        for task in all {
            let (i, hashed) = task.await.unwrap();
            let h = hashed.unwrap();
            assert!(verify(&format!("pw-{i}"), &h), "{i}");
            assert!(!verify(&format!("pw-{}", i + 1), &h), "{i}");
        }
    }

    #[tokio::test]
    async fn the_verifier_bounds_how_many_check_at_once() {
        let h = hash("right").unwrap();
        let v = std::sync::Arc::new(Verifier::new(1, 2, std::time::Duration::from_secs(30)));
        assert_eq!(
            v.verify("right".into(), vec!["junk".into(), h.clone()]).await,
            Ok(true)
        );
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
    fn verifying_in_reused_memory_agrees() {
        let h = hash("correct horse").unwrap();
        let mut memory = Vec::new();
        for _ in 0..2 {
            assert!(verify_in(&mut memory, "correct horse", &h));
            assert!(!verify_in(&mut memory, "wrong horse", &h));
        }
        assert_eq!(memory.len(), CHECK_BLOCKS);
        assert!(!verify_in(&mut memory, "x", "not-a-hash"));
        // Other parameters (a hash made elsewhere) still verify.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(verify_in(&mut memory, "pw", &small));
        assert!(!verify_in(&mut memory, "pX", &small));
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
