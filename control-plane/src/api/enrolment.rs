//! Enrolment: the operator's keys (`/v1/admin/enrolment-keys…`) and the two routes that trade one
//! for a credential (`POST /v1/agent/enrol`, `POST /v1/gateway/enrol`). The key is the only proof
//! an unknown machine can give; the credential it gets is shown once and stored as a hash.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Admin, ClientIp};
use crate::db::enrolment_keys::{EnrolmentKey, NewKey};
use crate::db::events::{Actor, NewEvent, Outcome};
use crate::db::{self, UtcTime};
use crate::enrolment::{self, KeyKind};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};

use super::{PageQuery, Paginated};

/// The longest a key may stay usable.
const MAX_KEY_DAYS: i64 = 365;
/// Without `expires_at`, a key is usable for a day.
const DEFAULT_KEY_HOURS: i64 = 24;
const MAX_USAGE_LIMIT: i64 = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// `agent` (node agents) or `gateway` (SSH gateways).
    pub kind: KeyKind,
    /// What the key is for (1-64 printable characters).
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub name: String,
    /// How many enrolments it allows, 1-10000 (default 1: single-use).
    #[schema(minimum = 1, maximum = 10000)]
    pub usage_limit: Option<i64>,
    /// When it stops working (RFC 3339, at most a year ahead; default: in 24 hours).
    pub expires_at: Option<chrono::DateTime<chrono::FixedOffset>>,
}

/// A key as listed, with whether it can still enrol.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    #[serde(flatten)]
    pub key: EnrolmentKey,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Whether it can enrol another machine now.
    pub valid: bool,
    /// Why it cannot, when it cannot: `revoked`, `expired` or `used_up`.
    pub state: Option<enrolment::Refusal>,
}

impl KeyView {
    fn new(key: EnrolmentKey, now: UtcTime) -> Self {
        let state = enrolment::refusal(&key.state(), now);
        Self {
            revoked: key.revoked_at.is_some(),
            valid: state.is_none(),
            state,
            key,
        }
    }
}

/// A new key with its secret: the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    /// Pass it to the agent or gateway as `ENROLMENT_KEY`.
    pub secret: String,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(enrol_agent))
        .routes(routes!(enrol_gateway))
}

/// Creates an enrolment key; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/admin/enrolment-keys", tag = "nodes", security(("bearer" = [])),
    request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 400, body = crate::error::ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(req): Json<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let len = req.name.chars().count();
    if !(1..=64).contains(&len) || req.name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "name must be 1-64 printable characters",
        ));
    }
    let usage_limit = req.usage_limit.unwrap_or(1);
    if !(1..=MAX_USAGE_LIMIT).contains(&usage_limit) {
        return Err(ApiError::invalid("usage_limit", "usage_limit must be 1 to 10000"));
    }
    let now = UtcTime::now();
    let expires_at = match req.expires_at {
        Some(t) => UtcTime::from(t.to_utc()),
        None => UtcTime::from(now.0 + chrono::Duration::hours(DEFAULT_KEY_HOURS)),
    };
    if expires_at <= now || expires_at.0 > now.0 + chrono::Duration::days(MAX_KEY_DAYS) {
        return Err(ApiError::invalid(
            "expires_at",
            "expires_at must be in the future and at most a year ahead",
        ));
    }
    let secret = enrolment::new_secret(enrolment::KEY_PREFIX);
    let secret_hash = enrolment::hash(&secret);
    let prefix: String = secret.chars().take(enrolment::KEY_PREFIX.len() + 4).collect();
    let mut tx = state.db.begin().await?;
    let key = db::enrolment_keys::insert(
        &mut *tx,
        &NewKey {
            kind: req.kind,
            name: req.name.trim(),
            secret_hash: &secret_hash,
            prefix: &prefix,
            usage_limit,
            expires_at,
        },
        now,
    )
    .await?;
    let event = NewEvent::success("enrolment_key.created").details(serde_json::json!({
        "key_id": key.id, "kind": key.kind, "name": key.name, "usage_limit": key.usage_limit,
        "expires_at": key.expires_at,
    }));
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            view: KeyView::new(key, now),
            secret,
        }),
    ))
}

/// Enrolment keys, newest first (never their secrets).
#[utoipa::path(get, path = "/v1/admin/enrolment-keys", tag = "nodes", security(("bearer" = [])),
    params(PageQuery), responses((status = 200, body = Paginated<KeyView>)))]
async fn list_keys(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(page): Query<PageQuery>,
) -> ApiResult<Paginated<KeyView>> {
    let page = page.resolve()?;
    let (rows, total) = db::enrolment_keys::list(&state.db, page).await?;
    let now = UtcTime::now();
    let data = rows.into_iter().map(|k| KeyView::new(k, now)).collect();
    Ok(Paginated::new(data, page, total))
}

