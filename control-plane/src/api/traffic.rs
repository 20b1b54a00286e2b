//! Traffic: a host's bytes per hour or day (`/v1/admin/hosts/{id}/traffic`, the tenant's own under
//! `/v1/user/hosts/{id}/traffic`) and the quotas on them (`/v1/admin/traffic-quotas`, the tenant's
//! own read under `/v1/user/traffic-quotas`).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Admin, Tenant};
use crate::db::events::NewEvent;
use crate::db::hosts::Host;
use crate::db::traffic::{self as store, Action, Direction, NewQuota, Period, Quota, Scope};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};

use super::{PageQuery, Paginated};

/// How a series is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    #[default]
    Hour,
    /// UTC days.
    Day,
}

impl Bucket {
    fn step(self) -> chrono::Duration {
        match self {
            Self::Hour => chrono::Duration::hours(1),
            Self::Day => chrono::Duration::days(1),
        }
    }

    /// Most buckets one answer holds: a month of hours, or 400 days.
    fn most(self) -> i64 {
        match self {
            Self::Hour => 31 * 24,
            Self::Day => 400,
        }
    }

    fn start_of(self, t: UtcTime) -> UtcTime {
        match self {
            Self::Hour => store::hour_of(t),
            Self::Day => Period::Daily.start(t),
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrafficQuery {
    /// Start (RFC 3339; rounded down to its bucket). Default: 24 buckets (hours) or 30 (days)
    /// before `until`.
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// End, exclusive (RFC 3339; rounded up to its bucket). Default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// `hour` (default; at most 744 in one answer) or `day` (UTC; at most 400).
    pub bucket: Option<Bucket>,
}

/// One bucket of a host's traffic.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TrafficBucket {
    #[schema(value_type = String, format = DateTime)]
    pub start: UtcTime,
    #[schema(minimum = 0)]
    pub rx_bytes: i64,
    #[schema(minimum = 0)]
    pub tx_bytes: i64,
}

/// A host's traffic over a time range: every bucket in it, those without traffic at zero.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrafficSeries {
    pub host_id: String,
    pub bucket: Bucket,
    #[schema(value_type = String, format = DateTime)]
    pub since: UtcTime,
    #[schema(value_type = String, format = DateTime)]
    pub until: UtcTime,
    /// Bytes received by the host in the range.
    #[schema(minimum = 0)]
    pub rx_bytes: i64,
    /// Bytes sent by the host in the range.
    #[schema(minimum = 0)]
    pub tx_bytes: i64,
    pub buckets: Vec<TrafficBucket>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQuota {
    /// The host whose traffic counts; exactly one of `host_id` and `user_id`.
    #[schema(format = Uuid)]
    pub host_id: Option<String>,
    /// The user all of whose hosts' traffic counts together.
    #[schema(format = Uuid)]
    pub user_id: Option<String>,
    /// The quota fires once the period's traffic passes this many bytes.
    #[schema(minimum = 1, maximum = 9_007_199_254_740_991_i64)]
    pub limit_bytes: i64,
    /// `in` (received), `out` (sent) or `total` (default).
    pub direction: Option<Direction>,
    /// When the count starts again from zero (UTC; weeks from Monday). Default `monthly`.
    pub period: Option<Period>,
    /// `event` (only an event), `stop` (stop the hosts) or `cut_egress` (nothing leaves the hosts
    /// until the period ends or the quota is deleted). Default `event`.
    pub action: Option<Action>,
}

/// A traffic quota and where it stands in its current period.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaView {
    pub id: String,
    pub host_id: Option<String>,
    pub user_id: Option<String>,
    pub limit_bytes: i64,
    pub direction: Direction,
    pub period: Period,
    pub action: Action,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UtcTime,
    #[schema(value_type = String, format = DateTime)]
    pub period_start: UtcTime,
    /// When the count starts again from zero.
    #[schema(value_type = String, format = DateTime)]
    pub period_end: UtcTime,
    /// Bytes counted so far in this period.
    #[schema(minimum = 0)]
    pub used_bytes: i64,
    /// Whether it fired in this period (and, for `cut_egress`, holds the egress cut).
    pub exceeded: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub exceeded_at: Option<UtcTime>,
}

impl QuotaView {
    async fn new(state: &AppState, q: Quota, now: UtcTime) -> ApiResult<Self> {
        let period_start = q.period.start(now);
        let used = q
            .direction
            .of(store::usage(&state.db, &q.scope(), period_start).await?);
        let exceeded = q.fired_in_period(now);
        Ok(Self {
            period_end: q.period.next_start(now),
            used_bytes: used,
            exceeded,
            exceeded_at: q.fired_at.filter(|_| exceeded),
            id: q.id,
            host_id: q.host_id,
            user_id: q.user_id,
            limit_bytes: q.limit_bytes,
            direction: q.direction,
            period: q.period,
            action: q.action,
            created_at: q.created_at,
            period_start,
        })
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuotaFilter {
    pub host_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin_traffic))
        .routes(routes!(user_traffic))
        .routes(routes!(create_quota, list_quotas))
        .routes(routes!(get_quota, delete_quota))
        .routes(routes!(user_quotas))
}

/// A host's traffic per hour or day.
#[utoipa::path(get, path = "/v1/admin/hosts/{host_id}/traffic", tag = "traffic", security(("bearer" = [])),
    params(("host_id" = Uuid, Path), TrafficQuery),
    responses((status = 200, body = TrafficSeries), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
async fn admin_traffic(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(host_id): Path<Uuid>,
    Query(query): Query<TrafficQuery>,
) -> ApiResult<Json<TrafficSeries>> {
    let host = super::hosts::host_or_404(&state, host_id).await?;
    series(&state, &host, &query).await.map(Json)
}

/// One of the caller's hosts' traffic per hour or day.
#[utoipa::path(get, path = "/v1/user/hosts/{host_id}/traffic", tag = "portal", security(("bearer" = [])),
    params(("host_id" = Uuid, Path), TrafficQuery),
    responses((status = 200, body = TrafficSeries), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
async fn user_traffic(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Path(host_id): Path<Uuid>,
    Query(query): Query<TrafficQuery>,
) -> ApiResult<Json<TrafficSeries>> {
    let host = db::hosts::get_owned(&state.db, &host_id.to_string(), &me.user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("host"))?;
    series(&state, &host, &query).await.map(Json)
}

fn invalid_query(field: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        field: Some(field.into()),
        ..ApiError::bad_request("invalid_query", message)
    }
}

/// The range a query asks for, rounded out to whole buckets.
fn range(query: &TrafficQuery, now: UtcTime) -> ApiResult<(Bucket, UtcTime, UtcTime)> {
    let bucket = query.bucket.unwrap_or_default();
    let step = bucket.step();
    let until = query.until.map_or(now, |t| UtcTime::from(t.to_utc()));
    let until_start = bucket.start_of(until);
    let until = if until_start == until {
        until
    } else {
        UtcTime::from(until_start.0 + step)
    };
    let default_count = match bucket {
        Bucket::Hour => 24,
        Bucket::Day => 30,
    };
    let since = match query.since {
        Some(t) => bucket.start_of(UtcTime::from(t.to_utc())),
        None => UtcTime::from(until.0 - step * default_count),
    };
    if since >= until {
        return Err(invalid_query("since", "`since` must be before `until`"));
    }
    let count = (until.0 - since.0).num_seconds() / step.num_seconds();
    if count > bucket.most() {
        let unit = match bucket {
            Bucket::Hour => "hours",
            Bucket::Day => "days",
        };
        return Err(invalid_query(
            "since",
            format!("at most {} {unit} in one answer", bucket.most()),
        ));
    }
    Ok((bucket, since, until))
}

async fn series(state: &AppState, host: &Host, query: &TrafficQuery) -> ApiResult<TrafficSeries> {
    let (bucket, since, until) = range(query, UtcTime::now())?;
    let hours = store::hours(&state.db, &host.id, since, until).await?;
    let mut buckets = Vec::new();
    let mut start = since;
    while start < until {
        buckets.push(TrafficBucket {
            start,
            rx_bytes: 0,
            tx_bytes: 0,
        });
        start = UtcTime::from(start.0 + bucket.step());
    }
    for h in &hours {
        let start = bucket.start_of(h.hour);
        let i = usize::try_from((start.0 - since.0).num_seconds() / bucket.step().num_seconds()).ok();
        if let Some(b) = i.and_then(|i| buckets.get_mut(i)) {
            b.rx_bytes = b.rx_bytes.saturating_add(h.rx_bytes);
            b.tx_bytes = b.tx_bytes.saturating_add(h.tx_bytes);
        }
    }
    Ok(TrafficSeries {
        host_id: host.id.clone(),
        bucket,
        since,
        until,
        rx_bytes: buckets.iter().map(|b| b.rx_bytes).sum(),
        tx_bytes: buckets.iter().map(|b| b.tx_bytes).sum(),
        buckets,
    })
}

/// Creates a quota on a host's or a user's traffic. It is checked at once and then every
/// `TRAFFIC_QUOTA_CHECK_SECS`.
#[utoipa::path(post, path = "/v1/admin/traffic-quotas", tag = "traffic", security(("bearer" = [])),
    request_body = CreateQuota,
    responses((status = 201, body = QuotaView), (status = 400, body = crate::error::ErrorBody),
              (status = 404, description = "the host or user", body = crate::error::ErrorBody)))]
