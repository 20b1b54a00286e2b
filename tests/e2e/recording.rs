//! Session recording end to end: pty sessions through the real gateway into real hosts are
//! recorded as the installation's `SESSION_RECORDING` and the per-user and per-host overrides say;
//! a recording is listed, downloads as valid asciicast v2 holding what the session printed, and
//! plays in the dashboard in Chromium; the dashboard's terminal is recorded like any pty session.
//! Non-pty sessions are not recorded. Tenants read recordings only when the operator shares them.
//! A recording that cannot be stored ends the session (`RECORDING_FAILURE=refuse`) or lets it go on
//! (`continue`). Retention deletes old recordings.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::process::Command;
use std::time::Duration;

use cloud_cli_proxy_tests::browser::{Browser, Key};
use cloud_cli_proxy_tests::cli::Cli;
use cloud_cli_proxy_tests::database::psql;
use cloud_cli_proxy_tests::docker::Out;
use cloud_cli_proxy_tests::gateway::{Login, Tenant, output, terminal_login};
use cloud_cli_proxy_tests::{Api, ControlPlane, Node, Options, assert_error, eventually};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `typed` in an interactive shell on the tenant's host through the gateway, in a real
/// terminal of 101x33 (`script`).
async fn pty_session(node: &Node, tenant: &Tenant, typed: &str) -> Out {
    let inner = format!(
        "stty cols 101 rows 33; TERM=xterm-256color {}",
        terminal_login(node, tenant, None)
    );
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qefc", &inner, "/dev/null"])
        .env("SSHPASS", &tenant.password)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    output(cmd, Some(typed.as_bytes()), LIMIT).await
}

/// A command without a pty (no recording).
async fn exec(node: &Node, tenant: &Tenant, command: &str) -> Out {
    let mut cmd = node.gateway_ssh(&tenant.login(), &Login::Password(tenant.password.clone()));
    cmd.env("SSHPASS", &tenant.password).arg(command);
    output(cmd, None, LIMIT).await
}

