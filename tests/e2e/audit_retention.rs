//! The audit log's retention in the running binary: an event older than `EVENT_RETENTION_DAYS`
//! (written into the database while the control plane was stopped) is deleted by its scheduler soon
//! after the start, while recent events stay. (`0`, keeping everything, is tested in-process in
//! control-plane/tests/audit_log.rs, where no waiting is needed to show that nothing happened.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cloud_cli_proxy_tests::{Api, ControlPlane, Options, eventually};

/// Writes an event of type `kind` dated `created_at` straight into the database.
fn insert_event(db: &Path, kind: &str, created_at: &str) {
    let sql = format!(
        "INSERT INTO events (id, created_at, type, outcome, details) \
         VALUES ('{kind}-id', '{created_at}', '{kind}', 'success', '{{}}');"
    );
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

async fn has_event(admin: &Api, kind: &str) -> bool {
    admin.count(&format!("/v1/admin/events?type={kind}")).await > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_retention_are_deleted_by_the_running_server() {
    let mut cp = ControlPlane::start(Options::new()).await;
    cp.stop().await;
    insert_event(cp.db_path(), "test.ancient", "2001-01-01T00:00:00.000000Z");
    let yesterday =
        (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    insert_event(cp.db_path(), "test.yesterday", &yesterday);

    cp.restart(Options::new().env("EVENT_RETENTION_DAYS", 30)).await;
    let admin = cp.admin().await;
    eventually(Duration::from_secs(20), "the ancient event to be deleted", || {
        let admin = admin.clone();
        async move { (!has_event(&admin, "test.ancient").await).then_some(()) }
    })
    .await;
    assert!(has_event(&admin, "test.yesterday").await);
    assert!(has_event(&admin, "auth.login_succeeded").await);
}
