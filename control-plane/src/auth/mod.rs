//! Who is calling: session tokens (HS256 JWT), personal API tokens, and the extractors that turn an
//! `Authorization` header into a [`Principal`] with a role.

pub mod admin;
pub mod browser;
pub mod login;
pub mod password;
pub mod policy;
pub mod ratelimit;
pub mod shared_limits;
pub mod totp;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::AppState;
use crate::db::events::Actor;
use crate::db::users::{Role, User};
use crate::db::{self, UtcTime};
use crate::error::ApiError;

/// Prefix of every personal API token, so they are told apart from session tokens (and by secret scanners).
pub const API_TOKEN_PREFIX: &str = "ccp_";

/// Signing material derived from `ADMIN_JWT_SECRET`.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Keys the stored hashes of API tokens, so rotating the secret also ends every API token.
    token_mac_key: Vec<u8>,
    /// Signs VNC session cookies (`vnc::cookie`); derived apart so no cookie passes for a token.
    vnc_cookie_key: Vec<u8>,
    /// Signs the dashboard's device cookies (`browser::device_cookie`).
    device_cookie_key: Vec<u8>,
    pub session_ttl: std::time::Duration,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    /// The user's `token_version` when the token was issued.
    ver: i64,
    iat: i64,
    exp: i64,
}

impl Keys {
    pub fn new(secret: &str, session_ttl: std::time::Duration) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        let mut cookie_mac = mac.clone();
        let mut device_mac = mac.clone();
        device_mac.update(b"cloud-cli-proxy device-cookie v1");
        mac.update(b"cloud-cli-proxy api-token v1");
        cookie_mac.update(b"cloud-cli-proxy vnc-cookie v1");
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            token_mac_key: mac.finalize().into_bytes().to_vec(),
            vnc_cookie_key: cookie_mac.finalize().into_bytes().to_vec(),
            device_cookie_key: device_mac.finalize().into_bytes().to_vec(),
            session_ttl,
        }
    }

    pub fn vnc_cookie_key(&self) -> &[u8] {
        &self.vnc_cookie_key
    }

    pub fn device_cookie_key(&self) -> &[u8] {
        &self.device_cookie_key
    }

    /// A session token for `user`, valid for the configured lifetime from `now`.
    pub fn issue_session(&self, user: &User, now: UtcTime) -> Result<String, ApiError> {
        let iat = now.0.timestamp();
        let ttl = i64::try_from(self.session_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            sub: user.id.clone(),
            role: user.role,
            ver: user.token_version,
            iat,
            exp: iat + ttl,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    fn decode_session(&self, token: &str) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|d| d.claims)
    }

    /// A fresh API token and the hash to store for it.
    pub fn new_api_token(&self) -> (String, String) {
        let mut raw = [0u8; 30];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = format!(
            "{API_TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let hash = self.api_token_hash(&token);
        (token, hash)
    }

    pub fn api_token_hash(&self, token: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.token_mac_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(token.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Session,
    ApiToken {
        token_id: String,
        scope: db::api_tokens::Scope,
        expires_at: UtcTime,
    },
    /// The dashboard's session cookie (`browser`); the row's id, to end it on sign-out.
    WebSession {
        session_id: String,
    },
}

/// An authenticated caller whose account is usable right now.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub credential: Credential,
    pub ip: Option<IpAddr>,
}

impl Principal {
    /// The actor to record in events.
    pub fn actor(&self) -> Actor {
        Actor {
            id: Some(self.user.id.clone()),
            name: Some(self.user.username.clone()),
            ip: self.ip.map(|ip| ip.to_string()),
        }
    }
}

/// The caller's address: the socket peer, or, when `X-Forwarded-For` is trusted, the address the
/// reverse proxy in front of us appended — the last entry of the last such header. Entries before
/// it were written by the client and could say anything (a proxy that appends keeps them), so
/// they would let a client pick its own limiter bucket and audit address.
pub fn client_ip(parts: &Parts, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for {
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Client IP as an extractor, for unauthenticated endpoints that still rate-limit and audit.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(client_ip(parts, state.settings.trust_forwarded_for)))
    }
}

pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Resolves a bearer token to a usable account, or `None` for any reason at all (the caller answers
/// one 401 whatever the reason, so nothing about accounts leaks).
pub async fn authenticate(
    state: &AppState,
    token: &str,
    now: UtcTime,
) -> Result<Option<(User, Credential)>, ApiError> {
    if token.starts_with(API_TOKEN_PREFIX) {
        let hash = state.keys.api_token_hash(token);
        let Some(row) = db::api_tokens::find_by_hash(&state.db, &hash).await? else {
            return Ok(None);
        };
        if row.revoked_at.is_some() || row.expires_at <= now {
            return Ok(None);
        }
        let Some(user) = db::users::get(&state.db, &row.user_id).await? else {
            return Ok(None);
        };
        if !user.is_usable(now) || user.token_version != row.token_version {
            return Ok(None);
        }
        db::api_tokens::touch(&state.db, &row.id, now).await?;
        let credential = Credential::ApiToken {
            token_id: row.id,
            scope: row.scope,
            expires_at: row.expires_at,
        };
        return Ok(Some((user, credential)));
    }
    let Some(claims) = state.keys.decode_session(token) else {
        return Ok(None);
    };
    let Some(user) = db::users::get(&state.db, &claims.sub).await? else {
        return Ok(None);
    };
    if user.token_version != claims.ver || user.role != claims.role || !user.is_usable(now) {
        return Ok(None);
    }
    Ok(Some((user, Credential::Session)))
}

/// The dashboard session a request's cookie opens, with its account, when both are still good: the
/// session unexpired and not signed out, the account usable and its password unchanged since.
pub async fn web_session(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    now: UtcTime,
) -> Result<Option<(User, db::web_sessions::WebSession)>, ApiError> {
    for secret in browser::session_secrets(headers) {
        let hash = browser::secret_hash(secret);
        let Some(session) = db::web_sessions::find(&state.db, &hash, now).await? else {
            continue;
        };
        let Some(user) = db::users::get(&state.db, &session.user_id).await? else {
            continue;
        };
        if user.token_version != session.token_version || !user.is_usable(now) {
            continue;
        }
        db::web_sessions::touch(&state.db, &session.id, now).await?;
        return Ok(Some((user, session)));
    }
    Ok(None)
}

/// Whether a request with this method may be made with a credential of `scope` on the routes that
/// take an account ([`Principal`]). A `read` token may only read: `GET` and `HEAD`, and no WebSocket
/// (a terminal or a desktop is not a read). A `metrics` token opens none of them: only `/metrics`
/// ([`MetricsReader`]).
pub fn scope_allows(scope: db::api_tokens::Scope, method: &axum::http::Method, upgrade: bool) -> bool {
    use axum::http::Method;
    match scope {
        db::api_tokens::Scope::Full => true,
        db::api_tokens::Scope::Read => (method == Method::GET || method == Method::HEAD) && !upgrade,
        db::api_tokens::Scope::Metrics => false,
    }
}

/// 403 when the credential's scope does not cover the request.
pub fn check_scope(credential: &Credential, parts: &Parts) -> Result<(), ApiError> {
    let Credential::ApiToken { scope, .. } = credential else {
        return Ok(());
    };
    if scope_allows(*scope, &parts.method, parts.headers.contains_key(header::UPGRADE)) {
        return Ok(());
    }
    Err(ApiError::insufficient_scope(match scope {
        db::api_tokens::Scope::Metrics => "this API token has the `metrics` scope: it may only read /metrics",
        _ => "this API token has the `read` scope: it may only make GET requests",
    }))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    /// A bearer token when the request has one (scripts), else the dashboard's session cookie, with
    /// which a change must also pass the CSRF check (`browser::check_csrf`).
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ip = client_ip(parts, state.settings.trust_forwarded_for);
        let now = UtcTime::now();
        if let Some(token) = bearer(parts) {
            return match authenticate(state, token, now).await? {
                Some((user, credential)) => {
                    check_scope(&credential, parts)?;
                    Ok(Principal { user, credential, ip })
                }
                None => Err(ApiError::unauthorized()),
            };
        }
        let (user, session) = web_session(state, &parts.headers, now)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        browser::check_csrf(
            &parts.method,
            &parts.headers,
            &session.csrf_token,
            &state.settings.public_base_url,
        )
        .map_err(ApiError::csrf)?;
        Ok(Principal {
            user,
            credential: Credential::WebSession {
                session_id: session.id,
            },
            ip,
        })
    }
}

/// A caller with the operator role; anyone else authenticated gets 403.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let p = Principal::from_request_parts(parts, state).await?;
        if p.user.role == Role::Admin {
            Ok(Self(p))
        } else {
            Err(ApiError::forbidden())
        }
    }
}

/// A caller who may read `/metrics`: the operator, by a session token, the dashboard's session, or
/// an API token with the `metrics` (or `full`) scope. A `read` token is refused (403): the
/// metrics are given to a scraper by a token made for it. Anyone else authenticated gets 403.
#[derive(Debug, Clone)]
pub struct MetricsReader(pub Principal);

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ip = client_ip(parts, state.settings.trust_forwarded_for);
        let now = UtcTime::now();
        let (user, credential) = if let Some(token) = bearer(parts) {
            authenticate(state, token, now)
                .await?
                .ok_or_else(ApiError::unauthorized)?
        } else {
            let (user, session) = web_session(state, &parts.headers, now)
                .await?
                .ok_or_else(ApiError::unauthorized)?;
            let credential = Credential::WebSession {
                session_id: session.id,
            };
            (user, credential)
        };
        if let Credential::ApiToken { scope, .. } = &credential
            && !scope.covers(db::api_tokens::Scope::Metrics)
        {
            return Err(ApiError::insufficient_scope(
                "reading /metrics takes an API token with the `metrics` scope",
            ));
        }
        if user.role != Role::Admin {
            return Err(ApiError::forbidden());
        }
        Ok(Self(Principal { user, credential, ip }))
    }
}

