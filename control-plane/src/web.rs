//! The dashboard: its page at `/` and its files under `/ui/`, built into the binary from
//! `control-plane/web/` (or read from `WEB_DIR` when that is set, to work on the dashboard without
//! rebuilding), and the security headers every response of this server carries.
//!
//! The dashboard's policy allows script, style and connections from this origin only: no inline
//! script, no `eval`, no third-party origin, and no framing. Responses without a policy of their own
//! (the JSON API, the access scripts) get one that allows nothing, so even a response a browser is
//! tricked into rendering as a page runs nothing.

use std::path::{Component, Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::error::ApiError;

/// A file of the dashboard built into the binary.
#[derive(Debug)]
pub struct Asset {
    /// Path under `web/`, with `/` separators.
    pub path: &'static str,
    pub body: &'static [u8],
    /// Quoted, from the file's SHA-256.
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The dashboard's Content-Security-Policy.
pub const DASHBOARD_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; media-src 'none'; \
    object-src 'none'; worker-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The policy of every other response: nothing may load or run, and it may not be framed.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*path}", get(asset))
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    serve(&state, "index.html", &headers).await
}

async fn asset(
    State(state): State<AppState>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&state, &path, &headers).await
}

async fn serve(state: &AppState, path: &str, request: &HeaderMap) -> Response {
    let Some(rel) = clean_path(path) else {
        return not_found();
    };
    let (body, etag): (Body, String) = match &state.settings.web_dir {
        Some(dir) => match tokio::fs::read(dir.join(&rel)).await {
            Ok(bytes) => {
                let etag = format!("\"dev-{:x}-{}\"", bytes.len(), quick_hash(&bytes));
                (Body::from(bytes), etag)
            }
            Err(_) => return not_found(),
        },
        None => match ASSETS.iter().find(|a| a.path == rel) {
            Some(a) => (Body::from(a.body), a.etag.to_owned()),
            None => return not_found(),
        },
    };
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(body)
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&rel)));
    // Revalidated on every load (cheap with the ETag), so an upgrade never mixes old and new files.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DASHBOARD_CSP),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file").into_response()
}

/// The path under `web/` a request names, when it names one plainly: no `..`, no absolute or
/// empty parts, no hidden files.
fn clean_path(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(p) => {
                let p = p.to_str()?;
                if p.starts_with('.') {
                    return None;
                }
                parts.push(p);
            }
            _ => return None,
        }
    }
    (!parts.is_empty() && !path.ends_with('/')).then(|| parts.join("/"))
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// A content hash for ETags of files read from `WEB_DIR` (a development aid, so not SHA-256).
fn quick_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Adds the headers every response carries, where the handler set none of its own.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let defaults = [
        (header::CONTENT_SECURITY_POLICY, API_CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), usb=(), payment=()",
        ),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// `WEB_DIR` checked at start: it must hold the dashboard's `index.html`.
pub fn check_web_dir(dir: &Path) -> Result<PathBuf, String> {
    let index = dir.join("index.html");
    if index.is_file() {
        Ok(dir.to_path_buf())
    } else {
        Err(format!("WEB_DIR {} has no index.html", dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_are_served() {
        assert_eq!(clean_path("app.js").as_deref(), Some("app.js"));
        assert_eq!(
            clean_path("vendor/novnc/core/rfb.js").as_deref(),
            Some("vendor/novnc/core/rfb.js")
        );
        for bad in [
            "",
            "/etc/passwd",
            "../Cargo.toml",
            "js/../../x",
            ".git/config",
            "vendor/",
            "a/.hidden",
        ] {
            assert_eq!(clean_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_dashboard_is_built_in() {
        let index = ASSETS.iter().find(|a| a.path == "index.html");
        assert!(index.is_some(), "web/index.html must be embedded");
        assert!(
            ASSETS
                .iter()
                .all(|a| !a.path.ends_with(".md") && !a.path.ends_with(".sh"))
        );
    }

    #[test]
    fn the_dashboard_policy_allows_no_inline_script_and_no_framing() {
        let script = DASHBOARD_CSP
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .unwrap_or_default();
        assert_eq!(script.trim(), "script-src 'self'");
        assert!(DASHBOARD_CSP.contains("frame-ancestors 'none'"));
        assert!(!DASHBOARD_CSP.contains("unsafe-eval"));
    }
}
