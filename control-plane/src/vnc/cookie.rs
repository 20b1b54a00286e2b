//! The VNC session cookie: how a browser, which cannot put an `Authorization` header on a page's
//! sub-resources or on a WebSocket, proves who it is to the VNC proxy.
//!
//! The value is `base64url(claims JSON) "." base64url(HMAC-SHA256)`, keyed by a key derived from
//! `ADMIN_JWT_SECRET` for this purpose only, so it can never pass for a session token (or the other
//! way round) and rotating the secret ends every cookie. It names one user, one host and one route
//! (admin or user), carries the user's `token_version` (a password change or a disabled account ends
//! it) and expires after minutes. It is HttpOnly, SameSite=Strict and scoped to that host's `vnc`
//! path, and the proxy removes it (with every other cookie) before forwarding a request.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const COOKIE_NAME: &str = "ccp_vnc";
/// Long enough to load the page and open its WebSocket (and reconnect a few times); an open
/// WebSocket outlives it.
pub const TTL_SECS: i64 = 600;

/// Which of the two proxy routes the cookie opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Admin,
    User,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// The host's id.
    pub hid: String,
    pub scope: Scope,
    /// The user's `token_version` when the cookie was issued.
    pub ver: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

fn mac(key: &[u8], payload: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(payload.as_bytes());
    mac
}

/// The cookie value for `claims`.
pub fn sign(key: &[u8], claims: &Claims) -> String {
    // Serialising a struct of strings and integers cannot fail.
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let payload = URL_SAFE_NO_PAD.encode(json);
    let tag = URL_SAFE_NO_PAD.encode(mac(key, &payload).finalize().into_bytes());
    format!("{payload}.{tag}")
}

/// The claims of a value signed with `key` and not expired at `now` (Unix seconds); `None` for
/// anything else, whatever the reason.
pub fn verify(key: &[u8], value: &str, now: i64) -> Option<Claims> {
    let (payload, tag) = value.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(key, payload).verify_slice(&tag).ok()?;
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    (claims.exp > now).then_some(claims)
}

/// Every value of our cookie in the request (a browser may send several with the same name).
pub fn values(headers: &HeaderMap) -> Vec<&str> {
    crate::auth::browser::cookie_values(headers, COOKIE_NAME)
}

/// The `Set-Cookie` value: scoped to `path`, invisible to scripts, never sent cross-site.
pub fn set_cookie(value: &str, path: &str, max_age_secs: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE_NAME}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            sub: "u1".into(),
            hid: "h1".into(),
            scope: Scope::User,
            ver: 2,
            exp: 1_000,
        }
    }

    #[test]
    fn round_trip_expiry_and_tampering() {
        let key = b"key-one";
        let value = sign(key, &claims());
        assert_eq!(verify(key, &value, 999), Some(claims()));
        assert_eq!(verify(key, &value, 1_000), None, "expired at exp");
        assert_eq!(verify(b"key-two", &value, 0), None, "another key");
        // A forged payload with the original tag.
        let (_, tag) = value.split_once('.').unwrap();
        let forged = Claims {
            scope: Scope::Admin,
            ..claims()
        };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(verify(key, &format!("{forged_payload}.{tag}"), 0), None);
        for junk in ["", ".", "abc", "a.b", &value.replace('.', "")] {
            assert_eq!(verify(key, junk, 0), None, "{junk:?}");
        }
    }

    #[test]
    fn cookie_header_parsing_and_set_cookie() {
        let mut headers = HeaderMap::new();
        headers.append(
            axum::http::header::COOKIE,
            "theme=dark; ccp_vnc=abc.def".parse().unwrap(),
        );
        headers.append(axum::http::header::COOKIE, "ccp_vnc=\"x.y\"".parse().unwrap());
        assert_eq!(values(&headers), ["abc.def", "x.y"]);
        assert!(values(&HeaderMap::new()).is_empty());

        let set = set_cookie("v.t", "/v1/user/hosts/h1/vnc", 600, true);
        assert_eq!(
            set,
            "ccp_vnc=v.t; Path=/v1/user/hosts/h1/vnc; Max-Age=600; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!set_cookie("v.t", "/p", 1, false).contains("Secure"));
    }
}
