//! The audit log: every mutation and every sign-in attempt leaves one row here.

use serde::Serialize;
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
    #[sqlx(try_from = "super::JsonText")]
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// Longest `actor_name` and `ip` kept, in characters; anything longer is cut and marked.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest string inside `details` kept, in characters.
pub const MAX_DETAIL_STRING_CHARS: usize = 512;
/// Largest `details` document kept whole, in bytes of JSON.
pub const MAX_DETAILS_BYTES: usize = 8 * 1024;
/// Appended where text was cut.
pub const TRUNCATED: &str = "…[truncated]";

/// `s` cut to `max` characters, marked when cut.
pub fn bounded_text(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some((end, _)) => format!("{}{TRUNCATED}", &s[..end]).into(),
    }
}

/// `details` with every string cut to [`MAX_DETAIL_STRING_CHARS`] and, when the document is still
/// larger than [`MAX_DETAILS_BYTES`], replaced by a marker and the start of its JSON. The audit log
/// stays bounded whatever a request carries, and recording never fails because of size.
pub fn bounded_details(details: serde_json::Value) -> String {
    fn cut(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(bounded_text(&s, MAX_DETAIL_STRING_CHARS).into_owned()),
            Value::Array(items) => Value::Array(items.into_iter().map(cut).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (bounded_text(&k, MAX_NAME_CHARS).into_owned(), cut(v)))
                    .collect(),
            ),
            other => other,
        }
    }
    let text = cut(details).to_string();
    if text.len() <= MAX_DETAILS_BYTES {
        return text;
    }
    serde_json::json!({
        "truncated": true,
        "original_bytes": text.len(),
        "preview": bounded_text(&text, 1024),
    })
    .to_string()
}

pub async fn record(
    db: impl crate::db::Db<'_>,
    actor: &Actor,
    event: NewEvent,
    now: UtcTime,
) -> Result<(), sqlx::Error> {
    let actor_name = actor.name.as_deref().map(|n| bounded_text(n, MAX_NAME_CHARS));
    let ip = actor.ip.as_deref().map(|n| bounded_text(n, MAX_NAME_CHARS));
    crate::db::on_db!(
        db,
        "INSERT INTO events (id, created_at, type, outcome, actor_id, actor_name, user_id, host_id, ip, details) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        |exec, sql| sqlx::query(sql)
            .bind(super::new_id())
            .bind(now)
            .bind(event.kind)
            .bind(event.outcome)
            .bind(&actor.id)
            .bind(actor_name)
            .bind(event.user_id)
            .bind(event.host_id)
            .bind(ip)
            .bind(bounded_details(event.details))
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
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

    let rows = crate::db::on_db!(db, &select, |exec, sql| {
        bind_filter!(sqlx::query_as::<_, Event>(sql))
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(exec)
            .await
    })?;
    let total: i64 = crate::db::on_db!(db, &count, |exec, sql| {
        bind_filter!(sqlx::query_scalar(sql)).fetch_one(exec).await
    })?;
    Ok((rows, total))
}

/// Deletes events older than `cutoff`, a batch at a time so the writer lock is never held long.
/// Returns how many went.
pub async fn purge_before(db: &super::Pool, cutoff: UtcTime) -> Result<u64, sqlx::Error> {
    const BATCH: i64 = 1000;
    let mut total = 0;
    loop {
        let done = crate::db::on_db!(
            db,
            "DELETE FROM events WHERE seq IN \
             (SELECT seq FROM events WHERE created_at < ? ORDER BY seq LIMIT ?)",
            |exec, sql| sqlx::query(sql)
                .bind(cutoff)
                .bind(BATCH)
                .execute(exec)
                .await
                .map(crate::db::Done::from)
        )?
        .rows_affected();
        total += done;
        if done < BATCH as u64 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_characters_and_marked() {
        let cases = [
            ("", 3, ""),
            ("abc", 3, "abc"),
            ("abcd", 3, "abc…[truncated]"),
            ("ééééé", 2, "éé…[truncated]"),
        ];
        for (input, max, want) in cases {
            assert_eq!(bounded_text(input, max), want, "{input:?}");
        }
    }

    #[test]
    fn details_stay_valid_json_and_bounded() {
        use serde_json::{Value, json};
        let small = json!({"a": 1, "b": ["x", {"c": "y"}]});
        assert_eq!(bounded_details(small.clone()), small.to_string());

        let long = "x".repeat(64 * 1024);
        let one: Value = serde_json::from_str(&bounded_details(json!({"name": long}))).unwrap();
        let kept = one["name"].as_str().unwrap();
        assert!(kept.ends_with(TRUNCATED));
        assert_eq!(
            kept.chars().count(),
            MAX_DETAIL_STRING_CHARS + TRUNCATED.chars().count()
        );

        let many: Vec<String> = (0..100).map(|i| format!("{i}{}", "y".repeat(400))).collect();
        let text = bounded_details(json!({ "items": many }));
        assert!(text.len() <= MAX_DETAILS_BYTES, "{}", text.len());
        let marker: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(marker["truncated"], true);
        assert!(marker["original_bytes"].as_u64().unwrap() > MAX_DETAILS_BYTES as u64);
    }
}
