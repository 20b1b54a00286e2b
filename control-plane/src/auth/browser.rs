//! What a browser proves with, decided without I/O: the dashboard's session cookie (HttpOnly, never
//! readable by a page's script), the CSRF rule for changes made with it, and which `Origin`s are
//! ours.
//!
//! A change (any method but GET, HEAD and OPTIONS) made with the cookie must carry the session's
//! CSRF token in `X-CSRF-Token`, and, when the browser names an `Origin`, that origin must be ours.
//! A cross-site form can set neither a custom header nor a JSON content type without a CORS
//! preflight, which this server never grants, and the cookie is `SameSite=Strict` as well, so each
//! of the three defences alone stops a forged request.

use axum::http::header::{self, COOKIE};
use axum::http::{HeaderMap, Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The session cookie over plain HTTP.
pub const COOKIE_NAME: &str = "ccp_session";
/// The session cookie when the control plane is reached over HTTPS: the `__Host-` prefix makes the
/// browser refuse it unless it is `Secure`, has `Path=/` and no `Domain`, so no other host or path
/// can plant one.
pub const SECURE_COOKIE_NAME: &str = "__Host-ccp_session";
/// The header a page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Every value of cookie `name` in the request (a browser may send several with one name).
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value.trim_matches('"'))
        .collect()
}

/// The session secrets the request carries, under either cookie name.
pub fn session_secrets(headers: &HeaderMap) -> Vec<&str> {
    let mut values = cookie_values(headers, SECURE_COOKIE_NAME);
    values.extend(cookie_values(headers, COOKIE_NAME));
    values
}

/// 256 random bits, URL-safe: a session's cookie secret or its CSRF token.
pub fn random_token() -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

/// What the database keeps of a cookie secret.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The `Set-Cookie` value that opens a session: invisible to scripts, never sent cross-site.
pub fn set_cookie(secret: &str, max_age_secs: i64, secure: bool) -> String {
    let (name, secure) = if secure {
        (SECURE_COOKIE_NAME, "; Secure")
    } else {
        (COOKIE_NAME, "")
    };
    format!("{name}={secret}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}")
}

/// The `Set-Cookie` value that makes the browser forget the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", 0, secure)
}

/// The cookie by which a browser that signed in to an account before is known to it again, so
/// failures from elsewhere do not hold it back (`auth::ratelimit`). It opens nothing by itself.
pub const DEVICE_COOKIE_NAME: &str = "ccp_device";
/// How long a browser stays known, in seconds (90 days, as `ratelimit::KNOWN_FOR`).
const DEVICE_COOKIE_MAX_AGE: u64 = 90 * 24 * 3600;

fn device_mac(key: &[u8], user_id: &str, device: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(user_id.as_bytes());
    mac.update(b"\n");
    mac.update(device.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// `Set-Cookie` marking this browser as one that signed in to `user_id`: a random device id and
/// a MAC binding it to the account.
pub fn device_cookie(key: &[u8], user_id: &str, secure: bool) -> String {
    let device = random_token();
    let value = format!("{device}.{}", device_mac(key, user_id, &device));
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{DEVICE_COOKIE_NAME}={value}; Path=/v1/auth/; Max-Age={DEVICE_COOKIE_MAX_AGE}; HttpOnly; SameSite=Strict{secure}"
    )
}

/// Whether the request carries a device cookie made for `user_id`.
pub fn knows_device(headers: &HeaderMap, key: &[u8], user_id: &str) -> bool {
    cookie_values(headers, DEVICE_COOKIE_NAME).iter().any(|value| {
        value.split_once('.').is_some_and(|(device, mac)| {
            let want = device_mac(key, user_id, device);
            want.len() == mac.len()
                && want
                    .bytes()
                    .zip(mac.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    })
}

/// Methods that change nothing, so need no CSRF token.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a change made with the session cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfRefusal {
    /// No `X-CSRF-Token`, or not the session's.
    Token,
    /// The browser said the request comes from another origin (or from an opaque one, `null`).
    Origin,
}

/// Whether a request authenticated by the session cookie may go on. `host` is the request's `Host`.
pub fn check_csrf(
    method: &Method,
    headers: &HeaderMap,
    expected_token: &str,
    public_base_url: &str,
) -> Result<(), CsrfRefusal> {
    if is_safe(method) {
        return Ok(());
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok());
    let origin = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if !origin_allowed(origin, host, public_base_url) {
        return Err(CsrfRefusal::Origin);
    }
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if sent.is_empty() || !constant_time_eq(sent.as_bytes(), expected_token.as_bytes()) {
        return Err(CsrfRefusal::Token);
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a request's `Origin` is ours: the origin of `PUBLIC_BASE_URL`, or the request's own `Host`
/// (either scheme). A browser sends `Origin` on every WebSocket and every change, so a missing one is
/// not a browser and cannot be a cross-site forgery (it still needs credentials); a page elsewhere,
/// or `null` (a sandboxed page, such as anything the VNC proxy passes through from a host), is
/// refused.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, public_base_url: &str) -> bool {
    let Some(origin) = origin else { return true };
    let origin = normalize_origin(origin);
    if normalize_origin(public_base_url) == origin {
        return true;
    }
    host.is_some_and(|h| {
        let h = h.to_ascii_lowercase();
        [format!("http://{h}"), format!("https://{h}")]
            .iter()
            .any(|candidate| normalize_origin(candidate) == origin)
    })
}

/// Refuses a WebSocket upgrade whose `Origin` is not ours (see [`origin_allowed`]).
pub fn check_websocket_origin(headers: &HeaderMap, public_base_url: &str) -> Result<(), ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if origin_allowed(origin, host, public_base_url) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "WebSocket from another site",
        ))
    }
}

