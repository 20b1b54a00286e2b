//! The node's identity towards the control plane: the credential it got by trading an enrolment
//! key once, kept in a root-only file in the state directory and presented on every call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control_plane::{self, ControlPlane};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no credential in {0} and no ENROLMENT_KEY: create an enrolment key of kind `agent` \
         (POST /v1/admin/enrolment-keys) and start the agent once with ENROLMENT_KEY"
    )]
    NoCredential(PathBuf),
    #[error(
        "the control plane refused the enrolment ({0}); the key may be used up, expired or revoked, or the name taken"
    )]
    Refused(control_plane::Error),
    #[error("cannot keep the credential: {0}")]
    Store(#[from] crate::secrets::Error),
    #[error("shut down before enrolment finished")]
    Cancelled,
}

/// The credential to present: given in process, else the stored one, else one obtained now with
/// `ENROLMENT_KEY` (retried while the control plane is unreachable) and stored before use.
pub async fn credential(config: &Config, cancel: &CancellationToken) -> Result<String, Error> {
    if let Some(credential) = &config.credential {
        return Ok(credential.clone());
    }
    let file = config.credential_file();
    if let Some(stored) = read(&file) {
        return Ok(stored);
    }
    let Some(key) = config.enrolment_key.as_deref() else {
        return Err(Error::NoCredential(file));
    };
    let cp = ControlPlane::new(
        config.base_url(),
        "",
        config.control_plane_timeout(),
        config.control_plane_ca_file.as_deref(),
    )
    .map_err(Error::Refused)?;
    let request = wire::Enrol {
        key: key.trim().to_owned(),
        name: config.node_name.clone(),
    };
    let mut backoff = crate::Backoff::new();
    let enrolled = loop {
        match cp.enrol(&request).await {
            Ok(enrolled) => break enrolled,
            Err(e @ (control_plane::Error::Unreachable(_) | control_plane::Error::Status { .. }))
                if !e.is_definitive() =>
            {
                let delay = backoff.next_delay().min(Duration::from_secs(10));
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "enrolment failed");
                if !crate::sleep_or_cancel(delay, cancel).await {
                    return Err(Error::Cancelled);
                }
            }
            Err(e) => return Err(Error::Refused(e)),
        }
    };
    store(&file, &enrolled.credential)?;
    tracing::info!(node_id = %enrolled.id, file = %file.display(), "enrolled; credential stored");
    Ok(enrolled.credential)
}

fn read(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let credential = text.trim();
    (!credential.is_empty()).then(|| credential.to_owned())
}

/// Writes the credential 0600 in a 0700 directory, replacing any old file atomically.
fn store(file: &Path, credential: &str) -> Result<(), crate::secrets::Error> {
    if let Some(dir) = file.parent() {
        crate::secrets::create_private_dir(dir)?;
    }
    crate::secrets::write_private(file, format!("{credential}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[tokio::test]
    async fn a_given_or_stored_credential_needs_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new("http://127.0.0.1:9");
        config.state_dir = dir.path().to_path_buf();
        config.node_name = "n1".into();
        let cancel = CancellationToken::new();
        assert!(matches!(
            credential(&config, &cancel).await,
            Err(Error::NoCredential(_))
        ));
        store(&config.credential_file(), "ccpn_stored").unwrap();
        let mode = std::fs::metadata(config.credential_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(dir.path().join("n1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(credential(&config, &cancel).await.unwrap(), "ccpn_stored");
        config.credential = Some("ccpn_given".into());
        assert_eq!(credential(&config, &cancel).await.unwrap(), "ccpn_given");
    }
}
