//! Adapter for the control plane's agent API (`/v1/agent/*`): JSON over HTTP, the agent always
//! calling out, authenticated by the node's credential in [`wire::AGENT_TOKEN_HEADER`]. Every request is
//! time-boxed; the claim long-poll gets its wait on top.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("control plane unreachable: {0}")]
    Unreachable(String),
    /// 404 or 409 on a node-scoped call: the control plane does not know this node (id) any more.
    #[error("the control plane does not know this node ({0})")]
    NodeUnknown(StatusCode),
    #[error("control plane refused the node's credential ({0}); was the node revoked?")]
    Unauthorized(StatusCode),
    #[error("control plane answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("control plane sent an unexpected body: {0}")]
    Decode(String),
    #[error("bad control plane URL: {0}")]
    Url(String),
    #[error("CONTROL_PLANE_CA_FILE {path}: {reason}")]
    CaFile { path: String, reason: String },
}

impl Error {
    /// A definitive answer about a task (unknown task or stale lease): retrying cannot help.
    pub fn is_definitive(&self) -> bool {
        match self {
            Error::NodeUnknown(_) => true,
            Error::Status { status, .. } => {
                status.is_client_error() && *status != StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// The certificates of `CONTROL_PLANE_CA_FILE` (one or more PEM blocks).
fn extra_roots(ca_file: Option<&Path>) -> Result<Vec<reqwest::Certificate>, Error> {
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

#[derive(Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    base: reqwest::Url,
    token: String,
    timeout: Duration,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// A client of the control plane at `base_url`, trusting the system's roots and the
    /// certificates in `ca_file` (PEM).
    pub fn new(
        base_url: &str,
        token: &str,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<Self, Error> {
        let mut base = reqwest::Url::parse(base_url).map_err(|e| Error::Url(e.to_string()))?;
        if base.cannot_be_a_base() {
            return Err(Error::Url(format!("{base_url} cannot be a base URL")));
        }
        base.set_query(None);
        let http = extra_roots(ca_file)?
            .into_iter()
            .fold(reqwest::Client::builder(), |b, root| b.add_root_certificate(root))
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("cloud-cli-proxy-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Url(e.to_string()))?;
        Ok(Self {
            http,
            base,
            token: token.to_owned(),
            timeout,
        })
    }

    /// `base` + `/v1/agent/<segments…>`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, Error> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| Error::Url("not a base URL".into()))?;
            path.pop_if_empty().extend(["v1", "agent"]).extend(segments);
        }
        Ok(url)
    }

    async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
        timeout: Duration,
        node_scoped: bool,
    ) -> Result<Option<R>, Error> {
        let url = self.url(segments)?;
        let response = self
            .http
            .post(url)
            .header(wire::AGENT_TOKEN_HEADER, self.token.as_str())
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Error::Unreachable(without_url(&e)))?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status.is_success() {
            let bytes = response
                .bytes()
                .await
                .map_err(|e| Error::Unreachable(without_url(&e)))?;
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Decode(e.to_string()));
        }
        let body: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthorized(status),
            StatusCode::NOT_FOUND | StatusCode::CONFLICT if node_scoped => Error::NodeUnknown(status),
            _ => Error::Status { status, body },
        })
    }

    fn required<R>(reply: Option<R>, what: &str) -> Result<R, Error> {
        reply.ok_or_else(|| Error::Decode(format!("{what}: empty reply")))
    }

    /// Trades an enrolment key for the node's credential (no credential needed for this call).
    pub async fn enrol(&self, body: &wire::Enrol) -> Result<wire::Enrolled, Error> {
        Self::required(self.post(&["enrol"], body, self.timeout, false).await?, "enrol")
    }

    pub async fn register(&self, body: &wire::Register) -> Result<wire::Registered, Error> {
        Self::required(
            self.post(&["register"], body, self.timeout, false).await?,
            "register",
        )
    }

    pub async fn heartbeat(&self, body: &wire::Heartbeat) -> Result<wire::HeartbeatReply, Error> {
        Self::required(
            self.post(&["heartbeat"], body, self.timeout, true).await?,
            "heartbeat",
        )
    }

    /// Long-polls for a task: `None` when there is no work (204).
    pub async fn claim(&self, body: &wire::Claim) -> Result<Option<wire::Assignment>, Error> {
        let timeout = self.timeout + Duration::from_secs(body.wait_secs);
        self.post(&["claim"], body, timeout, true).await
    }

    pub async fn progress(&self, task_id: &str, body: &wire::Progress) -> Result<wire::ProgressReply, Error> {
        Self::required(
            self.post(&["tasks", task_id, "progress"], body, self.timeout, false)
                .await?,
            "progress",
        )
    }

    /// Long-polls for an egress test: `None` when there is none (204).
    pub async fn claim_egress_test(
        &self,
        body: &wire::EgressTestClaim,
    ) -> Result<Option<wire::EgressTestJob>, Error> {
        let timeout = self.timeout + Duration::from_secs(body.wait_secs);
        self.post(&["egress-tests", "claim"], body, timeout, true).await
    }

    pub async fn egress_test_result(
        &self,
        test_id: &str,
        body: &wire::EgressTestReport,
    ) -> Result<(), Error> {
        self.post::<_, serde_json::Value>(&["egress-tests", test_id, "result"], body, self.timeout, false)
            .await
            .map(drop)
    }

    pub async fn result(&self, task_id: &str, body: &wire::TaskResult) -> Result<(), Error> {
        self.post::<_, serde_json::Value>(&["tasks", task_id, "result"], body, self.timeout, false)
            .await
            .map(drop)
    }
}

/// reqwest errors print the URL; ours carries no secrets, but keep messages short and uniform.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_from_encoded_segments() {
        let cp = ControlPlane::new("http://127.0.0.1:8080/", "t", Duration::from_secs(1), None).unwrap();
        assert_eq!(
            cp.url(&["claim"]).unwrap().as_str(),
            "http://127.0.0.1:8080/v1/agent/claim"
        );
        assert_eq!(
            cp.url(&["tasks", "a/b?c", "result"]).unwrap().as_str(),
            "http://127.0.0.1:8080/v1/agent/tasks/a%2Fb%3Fc/result"
        );
        let prefixed = ControlPlane::new("http://h/prefix", "t", Duration::from_secs(1), None).unwrap();
        assert_eq!(
            prefixed.url(&["register"]).unwrap().as_str(),
            "http://h/prefix/v1/agent/register"
        );
    }

    #[test]
    fn definitive_errors() {
        assert!(
            Error::Status {
                status: StatusCode::CONFLICT,
                body: String::new()
            }
            .is_definitive()
        );
        assert!(
            !Error::Status {
                status: StatusCode::BAD_GATEWAY,
                body: String::new()
            }
            .is_definitive()
        );
        assert!(
            !Error::Status {
                status: StatusCode::TOO_MANY_REQUESTS,
                body: String::new()
            }
            .is_definitive()
        );
        assert!(!Error::Unreachable("x".into()).is_definitive());
    }
}
