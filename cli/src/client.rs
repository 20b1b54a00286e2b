//! The API over HTTP (reqwest, blocking, rustls): JSON in and out, error answers turned into
//! [`Error`], and a task's progress read from its server-sent events.

use std::io::BufReader;
use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

use crate::error::{Error, Result, exit};

/// How long one ordinary request may take (an egress test runs up to 30 s on the server).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Which side of the API the token's account uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "user" => Some(Self::User),
            _ => None,
        }
    }

    /// `admin` or `user`, as in `/v1/{scope}/…`.
    pub fn scope(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
        }
    }
}

/// A connection to one control plane, with or without a token.
pub struct Api {
    base: String,
    token: Option<String>,
    /// The account's role, when known without asking (stored at login).
    role: std::cell::Cell<Option<Role>>,
    http: Client,
    stream_http: Client,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// `http(s)://host[:port][/prefix]` without a trailing slash; anything else is refused.
pub fn normalize_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(url).map_err(|e| Error::usage(format!("`{url}` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::usage(format!("`{url}` is not an http:// or https:// URL")));
    }
    if parsed.query().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::usage(format!(
            "`{url}`: give the control plane's base URL only"
        )));
    }
    Ok(url.to_owned())
}

impl Api {
    pub fn new(
        base: &str,
        token: Option<String>,
        role: Option<Role>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self> {
        let base = normalize_url(base)?;
        let builder = || {
            let mut b = Client::builder()
                .user_agent(concat!("cloud-cli-proxy/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(15));
            if let Some(path) = ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| Error::local("ca_file", format!("{}: {e}", path.display())))?;
                let cert = reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| Error::local("ca_file", format!("{}: {e}", path.display())))?;
                b = b.add_root_certificate(cert);
            }
            Ok::<_, Error>(b)
        };
        let http = builder()?.timeout(REQUEST_TIMEOUT).build()?;
        // Event streams stay open as long as the task runs.
        let stream_http = builder()?.timeout(None).build()?;
        Ok(Self {
            base,
            token,
            role: std::cell::Cell::new(role),
            http,
            stream_http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorized(&self, req: RequestBuilder) -> Result<RequestBuilder> {
        let token = self.token.as_deref().ok_or_else(Error::not_signed_in)?;
        Ok(req.bearer_auth(token))
    }

    /// The caller's role: stored at login, else asked of `/v1/auth/me` once.
    pub fn role(&self) -> Result<Role> {
        if let Some(role) = self.role.get() {
            return Ok(role);
        }
        let me = self.get("/v1/auth/me", &[])?;
        let role = me["role"]
            .as_str()
            .and_then(Role::parse)
            .ok_or_else(|| Error::local("bad_response", format!("/v1/auth/me answered no role: {me}")))?;
        self.role.set(Some(role));
        Ok(role)
    }

    /// `/v1/admin/…` or `/v1/user/…` for the caller's role.
    pub fn scoped(&self, rest: &str) -> Result<String> {
        Ok(format!("/v1/{}{rest}", self.role()?.scope()))
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let req = self.http.get(self.url(path)).query(query);
        json_answer(self.authorized(req)?.send()?)
    }

    /// A GET whose answer is text rather than JSON (an asciicast file).
    pub fn text(&self, path: &str) -> Result<String> {
        let resp = self.authorized(self.http.get(self.url(path)))?.send()?;
        let status = resp.status();
        let text = resp.text()?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(Error::from_api(status.as_u16(), &text))
        }
    }

    /// A method with an optional JSON body; 204 answers `Value::Null`.
    pub fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(body) = body {
            req = req.json(body);
        }
        json_answer(self.authorized(req)?.send()?)
    }

    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Value> {
        self.send(Method::POST, path, body)
    }

    pub fn delete(&self, path: &str) -> Result<Value> {
        self.send(Method::DELETE, path, None)
    }

    /// Sign-in, without a token.
    pub fn login(&self, body: &Value) -> Result<Value> {
        let resp = self.http.post(self.url("/v1/auth/login")).json(body).send()?;
        json_answer(resp)
    }

    /// Every page of a list (500 a page), for looking things up by name or prefix.
    pub fn all(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for page in 1.. {
            let mut q = query.to_vec();
            q.push(("page", page.to_string()));
            q.push(("page_size", "500".to_owned()));
            let answer = self.get(path, &q)?;
            let data = answer["data"].as_array().cloned().unwrap_or_default();
            let pages = answer["total_pages"].as_i64().unwrap_or(1);
            out.extend(data);
            if i64::from(page) >= pages {
                break;
            }
        }
        Ok(out)
    }

    /// Opens the task's event stream (`text/event-stream`).
    pub fn task_events(&self, task_id: &str) -> Result<TaskEvents<BufReader<Response>>> {
        let path = self.scoped(&format!("/tasks/{task_id}/events"))?;
        let req = self
            .stream_http
            .get(self.url(&path))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let resp = self.authorized(req)?.send()?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            return Err(Error::from_api(status, &resp.text().unwrap_or_default()));
        }
        Ok(TaskEvents {
            lines: BufReader::new(resp),
        })
    }
}

/// The body of a 2xx answer as JSON (`Null` when empty), else the API's error.
fn json_answer(resp: Response) -> Result<Value> {
    let status = resp.status();
    let text = resp.text()?;
    if !status.is_success() {
        return Err(Error::from_api(status.as_u16(), &text));
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| {
        Error::new(
            exit::UNAVAILABLE,
            "bad_response",
            format!("the server's answer is not JSON ({e}): is this a cloud-cli-proxy control plane?"),
        )
    })
}

/// The `task` events of a task's stream, each the task object as the API shows it.
pub struct TaskEvents<R> {
    lines: R,
}

impl<R: std::io::BufRead> Iterator for TaskEvents<R> {
    type Item = Result<Value>;

    /// The next `task` event's data; `None` when the server closed the stream.
    fn next(&mut self) -> Option<Self::Item> {
        let mut event = String::new();
        let mut data = String::new();
        loop {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(Error::new(exit::UNAVAILABLE, "stream", e.to_string()))),
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                // End of one event: hand out a task, skip anything else (keep-alives, other kinds).
                if (event.is_empty() || event == "task") && !data.is_empty() {
                    return Some(serde_json::from_str(&data).map_err(|e| {
                        Error::new(exit::UNAVAILABLE, "bad_response", format!("task event: {e}"))
                    }));
                }
                event.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim_start().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_events_are_read_from_the_stream() {
        let stream = "event: task\ndata: {\"progress\":5}\n\n: keep-alive\n\n\
                      event: other\ndata: {}\n\nevent:task\r\ndata:{\"progress\":\r\ndata: 100}\r\n\r\n";
        let events: Vec<Value> = TaskEvents {
            lines: std::io::Cursor::new(stream),
        }
        .map(|e| e.unwrap())
        .collect();
        assert_eq!(
            events,
            vec![
                serde_json::json!({"progress": 5}),
                serde_json::json!({"progress": 100})
            ]
        );
    }

    #[test]
    fn urls_are_checked_and_lose_their_trailing_slash() {
        assert_eq!(normalize_url("http://cp:8080/").unwrap(), "http://cp:8080");
        assert_eq!(
            normalize_url(" https://example.test/ccp ").unwrap(),
            "https://example.test/ccp"
        );
        assert!(normalize_url("cp:8080").is_err());
        assert!(normalize_url("ftp://cp").is_err());
        assert!(normalize_url("http://u:p@cp").is_err());
    }
}
