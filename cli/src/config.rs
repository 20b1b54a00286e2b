//! Where the CLI keeps its sign-in: `$XDG_CONFIG_HOME/cloud-cli-proxy/credentials.json` (else
//! `~/.config/…`), the directory 0700 and the file 0600, written whole through a rename so a
//! reader never sees half a file. `CLOUD_CLI_PROXY_URL` and `CLOUD_CLI_PROXY_TOKEN` override it.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What `login` stores.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub url: String,
    pub token: String,
    pub username: String,
    /// `admin` or `user`: picks `/v1/admin/…` or `/v1/user/…`.
    pub role: String,
    pub expires_at: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("token", &"********")
            .field("username", &self.username)
            .field("role", &self.role)
            .finish()
    }
}

/// The directory of the CLI's files.
pub fn dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::local("no_home", "HOME is not set: cannot find the configuration"))?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("cloud-cli-proxy"))
}

fn file() -> Result<PathBuf> {
    Ok(dir()?.join("credentials.json"))
}

/// The stored sign-in, if any.
pub fn load() -> Result<Option<Credentials>> {
    let path = file()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::local("config", format!("{}: {e}", path.display()))),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::local(
            "config",
            format!("{}: {e} (run `cloud-cli-proxy login` again)", path.display()),
        )
    })
}

/// Stores `creds`, readable by the owner only.
pub fn save(creds: &Credentials) -> Result<PathBuf> {
    let dir = dir()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    // An existing directory keeps its mode through `create`; tighten it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join("credentials.json");
    let tmp = dir.join(".credentials.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let text = serde_json::to_string_pretty(creds).map_err(|e| Error::local("config", e.to_string()))?;
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Forgets the stored sign-in; `false` when there was none.
pub fn remove() -> Result<bool> {
    match std::fs::remove_file(file()?) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}
