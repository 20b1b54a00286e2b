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

/// Hashes on the blocking pool so request threads stay free.
pub async fn hash_async(password: String) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| HashError(e.to_string()))?
}

pub async fn verify_async(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || verify(&password, &phc))
        .await
        .unwrap_or(false)
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
