//! Applies the access decisions to the database: checks a password under the sign-in limits,
//! opens a bootstrap session (queuing a start when the host needs one) and hands out single-use
//! SSH secrets. Every attempt, refused or not, leaves an audit event.

use std::net::IpAddr;

use super::{Plan, SECRET_LEN, SESSION_TTL};
use crate::AppState;
use crate::auth::login;
use crate::auth::password;
use crate::auth::policy::{Decision, HostPick, Refusal, Way};
use crate::db::bootstrap::{NewSession, Session};
use crate::db::events::{Actor, NewEvent};
use crate::db::hosts::Host;
use crate::db::tasks::TaskKind;
use crate::db::users::User;
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::hosts;

/// Which route the attempt came through; names its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Bootstrap,
    Entry,
}

impl Flow {
    fn succeeded(self) -> &'static str {
        match self {
            Self::Bootstrap => "access.bootstrap_succeeded",
            Self::Entry => "access.entry_succeeded",
        }
    }
    fn failed(self) -> &'static str {
        match self {
            Self::Bootstrap => "access.bootstrap_failed",
            Self::Entry => "access.entry_failed",
        }
    }
}

/// One password attempt on the bootstrap or entry route.
#[derive(Debug)]
pub struct Attempt {
    pub flow: Flow,
    pub ip: Option<IpAddr>,
    /// Key of the per-account limit and name in the event: the username typed (bootstrap), the
    /// owner's name (entry), or `entry:<short_id>` for a link that names no host.
    pub account: String,
    pub user: Option<User>,
    /// The host of an entry link.
    pub short_id: Option<String>,
    /// Whether the account has the host the flow opens.
    pub host: HostPick,
    pub password: String,
}

impl Attempt {
    pub fn actor(&self) -> Actor {
        Actor {
            id: None,
            name: Some(self.account.clone()),
            ip: self.ip.map(|i| i.to_string()),
        }
    }

    fn way(&self) -> Way {
        match self.flow {
            Flow::Bootstrap => Way::Bootstrap,
            Flow::Entry => Way::Entry,
        }
    }
}

/// Records a refused attempt (when `record`: see `login::worth_recording`) and returns the answer
/// to give.
pub async fn refuse(
    state: &AppState,
    attempt: &Attempt,
    user_id: Option<&str>,
    refusal: Refusal,
    record: bool,
) -> ApiError {
    tracing::info!(reason = refusal.as_str(), flow = ?attempt.flow, "access refused");
    if !record {
        return login::answer(attempt.way(), refusal);
    }
    let mut event = NewEvent::failure(attempt.flow.failed()).details(serde_json::json!({
        "reason": refusal.as_str(), "short_id": attempt.short_id,
    }));
    event.user_id = user_id.map(str::to_owned);
    if let Err(e) = db::events::record(&state.db, &attempt.actor(), event, UtcTime::now()).await {
        return e.into();
    }
    login::answer(attempt.way(), refusal)
}

/// Checks the attempt under the sign-in policy (whose limits every route that takes a password
/// shares). `Ok` only for the right password of a usable account that has the host.
pub async fn authenticate(state: &AppState, attempt: &Attempt) -> ApiResult<User> {
    let facts = login::Facts {
        way: attempt.way(),
        ip: attempt.ip,
        account_key: &attempt.account,
        user: attempt.user.as_ref(),
        host: attempt.host,
        device_known: false,
    };
    let given = login::Given::Password {
        password: &attempt.password,
        host_hash: None,
    };
    match (login::check(state, facts, given, None).await?, &attempt.user) {
        (Decision::Grant, Some(user)) => Ok(user.clone()),
        (Decision::Grant, None) => Err(ApiError::internal("an access login granted without an account")),
        (Decision::Refuse(refusal), user) => {
            let user_id = user.as_ref().map(|u| u.id.as_str());
            let record = login::worth_recording(state, &facts, refusal);
            Err(refuse(state, attempt, user_id, refusal, record).await)
        }
    }
}

/// A session just opened.
#[derive(Debug)]
pub struct Opened {
    pub session: Session,
    /// The session secret in clear, for the handoff route; shown once.
    pub secret: String,
    /// The SSH secret, when it was handed out with the session (an entry link to a running host).
    pub ssh_secret: Option<(String, UtcTime)>,
}

