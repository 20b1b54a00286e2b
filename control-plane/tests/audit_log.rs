//! The audit log on a real SQLite file: what a request puts into an event is bounded (and still
//! reads back as JSON), and events past `EVENT_RETENTION_DAYS` are deleted while newer ones stay.
#![expect(clippy::expect_used, reason = "test fixtures fail loudly")]

use control_plane::db::events::{
    self, Actor, Filter, MAX_DETAILS_BYTES, MAX_NAME_CHARS, NewEvent, TRUNCATED,
};
use control_plane::db::{Page, UtcTime};
use control_plane::{AppState, tasks};

mod common;

const PAGE: Page = Page {
    page: 1,
    page_size: 500,
};

async fn all(state: &AppState) -> Vec<events::Event> {
    events::list(&state.db, &Filter::default(), PAGE)
        .await
        .expect("list")
        .0
}

fn days_ago(days: i64) -> UtcTime {
    UtcTime::from(chrono::Utc::now() - chrono::Duration::days(days))
}

#[tokio::test]
async fn oversized_events_are_cut_and_still_recorded() {
    let (state, _config, _dir) = common::state().await;
    let huge = "n".repeat(64 * 1024);
    let actor = Actor {
        id: None,
        name: Some(huge.clone()),
        ip: Some("i".repeat(1000)),
    };
    let many: Vec<String> = (0..200).map(|i| format!("{i}-{}", "d".repeat(500))).collect();
    let event = NewEvent::failure("test.oversized").details(serde_json::json!({
        "field": huge, "items": many,
    }));
    events::record(&state.db, &actor, event, UtcTime::now())
        .await
        .expect("recording never fails over size");
    let row: (String, String, String) = control_plane::on_db!(
        &state.db,
        "SELECT actor_name, ip, details FROM events WHERE type = 'test.oversized'",
        |exec, sql| sqlx::query_as(sql).fetch_one(exec).await
    )
    .expect("row");
    let limit = MAX_NAME_CHARS + TRUNCATED.chars().count();
    assert_eq!(row.0.chars().count(), limit);
    assert!(row.0.ends_with(TRUNCATED));
    assert_eq!(row.1.chars().count(), limit);
    assert!(
        row.2.len() <= MAX_DETAILS_BYTES,
        "{} bytes of details",
        row.2.len()
    );
    // Read back through the same path as the API's event list: still valid JSON, marked.
    let listed = all(&state).await;
    let ev = listed
        .iter()
        .find(|e| e.kind == "test.oversized")
        .expect("listed");
    assert_eq!(ev.details["truncated"], true);
}

#[tokio::test]
async fn events_past_the_retention_are_deleted() {
    let (state, _config, _dir) = common::state_with(&["--event-retention-days", "30"]).await;
    let actor = Actor::default();
    for (kind, at) in [
        ("test.ancient", days_ago(400)),
        ("test.old", days_ago(31)),
        ("test.recent", days_ago(29)),
        ("test.now", UtcTime::now()),
    ] {
        events::record(&state.db, &actor, NewEvent::success(kind), at)
            .await
            .expect("record");
    }
    let deleted = tasks::purge_old_events(&state, UtcTime::now())
        .await
        .expect("purge");
    assert_eq!(deleted, 2);
    let kinds: Vec<String> = all(&state).await.into_iter().map(|e| e.kind).collect();
    assert!(
        !kinds.iter().any(|k| k == "test.ancient" || k == "test.old"),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "test.recent"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "test.now"), "{kinds:?}");

    // More than one batch goes in one run.
    for _ in 0..2500 {
        events::record(&state.db, &actor, NewEvent::success("test.bulk"), days_ago(90))
            .await
            .expect("record");
    }
    let deleted = tasks::purge_old_events(&state, UtcTime::now())
        .await
        .expect("purge");
    assert_eq!(deleted, 2500);
}

#[tokio::test]
async fn retention_zero_keeps_every_event() {
    let (state, _config, _dir) = common::state_with(&["--event-retention-days", "0"]).await;
    events::record(
        &state.db,
        &Actor::default(),
        NewEvent::success("test.ancient"),
        days_ago(4000),
    )
    .await
    .expect("record");
    let deleted = tasks::purge_old_events(&state, UtcTime::now())
        .await
        .expect("purge");
    assert_eq!(deleted, 0);
    assert!(all(&state).await.iter().any(|e| e.kind == "test.ancient"));
}
