//! The audit log: every mutation and every sign-in attempt leaves one row here.

use serde::Serialize;
use sqlx::SqliteExecutor;
use utoipa::ToSchema;

use super::{Page, UtcTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

/// Who did it, as far as the request tells.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub id: Option<String>,
    pub name: Option<String>,
    pub ip: Option<String>,
}

/// An event about to be written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub outcome: Outcome,
    pub user_id: Option<String>,
    pub host_id: Option<String>,
    pub details: serde_json::Value,
}

impl NewEvent {
    pub fn success(kind: &'static str) -> Self {
        Self {
            kind,
            outcome: Outcome::Success,
            user_id: None,
            host_id: None,
            details: serde_json::json!({}),
        }
    }
    pub fn failure(kind: &'static str) -> Self {
        Self {
            outcome: Outcome::Failure,
            ..Self::success(kind)
        }
    }
    pub fn user(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }
    pub fn host(mut self, id: impl Into<String>) -> Self {
        self.host_id = Some(id.into());
        self
    }
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Event {
    pub id: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UtcTime,
    /// Dotted event type, e.g. `user.created`, `auth.login_failed`.
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    pub outcome: Outcome,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub user_id: Option<String>,
    pub host_id: Option<String>,
    pub ip: Option<String>,
    #[sqlx(json)]
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

pub async fn record(
    db: impl SqliteExecutor<'_>,
    actor: &Actor,
    event: NewEvent,
    now: UtcTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO events (id, created_at, type, outcome, actor_id, actor_name, user_id, host_id, ip, details) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(super::new_id())
    .bind(now)
    .bind(event.kind)
    .bind(event.outcome)
    .bind(&actor.id)
    .bind(&actor.name)
    .bind(event.user_id)
    .bind(event.host_id)
    .bind(&actor.ip)
    .bind(event.details.to_string())
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub user_id: Option<String>,
    pub host_id: Option<String>,
    pub since: Option<UtcTime>,
    pub until: Option<UtcTime>,
    /// Exact types; a type ending in `.` matches every type with that prefix.
    pub types: Vec<String>,
}

/// Newest first.
pub async fn list(db: &super::Pool, filter: &Filter, page: Page) -> Result<(Vec<Event>, i64), sqlx::Error> {
    let mut where_sql = String::from(
        "(? IS NULL OR user_id = ?) AND (? IS NULL OR host_id = ?) \
         AND (? IS NULL OR created_at >= ?) AND (? IS NULL OR created_at <= ?)",
    );
    if !filter.types.is_empty() {
        let alternatives: Vec<&str> = filter
            .types
            .iter()
            .map(|t| {
                if t.ends_with('.') {
                    "type LIKE ? ESCAPE '\\'"
                } else {
                    "type = ?"
                }
            })
            .collect();
        where_sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
    }
    let select = format!(
        "SELECT id, created_at, type, outcome, actor_id, actor_name, user_id, host_id, ip, details \
         FROM events WHERE {where_sql} ORDER BY seq DESC LIMIT ? OFFSET ?"
    );
    let count = format!("SELECT COUNT(*) FROM events WHERE {where_sql}");

    macro_rules! bind_filter {
        ($q:expr) => {{
            let mut q = $q
                .bind(&filter.user_id)
                .bind(&filter.user_id)
                .bind(&filter.host_id)
                .bind(&filter.host_id)
                .bind(filter.since)
                .bind(filter.since)
                .bind(filter.until)
                .bind(filter.until);
            for t in &filter.types {
                q = if t.ends_with('.') {
                    q.bind(format!(
                        "{}%",
                        t.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
                    ))
                } else {
                    q.bind(t.clone())
                };
            }
            q
        }};
    }

    let rows = bind_filter!(sqlx::query_as::<_, Event>(&select))
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(db)
        .await?;
    let total: i64 = bind_filter!(sqlx::query_scalar(&count)).fetch_one(db).await?;
    Ok((rows, total))
}
