//! The key file: exactly 32 random bytes, owned by the service user and readable by nobody else.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use super::envelope::{KEY_LEN, SecretsKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("secrets key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secrets key file {path} is readable or writable by others (mode {mode:o}): chmod 600 it")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("secrets key file {path} holds {len} bytes, not {KEY_LEN}: it is not a key this program wrote")]
    WrongLength { path: PathBuf, len: u64 },
    #[error("secrets key file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("secrets key file {path} is in use: {holder}")]
    InUse { path: PathBuf, holder: &'static str },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads the key at `path`, refusing a file others may read or one of the wrong length.
pub fn load(path: &Path) -> Result<SecretsKey, KeyFileError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(io(path)(e)),
    };
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(KeyFileError::WrongLength {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let bytes = fs::read(path).map_err(io(path))?;
    let key: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| KeyFileError::WrongLength {
        path: path.to_owned(),
        len: b.len() as u64,
    })?;
    Ok(SecretsKey::new(&key))
}

/// [`load`], first writing a new random key when no file exists. Returns whether it was created.
pub fn load_or_create(path: &Path) -> Result<(SecretsKey, bool), KeyFileError> {
    match load(path) {
        Ok(key) => Ok((key, false)),
        Err(KeyFileError::Missing { .. }) => {
            write_new(path, &generate())?;
            Ok((load(path)?, true))
        }
        Err(e) => Err(e),
    }
}

pub fn generate() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    key
}

/// Writes `key` to a file that must not exist yet, mode 0600, flushed to disk before returning.
pub fn write_new(path: &Path, key: &[u8; KEY_LEN]) -> Result<(), KeyFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(key).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    sync_dir(path)
}

/// Gives `to` the owner and group of `from`.
pub fn copy_owner(from: &Path, to: &Path) -> Result<(), KeyFileError> {
    let meta = fs::metadata(from).map_err(io(from))?;
    std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid())).map_err(io(to))
}

/// Flushes the directory entry of `path`, so a rename or creation survives a crash.
pub fn sync_dir(path: &Path) -> Result<(), KeyFileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// A lock on the key file held for as long as the returned file is open. Servers share it; a
/// rotation needs it alone, so it never runs under a server still holding the old key, and a server
/// never starts in the middle of one.
pub fn lock(path: &Path, exclusive: bool) -> Result<fs::File, KeyFileError> {
    let file = fs::File::open(path).map_err(io(path))?;
    let taken = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match taken {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(KeyFileError::InUse {
            path: path.to_owned(),
            holder: if exclusive {
                "a control plane is running with it: stop it first"
            } else {
                "rotate-secrets-key is running"
            },
        }),
        Err(fs::TryLockError::Error(e)) => Err(io(path)(e)),
    }
}

/// Where a rotation keeps the next key until the database is moved onto it.
pub fn pending_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn created_once_with_mode_0600_then_loaded_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secrets.key");
        let (first, created) = load_or_create(&path).unwrap();
        assert!(created);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.id(), again.id());
    }

    #[test]
    fn wider_modes_and_wrong_lengths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        write_new(&path, &[9; KEY_LEN]).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = load_or_create(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::TooOpen { .. }), "{mode:o}: {err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load(&path).is_ok());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        for len in [0usize, 31, 33, 64] {
            fs::write(&path, vec![1u8; len]).unwrap();
            let err = load_or_create(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::WrongLength { .. }), "{len}: {err}");
        }
    }

    #[test]
    fn servers_share_the_lock_and_a_rotation_needs_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        write_new(&path, &[1; KEY_LEN]).unwrap();
        let server = lock(&path, false).unwrap();
        let replica = lock(&path, false).unwrap();
        assert!(matches!(lock(&path, true), Err(KeyFileError::InUse { .. })));
        drop((server, replica));
        let rotation = lock(&path, true).unwrap();
        assert!(matches!(lock(&path, false), Err(KeyFileError::InUse { .. })));
        drop(rotation);
        assert!(lock(&path, false).is_ok());
    }

    #[test]
    fn write_new_never_replaces_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        write_new(&path, &[1; KEY_LEN]).unwrap();
        assert!(write_new(&path, &[2; KEY_LEN]).is_err());
        assert_eq!(fs::read(&path).unwrap(), vec![1; KEY_LEN]);
        assert_eq!(pending_path(&path), dir.path().join("secrets.key.new"));
    }
}
