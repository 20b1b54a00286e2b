//! The gateway's calls to the control plane (`/v1/gateway/…`): registration, login decisions and
//! session events. Every call but enrolment carries the gateway's credential.

use std::time::Duration;

use wire::gateway::{AuthReply, AuthRequest, Register, SessionEvent};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("control plane unreachable: {0}")]
    Http(#[from] reqwest::Error),
    #[error("control plane answered {status} to {path}")]
    Status {
        status: reqwest::StatusCode,
        path: &'static str,
    },
}

impl Error {
    /// Worth trying again: the control plane was unreachable or failed, rather than refusing.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http(_) => true,
            Error::Status { status, .. } => {
                status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
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

impl ControlPlane {
    pub fn new(base: &str, token: &str) -> Result<Self, Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(TIMEOUT).build()?,
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
}
