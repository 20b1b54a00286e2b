//! The gateway's calls to the control plane (`/v1/gateway/…`): registration, login decisions and
//! session events. Every call but enrolment carries the gateway's credential.

use std::path::Path;
use std::time::Duration;

use wire::gateway::{
    AuthReply, AuthRequest, RecordingEnd, RecordingOpen, RecordingOpened, Register, SessionEvent,
};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("control plane unreachable: {0}")]
    Http(#[from] reqwest::Error),
    #[error("CONTROL_PLANE_CA_FILE {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("control plane answered {status} to {path}")]
    Status {
        status: reqwest::StatusCode,
        path: &'static str,
    },
    #[error("recording id {0:?} is not a UUID")]
    RecordingId(String),
}

impl Error {
    /// Worth trying again: the control plane was unreachable or failed, rather than refusing.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http(_) => true,
            Error::Status { status, .. } => {
                status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
            Error::CaFile { .. } | Error::RecordingId(_) => false,
        }
    }
}

#[derive(Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The certificates of `CONTROL_PLANE_CA_FILE` (PEM, one or more), trusted beside the system's
/// roots for an `https://` control plane with a private CA.
pub fn extra_roots(ca_file: Option<&Path>) -> Result<Vec<reqwest::Certificate>, Error> {
    let Some(path) = ca_file else {
        return Ok(Vec::new());
    };
    let fail = |reason: String| Error::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
    if roots.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(roots)
}

impl ControlPlane {
    /// A client of the control plane at `base`, trusting the system's roots and `roots`.
    pub fn new(base: &str, token: &str, roots: &[reqwest::Certificate]) -> Result<Self, Error> {
        let http = roots
            .iter()
            .fold(reqwest::Client::builder().timeout(TIMEOUT), |b, root| {
                b.add_root_certificate(root.clone())
            });
        Ok(Self {
            http: http.build()?,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    async fn post<B: serde::Serialize>(
        &self,
        path: &'static str,
        body: &B,
    ) -> Result<reqwest::Response, Error> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(wire::GATEWAY_TOKEN_HEADER, &self.token)
            .json(body)
            .send()
            .await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(Error::Status {
                status: resp.status(),
                path,
            })
        }
    }

    /// Trades an enrolment key for the gateway's credential.
    pub async fn enrol(&self, req: &wire::Enrol) -> Result<wire::Enrolled, Error> {
        Ok(self.post("/v1/gateway/enrol", req).await?.json().await?)
    }

    pub async fn register(&self, req: &Register) -> Result<(), Error> {
        self.post("/v1/gateway/register", req).await.map(drop)
    }

    pub async fn auth(&self, req: &AuthRequest) -> Result<AuthReply, Error> {
        Ok(self.post("/v1/gateway/auth", req).await?.json().await?)
    }

    pub async fn session_event(&self, event: &SessionEvent) -> Result<(), Error> {
        self.post("/v1/gateway/events", event).await.map(drop)
    }

    pub async fn recording_open(&self, req: &RecordingOpen) -> Result<RecordingOpened, Error> {
        Ok(self.post("/v1/gateway/recordings", req).await?.json().await?)
    }

    /// Uploads chunk `seq` of recording `id` (gzip of asciicast event lines). Sending the same
    /// chunk again is harmless: the control plane keeps the first copy.
    pub async fn recording_chunk(&self, id: &str, seq: u64, gzip: bytes::Bytes) -> Result<(), Error> {
        let id = checked_id(id)?;
        let resp = self
            .http
            .post(format!("{}/v1/gateway/recordings/{id}/chunks/{seq}", self.base))
            .header(wire::GATEWAY_TOKEN_HEADER, &self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(gzip)
            .send()
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Error::Status {
                status: resp.status(),
                path: "/v1/gateway/recordings/{id}/chunks/{seq}",
            })
        }
    }

    pub async fn recording_end(&self, id: &str, end: &RecordingEnd) -> Result<(), Error> {
        let id = checked_id(id)?;
        let resp = self
            .http
            .post(format!("{}/v1/gateway/recordings/{id}/end", self.base))
            .header(wire::GATEWAY_TOKEN_HEADER, &self.token)
            .json(end)
            .send()
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Error::Status {
                status: resp.status(),
                path: "/v1/gateway/recordings/{id}/end",
            })
        }
    }
}

/// A recording id as the control plane hands them out (a UUID), checked before it goes in a path.
fn checked_id(id: &str) -> Result<&str, Error> {
    let ok = id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if ok {
        Ok(id)
    } else {
        Err(Error::RecordingId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_roots_are_optional_and_must_be_pem_certificates() {
        assert!(extra_roots(None).unwrap().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(matches!(extra_roots(Some(&missing)), Err(Error::CaFile { .. })));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "no certificate here\n").unwrap();
        let err = extra_roots(Some(&junk)).unwrap_err().to_string();
        assert!(err.starts_with("CONTROL_PLANE_CA_FILE "), "{err}");
    }
}
