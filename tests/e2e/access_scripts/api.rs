//! The access routes' answers, code by code, against the real binary and a stand-in agent.

use cloud_cli_proxy_tests::access::{FakeAgent, handoff_row, reachable, session_status, ssh_proxy_addr};
use cloud_cli_proxy_tests::fixtures::id;
use cloud_cli_proxy_tests::{ControlPlane, Options, assert_error, assert_keys};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_the_access_routes() {
    let (opts, base) = reachable(Options::new());
    let (opts, ssh_port) = ssh_proxy_addr(opts);
    let opts = opts
        .env("HANDOFF_TTL_SECS", 60)
        .env("LOGIN_MAX_FAILURES_PER_ACCOUNT", 3);
    let cp = ControlPlane::start(opts).await;
    let admin = cp.admin().await;
    let anon = cp.api();
    let agent = FakeAgent::register(&cp).await;
    let alice = admin.create_user("alice", "alice-password").await;
    let host = admin.create_host(&id(&alice)).await;
    let short = host["short_id"].as_str().unwrap().to_owned();
    let sessions = "/v1/bootstrap/sessions";

    // Unknown user and wrong password: the same answer.
    let unknown = anon
        .post(
            sessions,
            json!({"username": "nobody", "password": "alice-password"}),
        )
        .await;
    let wrong = anon
        .post(sessions, json!({"username": "alice", "password": "not-hers"}))
        .await;
    assert_error(&unknown, 401, "unauthorized");
    assert_eq!((unknown.status, &unknown.body), (wrong.status, &wrong.body));

    // Disabled, expired and host-less accounts are told apart only with the right password.
    // (No hosts for them: the fake agent claims the oldest queued task, which must stay alice's.)
    let carol = admin.create_user("carol", "carol-password").await;
    admin
        .patch(
            &format!("/v1/admin/users/{}", id(&carol)),
            json!({"status": "disabled"}),
        )
        .await
        .expect(200);
    let dave = admin.create_user("dave", "dave-password").await;
    admin
        .put(
            &format!("/v1/admin/users/{}/expiry", id(&dave)),
            json!({"expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await
        .expect(200);
    admin.create_user("bob", "bob-password").await;
    for (user, code, status) in [
        ("carol", "account_disabled", 403),
        ("dave", "account_expired", 403),
        ("bob", "no_host", 404),
    ] {
        let right = anon
            .post(
                sessions,
                json!({"username": user, "password": format!("{user}-password")}),
            )
            .await;
        assert_error(&right, status, code);
        let guess = anon
            .post(sessions, json!({"username": user, "password": "a-wrong-guess"}))
            .await;
        assert_eq!((guess.status, &guess.body), (wrong.status, &wrong.body), "{user}");
    }

    // A session for alice follows the queued create task of her host.
    let r = anon
        .post(
            sessions,
            json!({"username": "alice", "password": "alice-password"}),
        )
        .await;
    let created = r.expect(201).clone();
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_keys(
        &created,
        &[
            "task_id",
            "status_url",
            "handoff_url",
            "session_secret",
            "expires_at",
            "short_id",
        ],
    );
    let task_id = created["task_id"].as_str().unwrap().to_owned();
    let session_secret = created["session_secret"].as_str().unwrap().to_owned();
    assert_eq!(
        created["status_url"],
        format!("{base}/v1/bootstrap/tasks/{task_id}")
    );
    assert_eq!(created["short_id"], short);
    assert!(session_secret.len() >= 32);
    assert_ne!(
        task_id,
        host["task_id"].as_str().unwrap(),
        "a host task id is never handed out"
    );
    let status = anon.get(&format!("/v1/bootstrap/tasks/{task_id}")).await;
    let status = status.expect(200).clone();
    assert_eq!(
        status.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["progress", "stage", "status", "task_id"],
        "only progress, stage and status: {status}"
    );
    assert_eq!(status["status"], "queued");
    let handoff = format!("/v1/bootstrap/tasks/{task_id}/handoff");
    assert_error(&anon.get(&handoff).await, 409, "not_ready");

    // A host task id, an unknown id and a malformed one.
    let host_task = host["task_id"].as_str().unwrap();
    assert_error(
        &anon.get(&format!("/v1/bootstrap/tasks/{host_task}")).await,
        404,
        "not_found",
    );
    assert_error(
        &anon.get("/v1/bootstrap/tasks/not-a-uuid").await,
        400,
        "invalid_id",
    );

    // The host comes up: the handoff names the login; the secret needs the session secret, once.
    agent.finish_next(&id(&host), true).await;
    let done = session_status(&anon, &task_id, "succeeded").await;
    assert_eq!(done["progress"], 100);
    let bare = anon.get(&handoff).await;
    let bare = bare.expect(200).clone();
    assert_eq!(bare["user"], format!("alice+{short}"));
    assert_eq!(bare["host"], "127.0.0.1");
    assert_eq!(bare["port"], ssh_port);
    assert_eq!(bare["password"], Value::Null);
    let wrong_secret = anon
        .with_header("x-bootstrap-secret", "not-the-secret")
        .get(&handoff)
        .await;
    assert_error(&wrong_secret, 401, "unauthorized");
    let with_secret = anon.with_header("x-bootstrap-secret", &session_secret);
    let r = with_secret.get(&handoff).await;
    let issued = r.expect(200).clone();
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let ssh_secret = issued["password"].as_str().unwrap().to_owned();
    assert!(ssh_secret.len() >= 32, "{issued}");
    let ttl =
        cloud_cli_proxy_tests::fixtures::parse_time(&issued["password_expires_at"]) - chrono::Utc::now();
    assert!(
        (50..=60).contains(&ttl.num_seconds()),
        "HANDOFF_TTL_SECS=60: {ttl}"
    );
    assert_eq!(handoff_row(&cp, &ssh_secret).await, Some((id(&host), false)));
    assert_error(&with_secret.get(&handoff).await, 409, "handoff_used");

    // Entry: alice's host runs, so the SSH secret comes at once.
    let entry = format!("/v1/entry/{short}/auth");
    let r = anon.post(&entry, json!({"password": "alice-password"})).await;
    let granted = r.expect(200).clone();
    assert_keys(
        &granted,
        &[
            "ssh_user",
            "ssh_pass",
            "ssh_host",
            "ssh_port",
            "task_id",
            "status_url",
        ],
    );
    assert_eq!(granted["ssh_user"], format!("alice+{short}"));
    assert_eq!(
        (granted["ssh_host"].as_str(), granted["ssh_port"].as_u64()),
        (Some("127.0.0.1"), Some(u64::from(ssh_port)))
    );
    let entry_secret = granted["ssh_pass"].as_str().unwrap();
    assert_ne!(entry_secret, ssh_secret);
    assert_eq!(handoff_row(&cp, entry_secret).await, Some((id(&host), false)));
    session_status(&anon, granted["task_id"].as_str().unwrap(), "succeeded").await;
    // An entry link that names no host answers like a wrong password; a malformed one is 404.
    let wrong_entry = anon.post(&entry, json!({"password": "not-hers"})).await;
    assert_error(&wrong_entry, 401, "unauthorized");
    let nowhere = anon
        .post("/v1/entry/zzzzzzzz/auth", json!({"password": "alice-password"}))
        .await;
    assert_eq!(
        (nowhere.status, &nowhere.body),
        (wrong_entry.status, &wrong_entry.body)
    );
    assert_error(
        &anon.post("/v1/entry/BAD!/auth", json!({"password": "x"})).await,
        404,
        "not_found",
    );
    assert_error(&anon.get("/entry/BAD!").await, 404, "not_found");

    // A stopped host gets a start task; when it fails, so does the session.
    let stop = admin
        .post(&format!("/v1/admin/hosts/{}/stop", id(&host)), None)
        .await;
    stop.expect(202);
    agent.finish_next(&id(&host), true).await;
    let r = anon
        .post(
            sessions,
            json!({"username": "alice", "password": "alice-password"}),
        )
        .await;
    let task_id = r.expect(201)["task_id"].as_str().unwrap().to_owned();
    let tasks = admin
        .get(&format!("/v1/admin/tasks?host_id={}&kind=start", id(&host)))
        .await;
    assert_eq!(tasks.total(), 1, "the session queued one start: {}", tasks.text);
    assert_eq!(tasks.data()[0]["requested_by"], alice["id"]);
    agent.finish_next(&id(&host), false).await;
    session_status(&anon, &task_id, "failed").await;
    let failed = anon
        .with_header("x-bootstrap-secret", r.body["session_secret"].as_str().unwrap())
        .get(&format!("/v1/bootstrap/tasks/{task_id}/handoff"))
        .await;
    assert_error(&failed, 409, "start_failed");

    // Past the per-account limit every attempt is 429 with Retry-After, even the right password.
    let erin = admin.create_user("erin", "erin-password").await;
    admin.create_host(&id(&erin)).await;
    for _ in 0..3 {
        let r = anon
            .post(sessions, json!({"username": "erin", "password": "nope-nope"}))
            .await;
        assert_error(&r, 401, "unauthorized");
    }
    let limited = anon
        .post(sessions, json!({"username": "erin", "password": "erin-password"}))
        .await;
    assert_error(&limited, 429, "rate_limited");
    assert!(
        limited
            .header("retry-after")
            .is_some_and(|s| s.parse::<u64>().unwrap() > 0)
    );
    let r = anon.post(&entry, json!({"password": "x"})).await;
    assert!(r.status == 401 || r.status == 429, "{}", r.text);

    // Every attempt left an event, with the reason when refused.
    let events = admin.get("/v1/admin/events?type=access.&page_size=500").await;
    let reasons: Vec<String> = events
        .data()
        .iter()
        .filter(|e| e["outcome"] == "failure")
        .filter_map(|e| e["details"]["reason"].as_str().map(str::to_owned))
        .collect();
    for reason in [
        "unknown_user",
        "wrong_password",
        "disabled",
        "expired",
        "no_host",
        "rate_limited",
        "unknown_link",
        "wrong_session_secret",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no `{reason}` event in {reasons:?}"
        );
    }
    let kinds: Vec<&str> = events.data().iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in [
        "access.bootstrap_succeeded",
        "access.entry_succeeded",
        "access.handoff_issued",
    ] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    let logs = cp.logs();
    for secret in [
        ssh_secret.as_str(),
        entry_secret,
        session_secret.as_str(),
        "alice-password",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}
