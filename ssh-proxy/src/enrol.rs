//! The gateway's identity towards the control plane: the credential it got by trading an enrolment
//! key once, kept beside its SSH keys (0600) and presented on every call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::control_plane::{self, ControlPlane};

/// The credential's file in the state directory.
pub const CREDENTIAL_FILE: &str = "credential";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no credential in {0} and no ENROLMENT_KEY: create an enrolment key of kind `gateway` \
         (POST /v1/admin/enrolment-keys) and start the gateway once with ENROLMENT_KEY"
    )]
    NoCredential(PathBuf),
    #[error(
        "the control plane refused the enrolment ({0}); the key may be used up, expired or revoked, \
         or the name taken"
    )]
    Refused(control_plane::Error),
    #[error("cannot keep the credential: {0}")]
    Store(#[from] crate::keys::Error),
}

/// The credential to present: given in process, else the stored one, else one obtained now with
/// `ENROLMENT_KEY` (retried while the control plane is unreachable or failing) and stored first.
pub async fn credential(config: &Config, name: &str) -> Result<String, Error> {
    if let Some(credential) = &config.credential {
        return Ok(credential.clone());
    }
    let file = config.state_dir.join(CREDENTIAL_FILE);
    if let Some(stored) = read(&file) {
        return Ok(stored);
    }
    let Some(key) = config.enrolment_key.as_deref() else {
        return Err(Error::NoCredential(file));
    };
    let roots =
        crate::control_plane::extra_roots(config.control_plane_ca_file.as_deref()).map_err(Error::Refused)?;
    let cp = ControlPlane::new(&config.control_plane_url, "", &roots).map_err(Error::Refused)?;
    let request = wire::Enrol {
        key: key.trim().to_owned(),
        name: name.to_owned(),
    };
    let mut wait = Duration::from_millis(200);
    let enrolled = loop {
        match cp.enrol(&request).await {
            Ok(enrolled) => break enrolled,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, retry_in = ?wait, "enrolment failed");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(Error::Refused(e)),
        }
    };
    crate::keys::write_private(&file, format!("{}\n", enrolled.credential).as_bytes())?;
    tracing::info!(name, file = %file.display(), "enrolled; credential stored");
    Ok(enrolled.credential)
}

fn read(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let credential = text.trim();
    (!credential.is_empty()).then(|| credential.to_owned())
}
