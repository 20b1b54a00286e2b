//! Secrets at rest: the values the database must not hold in clear (WireGuard private and preshared
//! keys, proxy configurations with their passwords, hosts' VNC secrets, accounts' TOTP secrets) are
//! sealed under the key in the secrets key file, and opened only where they are used: handed to an
//! agent, checking a second-factor code, or read to mask them for the API.

pub mod envelope;
pub mod keyfile;
pub mod reseal;

use std::path::{Path, PathBuf};

pub use envelope::{OpenError, SecretsKey};
pub use keyfile::KeyFileError;
pub use reseal::ResealError;

/// The AAD of each sealed column: a value only opens in the column it was sealed for.
pub mod field {
    pub const EGRESS_WG_PRIVATE_KEY: &str = "egress_ips.wg_private_key";
    pub const EGRESS_WG_PRESHARED_KEY: &str = "egress_ips.wg_preshared_key";
    pub const EGRESS_PROXY_CONFIG: &str = "egress_ips.proxy_config";
    pub const BINDING_WG_PRIVATE_KEY: &str = "bindings.wg_private_key";
    pub const HOST_VNC_SECRET: &str = "hosts.vnc_secret";
    pub const USER_TOTP_SECRET: &str = "users.totp_secret";
}

/// A secret as stored: sealed text that needs the key to open. Keeping it a type of its own means a
/// sealed value can never be used where the secret itself is expected.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::Type)]
#[sqlx(transparent)]
pub struct Sealed(String);

impl Sealed {
    pub fn seal(key: &SecretsKey, field: &str, plain: &str) -> Self {
        Self(key.seal(field, plain))
    }

    pub fn open(&self, key: &SecretsKey, field: &str) -> Result<String, OpenError> {
        key.open(field, &self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error(transparent)]
    Reseal(#[from] ResealError),
    #[error(
        "secrets key file {path} does not exist, but the database holds secrets sealed under key \
         {key_id}: put back the key file that belongs with it (backups keep it beside the .db.gz)"
    )]
    MissingKey { path: PathBuf, key_id: String },
    #[error(
        "{pending} is left from an interrupted rotation and is not a usable key ({source}); \
         move it away and start again"
    )]
    Pending {
        pending: PathBuf,
        #[source]
        source: KeyFileError,
    },
}

/// At start: loads the key (creating it on the very first start), rolls back a rotation that was
/// interrupted, and seals any secret an older version stored in clear. Refuses to go on when a secret
/// is under a key it does not have, so a database restored without its key file fails loudly here
/// rather than at the first tunnel.
pub async fn prepare(db: &crate::db::Pool, path: &Path) -> Result<Prepared, Error> {
    // A fresh key for a database that already holds sealed values would open none of them: say so
    // instead of making one.
    if let Err(KeyFileError::Missing { .. }) = keyfile::load(path)
        && let Some(key_id) = reseal::first_key_id(db).await?
    {
        return Err(Error::MissingKey {
            path: path.to_owned(),
            key_id,
        });
    }
    let (key, created) = keyfile::load_or_create(path)?;
    let lock = keyfile::lock(path, false)?;
    if created {
        tracing::info!(path = %path.display(), key_id = key.id(), "created the secrets key file");
    }
    let pending = keyfile::pending_path(path);
    let retiring = match keyfile::load(&pending) {
        Ok(next) => vec![next],
        Err(KeyFileError::Missing { .. }) => Vec::new(),
        Err(source) => return Err(Error::Pending { pending, source }),
    };
    let done = reseal::reseal(db, &key, &retiring).await?;
    if !retiring.is_empty() {
        // The rotation stopped before its new key was moved into place: every row is back under
        // the key file's key, so the half-made key is no longer needed (a replica starting at the
        // same moment may have removed it already).
        match std::fs::remove_file(&pending) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KeyFileError::Io {
                    path: pending.clone(),
                    source,
                }
                .into());
            }
        }
        tracing::warn!(
            moved = done.moved,
            "rolled back an interrupted secrets key rotation; run rotate-secrets-key again"
        );
    }
    if done.sealed > 0 {
        tracing::info!(
            sealed = done.sealed,
            key_id = key.id(),
            "sealed secrets stored in clear"
        );
    }
    Ok(Prepared { key, _lock: lock })
}

/// The key a server runs with, and its shared lock on the key file (released when dropped).
#[derive(Debug)]
pub struct Prepared {
    pub key: SecretsKey,
    _lock: std::fs::File,
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub old_key_id: String,
    pub new_key_id: String,
    pub moved: u64,
}

/// Replaces the key: a new one is written beside the file (`<file>.new`), every secret is moved onto
/// it in one transaction, and then it takes the file's place. The control plane must be stopped:
/// a running one still holds the old key (and its lock on the key file, so this refuses). A crash before the last step is rolled back by the next
/// start ([`prepare`]); after it, the old key is gone and nothing needs it.
pub async fn rotate(db: &crate::db::Pool, path: &Path) -> Result<Rotated, Error> {
    let old = keyfile::load(path)?;
    // Held to the end: no server runs with the old key meanwhile, and none starts half-way.
    let _alone = keyfile::lock(path, true)?;
    // Plain values an older version left are sealed under the old key first, so one pass below moves all.
    reseal::reseal(db, &old, &[]).await?;
    let pending = keyfile::pending_path(path);
    keyfile::write_new(&pending, &keyfile::generate())?;
    // Run as root, the new file would be root's: it takes the owner of the key it replaces, so the
    // service can still read it.
    keyfile::copy_owner(path, &pending)?;
    let new = keyfile::load(&pending)?;
    let done = reseal::reseal(db, &new, std::slice::from_ref(&old)).await?;
    std::fs::rename(&pending, path).map_err(|source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    keyfile::sync_dir(path)?;
    Ok(Rotated {
        old_key_id: old.id().to_owned(),
        new_key_id: new.id().to_owned(),
        moved: done.moved,
    })
}