/// Runs SQL on the control plane's database, SQLite or PostgreSQL; its output, trimmed.
fn run_sql(cp: &ControlPlane, sql: &str) -> String {
    if cp.is_postgres() {
        return psql(&cp.database_url(), sql);
    }
    let out = Command::new("sqlite3")
        .arg(cp.db_path())
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Makes every insert into `table` fail, as a full or broken store would.
fn break_storage(cp: &ControlPlane, table: &str) {
    let sql = if cp.is_postgres() {
        format!(
            "CREATE OR REPLACE FUNCTION test_storage_full() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'storage full'; END $$; \
             CREATE TRIGGER test_broken_{table} BEFORE INSERT ON {table} \
             FOR EACH ROW EXECUTE FUNCTION test_storage_full();"
        )
    } else {
        format!(
            "CREATE TRIGGER test_broken_{table} BEFORE INSERT ON {table} \
             BEGIN SELECT RAISE(ABORT, 'storage full'); END;"
        )
    };
    run_sql(cp, &sql);
}

fn mend_storage(cp: &ControlPlane, table: &str) {
    let on = if cp.is_postgres() {
        format!(" ON {table}")
    } else {
        String::new()
    };
    run_sql(cp, &format!("DROP TRIGGER test_broken_{table}{on};"));
}

/// The recordings of `user_id`, once all of them have ended.
async fn ended_recordings(admin: &Api, user_id: &str, want: usize) -> Vec<Value> {
    eventually(LIMIT, "the recordings to be listed as ended", || {
        let admin = admin.clone();
        let path = format!("/v1/admin/recordings?user_id={user_id}");
        async move {
            let r = admin.get(&path).await;
            let rows = r.expect(200)["data"].as_array().unwrap().clone();
            (rows.len() == want && rows.iter().all(|r| !r["ended_at"].is_null())).then_some(rows)
        }
    })
    .await
}

/// Checks `text` is asciicast v2 and returns its header and everything it printed.
fn parse_cast(text: &str) -> (Value, String) {
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().expect("a header line")).unwrap();
    assert_eq!(header["version"], 2, "{header}");
    assert!(header["width"].as_u64().unwrap() > 0 && header["height"].as_u64().unwrap() > 0);
    let mut printed = String::new();
    let mut last = 0.0;
    for line in lines {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let event = event
            .as_array()
            .unwrap_or_else(|| panic!("not [time, code, data]: {line}"));
        assert_eq!(event.len(), 3, "{line}");
        let t = event[0].as_f64().unwrap();
        assert!(t >= last, "times go forward: {line}");
        last = t;
        let data = event[2].as_str().unwrap();
        match event[1].as_str().unwrap() {
            "o" => printed.push_str(data),
            "r" => assert!(data.contains('x'), "{line}"),
            other => panic!("unexpected event code {other}: {line}"),
        }
    }
    (header, printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recorded_session_lists_downloads_and_plays() {
    let node = Node::embedded(&[("SESSION_RECORDING", "all")]).await;
    let alice = node.tenant("alice").await;
    let bob = node.tenant("bob").await;
    let admin = &node.admin;

    // On for everyone, off for bob.
    let r = admin
        .put(
            &format!("/v1/admin/users/{}/recording", bob.host.user_id),
            json!({"recording": "off"}),
        )
        .await;
    let set = r.expect(200);
    assert_eq!(
        (set["recording"].as_str(), set["effective"].as_bool()),
        (Some("off"), Some(false))
    );
    assert_eq!(set["source"], "user");
    let r = admin
        .get(&format!("/v1/admin/hosts/{}/recording", alice.host.id))
        .await;
    assert_eq!(r.expect(200)["effective"], true, "{}", r.text);

    // The marker is only in the output: what was typed reads `$((6*7))`.
    let out = pty_session(&node, &alice, "echo MARK-$((6*7))-$((100+23))\nexit\n").await;
    assert!(out.stdout.contains("MARK-42-123"), "{out:?}");
    let out = pty_session(&node, &bob, "echo BOB-$((6*7))\nexit\n").await;
    assert!(out.stdout.contains("BOB-42"), "{out:?}");
    // Without a pty nothing is recorded.
    let out = exec(&node, &alice, "echo NOPTY-$((2*3))").await;
    assert_eq!(out.stdout.trim(), "NOPTY-6", "{out:?}");

    let rows = ended_recordings(admin, &alice.host.user_id, 1).await;
    let rec = &rows[0];
    assert_eq!(rec["host_id"], alice.host.id.as_str());
    assert_eq!(rec["via"], "ssh");
    assert!(rec["size_bytes"].as_i64().unwrap() > rec["stored_bytes"].as_i64().unwrap() / 2);
    assert!(rec["error"].is_null(), "{rec}");
    let none = admin
        .get(&format!("/v1/admin/recordings?user_id={}", bob.host.user_id))
        .await;
    assert_eq!(none.total(), 0, "bob is not recorded: {}", none.text);
    // Filters: host, time range, paging.
    let by_host = admin
        .get(&format!(
            "/v1/admin/recordings?host_id={}&page_size=1",
            alice.host.id
        ))
        .await;
    assert_eq!(by_host.total(), 1, "{}", by_host.text);
    let later = admin.get("/v1/admin/recordings?since=2999-01-01T00:00:00Z").await;
    assert_eq!(later.total(), 0, "{}", later.text);
    let r = admin
        .get("/v1/admin/recordings?since=2030-01-01T00:00:00Z&until=2020-01-01T00:00:00Z")
        .await;
    assert_error(&r, 400, "invalid_query");

    // The asciicast file.
    let id = rec["id"].as_str().unwrap();
    let cast = admin.get(&format!("/v1/admin/recordings/{id}/cast")).await;
    assert_eq!(cast.status, 200, "{}", cast.text);
    assert_eq!(cast.header("content-type"), Some("application/x-asciicast"));
    let (header, printed) = parse_cast(&cast.text);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(101), Some(33))
    );
    assert!(printed.contains("MARK-42-123"), "{printed}");
    assert!(!printed.contains("NOPTY"), "{printed}");

    // The tenant reads no recording: the operator did not share them.
    let tenant = admin.login_as("alice", &alice.password).await;
    assert_error(&tenant.get("/v1/admin/recordings").await, 403, "forbidden");
    assert_error(
        &tenant.get(&format!("/v1/admin/recordings/{id}/cast")).await,
        403,
        "forbidden",
    );
    assert_error(
        &tenant.get("/v1/user/recordings").await,
        403,
        "recordings_not_shared",
    );
    assert_error(
        &tenant.get(&format!("/v1/user/recordings/{id}/cast")).await,
        403,
        "recordings_not_shared",
    );

    // The player in the dashboard; then the dashboard's terminal, recorded too.
    let mut web_recorded = false;
    if let Some(mut browser) = Browser::start().await {
        let base = node.cp.base_url();
        let opts = node.cp.options().clone();
        browser.goto(&format!("{base}/")).await;
        browser.sign_in(&opts.admin_username, &opts.admin_password).await;
        browser.wait_for("[data-test=signout]").await;
        browser.goto(&format!("{base}/#/recordings")).await;
        browser
            .wait_for(&format!("[data-test=recording-row][data-recording-id='{id}']"))
            .await;
        browser.shot("recordings-list").await;
        browser
            .click(&format!(
                "[data-test=recording-row][data-recording-id='{id}'] [data-test=recording-play]"
            ))
            .await;
        browser
            .wait_for_text(".xterm-accessibility-tree", "MARK-42-123")
            .await;
        browser
            .wait_for("[data-test=player-viewer][data-state=ended]")
            .await;
        let shot = browser.shot("recording-player").await;
        eprintln!("player screenshot: {}", shot.display());
        let errors = browser.js_errors().await;
        assert!(errors.is_empty(), "JavaScript errors: {errors:?}");
        let violations = browser.violations().await;
        assert!(violations.is_empty(), "CSP violations: {violations:?}");

        browser
            .goto(&format!("{base}/#/hosts/{}/terminal", alice.host.id))
            .await;
        browser.set_wait(LIMIT);
        browser
            .wait_for("[data-test=terminal-viewer][data-state=connected]")
            .await;
        browser.set_wait(cloud_cli_proxy_tests::browser::WAIT);
        browser
            .key(
                ".xterm-helper-textarea",
                &format!("echo WEB-$((6*7)){}", Key::Enter),
            )
            .await;
        browser.wait_for_text(".xterm-accessibility-tree", "WEB-42").await;
        browser
            .key(".xterm-helper-textarea", &format!("exit{}", Key::Enter))
            .await;
        let rows = ended_recordings(admin, &alice.host.user_id, 2).await;
        let web = rows.iter().find(|r| r["via"] == "web").expect("a web recording");
        assert_eq!(web["opened_by"], opts.admin_username.as_str(), "{web}");
        let cast = admin
            .get(&format!(
                "/v1/admin/recordings/{}/cast",
                web["id"].as_str().unwrap()
            ))
            .await;
        assert!(parse_cast(&cast.text).1.contains("WEB-42"), "{}", cast.text);
        web_recorded = true;
    }

    // RECORDING_FAILURE=refuse (the default). A recording that cannot be opened: no pty, and the
    // typed command never runs.
    break_storage(&node.cp, "recordings");
    let out = pty_session(&node, &alice, "echo REFUSED-$((6*7))\nexit\n").await;
    assert!(!out.stdout.contains("REFUSED-42"), "ran unrecorded: {out:?}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("recording cannot be stored"),
        "{out:?}"
    );
    assert_ne!(out.code, Some(0), "{out:?}");
    mend_storage(&node.cp, "recordings");
    // A recording whose chunks cannot be stored any more ends its session.
    break_storage(&node.cp, "recording_chunks");
    let out = pty_session(
        &node,
        &alice,
        "echo BEFORE-$((1+1)); sleep 8; echo AFTER-$((1+1))\nexit\n",
    )
    .await;
    mend_storage(&node.cp, "recording_chunks");
    assert!(!out.stdout.contains("AFTER-2"), "went on unrecorded: {out:?}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("the session is ended"),
        "{out:?}"
    );
    let rows = ended_recordings(admin, &alice.host.user_id, 2 + usize::from(web_recorded)).await;
    assert!(rows.iter().any(|r| !r["error"].is_null()), "{rows:?}");
    let failed = admin.get("/v1/admin/events?type=ssh.recording_failed").await;
    assert_eq!(failed.total(), 1, "{}", failed.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_host_override_shared_recordings_and_continue() {
    let node = Node::embedded(&[
        ("SESSION_RECORDING", "off"),
        ("RECORDINGS_TENANT_ACCESS", "true"),
        ("RECORDING_FAILURE", "continue"),
    ])
    .await;
    let carol = node.tenant("carol").await;
    let dave = node.tenant("dave").await;
    let admin = &node.admin;

    let r = admin
        .put(
            &format!("/v1/admin/hosts/{}/recording", carol.host.id),
            json!({"recording": "on"}),
        )
        .await;
    assert_eq!(r.expect(200)["source"], "host", "{}", r.text);
    let r = admin
        .put(
            &format!("/v1/admin/hosts/{}/recording", carol.host.id),
            json!({"recording": "sometimes"}),
        )
        .await;
    assert_error(&r, 400, "validation_failed");
    let set = admin
        .get(&format!("/v1/admin/users/{}/recording", dave.host.user_id))
        .await;
    assert_eq!(set.expect(200)["effective"], false, "{}", set.text);

    let out = pty_session(&node, &carol, "echo CAROL-$((6*7))\nexit\n").await;
    assert!(out.stdout.contains("CAROL-42"), "{out:?}");
    let out = pty_session(&node, &dave, "echo DAVE-$((6*7))\nexit\n").await;
    assert!(out.stdout.contains("DAVE-42"), "{out:?}");
    let rows = ended_recordings(admin, &carol.host.user_id, 1).await;
    let id = rows[0]["id"].as_str().unwrap().to_owned();
    let all = admin.get("/v1/admin/recordings").await;
    assert_eq!(all.total(), 1, "only carol's host is recorded: {}", all.text);

    // The CLI: list, the file, a setting.
    let op = Cli::new()
        .with_env("CLOUD_CLI_PROXY_URL", &node.cp.base_url())
        .with_env("CLOUD_CLI_PROXY_TOKEN", admin.token());
    let listed = op
        .run(&["--json", "recordings", "list", "--user", "carol"])
        .await
        .json();
    assert_eq!(listed["total_records"], 1, "{listed}");
    let cast = op.run(&["recordings", "cast", &id]).await;
    cast.ok();
    assert!(parse_cast(&cast.stdout).1.contains("CAROL-42"), "{}", cast.stdout);
    let set = op
        .run(&["--json", "recordings", "set", "--host", &dave.host.id, "on"])
        .await
        .json();
    assert_eq!(
        (set["effective"].as_bool(), set["source"].as_str()),
        (Some(true), Some("host"))
    );
    let set = op
        .run(&["--json", "recordings", "set", "--host", &dave.host.id, "inherit"])
        .await
        .json();
    assert_eq!(set["effective"], false, "{set}");

    // Shared with tenants: each reads their own, and only that.
    let c = admin.login_as("carol", &carol.password).await;
    let d = admin.login_as("dave", &dave.password).await;
    let mine = c.get("/v1/user/recordings").await;
    assert_eq!(mine.total(), 1, "{}", mine.text);
    let cast = c.get(&format!("/v1/user/recordings/{id}/cast")).await;
    assert_eq!(cast.status, 200, "{}", cast.text);
    assert!(parse_cast(&cast.text).1.contains("CAROL-42"));
    assert_eq!(d.get("/v1/user/recordings").await.total(), 0);
    let theirs = d.get(&format!("/v1/user/recordings/{id}/cast")).await;
    assert_error(&theirs, 404, "not_found");
    let filtered = d
        .get(&format!("/v1/user/recordings?user_id={}", carol.host.user_id))
        .await;
    assert_eq!(filtered.total(), 0, "{}", filtered.text);

    // RECORDING_FAILURE=continue: storage fails, the session goes on, the failure is an event.
    break_storage(&node.cp, "recording_chunks");
    let out = pty_session(
        &node,
        &carol,
        "echo BEFORE-$((1+1)); sleep 4; echo AFTER-$((1+1))\nexit\n",
    )
    .await;
    mend_storage(&node.cp, "recording_chunks");
    assert!(out.stdout.contains("AFTER-2"), "the session went on: {out:?}");
    let rows = ended_recordings(admin, &carol.host.user_id, 2).await;
    assert!(rows.iter().any(|r| !r["error"].is_null()), "{rows:?}");
    eventually(LIMIT, "the recording failure event", || {
        let admin = admin.clone();
        async move {
            let r = admin.get("/v1/admin/events?type=ssh.recording_failed").await;
            (r.total() == 1).then_some(())
        }
    })
    .await;
}

/// Writes a recording started at `started_at`, with one chunk, straight into the database.
fn insert_recording(cp: &ControlPlane, id: &str, started_at: &str) {
    let blob = if cp.is_postgres() {
        "decode('00', 'hex')"
    } else {
        "x'00'"
    };
    run_sql(
        cp,
        &format!(
            "INSERT INTO recordings (id, user_id, host_id, connection_id, gateway, via, width, height, term, \
               started_at, ended_at, duration_ms, chunks, size_bytes, stored_bytes) \
             VALUES ('{id}', '{id}', '{id}', 'c', 'g', 'ssh', 80, 24, 'xterm', '{started_at}', '{started_at}', 1, 1, 1, 1); \
             INSERT INTO recording_chunks (recording_id, seq, size_bytes, data) VALUES ('{id}', 0, 1, {blob});"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_past_the_retention_are_deleted() {
    let mut cp = ControlPlane::start(Options::new()).await;
    cp.stop().await;
    let ancient = "00000000-0000-4000-8000-000000000001";
    let recent = "00000000-0000-4000-8000-000000000002";
    insert_recording(&cp, ancient, "2001-01-01T00:00:00.000000Z");
    let yesterday =
        (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    insert_recording(&cp, recent, &yesterday);

    cp.restart(Options::new().env("RECORDING_RETENTION_DAYS", 30))
        .await;
    let admin = cp.admin().await;
    eventually(
        Duration::from_secs(20),
        "the ancient recording to be deleted",
        || {
            let admin = admin.clone();
            async move {
                let r = admin.get(&format!("/v1/admin/recordings/{ancient}")).await;
                (r.status == 404).then_some(())
            }
        },
    )
    .await;
    admin
        .get(&format!("/v1/admin/recordings/{recent}"))
        .await
        .expect(200);
    let chunks = run_sql(
        &cp,
        &format!("SELECT COUNT(*) FROM recording_chunks WHERE recording_id = '{ancient}';"),
    );
    assert_eq!(chunks, "0");
}
