//! Carries out the sign-in policy (`auth::policy`) for every way in: takes the attempt past the
//! limiter (counted before anything is checked), checks the proof under the bounded password
//! verifier, asks the policy, and settles the limiter with the outcome. The callers look the
//! account and host up before, and write the audit event and the answer after.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::StatusCode;

use super::policy::{self, Account, Decision, HostPick, Proof, Refusal, SecondFactor, Way};
use super::ratelimit::{Outcome, client_key};
use crate::AppState;
use crate::db::UtcTime;
use crate::db::users::User;
use crate::error::{ApiError, ApiResult};

/// Who is trying, from where, for what.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub way: Way,
    pub ip: Option<IpAddr>,
    /// The account's key in the limiter: the name typed (bounded), or for an entry link its owner's
    /// name (`entry:<short_id>` when the link opens nothing).
    pub account_key: &'a str,
    /// The account, when there is one.
    pub user: Option<&'a User>,
    pub host: HostPick,
    /// The browser holds this account's device cookie: a client it signed in from before.
    pub device_known: bool,
}

/// The proof offered.
#[derive(Debug, Clone, Copy)]
pub enum Given<'a> {
    /// A password, checked against the account's hash and, over SSH, the host's own.
    Password {
        password: &'a str,
        host_hash: Option<&'a str>,
    },
    /// A public key; `signed` once the client proved it holds the private half (before that, an
    /// offer only asks whether the key would do, and is neither counted nor remembered).
    Key { known: bool, signed: bool },
    /// A single-use secret, already redeemed (or not) by the caller.
    Secret(bool),
}

/// Decides one attempt. `second_factor` is the code sent with it, if any.
pub async fn check(
    state: &AppState,
    facts: Facts<'_>,
    given: Given<'_>,
    second_factor: Option<&str>,
) -> ApiResult<Decision> {
    let way = facts.way;
    let decision = decide(state, facts, given, second_factor).await?;
    // A key offered but not signed for only asks whether it would do: not an attempt yet.
    if !matches!(given, Given::Key { signed: false, .. }) {
        state.metrics.sign_in(way, decision);
    }
    Ok(decision)
}

async fn decide(
    state: &AppState,
    facts: Facts<'_>,
    given: Given<'_>,
    second_factor: Option<&str>,
) -> ApiResult<Decision> {
    let ip = client_key(facts.ip);
    let known = facts.device_known || state.limiter.is_known(facts.account_key, &ip).await;
    let mut attempt = policy::Attempt {
        way: facts.way,
        account: facts.user.map(|u| Account {
            status: u.status,
            expires_at: u.expires_at,
            second_factor: u.totp_enabled,
        }),
        proof: Proof::Unchecked,
        second_factor: SecondFactor::Missing,
        host: facts.host,
        limited: None,
        now: UtcTime::now(),
    };

    // Only a password is a guess worth counting: a key offer costs nothing and proves nothing until
    // signed, and a single-use secret is too long to guess; those pass the address's limit alone.
    let ticket = if matches!(given, Given::Password { .. }) {
        match state.limiter.admit(&ip, facts.account_key, known).await {
            Ok(ticket) => Some(ticket),
            Err(wait) => {
                attempt.limited = Some(wait);
                return Ok(policy::decide(&attempt));
            }
        }
    } else {
        if let Err(wait) = state.limiter.check_ip(&ip).await {
            attempt.limited = Some(wait);
            return Ok(policy::decide(&attempt));
        }
        None
    };

    attempt.proof = match given {
        Given::Password { password, host_hash } => {
            // An unknown account costs the same as a wrong password: the decoy hash is checked.
            let mut hashes = vec![
                facts
                    .user
                    .map_or_else(|| state.decoy_hash.to_string(), |u| u.password_hash.clone()),
            ];
            hashes.extend(host_hash.map(str::to_owned));
            match state.verifier.verify(password.to_owned(), hashes).await {
                Ok(ok) => Proof::Password(ok && facts.user.is_some()),
                Err(busy) => Proof::Busy {
                    retry_after: busy.retry_after,
                },
            }
        }
        Given::Key { known, .. } => Proof::Key(known),
        Given::Secret(ok) => Proof::Secret(ok),
    };
    let proven = matches!(
        attempt.proof,
        Proof::Password(true) | Proof::Key(true) | Proof::Secret(true)
    );
    if let (true, true, Some(user)) = (proven, facts.way.asks_second_factor(), facts.user)
        && user.totp_enabled
    {
        attempt.second_factor = match second_factor {
            None => SecondFactor::Missing,
            Some(code) => match super::totp::redeem(state, user, code, UtcTime::now()).await? {
                true => SecondFactor::Valid,
                false => SecondFactor::Invalid,
            },
        };
    }

    let decision = policy::decide(&attempt);
    let outcome = match decision {
        Decision::Grant => Outcome::Succeeded,
        Decision::Refuse(r) if r.is_guess() => Outcome::Guess,
        Decision::Refuse(_) => Outcome::NotAGuess,
    };
    match ticket {
        Some(ticket) => state.limiter.settle(ticket, outcome).await,
        None => {
            let signed = matches!(given, Given::Key { signed: true, .. } | Given::Secret(true));
            if outcome == Outcome::Succeeded && signed {
                state.limiter.remember(facts.account_key, &ip).await;
            }
        }
    }
    Ok(decision)
}