async fn create_quota(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(req): Json<CreateQuota>,
) -> ApiResult<(StatusCode, Json<QuotaView>)> {
    let parse = |field: &str, v: &str| {
        Uuid::parse_str(v)
            .map(|u| u.to_string())
            .map_err(|_| ApiError::invalid(field, format!("`{field}` is not a UUID")))
    };
    let scope = match (&req.host_id, &req.user_id) {
        (Some(h), None) => Scope::Host(parse("host_id", h)?),
        (None, Some(u)) => Scope::User(parse("user_id", u)?),
        _ => {
            return Err(ApiError::invalid(
                "host_id",
                "exactly one of `host_id` and `user_id` is required",
            ));
        }
    };
    if req.limit_bytes < 1 {
        return Err(ApiError::invalid(
            "limit_bytes",
            "`limit_bytes` must be at least 1",
        ));
    }
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let owner = match &scope {
        Scope::Host(id) => {
            db::hosts::get(&mut *tx, id)
                .await?
                .ok_or_else(|| ApiError::not_found("host"))?
                .user_id
        }
        Scope::User(id) => {
            db::users::get(&mut *tx, id)
                .await?
                .ok_or_else(|| ApiError::not_found("user"))?;
            Some(id.clone())
        }
    };
    let (host_id, user_id) = match &scope {
        Scope::Host(id) => (Some(id.as_str()), None),
        Scope::User(id) => (None, Some(id.as_str())),
    };
    let new = NewQuota {
        host_id,
        user_id,
        limit_bytes: req.limit_bytes,
        direction: req.direction.unwrap_or(Direction::Total),
        period: req.period.unwrap_or(Period::Monthly),
        action: req.action.unwrap_or(Action::Event),
    };
    let id = store::insert_quota(&mut *tx, &new, now).await?;
    let mut event = NewEvent::success("traffic.quota_created").details(serde_json::json!({
        "quota_id": id, "limit_bytes": new.limit_bytes, "direction": new.direction,
        "period": new.period, "action": new.action.as_str(),
    }));
    event.host_id = host_id.map(str::to_owned);
    event.user_id = owner;
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    // At once, so a quota already passed acts now rather than at the next check.
    crate::traffic::enforce_quotas(&state, now).await?;
    let quota = store::get_quota(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("traffic quota"))?;
    Ok((
        StatusCode::CREATED,
        Json(QuotaView::new(&state, quota, now).await?),
    ))
}

