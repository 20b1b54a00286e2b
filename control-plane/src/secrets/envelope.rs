//! The sealed form of one secret: ChaCha20-Poly1305 under the key file's key, tagged with that key's id
//! so that a rotation can tell which rows it has already moved, and bound to its column so that a value
//! copied into another column does not open.
//!
//! Text form: `ccp1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

/// Length of a key in the key file, in bytes.
pub const KEY_LEN: usize = 32;
const PREFIX: &str = "ccp1.";
const NONCE_LEN: usize = 12;

/// Why a sealed value did not open.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the value is not sealed")]
    NotSealed,
    #[error("the value was sealed under key {found}, not under the current key {expected}")]
    WrongKey { found: String, expected: String },
    #[error("the sealed value is damaged or belongs to another column")]
    Damaged,
}

/// One secrets key and its id. `Debug` shows only the id.
#[derive(Clone)]
pub struct SecretsKey {
    id: String,
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Two keys are equal when their ids are: the id is a digest of the key.
impl PartialEq for SecretsKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for SecretsKey {}

impl SecretsKey {
    pub fn new(bytes: &[u8; KEY_LEN]) -> Self {
        // The id is a digest of the key, so no bookkeeping can let it disagree with the key itself.
        let digest = Sha256::new_with_prefix(b"cloud-cli-proxy secrets key id\0")
            .chain_update(bytes)
            .finalize();
        Self {
            id: hex::encode(&digest[..6]),
            cipher: ChaCha20Poly1305::new(Key::from_slice(bytes)),
        }
    }

    /// The key id written into every value it seals.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plain` for the column `field` (e.g. `hosts.vnc_secret`) with a fresh random nonce.
    pub fn seal(&self, field: &str, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        self.seal_with_nonce(field, plain, nonce)
    }

    /// [`seal`](Self::seal) with the nonce given, so tests can fix it.
    fn seal_with_nonce(&self, field: &str, plain: &str, nonce: [u8; NONCE_LEN]) -> String {
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: field.as_bytes(),
        };
        // Encryption in memory fails only past ChaCha20's 256 GiB message limit, far above any column.
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut body = Vec::with_capacity(NONCE_LEN + sealed.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&sealed);
        format!("{PREFIX}{}.{}", self.id, URL_SAFE_NO_PAD.encode(body))
    }

    /// Opens a value this key sealed for `field`.
    pub fn open(&self, field: &str, sealed: &str) -> Result<String, OpenError> {
        let (id, body) = split(sealed).ok_or(OpenError::NotSealed)?;
        if id != self.id {
            return Err(OpenError::WrongKey {
                found: id.to_owned(),
                expected: self.id.clone(),
            });
        }
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| OpenError::Damaged)?;
        if body.len() < NONCE_LEN {
            return Err(OpenError::Damaged);
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: field.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Damaged)?;
        String::from_utf8(plain).map_err(|_| OpenError::Damaged)
    }
}

/// The key id of a sealed value; `None` for a value stored before sealing existed (plain text).
pub fn key_id_of(value: &str) -> Option<&str> {
    split(value).map(|(id, _)| id)
}

fn split(value: &str) -> Option<(&str, &str)> {
    let rest = value.strip_prefix(PREFIX)?;
    let (id, body) = rest.split_once('.')?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some((id, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELD: &str = "egress_ips.wg_private_key";

    fn key(fill: u8) -> SecretsKey {
        SecretsKey::new(&[fill; KEY_LEN])
    }

    #[test]
    fn sealed_values_open_to_what_went_in_and_hide_it() {
        let k = key(7);
        for plain in [
            "",
            "x",
            "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
            "ünïcødé {\"password\":\"p\"}",
        ] {
            let sealed = k.seal(FIELD, plain);
            assert!(sealed.starts_with(&format!("ccp1.{}.", k.id())), "{sealed}");
            // Short ones can turn up in base64 by chance; a key or a password cannot.
            if plain.len() > 8 {
                assert!(!sealed.contains(plain), "{sealed}");
            }
            assert_eq!(k.open(FIELD, &sealed).as_deref(), Ok(plain));
            assert_eq!(key_id_of(&sealed), Some(k.id()));
        }
    }

    #[test]
    fn fresh_nonces_make_equal_secrets_look_different() {
        let k = key(7);
        assert_ne!(k.seal(FIELD, "same"), k.seal(FIELD, "same"));
        assert_eq!(
            k.seal_with_nonce(FIELD, "same", [1; 12]),
            k.seal_with_nonce(FIELD, "same", [1; 12])
        );
    }

    #[test]
    fn what_does_not_open() {
        let k = key(7);
        let sealed = k.seal_with_nonce(FIELD, "secret", [3; 12]);
        let (head, body) = sealed.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(body).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&bytes));
        let mut nonce_flipped = URL_SAFE_NO_PAD.decode(body).unwrap();
        nonce_flipped[0] ^= 1;
        let nonce_flipped = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&nonce_flipped));
        let other = key(8);
        let under_other = other.seal(FIELD, "secret");
        let cases: Vec<(&str, String, OpenError)> = vec![
            ("tampered ciphertext", tampered, OpenError::Damaged),
            ("tampered nonce", nonce_flipped, OpenError::Damaged),
            ("truncated", format!("{head}.AAAA"), OpenError::Damaged),
            ("not base64", format!("{head}.!!!"), OpenError::Damaged),
            ("plain text", "secret".into(), OpenError::NotSealed),
            ("bad key id", "ccp1.zz.AAAA".into(), OpenError::NotSealed),
            (
                "another key",
                under_other,
                OpenError::WrongKey {
                    found: other.id().to_owned(),
                    expected: k.id().to_owned(),
                },
            ),
        ];
        for (name, value, want) in cases {
            assert_eq!(k.open(FIELD, &value), Err(want), "{name}");
        }
        // Moved into another column: the column is authenticated too.
        assert_eq!(k.open("hosts.vnc_secret", &sealed), Err(OpenError::Damaged));
    }

    #[test]
    fn a_key_id_claimed_by_another_key_still_does_not_open() {
        let k = key(7);
        let other = key(8);
        let forged = other.seal(FIELD, "secret").replacen(other.id(), k.id(), 1);
        assert_eq!(k.open(FIELD, &forged), Err(OpenError::Damaged));
    }

    #[test]
    fn key_ids_differ_per_key_and_debug_hides_the_key() {
        assert_ne!(key(1).id(), key(2).id());
        assert_eq!(key(1).id(), key(1).id());
        assert_eq!(key(1).id().len(), 12);
        assert!(!format!("{:?}", key(1)).contains("cipher"));
    }

    #[test]
    fn plain_values_have_no_key_id() {
        assert_eq!(key_id_of("{\"type\":\"socks\"}"), None);
        assert_eq!(key_id_of("ccp1."), None);
        assert_eq!(key_id_of(""), None);
    }
}
