//! `copy-database`: an installation filled on SQLite through the API, copied into a fresh
//! PostgreSQL database with the real binary, answers the same there (with the same key file and
//! token secret: old tokens, passwords and recovery codes still work); a target that holds rows, a
//! source whose schema differs, a source still served and a bad value halfway leave no row behind;
//! a source a migration behind is brought up to date and copied.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::path::Path;
use std::process::Command;

use chrono::Utc;
use cloud_cli_proxy_tests::database::{PgDatabase, execute, psql};
use cloud_cli_proxy_tests::installation::{assert_same, observe, populate};
use cloud_cli_proxy_tests::process::control_plane_bin;
use cloud_cli_proxy_tests::{ControlPlane, Options, enrolment, totp};
use serde_json::{Value, json};

/// What one run of `copy-database` did.
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `copy-database` with the URLs in the environment (the target's carries a password, which
/// must not be on a command line).
fn copy_database(from: &str, to: &str, args: &[&str]) -> Run {
    let out = Command::new(control_plane_bin())
        .arg("copy-database")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("COPY_FROM_URL", from)
        .env("COPY_TO_URL", to)
        .output()
        .expect("run copy-database");
    Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `table=rows` for every table of the PostgreSQL database, by name, in one line.
fn row_counts(url: &str) -> String {
    let tables = psql(
        url,
        "SELECT string_agg(table_name, ' ' ORDER BY table_name) FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    );
    tables
        .split_whitespace()
        .map(|t| format!("{t}={}", psql(url, &format!("SELECT count(*) FROM \"{t}\""))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every table of ours in the PostgreSQL database is empty (the migrations' own table aside).
#[track_caller]
fn assert_no_rows(url: &str) {
    let counts = row_counts(url);
    assert!(
        counts
            .split(' ')
            .all(|t| t.ends_with("=0") || t.starts_with("_sqlx")),
        "rows were written: {counts}"
    );
}

/// The `POST /v1/auth/totp` enrolment of `api`'s account, confirmed: its recovery codes.
async fn enable_totp(api: &cloud_cli_proxy_tests::Api, password: &str) -> Vec<String> {
    let r = api.post("/v1/auth/totp", json!({"password": password})).await;
    let secret = r.expect(201)["secret"].as_str().unwrap().to_owned();
    let r = api
        .post("/v1/auth/totp/confirm", json!({"code": totp::code_now(&secret)}))
        .await;
    r.expect(200)["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_installation_answers_the_same_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let source_db = dir.path().join("control-plane.db");
    let from = format!("sqlite://{}", source_db.display());
    let mut cp = ControlPlane::start(Options::new().db(&source_db)).await;
    let admin = cp.admin().await;
    let p = populate(&cp, &admin, dir.path()).await;

    // Beyond the shared population: enrolment keys, an enrolled node, a second factor.
    enrolment::key(&admin, "gateway", 3).await;
    let (node_id, _) = enrolment::agent(&admin, &cp.api(), "node-a").await;
    let bob = cp.api().login_as("bob", "bob-password").await;
    let recovery = enable_totp(&bob, "bob-password").await;
    let until = Utc::now();
    let mut before = observe(&admin, until).await;
    let keys = admin.get("/v1/admin/enrolment-keys?page_size=500").await;
    let keys = keys.expect(200).clone();
    assert_eq!(keys["total_records"], 2, "{keys}");
    let totp_before = bob.get("/v1/auth/totp").await.expect(200).clone();

    // While the control plane runs on it, the source is refused (it would keep writing).
    let to_unused = PgDatabase::create();
    let run = copy_database(&from, to_unused.url(), &[]);
    assert_eq!(run.status, Some(5), "{}", run.stderr);
    assert!(run.stderr.contains("stop it first"), "{}", run.stderr);
    assert_eq!(row_counts(to_unused.url()), "", "nothing is written");
    cp.stop().await;

    // Small batches, so every table of more than a few rows takes several.
    let pg = PgDatabase::create();
    let run = copy_database(&from, pg.url(), &["--batch-rows", "3"]);
    assert_eq!(run.status, Some(0), "stderr:\n{}", run.stderr);
    let summary: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(summary.len(), 1, "one line on stdout: {}", run.stdout);
    assert!(
        summary[0].starts_with("copied ") && summary[0].contains("row counts equal"),
        "{}",
        summary[0]
    );
    let password = url::Url::parse(pg.url()).unwrap().password().unwrap().to_owned();
    let written = format!(":{password}@");
    assert!(
        !run.stdout.contains(&written) && !run.stderr.contains(&written),
        "the password is printed: {}{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stderr.contains("copy-database: events: 3/"), "{}", run.stderr);
    assert!(run.stderr.contains("sequence moved past"), "{}", run.stderr);
    // Flags became booleans, counters kept their values.
    let sqlite_seq =
        cloud_cli_proxy_tests::database::fetch_texts(&from, "SELECT CAST(MAX(seq) AS TEXT) FROM events", &[])
            .await;
    let pg_seq = psql(pg.url(), "SELECT MAX(seq)::text FROM events");
    assert_eq!(sqlite_seq[0][0].as_deref(), Some(pg_seq.as_str()));
    assert_eq!(
        psql(
            pg.url(),
            "SELECT pg_typeof(entry_disabled)::text FROM hosts LIMIT 1"
        ),
        "boolean"
    );
    let copied_counts = row_counts(pg.url());

    // A control plane on PostgreSQL, same key file (beside the SQLite file) and token secret.
    let mut cp2 = ControlPlane::start(cp.options().clone().postgres(pg.clone())).await;
    assert!(cp2.is_postgres());
    let api = cp2.api();
    let admin2 = api.with_token(&p.admin_token);
    let mut after = observe(&admin2, until).await;
    before.push(("/v1/admin/enrolment-keys".to_owned(), keys));
    after.push((
        "/v1/admin/enrolment-keys".to_owned(),
        admin2
            .get("/v1/admin/enrolment-keys?page_size=500")
            .await
            .expect(200)
            .clone(),
    ));
    assert_same(&before, &after, "after copy-database");
    let nodes = admin2.get("/v1/admin/nodes?page_size=500").await;
    let ids: Vec<&Value> = nodes.data().iter().map(|n| &n["id"]).collect();
    assert_eq!(ids, [&json!(node_id)]);

    // Old tokens, passwords and the second factor work; sealed secrets open with the same key.
    let me = api.with_token(&p.alice_api_token).get("/v1/auth/me").await;
    assert_eq!(me.expect(200)["username"], "alice");
    api.login("alice", "alice-password").await;
    let r = api
        .post(
            "/v1/auth/login",
            json!({"username": "bob", "password": "bob-password"}),
        )
        .await;
    cloud_cli_proxy_tests::assert_error(&r, 401, "totp_required");
    let r = api
        .post(
            "/v1/auth/login",
            json!({"username": "bob", "password": "bob-password", "totp_code": recovery[0]}),
        )
        .await;
    r.expect(200);
    assert_eq!(totp_before["recovery_codes_left"], 10);
    let bob2 = api.with_token(bob.token());
    assert_eq!(
        bob2.get("/v1/auth/totp").await.expect(200)["recovery_codes_left"],
        9
    );
    let egress = admin2.get("/v1/admin/egress-ips?page_size=500").await;
    for e in egress.data() {
        admin2
            .get(&format!("/v1/admin/egress-ips/{}", e["id"].as_str().unwrap()))
            .await
            .expect(200);
    }
    // New rows get new event numbers (the identity sequence was moved past the copied ones).
    admin2.create_user("erin", "erin-password").await;
    let newest = psql(pg.url(), "SELECT type FROM events ORDER BY seq DESC LIMIT 1");
    assert_eq!(newest, "user.created");
    assert!(
        !cp2.logs().contains("\"level\":\"ERROR\""),
        "errors in the logs:\n{}",
        cp2.logs()
    );

    // A target that holds rows is refused, and nothing is written to it. (The control plane on
    // it shares the key file, so it is stopped first, as the source's would be.)
    cp2.stop().await;
    let counts = row_counts(pg.url());
    assert_ne!(counts, copied_counts, "the new control plane wrote rows");
    let run = copy_database(&from, pg.url(), &[]);
    assert_eq!(run.status, Some(3), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("the target already holds rows (in ") && run.stderr.contains("users"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
    assert_eq!(row_counts(pg.url()), counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_difference_or_a_bad_value_copies_nothing_and_a_stale_source_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let source_db = dir.path().join("control-plane.db");
    let from = format!("sqlite://{}", source_db.display());
    let mut cp = ControlPlane::start(Options::new().db(&source_db)).await;
    let admin = cp.admin().await;
    let dora = admin.create_user("dora", "dora-password").await;
    admin
        .create_host(&cloud_cli_proxy_tests::fixtures::id(&dora))
        .await;
    cp.stop().await;
    // A column the PostgreSQL schema does not have (as a later SQLite migration without its
    // PostgreSQL twin would add).
    execute(&from, "ALTER TABLE users ADD COLUMN nickname TEXT", &[]).await;

    let pg = PgDatabase::create();
    let run = copy_database(&from, pg.url(), &[]);
    assert_eq!(run.status, Some(4), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("column `users.nickname` is only in the SQLite database"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
    assert_no_rows(pg.url());

    // A value that is not what its column says stops the copy halfway (users and events come before
    // hosts): the transaction is rolled back, not one row stays.
    execute(&from, "ALTER TABLE users DROP COLUMN nickname", &[]).await;
    execute(&from, "UPDATE hosts SET entry_disabled = 2", &[]).await;
    let run = copy_database(&from, pg.url(), &[]);
    assert_eq!(run.status, Some(1), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("table `hosts`, column `entry_disabled`: 2 is not a flag (0 or 1)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("copy-database: users: 2/2 rows"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
    assert_no_rows(pg.url());

    // A source a migration behind (as left by the previous version) is brought up to date first,
    // then copied into the same target, whose schema the refusals left without rows.
    execute(&from, "UPDATE hosts SET entry_disabled = 0", &[]).await;
    execute(&from, "ALTER TABLE hosts DROP COLUMN ssh_host_key", &[]).await;
    execute(&from, "DELETE FROM _sqlx_migrations WHERE version = 16", &[]).await;
    let run = copy_database(&from, pg.url(), &[]);
    assert_eq!(run.status, Some(0), "stderr:\n{}", run.stderr);
    assert_eq!(
        psql(pg.url(), "SELECT username FROM users WHERE username = 'dora'"),
        "dora"
    );
    assert_eq!(psql(pg.url(), "SELECT entry_disabled::text FROM hosts"), "false");

    // A missing source file is not created and copied as an empty database.
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let run = copy_database(&missing, pg.url(), &[]);
    assert_eq!(run.status, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
    assert!(!Path::new(&dir.path().join("nope.db")).exists());
}