/// Lists quotas, newest first.
#[utoipa::path(get, path = "/v1/admin/traffic-quotas", tag = "traffic", security(("bearer" = [])),
    params(PageQuery, QuotaFilter), responses((status = 200, body = Paginated<QuotaView>)))]
async fn list_quotas(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(page): Query<PageQuery>,
    Query(filter): Query<QuotaFilter>,
) -> ApiResult<Paginated<QuotaView>> {
    let page = page.resolve()?;
    let host_id = filter.host_id.map(|u| u.to_string());
    let user_id = filter.user_id.map(|u| u.to_string());
    let (rows, total) = store::list_quotas(&state.db, host_id.as_deref(), user_id.as_deref(), page).await?;
    let now = UtcTime::now();
    let mut views = Vec::with_capacity(rows.len());
    for q in rows {
        views.push(QuotaView::new(&state, q, now).await?);
    }
    Ok(Paginated::new(views, page, total))
}

/// One quota.
#[utoipa::path(get, path = "/v1/admin/traffic-quotas/{quota_id}", tag = "traffic", security(("bearer" = [])),
    params(("quota_id" = Uuid, Path)),
    responses((status = 200, body = QuotaView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_quota(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(quota_id): Path<Uuid>,
) -> ApiResult<Json<QuotaView>> {
    let quota = store::get_quota(&state.db, &quota_id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("traffic quota"))?;
    Ok(Json(QuotaView::new(&state, quota, UtcTime::now()).await?))
}

/// Deletes a quota; the hosts whose egress it cut get it back.
#[utoipa::path(delete, path = "/v1/admin/traffic-quotas/{quota_id}", tag = "traffic", security(("bearer" = [])),
    params(("quota_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
async fn delete_quota(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(quota_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let id = quota_id.to_string();
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let quota = store::get_quota(&mut *tx, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("traffic quota"))?;
    let cut: Vec<String> = store::cut_hosts(&mut *tx)
        .await?
        .into_iter()
        .filter(|(_, by)| *by == id)
        .map(|(host, _)| host)
        .collect();
    for host_id in &cut {
        store::set_cut(&mut *tx, host_id, None).await?;
        let restored = NewEvent::success("host.egress_restored")
            .host(host_id)
            .details(serde_json::json!({ "reason": "quota deleted", "quota_id": id }));
        db::events::record(&mut *tx, &admin.actor(), restored, now).await?;
    }
    store::delete_quota(&mut *tx, &id).await?;
    let mut event = NewEvent::success("traffic.quota_deleted").details(serde_json::json!({ "quota_id": id }));
    event.host_id = quota.host_id.clone();
    event.user_id = quota.user_id.clone();
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    // Another quota still exceeded cuts again at once.
    crate::traffic::enforce_quotas(&state, now).await?;
    state.wake_agents();
    Ok(StatusCode::NO_CONTENT)
}

/// The quotas on the caller and on the caller's hosts.
#[utoipa::path(get, path = "/v1/user/traffic-quotas", tag = "portal", security(("bearer" = [])),
    responses((status = 200, body = Vec<QuotaView>)))]
async fn user_quotas(State(state): State<AppState>, Tenant(me): Tenant) -> ApiResult<Json<Vec<QuotaView>>> {
    let now = UtcTime::now();
    let mine = store::all_quotas(&state.db).await?;
    let hosts: Vec<String> = db::hosts::of_user(&state.db, &me.user.id)
        .await?
        .into_iter()
        .map(|h| h.id)
        .collect();
    let mut views = Vec::new();
    for q in mine {
        let covers = q.user_id.as_deref() == Some(me.user.id.as_str())
            || q.host_id.as_ref().is_some_and(|h| hosts.contains(h));
        if covers {
            views.push(QuotaView::new(&state, q, now).await?);
        }
    }
    Ok(Json(views))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> chrono::DateTime<chrono::FixedOffset> {
        chrono::DateTime::parse_from_rfc3339(text).unwrap()
    }

    #[test]
    fn ranges_round_out_to_whole_buckets() {
        let now = UtcTime::from(at("2026-12-06T23:17:28Z").to_utc());
        let (b, since, until) = range(&TrafficQuery::default(), now).unwrap();
        assert_eq!(b, Bucket::Hour);
        assert_eq!(until.to_text(), "2026-12-07T00:00:00.000000Z");
        assert_eq!(since.to_text(), "2026-12-06T00:00:00.000000Z");
        let q = TrafficQuery {
            since: Some(at("2026-11-01T05:00:00+02:00")),
            until: Some(at("2026-12-01T00:00:00Z")),
            bucket: Some(Bucket::Day),
        };
        let (_, since, until) = range(&q, now).unwrap();
        assert_eq!(since.to_text(), "2026-11-01T00:00:00.000000Z");
        assert_eq!(until.to_text(), "2026-12-01T00:00:00.000000Z");
        let backwards = TrafficQuery {
            since: Some(at("2026-12-02T00:00:00Z")),
            until: Some(at("2026-12-01T00:00:00Z")),
            bucket: None,
        };
        assert_eq!(range(&backwards, now).unwrap_err().code, "invalid_query");
        let too_long = TrafficQuery {
            since: Some(at("2026-01-01T00:00:00Z")),
            until: None,
            bucket: Some(Bucket::Hour),
        };
        assert!(range(&too_long, now).is_err());
    }
}
