//! What can go wrong, as one line (`error: CODE: MESSAGE`) and an exit status a script can test.

use std::process::ExitCode;

/// Exit statuses, documented in docs/cli.md. clap itself exits 2 on a usage error.
pub mod exit {
    pub const GENERIC: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNAUTHORIZED: u8 = 3;
    pub const FORBIDDEN: u8 = 4;
    pub const NOT_FOUND: u8 = 5;
    pub const INVALID: u8 = 6;
    pub const UNAVAILABLE: u8 = 7;
    pub const RATE_LIMITED: u8 = 8;
    pub const TASK_FAILED: u8 = 9;
}

/// An error with the API's code and message (or one of ours for local failures).
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: String,
    pub message: String,
    pub exit: u8,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(exit: u8, code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            exit,
        }
    }

    /// A mistake in what was typed that clap cannot see (e.g. two flags that exclude each other
    /// through the API's rules).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, "usage", message)
    }

    pub fn not_signed_in() -> Self {
        Self::new(
            exit::UNAUTHORIZED,
            "not_signed_in",
            "not signed in: run `cloud-cli-proxy login` or set CLOUD_CLI_PROXY_TOKEN",
        )
    }

    pub fn local(code: &str, message: impl Into<String>) -> Self {
        Self::new(exit::GENERIC, code, message)
    }

    /// An error answer of the API: `{"error":{"code","message","field"?}}`, else the status alone.
    pub fn from_api(status: u16, body: &str) -> Self {
        let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let error = parsed.as_ref().and_then(|v| v.get("error"));
        let text = |k: &str| error.and_then(|e| e.get(k)).and_then(|v| v.as_str());
        let code = text("code").unwrap_or("http_error").to_owned();
        let mut message = text("message")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the server answered HTTP {status}"));
        if let Some(field) = text("field")
            && !message.contains(field)
        {
            message.push_str(&format!(" (field `{field}`)"));
        }
        Self {
            code,
            message,
            exit: exit_for_status(status),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit)
    }
}

/// The exit status for an HTTP error status.
pub fn exit_for_status(status: u16) -> u8 {
    match status {
        401 => exit::UNAUTHORIZED,
        403 => exit::FORBIDDEN,
        404 => exit::NOT_FOUND,
        400 | 405 | 409 | 413 | 415 | 422 => exit::INVALID,
        429 => exit::RATE_LIMITED,
        500..=599 => exit::UNAVAILABLE,
        _ => exit::GENERIC,
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        // reqwest's Display names the URL but never the Authorization header.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        let code = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "unreachable"
        } else {
            "http"
        };
        Self::new(exit::UNAVAILABLE, code, message)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::local("io", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_code_and_message_and_name_the_field() {
        let e = Error::from_api(
            400,
            r#"{"error":{"code":"validation_failed","message":"name must be 1-64 printable characters","field":"name"}}"#,
        );
        assert_eq!(e.code, "validation_failed");
        assert_eq!(e.message, "name must be 1-64 printable characters");
        assert_eq!(e.exit, exit::INVALID);
        let e = Error::from_api(
            409,
            r#"{"error":{"code":"label_taken","message":"taken","field":"label"}}"#,
        );
        assert_eq!(e.to_string(), "label_taken: taken (field `label`)");
    }

    #[test]
    fn statuses_map_to_distinct_exits() {
        assert_eq!(exit_for_status(401), exit::UNAUTHORIZED);
        assert_eq!(exit_for_status(403), exit::FORBIDDEN);
        assert_eq!(exit_for_status(404), exit::NOT_FOUND);
        assert_eq!(exit_for_status(409), exit::INVALID);
        assert_eq!(exit_for_status(429), exit::RATE_LIMITED);
        assert_eq!(exit_for_status(503), exit::UNAVAILABLE);
        let e = Error::from_api(502, "<html>bad gateway</html>");
        assert_eq!((e.code.as_str(), e.exit), ("http_error", exit::UNAVAILABLE));
    }
}