/// `scheme://host[:port]` in lower case, without a path or the scheme's default port.
fn normalize_origin(url: &str) -> String {
    let url = url.trim().to_ascii_lowercase();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let default_port = match scheme {
        "http" => Some(":80"),
        "https" => Some(":443"),
        _ => None,
    };
    let authority = default_port
        .and_then(|p| authority.strip_suffix(p))
        .unwrap_or(authority);
    format!("{scheme}://{authority}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn cookies_under_both_names() {
        let h = headers(&[
            ("cookie", "theme=dark; ccp_session=abc"),
            ("cookie", "__Host-ccp_session=\"def\"; ccp_sessionx=no"),
        ]);
        assert_eq!(session_secrets(&h), ["def", "abc"]);
        assert!(session_secrets(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn set_cookie_is_http_only_strict_and_secure_over_tls() {
        let plain = set_cookie("s3cret", 60, false);
        assert_eq!(
            plain,
            "ccp_session=s3cret; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
        );
        let tls = set_cookie("s3cret", 60, true);
        assert!(tls.starts_with("__Host-ccp_session=s3cret; Path=/;"));
        assert!(tls.ends_with("HttpOnly; SameSite=Strict; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(secret_hash(&a), secret_hash(&a));
        assert_ne!(secret_hash(&a), secret_hash(&b));
    }

    #[test]
    fn csrf_decisions() {
        let public = "http://cp.example.test:8080";
        let ok = [
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("x-csrf-token", "tok"),
        ];
        assert_eq!(check_csrf(&Method::POST, &headers(&ok), "tok", public), Ok(()));
        // Reads need nothing.
        assert_eq!(check_csrf(&Method::GET, &HeaderMap::new(), "tok", public), Ok(()));
        // No token, a wrong one, or one of another length.
        for token in [None, Some("tok2"), Some("to"), Some("")] {
            let mut h = headers(&ok[..2]);
            if let Some(t) = token {
                h.insert(CSRF_HEADER, t.parse().unwrap());
            }
            assert_eq!(
                check_csrf(&Method::DELETE, &h, "tok", public),
                Err(CsrfRefusal::Token),
                "{token:?}"
            );
        }
        // Another site, or an opaque origin, even with the right token.
        for origin in ["https://evil.example", "null", "http://127.0.0.1:8081"] {
            let h = headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", origin),
                ("x-csrf-token", "tok"),
            ]);
            assert_eq!(
                check_csrf(&Method::PUT, &h, "tok", public),
                Err(CsrfRefusal::Origin),
                "{origin}"
            );
        }
        // The public URL's origin counts as ours behind a reverse proxy.
        let h = headers(&[
            ("host", "10.0.0.5:8080"),
            ("origin", "http://cp.example.test:8080"),
            ("x-csrf-token", "tok"),
        ]);
        assert_eq!(check_csrf(&Method::PATCH, &h, "tok", public), Ok(()));
    }

    #[test]
    fn origins() {
        let public = "https://cp.example.org";
        assert!(origin_allowed(None, None, public));
        assert!(origin_allowed(Some("https://cp.example.org"), None, public));
        assert!(origin_allowed(Some("https://CP.example.org:443"), None, public));
        assert!(origin_allowed(
            Some("http://127.0.0.1:8080"),
            Some("127.0.0.1:8080"),
            public
        ));
        assert!(!origin_allowed(
            Some("http://127.0.0.1:9999"),
            Some("127.0.0.1:8080"),
            public
        ));
        assert!(!origin_allowed(
            Some("https://evil.example"),
            Some("cp.example.org"),
            public
        ));
        assert!(!origin_allowed(Some("null"), Some("cp.example.org"), public));
        assert!(!origin_allowed(
            Some("http://cp.example.org.evil"),
            Some("cp.example.org"),
            public
        ));
    }
}