/// Opens a session for `user` on `host`: queues a start when the host needs one, and hands out the
/// SSH secret at once when `issue_now` and the host is ready.
pub async fn open(
    state: &AppState,
    attempt: &Attempt,
    user: &User,
    host: &Host,
    issue_now: bool,
) -> ApiResult<Opened> {
    let now = UtcTime::now();
    let actor = Actor {
        id: Some(user.id.clone()),
        name: Some(user.username.clone()),
        ip: attempt.ip.map(|i| i.to_string()),
    };
    let mut tx = state.db.begin().await?;
    let active = db::tasks::latest_active_for_host(&mut *tx, &host.id).await?;
    let (task_id, started) = match super::plan(host.status, active.as_ref()) {
        Plan::NoHost => {
            drop(tx);
            return Err(refuse(state, attempt, Some(&user.id), Refusal::NoHost, true).await);
        }
        Plan::Ready => (None, false),
        Plan::Follow(id) => (Some(id), false),
        Plan::Start => {
            let params = serde_json::json!({ "reason": "bootstrap" });
            let task = hosts::request(&mut tx, &actor, host, TaskKind::Start, params, now).await?;
            (Some(task.id), true)
        }
    };
    let ssh_secret = if issue_now && task_id.is_none() {
        Some(create_ssh_secret(&mut tx, state, user, host, now).await?)
    } else {
        None
    };
    let secret = password::generate(SECRET_LEN);
    let session = db::bootstrap::insert(
        &mut *tx,
        NewSession {
            user_id: &user.id,
            host_id: &host.id,
            task_id: task_id.as_deref(),
            secret: &secret,
            expires_at: UtcTime::from(now.0 + SESSION_TTL),
            handoff_at: ssh_secret.as_ref().map(|_| now),
        },
        now,
    )
    .await?;
    let event = NewEvent::success(attempt.flow.succeeded())
        .user(&user.id)
        .host(&host.id)
        .details(serde_json::json!({
            "session_id": session.id, "short_id": host.short_id, "start_queued": started,
            "ssh_secret_issued": ssh_secret.is_some(),
        }));
    db::events::record(&mut *tx, &actor, event, now).await?;
    tx.commit().await?;
    if started {
        state.wake_agents();
    }
    Ok(Opened {
        session,
        secret,
        ssh_secret,
    })
}

/// A new single-use SSH secret for `host`, valid for `HANDOFF_TTL_SECS`, with its event.
async fn create_ssh_secret(
    tx: &mut db::Tx,
    state: &AppState,
    user: &User,
    host: &Host,
    now: UtcTime,
) -> ApiResult<(String, UtcTime)> {
    let secret = password::generate(SECRET_LEN);
    let ttl =
        chrono::Duration::from_std(state.settings.handoff_ttl).unwrap_or(chrono::Duration::seconds(120));
    let expires_at = UtcTime::from(now.0 + ttl);
    db::handoffs::create(
        &mut **tx,
        &host.id,
        &user.id,
        &secret,
        &db::handoffs::Purpose::Entry,
        expires_at,
        now,
    )
    .await?;
    Ok((secret, expires_at))
}

/// Hands out the SSH secret of a session whose host is ready, once: `Ok(None)` when `secret` is
/// the session's but the handoff was already taken.
pub async fn hand_off(
    state: &AppState,
    actor: &Actor,
    session: &Session,
    secret: &str,
    user: &User,
    host: &Host,
) -> ApiResult<Option<(String, UtcTime)>> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    if !db::bootstrap::take_handoff(&mut *tx, &session.id, secret, now).await? {
        return Ok(None);
    }
    let issued = create_ssh_secret(&mut tx, state, user, host, now).await?;
    let event = NewEvent::success("access.handoff_issued")
        .user(&user.id)
        .host(&host.id)
        .details(serde_json::json!({ "session_id": session.id, "short_id": host.short_id }));
    db::events::record(&mut *tx, actor, event, now).await?;
    tx.commit().await?;
    Ok(Some(issued))
}