/// Revokes an enrolment key: it enrols nothing from now on. Machines it enrolled keep their
/// credentials (revoke those under `/v1/admin/nodes` and `/v1/admin/gateways`).
#[utoipa::path(delete, path = "/v1/admin/enrolment-keys/{key_id}", tag = "nodes", security(("bearer" = [])),
    params(("key_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
async fn revoke_key(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(key_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let key = db::enrolment_keys::revoke(&mut *tx, &key_id.to_string(), now)
        .await?
        .ok_or_else(|| ApiError::not_found("enrolment key"))?;
    let event = NewEvent::success("enrolment_key.revoked")
        .details(serde_json::json!({ "key_id": key.id, "kind": key.kind, "name": key.name }));
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The one answer to every unusable key, so a caller learns nothing about which keys exist; the
/// reason goes to the audit log.
fn refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "unknown, expired, revoked or used-up enrolment key",
    )
}

fn machine_actor(kind: KeyKind, name: &str, ip: Option<std::net::IpAddr>) -> Actor {
    Actor {
        id: None,
        name: Some(format!("{}:{name}", kind.as_str())),
        ip: ip.map(|ip| ip.to_string()),
    }
}

/// Checks `req` against `kind`'s keys and, if usable, counts one use in `tx`. `None`: refused; a
/// refusal of a real key is recorded in `tx`, which the caller commits before answering.
async fn redeem(
    tx: &mut crate::db::Tx,
    kind: KeyKind,
    req: &wire::Enrol,
    ip: Option<std::net::IpAddr>,
    now: UtcTime,
) -> ApiResult<Option<EnrolmentKey>> {
    if !enrolment::valid_name(&req.name) {
        return Err(ApiError::invalid(
            "name",
            "name must be 1-64 letters, digits, `.`, `_`, `-`",
        ));
    }
    let Some(key) = db::enrolment_keys::by_hash(&mut **tx, &enrolment::hash(&req.key)).await? else {
        return Ok(None);
    };
    let reason = if key.kind == kind {
        enrolment::refusal(&key.state(), now).map(enrolment::Refusal::as_str)
    } else {
        Some("wrong_kind")
    };
    let usable = reason.is_none() && db::enrolment_keys::use_once(&mut **tx, &key.id, now).await?;
    if usable {
        return Ok(Some(key));
    }
    let event = NewEvent {
        outcome: Outcome::Failure,
        ..NewEvent::success("enrolment.refused")
    }
    .details(serde_json::json!({
        "key_id": key.id, "kind": kind, "name": req.name, "reason": reason.unwrap_or("used_up"),
    }));
    db::events::record(&mut **tx, &machine_actor(kind, &req.name, ip), event, now).await?;
    Ok(None)
}

fn name_taken(kind: KeyKind) -> ApiError {
    ApiError::conflict(
        "name_taken",
        format!(
            "an enrolled {} already has this name; revoke it first or choose another name",
            kind.as_str()
        ),
    )
}

async fn enrolled_event(
    tx: &mut crate::db::Tx,
    kind: KeyKind,
    key: &EnrolmentKey,
    name: &str,
    id: &str,
    ip: Option<std::net::IpAddr>,
    now: UtcTime,
) -> ApiResult<()> {
    let event = NewEvent::success(match kind {
        KeyKind::Agent => "node.enrolled",
        KeyKind::Gateway => "gateway.enrolled",
    })
    .details(serde_json::json!({ "id": id, "name": name, "key_id": key.id, "key_name": key.name }));
    db::events::record(&mut **tx, &machine_actor(kind, name, ip), event, now).await?;
    Ok(())
}

/// A node agent trades an `agent` enrolment key for its node's credential (shown once).
#[utoipa::path(post, path = "/v1/agent/enrol", tag = "agent",
    request_body = wire::Enrol,
    responses((status = 201, body = wire::Enrolled), (status = 401, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn enrol_agent(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(req): Json<wire::Enrol>,
) -> ApiResult<(StatusCode, Json<wire::Enrolled>)> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let Some(key) = redeem(&mut tx, KeyKind::Agent, &req, ip, now).await? else {
        tx.commit().await?;
        return Err(refused());
    };
    let credential = enrolment::new_secret(enrolment::CREDENTIAL_PREFIX);
    let node = db::nodes::enrol(&mut *tx, &req.name, &enrolment::hash(&credential), now)
        .await?
        .ok_or_else(|| name_taken(KeyKind::Agent))?;
    enrolled_event(&mut tx, KeyKind::Agent, &key, &node.name, &node.id, ip, now).await?;
    tx.commit().await?;
    tracing::info!(node = %node.name, node_id = %node.id, "node enrolled");
    Ok((
        StatusCode::CREATED,
        Json(wire::Enrolled {
            id: node.id,
            credential,
        }),
    ))
}

/// An SSH gateway trades a `gateway` enrolment key for its credential (shown once).
#[utoipa::path(post, path = "/v1/gateway/enrol", tag = "gateway",
    request_body = wire::Enrol,
    responses((status = 201, body = wire::Enrolled), (status = 401, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn enrol_gateway(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(req): Json<wire::Enrol>,
) -> ApiResult<(StatusCode, Json<wire::Enrolled>)> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let Some(key) = redeem(&mut tx, KeyKind::Gateway, &req, ip, now).await? else {
        tx.commit().await?;
        return Err(refused());
    };
    let credential = enrolment::new_secret(enrolment::CREDENTIAL_PREFIX);
    if !db::gateways::enrol(&mut *tx, &req.name, &enrolment::hash(&credential), now).await? {
        return Err(name_taken(KeyKind::Gateway));
    }
    enrolled_event(&mut tx, KeyKind::Gateway, &key, &req.name, &req.name, ip, now).await?;
    tx.commit().await?;
    tracing::info!(gateway = %req.name, "gateway enrolled");
    Ok((
        StatusCode::CREATED,
        Json(wire::Enrolled {
            id: req.name,
            credential,
        }),
    ))
}
