//! The audit log: `GET /v1/admin/events`.

use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Admin;
use crate::db::events::{Event, Filter};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;

use super::{PageQuery, Paginated};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    pub user_id: Option<Uuid>,
    pub host_id: Option<Uuid>,
    /// Events at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Events at or before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Comma-separated event types; one ending in `.` matches that prefix (e.g. `auth.`). Each is
    /// at most 64 of `a-z`, `.`, `_`; spaces around them and empty ones are ignored.
    #[serde(rename = "type")]
    #[param(rename = "type", pattern = r"^ *[a-z._]{0,64} *(, *[a-z._]{0,64} *)*$")]
    pub kind: Option<String>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_events))
}

/// Lists events, newest first.
#[utoipa::path(get, path = "/v1/admin/events", tag = "events", security(("bearer" = [])),
    params(PageQuery, EventFilter),
    responses((status = 200, body = Paginated<Event>), (status = 400, body = crate::error::ErrorBody)))]
async fn list_events(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(page): Query<PageQuery>,
    Query(filter): Query<EventFilter>,
) -> ApiResult<Paginated<Event>> {
    let page = page.resolve()?;
    let since = filter.since.map(|t| UtcTime::from(t.to_utc()));
    let until = filter.until.map(|t| UtcTime::from(t.to_utc()));
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError {
            field: Some("since".into()),
            ..ApiError::bad_request("invalid_query", "`since` is after `until`")
        });
    }
    let mut types = Vec::new();
    for t in filter
        .kind
        .iter()
        .flat_map(|k| k.split(','))
        .map(|t| t.trim_matches(' '))
        .filter(|t| !t.is_empty())
    {
        if t.len() > 64 || !t.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_') {
            return Err(ApiError {
                field: Some("type".into()),
                ..ApiError::bad_request(
                    "invalid_query",
                    "`type` takes event types such as `user.created` or `auth.`",
                )
            });
        }
        types.push(t.to_owned());
    }
    let filter = Filter {
        user_id: filter.user_id.map(|u| u.to_string()),
        host_id: filter.host_id.map(|u| u.to_string()),
        since,
        until,
        types,
    };
    let (rows, total) = db::events::list(&state.db, &filter, page).await?;
    Ok(Paginated::new(rows, page, total))
}
