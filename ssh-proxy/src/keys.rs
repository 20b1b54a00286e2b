//! The gateway's two persistent keys: the SSH host key clients pin, and the client key the gateway
//! logs in to hosts' sshd with (installed in every host by the control plane). Both ed25519, kept
//! as OpenSSH private key files (mode 0600) in the state directory and created on first start.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::RngCore as _;
use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};

pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
pub const CLIENT_KEY_FILE: &str = "gateway_client_ed25519_key";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an OpenSSH private key: {source}")]
    Parse {
        path: PathBuf,
        source: russh::keys::Error,
    },
    #[error("cannot encode a new key: {0}")]
    Encode(#[from] russh::keys::ssh_key::Error),
}

/// The gateway's keys, loaded or created.
#[derive(Clone)]
pub struct Keys {
    pub host: Arc<PrivateKey>,
    pub client: Arc<PrivateKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field(
                "host",
                &self.host.public_key().fingerprint(Default::default()).to_string(),
            )
            .field(
                "client",
                &self
                    .client
                    .public_key()
                    .fingerprint(Default::default())
                    .to_string(),
            )
            .finish()
    }
}

impl Keys {
    /// Loads both keys from `dir`, creating the directory (0700) and any missing key.
    pub fn load_or_create(dir: &Path) -> Result<Self, Error> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| Error::Io {
                action: "create",
                path: dir.to_owned(),
                source,
            })?;
        Ok(Self {
            host: Arc::new(load_or_create(
                &dir.join(HOST_KEY_FILE),
                "cloud-cli-proxy ssh gateway host key",
            )?),
            client: Arc::new(load_or_create(
                &dir.join(CLIENT_KEY_FILE),
                "cloud-cli-proxy-gateway",
            )?),
        })
    }

    /// The client key as an `authorized_keys` line.
    pub fn client_public_line(&self) -> Result<String, Error> {
        Ok(self.client.public_key().to_openssh()?)
    }

    /// OpenSSH line of the host key (what SSH clients see).
    pub fn host_public_line(&self) -> Result<String, Error> {
        Ok(self.host.public_key().to_openssh()?)
    }
}

fn load_or_create(path: &Path, comment: &str) -> Result<PrivateKey, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => russh::keys::decode_secret_key(&text, None).map_err(|source| Error::Parse {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = generate(comment)?;
            let text = key.to_openssh(LineEnding::LF)?;
            write_private(path, text.as_bytes())?;
            tracing::info!(path = %path.display(), "created a new key");
            Ok(key)
        }
        Err(source) => Err(Error::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

fn generate(comment: &str) -> Result<PrivateKey, Error> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let pair = Ed25519Keypair::from_seed(&seed);
    Ok(PrivateKey::new(KeypairData::Ed25519(pair), comment)?)
}

/// Writes a new file with mode 0600 under a temporary name, then renames it into place, so that a
/// crash never leaves a truncated key that would stop the next start.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |action, source| Error::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("create", e))?;
    f.write_all(bytes).map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("sync", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("rename", e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn keys_persist_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let first = Keys::load_or_create(&dir.path().join("state")).unwrap();
        let again = Keys::load_or_create(&dir.path().join("state")).unwrap();
        assert_eq!(first.host.public_key(), again.host.public_key());
        assert_eq!(first.client.public_key(), again.client.public_key());
        assert_ne!(first.host.public_key(), first.client.public_key());
        let mode = std::fs::metadata(dir.path().join("state").join(HOST_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(first.client_public_line().unwrap().starts_with("ssh-ed25519 "));
    }
}
