//! The seed's task, event and dashboard examples, with each event filter checked against what was done.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone as _, Utc};
use cloud_cli_proxy_tests::fixtures::{self, id, parse_time, rfc3339};
use cloud_cli_proxy_tests::shapes;
use cloud_cli_proxy_tests::{Api, ControlPlane, Options, assert_error, assert_keys};
use serde_json::{Value, json};

async fn failed_login(api: &Api, username: &str) {
    let r = api
        .anonymous()
        .post(
            "/v1/auth/login",
            json!({"username": username, "password": "not-the-password"}),
        )
        .await;
    assert_error(&r, 401, "unauthorized");
}

/// All events matching `query`, newest first, in one page.
async fn events(admin: &Api, query: &str) -> Vec<Value> {
    let sep = if query.is_empty() { "" } else { "&" };
    let r = admin
        .get(&format!("/v1/admin/events?page_size=500{sep}{query}"))
        .await;
    let data = r.data().clone();
    assert_eq!(data.len() as i64, r.total(), "one page holds them all");
    data
}

#[track_caller]
fn times(events: &[Value]) -> Vec<DateTime<Utc>> {
    events.iter().map(|e| parse_time(&e["created_at"])).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_events_and_dashboard() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;

    // Before t1: user X and two failed sign-ins.
    let x = admin.create_user("evx", "ev-x-password").await;
    failed_login(&admin, "ghost").await;
    failed_login(&admin, "evx").await;
    let t1 = Utc::now();
    // Between t1 and t2: user Y with a host that is started.
    let y = admin.create_user("evy", "ev-y-password").await;
    let host = admin.create_host(&id(&y)).await;
    let hid = id(&host);
    admin
        .post(&format!("/v1/admin/hosts/{hid}/start"), None)
        .await
        .expect(202);
    let t2 = Utc::now();
    // After t2: user Z, disabled; X expired; an egress IP bound to Y's host; one more sign-in.
    let z = admin.create_user("evz", "ev-z-password").await;
    admin
        .patch(
            &format!("/v1/admin/users/{}", id(&z)),
            json!({"status": "disabled"}),
        )
        .await
        .expect(200);
    admin
        .put(
            &format!("/v1/admin/users/{}/expiry", id(&x)),
            json!({"expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await
        .expect(200);
    let wg = admin.create_egress(fixtures::seed_wireguard()).await;
    admin
        .create_egress(fixtures::seed_egress_examples()[3].clone())
        .await;
    admin
        .post(
            "/v1/admin/bindings",
            json!({"host_id": hid, "egress_ip_id": id(&wg)}),
        )
        .await
        .expect(201);
    admin.login("evy", "ev-y-password").await;

    // Tasks.
    let r = admin.get("/v1/admin/tasks").await;
    assert_keys(&r.body, shapes::PAGE);
    assert_eq!(r.total(), 2, "create and start: {}", r.text);
    let kinds: Vec<&str> = r.data().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["start", "create"], "newest first");
    r.data().iter().for_each(|t| assert_keys(t, shapes::TASK));
    assert_eq!(admin.count("/v1/admin/tasks?status=queued").await, 2);
    assert_eq!(admin.count("/v1/admin/tasks?kind=start").await, 1);
    assert_eq!(admin.count("/v1/admin/tasks?status=failed").await, 0);
    let task_id = r.data()[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        admin.get(&format!("/v1/admin/tasks/{task_id}")).await.expect(200)["id"],
        json!(task_id)
    );

    // Recent events: ?limit=50 is the page size.
    let r = admin.get("/v1/admin/events?limit=50").await;
    assert_keys(&r.body, shapes::PAGE);
    assert_eq!(r.body["page_size"], 50);
    let total = r.total();
    assert!(
        total >= 15,
        "every mutation and sign-in attempt is recorded, got {total}: {}",
        r.text
    );
    assert_eq!(r.data().len() as i64, total.min(50));
    for e in r.data() {
        assert_keys(e, shapes::EVENT);
        assert!(
            ["success", "failure"].contains(&e["outcome"].as_str().unwrap()),
            "{e}"
        );
    }
    assert!(
        times(r.data()).windows(2).all(|w| w[0] >= w[1]),
        "events are newest first"
    );
    let r = admin.get("/v1/admin/events?limit=2").await;
    assert_eq!((r.data().len(), r.total()), (2, total));

    // Filter by user.
    let of_y = events(&admin, &format!("user_id={}", id(&y))).await;
    assert!(
        !of_y.is_empty() && of_y.iter().all(|e| e["user_id"] == y["id"]),
        "{of_y:?}"
    );
    // Who did it: the operator, from loopback.
    let by_admin = events(&admin, &format!("user_id={}&type=user.", id(&y))).await;
    assert!(!by_admin.is_empty());
    for e in &by_admin {
        assert_eq!(
            (e["actor_name"].as_str(), e["ip"].as_str()),
            (Some("admin"), Some("127.0.0.1")),
            "{e}"
        );
        assert_eq!(e["outcome"], "success");
    }
    // Filter by host: its creation and its start at least.
    let of_host = events(&admin, &format!("host_id={hid}")).await;
    assert!(
        of_host.len() >= 2 && of_host.iter().all(|e| e["host_id"] == host["id"]),
        "{of_host:?}"
    );

    // Time range, the seed's example: this fresh database has nothing from March 2026.
    let march = events(&admin, "since=2026-03-01T00:00:00Z&until=2026-03-31T23:59:59Z").await;
    let (from, to) = (
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 3, 31, 23, 59, 59).unwrap(),
    );
    assert!(times(&march).iter().all(|t| (from..=to).contains(t)));
    if Utc::now() > to {
        assert!(march.is_empty(), "{march:?}");
    }
    // Time range around Y's creation: Y's events, none of X's or Z's.
    let window = events(&admin, &format!("since={}&until={}", rfc3339(t1), rfc3339(t2))).await;
    assert!(times(&window).iter().all(|t| *t >= t1 && *t <= t2), "{window:?}");
    assert!(
        window.iter().any(|e| e["user_id"] == y["id"]),
        "Y's creation is in the window: {window:?}"
    );
    assert!(
        window.iter().any(|e| e["host_id"] == host["id"]),
        "the host's events are in the window"
    );
    assert!(
        window
            .iter()
            .all(|e| e["user_id"] != x["id"] && e["user_id"] != z["id"]),
        "{window:?}"
    );
    assert!(
        window.iter().all(|e| e["type"] != "auth.login_failed"),
        "the failed sign-ins were before t1"
    );

    // Type filter: exact, prefix, and a comma-separated list.
    let failed = events(&admin, "type=auth.login_failed").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|e| e["type"] == "auth.login_failed" && e["outcome"] == "failure")
    );
    assert!(failed.iter().all(|e| parse_time(&e["created_at"]) < t1));
    let succeeded = events(&admin, "type=auth.login_succeeded").await;
    assert_eq!(succeeded.len(), 2, "the admin's and Y's sign-ins: {succeeded:?}");
    let both = events(&admin, "type=auth.login_failed,auth.login_succeeded").await;
    assert_eq!(both.len(), 4);
    let auth = events(&admin, "type=auth.").await;
    assert!(
        auth.len() >= 4
            && auth
                .iter()
                .all(|e| e["type"].as_str().unwrap().starts_with("auth."))
    );
    let users = events(&admin, "type=user.").await;
    assert!(
        users
            .iter()
            .all(|e| e["type"].as_str().unwrap().starts_with("user.")),
        "{users:?}"
    );
    assert!(users.len() >= 5, "3 creations, a disable, an expiry: {users:?}");

    // Pagination: pages of 3 cover the whole list once, in order.
    let all = events(&admin, "").await;
    assert_eq!(all.len() as i64, admin.count("/v1/admin/events").await);
    let first = admin.get("/v1/admin/events?page=1&page_size=3").await;
    let pages = first.body["total_pages"].as_i64().unwrap();
    assert_eq!(pages, (all.len() as i64 + 2) / 3);
    let mut walked = Vec::new();
    for page in 1..=pages {
        let r = admin
            .get(&format!("/v1/admin/events?page={page}&page_size=3"))
            .await;
        assert_eq!(
            (r.body["page"].as_i64(), r.body["page_size"].as_i64()),
            (Some(page), Some(3))
        );
        assert!(r.data().len() <= 3 && !r.data().is_empty());
        walked.extend(r.data().iter().map(|e| e["id"].clone()));
    }
    let ids: Vec<Value> = all.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(walked, ids, "paging walks the same list");
    let beyond = admin
        .get(&format!("/v1/admin/events?page={}&page_size=3", pages + 1))
        .await;
    assert!(beyond.data().is_empty());
    assert_eq!(beyond.total(), all.len() as i64);

    // Dashboard: the counts agree with the lists.
    let s = admin.get("/v1/admin/dashboard/stats").await.expect(200).clone();
    for (k, keys) in [
        ("users", &["total", "active", "disabled", "expired"][..]),
        ("hosts", &["total", "by_status"][..]),
        ("egress_ips", &["total", "bound", "wireguard", "proxy"][..]),
        ("tasks", &["queued", "running", "failed_24h"][..]),
        ("agents", &["connected"][..]),
    ] {
        assert_keys(&s[k], keys);
    }
    let user_list = admin.get("/v1/admin/users?page_size=500").await;
    assert_eq!(s["users"]["total"], user_list.total());
    assert_eq!(
        s["users"]["active"],
        admin.count("/v1/admin/users?status=active").await
    );
    assert_eq!(
        s["users"]["disabled"],
        admin.count("/v1/admin/users?status=disabled").await
    );
    assert_eq!(s["users"]["disabled"], 1);
    let expired = user_list.data().iter().filter(|u| u["expired"] == true).count();
    assert_eq!(
        (s["users"]["expired"].as_u64(), expired),
        (Some(1), 1),
        "X is expired: {s}"
    );
    assert_eq!(s["hosts"]["total"], admin.count("/v1/admin/hosts").await);
    let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
    for h in admin.get("/v1/admin/hosts?page_size=500").await.data() {
        *by_status
            .entry(h["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let reported: BTreeMap<String, i64> = s["hosts"]["by_status"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(reported, by_status, "hosts.by_status: {s}");
    assert_eq!(s["egress_ips"]["total"], 2);
    assert_eq!(
        s["egress_ips"]["wireguard"],
        admin.count("/v1/admin/egress-ips?tunnel_type=wireguard").await
    );
    assert_eq!(
        s["egress_ips"]["proxy"],
        admin.count("/v1/admin/egress-ips?tunnel_type=proxy").await
    );
    assert_eq!(s["egress_ips"]["bound"], admin.count("/v1/admin/bindings").await);
    assert_eq!(s["egress_ips"]["bound"], 1);
    assert_eq!(
        s["tasks"]["queued"],
        admin.count("/v1/admin/tasks?status=queued").await
    );
    assert_eq!(
        (s["tasks"]["running"].as_i64(), s["tasks"]["failed_24h"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(s["agents"]["connected"], 0);
}