/// Whether `refusal` goes to the audit log. A refusal for a proof is always written; one about
/// load (already rate-limited, or busy) is written once a minute per client address and per account,
/// so a flood of refused attempts cannot fill the disk with copies of one fact.
pub fn worth_recording(state: &AppState, facts: &Facts<'_>, refusal: Refusal) -> bool {
    refusal.retry_after().is_none()
        || state
            .limiter
            .log_load_refusal(facts.account_key, &client_key(facts.ip))
}

/// The answer to give for a refusal on a way that answers over HTTP. Before the proof is right,
/// every refusal is the same 401, so nothing tells which accounts or links exist.
pub fn answer(way: Way, refusal: Refusal) -> ApiError {
    let retry = |d: Duration| d.as_secs().max(1) + u64::from(d.subsec_nanos() > 0);
    match refusal {
        Refusal::RateLimited { retry_after } => ApiError::rate_limited(retry(retry_after)),
        Refusal::Busy { retry_after } => ApiError::busy(retry(retry_after)),
        Refusal::SecondFactorRequired => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "totp_required",
            "this account signs in with a one-time code too: send it as totp_code",
        ),
        Refusal::SecondFactorInvalid => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "totp_invalid",
            "the one-time code is wrong, stale or already used",
        ),
        Refusal::Disabled if matches!(way, Way::Bootstrap | Way::Entry) => ApiError::new(
            StatusCode::FORBIDDEN,
            "account_disabled",
            "this account is disabled",
        ),
        Refusal::Expired if matches!(way, Way::Bootstrap | Way::Entry) => ApiError::new(
            StatusCode::FORBIDDEN,
            "account_expired",
            "this account has expired",
        ),
        Refusal::NoHost if matches!(way, Way::Bootstrap | Way::Entry) => {
            ApiError::new(StatusCode::NOT_FOUND, "no_host", "this account has no host")
        }
        _ => ApiError::unauthorized(),
    }
}

/// Checks the signed-in caller's password again before a sensitive change (a new password, the
/// second factor), under the same limits and bounded verifier as a sign-in, so a stolen session
/// is no faster way to guess it. `field` names the password in the error.
pub async fn recheck_password(
    state: &AppState,
    user: &User,
    ip: Option<IpAddr>,
    password: String,
    field: &str,
) -> ApiResult<()> {
    let ticket = state
        .limiter
        .admit(&client_key(ip), &user.username, true)
        .await
        .map_err(|wait| ApiError::rate_limited(wait.as_secs() + 1))?;
    let right = state
        .verifier
        .verify(password, vec![user.password_hash.clone()])
        .await
        .map_err(|busy| ApiError::busy(busy.retry_after.as_secs()))?;
    let outcome = if right { Outcome::NotAGuess } else { Outcome::Guess };
    state.limiter.settle(ticket, outcome).await;
    if right {
        Ok(())
    } else {
        Err(ApiError {
            field: Some(field.into()),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the password is wrong")
        })
    }
}

/// A name (an account, an address) a sign-in sent, as the limiter, the lookup and the audit log see
/// it: at most `max` characters, control characters replaced. No account name holds one, and
/// PostgreSQL text cannot hold NUL, so whatever was sent can be looked up and recorded.
pub fn recordable(sent: &str, max: usize) -> String {
    sent.chars()
        .take(max)
        .map(|c| {
            if c.is_control() {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// Sign-ins handled at once by one process; past it, a sign-in is answered 429 `busy` before its
/// handler even starts. With the password-check slots this bounds the memory a burst of sign-ins
/// can take: a request waiting here holds a few KiB, where one in its handler holds its whole
/// state (lookups, the check, the audit write).
pub const SIGN_INS_IN_FLIGHT: usize = 64;

/// Whether a request is a sign-in: a password (or single-use secret) that anyone may send.
fn is_sign_in(method: &axum::http::Method, path: &str) -> bool {
    if method != axum::http::Method::POST {
        return false;
    }
    matches!(
        path,
        "/v1/auth/login"
            | "/v1/admin/login"
            | "/v1/auth/session"
            | "/v1/bootstrap/sessions"
            | "/v1/gateway/auth"
    ) || path
        .strip_prefix("/v1/entry/")
        .is_some_and(|rest| rest.ends_with("/auth"))
}

/// Middleware: lets at most [`SIGN_INS_IN_FLIGHT`] sign-ins through at once.
pub async fn gate(
    axum::extract::State(gate): axum::extract::State<std::sync::Arc<tokio::sync::Semaphore>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if !is_sign_in(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    match gate.try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::busy(1).into_response(),
    }
}