/// A caller with the tenant role; the operator gets 403 on tenant self-service routes.
#[derive(Debug, Clone)]
pub struct Tenant(pub Principal);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let p = Principal::from_request_parts(parts, state).await?;
        if p.user.role == Role::User {
            Ok(Self(p))
        } else {
            Err(ApiError::forbidden())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: "u1".into(),
            username: "alice".into(),
            password_hash: String::new(),
            role: Role::User,
            status: db::users::Status::Active,
            expires_at: None,
            token_version: 3,
            created_at: UtcTime::now(),
            updated_at: UtcTime::now(),
            totp_enabled: false,
        }
    }

    #[test]
    fn read_tokens_only_read() {
        use axum::http::Method;
        use db::api_tokens::Scope::{Full, Metrics, Read};
        let cases = [
            (Read, Method::GET, false, true),
            (Read, Method::HEAD, false, true),
            (Read, Method::GET, true, false),
            (Read, Method::POST, false, false),
            (Read, Method::PATCH, false, false),
            (Read, Method::PUT, false, false),
            (Read, Method::DELETE, false, false),
            (Read, Method::OPTIONS, false, false),
            (Full, Method::POST, false, true),
            (Full, Method::DELETE, false, true),
            (Full, Method::GET, true, true),
            (Metrics, Method::GET, false, false),
            (Metrics, Method::HEAD, false, false),
            (Metrics, Method::POST, false, false),
        ];
        for (scope, method, upgrade, want) in cases {
            assert_eq!(
                scope_allows(scope, &method, upgrade),
                want,
                "{scope:?} {method} {upgrade}"
            );
        }
        assert!(Full.covers(Read) && Full.covers(Metrics) && Full.covers(Full));
        assert!(!Read.covers(Full) && !Read.covers(Metrics));
        assert!(!Metrics.covers(Read) && !Metrics.covers(Full));
    }

    #[test]
    fn forwarded_for_takes_the_proxys_entry() {
        let parts = |values: &[&str]| {
            let mut req = axum::http::Request::builder();
            for v in values {
                req = req.header("x-forwarded-for", *v);
            }
            req.body(()).unwrap().into_parts().0
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(&parts(&["10.9.9.9, 10.0.0.7"]), true), ip("10.0.0.7"));
        assert_eq!(client_ip(&parts(&["10.9.9.9", "10.0.0.8"]), true), ip("10.0.0.8"));
        assert_eq!(client_ip(&parts(&["10.0.0.7"]), false), None);
        assert_eq!(client_ip(&parts(&["junk"]), true), None);
    }

    #[test]
    fn session_round_trip_and_secret_rotation() {
        let keys = Keys::new(
            "first-secret-0123456789-abcdefghijklmnop",
            std::time::Duration::from_secs(60),
        );
        let token = keys.issue_session(&user(), UtcTime::now()).unwrap();
        let claims = keys.decode_session(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.ver), ("u1", 3));
        let rotated = Keys::new(
            "second-secret-0123456789-abcdefghijklmno",
            std::time::Duration::from_secs(60),
        );
        assert!(rotated.decode_session(&token).is_none());
    }

    #[test]
    fn expired_sessions_are_refused() {
        let keys = Keys::new(
            "first-secret-0123456789-abcdefghijklmnop",
            std::time::Duration::from_secs(60),
        );
        let long_ago = UtcTime::from(chrono::Utc::now() - chrono::Duration::hours(2));
        let token = keys.issue_session(&user(), long_ago).unwrap();
        assert!(keys.decode_session(&token).is_none());
    }

    #[test]
    fn api_token_hash_depends_on_the_secret() {
        let a = Keys::new(
            "first-secret-0123456789-abcdefghijklmnop",
            std::time::Duration::from_secs(60),
        );
        let b = Keys::new(
            "second-secret-0123456789-abcdefghijklmno",
            std::time::Duration::from_secs(60),
        );
        let (token, hash) = a.new_api_token();
        assert!(token.starts_with(API_TOKEN_PREFIX));
        assert_eq!(a.api_token_hash(&token), hash);
        assert_ne!(b.api_token_hash(&token), hash);
    }
}
