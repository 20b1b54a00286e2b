//! Traffic accounting and quotas against the fake internet: a host downloads a known number of
//! bytes from a server in the fake internet, directly through its node and then through a
//! WireGuard tunnel; the traffic API (the operator's and the tenant's) and the host list count at
//! least that much within a minute; a restart of the host (a new namespace) and a `kill -9` of the
//! tunnel process lose nothing of the total; a quota set below it fires its event and cuts the
//! host's egress, with not a packet leaking while cut (SSH still works); removing the quota gives
//! the egress back. The host's page shows the chart and the quota in Chromium.
//!
//! Needs root, Docker with the host image, sing-box, nft, iproute2, sshpass, and the workspace
//! binaries (`cargo build --workspace --bins`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use cloud_cli_proxy_tests::api::{Api, eventually};
use cloud_cli_proxy_tests::browser::Browser;
use cloud_cli_proxy_tests::docker::exec_root;
use cloud_cli_proxy_tests::egress::Egress;
use cloud_cli_proxy_tests::fakenet::{FakeInternet, Kind};
use cloud_cli_proxy_tests::hosts::{linux_user, ssh};

/// What each download moves.
const CHUNK: u64 = 6 * 1024 * 1024;
/// The acceptance bound: the API shows a download this soon after it ended.
const REPORT_LIMIT: Duration = Duration::from_secs(60);

/// The bench program's bulk HTTP server (`GET /bytes/N`), started in the probe's namespace.
async fn start_sink(netns: &str, ip: std::net::Ipv4Addr) -> (tokio::process::Child, SocketAddr) {
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(env!("CARGO_BIN_EXE_cloud-cli-proxy-bench"))
        .args(["egress-sink", "--listen", &format!("{ip}:0")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the sink");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the sink did not start")
        .unwrap()
        .expect("the sink ended");
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the sink said `{first}`"));
    (child, addr)
}

/// `curl` of `CHUNK` bytes from the sink inside the host; the byte count curl saw.
async fn download(container: &str, sink: SocketAddr) -> u64 {
    let url = format!("http://{sink}/bytes/{CHUNK}");
    let out = exec_root(
        container,
        &[
            "curl",
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &url,
        ],
    )
    .await;
    assert!(out.success(), "curl {url}: {}", out.both());
    let got: u64 = out.stdout.trim().parse().unwrap();
    assert_eq!(got, CHUNK, "the download was cut short");
    got
}

async fn probe_204(container: &str, probe: std::net::Ipv4Addr) -> bool {
    let url = format!("http://{probe}/generate_204");
    let out = exec_root(
        container,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
            &url,
        ],
    )
    .await;
    out.stdout.trim() == "204"
}

/// The host's received bytes as the traffic API tells them (the sum of its hourly buckets).
async fn received(api: &Api, scope: &str, host_id: &str) -> i64 {
    let r = api
        .get(&format!("/v1/{scope}/hosts/{host_id}/traffic?bucket=hour"))
        .await;
    let series = r.expect(200);
    let sum: i64 = series["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["rx_bytes"].as_i64().unwrap())
        .sum();
    assert_eq!(series["rx_bytes"].as_i64(), Some(sum), "{series}");
    sum
}

/// Waits until the traffic API shows at least `at_least` bytes received; returns what it shows.
async fn received_at_least(api: &Api, host_id: &str, at_least: i64) -> i64 {
    eventually(
        REPORT_LIMIT,
        &format!("the traffic API to show {at_least} bytes received"),
        || async {
            let got = received(api, "admin", host_id).await;
            (got >= at_least).then_some(got)
        },
    )
    .await
}

async fn host_row(api: &Api, host_id: &str) -> Value {
    let list = api.get("/v1/admin/hosts?page_size=500").await;
    list.data()
        .iter()
        .find(|h| h["id"] == host_id)
        .cloned()
        .unwrap_or_else(|| panic!("host {host_id} not listed"))
}

async fn events_of(api: &Api, kind: &str, host_id: &str) -> Vec<Value> {
    api.get(&format!("/v1/admin/events?type={kind}&host_id={host_id}"))
        .await
        .data()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_is_counted_kept_through_restarts_and_capped_by_a_quota() {
    let mut net = FakeInternet::build("traffic").expect("fake internet");
    let (_sink_process, sink) = start_sink(net.probe_netns(), net.probe_ip()).await;
    let eg = Egress::start_with(
        &net,
        &[("TRAFFIC_SAMPLE_SECS", "2"), ("TRAFFIC_QUOTA_CHECK_SECS", "2")],
    )
    .await;
    let admin = &eg.node.admin;
    let tenant = eg.node.tenant("tina").await;
    let host = tenant.host.clone();
    let container = eg.node.host_container(&host.short_id);
    let tenant_api = admin
        .anonymous()
        .login_as(&tenant.username, &tenant.password)
        .await;

    // Direct: through the node's NAT.
    let direct = download(&container, sink).await as i64;
    let seen = received_at_least(admin, &host.id, direct).await;
    eprintln!("direct: downloaded {direct} bytes, the API counts {seen} received");
    assert!(seen < direct + 1024 * 1024, "far more counted than moved: {seen}");
    assert_eq!(
        received(&tenant_api, "user", &host.id).await,
        seen,
        "the tenant sees the same"
    );
    let row = host_row(admin, &host.id).await;
    assert!(row["traffic"]["rx_bytes"].as_i64().unwrap() >= direct, "{row}");
    assert!(
        row["traffic"]["tx_bytes"].as_i64().unwrap() > 0,
        "the requests went out: {row}"
    );
    assert_eq!(row["egress_cut"], false);
    // Days add up to the same.
    let days = admin
        .get(&format!("/v1/admin/hosts/{}/traffic?bucket=day", host.id))
        .await;
    assert!(
        days.expect(200)["rx_bytes"].as_i64().unwrap() >= direct,
        "{}",
        days.text
    );
    assert_eq!(
        days.body["buckets"].as_array().unwrap().len(),
        30,
        "{}",
        days.text
    );
    // Another tenant's host is not this tenant's to read.
    let other = eg.node.tenant("tom").await;
    let r = tenant_api
        .get(&format!("/v1/user/hosts/{}/traffic", other.host.id))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);

    // Tunnelled: bound to WireGuard; the restart makes a new namespace (its counters start at
    // zero) and the total carries on from what it was.
    let ip = eg.create(&mut net, Kind::Wireguard, "traffic-wg").await;
    let declared = net.server(Kind::Wireguard).ip;
    net.allow_endpoint(declared).unwrap();
    eg.bind(&mut net, Kind::Wireguard, &host.id, &ip).await;
    eg.restart(&host.id).await;
    eg.health(&host.id, true, declared).await;
    let before = received(admin, "admin", &host.id).await;
    assert!(
        before >= direct,
        "the restart lost the total: {before} < {direct}"
    );
    let tunnelled = download(&container, sink).await as i64;
    let seen = received_at_least(admin, &host.id, before + tunnelled).await;
    eprintln!("tunnel: downloaded {tunnelled} more bytes, the API counts {seen} received");

    // kill -9 of the tunnel process: a new one comes up; the counters live in the namespace and
    // the total does not go back.
    let status_path = eg.node.host_files(&host.id).join("egress/status.json");
    let status: Value = serde_json::from_slice(&std::fs::read(&status_path).unwrap()).unwrap();
    let pid = status["pid"]
        .as_u64()
        .expect("the tunnel process's pid")
        .to_string();
    let egress_container = eg.node.egress_container(&host.short_id);
    let kill = exec_root(&egress_container, &["kill", "-9", &pid]).await;
    assert!(kill.success(), "kill -9 {pid}: {}", kill.both());
    eventually(Duration::from_secs(30), "egress back after kill -9", || async {
        probe_204(&container, net.probe_ip()).await.then_some(())
    })
    .await;
    let after_kill = received(admin, "admin", &host.id).await;
    assert!(
        after_kill >= seen,
        "the tunnel restart lost traffic: {after_kill} < {seen}"
    );
    let again = download(&container, sink).await as i64;
    let total = received_at_least(admin, &host.id, after_kill + again).await;
    eprintln!("after kill -9: {again} more bytes, the API counts {total} received");

    // A quota below what the host received today: it fires at once, with its event, and cuts.
    let r = admin
        .post(
            "/v1/admin/traffic-quotas",
            json!({ "host_id": host.id, "limit_bytes": direct, "direction": "in",
                    "period": "daily", "action": "cut_egress" }),
        )
        .await;
    let quota = r.expect(201).clone();
    assert_eq!(quota["exceeded"], true, "{quota}");
    assert!(quota["used_bytes"].as_i64().unwrap() > direct, "{quota}");
    let quota_id = quota["id"].as_str().unwrap().to_owned();
    let fired = events_of(admin, "traffic.quota_exceeded", &host.id).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["details"]["quota_id"], quota_id.as_str());
    assert_eq!(
        fired[0]["user_id"],
        host.user_id.as_str(),
        "the owner is named: {:?}",
        fired[0]
    );
    assert_eq!(events_of(admin, "host.egress_cut", &host.id).await.len(), 1);
    assert_eq!(host_row(admin, &host.id).await["egress_cut"], true);
    let mine = tenant_api.get("/v1/user/traffic-quotas").await;
    assert!(
        mine.expect(200)
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["id"] == quota_id.as_str()),
        "the tenant sees the quota on their host: {}",
        mine.text
    );
    eventually(Duration::from_secs(30), "the host's egress to be cut", || async {
        (!probe_204(&container, net.probe_ip()).await).then_some(())
    })
    .await;
    net.reset_leaks().unwrap();
    for _ in 0..3 {
        assert!(!probe_204(&container, net.probe_ip()).await, "egress while cut");
    }
    let out = exec_root(
        &container,
        &[
            "curl",
            "-sS",
            "--max-time",
            "3",
            "-o",
            "/dev/null",
            &format!("http://{sink}/bytes/1000"),
        ],
    )
    .await;
    assert!(!out.success(), "a download while cut: {}", out.both());
    exec_root(
        &container,
        &[
            "bash",
            "-c",
            "ping -c 2 -W 1 198.18.1.99 || true; dig +time=2 +tries=1 @198.18.1.99 example.com || true",
        ],
    )
    .await;
    let leaks = net.leaks().unwrap();
    assert_eq!(leaks.total(), 0, "packets left the node while cut: {leaks:?}");
    // SSH still reaches the host (from the node, as the gateway does).
    let host_ip = eg.node.host_ip(&host.short_id).await;
    let login = ssh(
        &linux_user(&tenant.username),
        host_ip,
        &host.ssh_password,
        "echo still-here",
    )
    .await;
    assert!(
        login.stdout.contains("still-here"),
        "SSH into a cut host: {}",
        login.both()
    );

    // The host's page shows the chart, the totals and the quota (the operator's view).
    if let Some(browser) = Browser::start().await {
        let base = eg.node.cp.base_url();
        browser.goto(&format!("{base}/")).await;
        let opts = eg.node.cp.options();
        browser.sign_in(&opts.admin_username, &opts.admin_password).await;
        browser.wait_for_text("[data-test=page-title]", "Overview").await;
        browser.goto(&format!("{base}/#/hosts/{}", host.id)).await;
        browser.wait_for("[data-test=traffic-chart]").await;
        browser.wait_for("[data-test=quota][data-exceeded=true]").await;
        browser.wait_for("[data-test=egress-cut]").await;
        let bars = browser
            .exec_js(
                "return [...document.querySelectorAll('[data-test=traffic-bucket]')]\
                 .reduce((n, g) => n + Number(g.dataset.rx), 0);",
                vec![],
            )
            .await;
        assert!(
            bars.as_i64().unwrap() >= total,
            "the chart shows {bars}, the API {total}"
        );
        let rx_text = browser.text("[data-test=traffic-rx-total]").await;
        assert!(rx_text.ends_with("MiB"), "totals in MiB: {rx_text}");
        browser
            .exec_js(
                "document.querySelector('[data-test=host-traffic-card]').scrollIntoView();",
                vec![],
            )
            .await;
        let shot = browser.shot("host-traffic").await;
        eprintln!("screenshot: {}", shot.display());
    }

    // Removing the quota gives the egress back.
    admin
        .delete(&format!("/v1/admin/traffic-quotas/{quota_id}"))
        .await
        .expect(204);
    eventually(
        Duration::from_secs(30),
        "the host's egress to come back",
        || async { probe_204(&container, net.probe_ip()).await.then_some(()) },
    )
    .await;
    assert_eq!(host_row(admin, &host.id).await["egress_cut"], false);
    assert_eq!(events_of(admin, "host.egress_restored", &host.id).await.len(), 1);

    // A quota on the user that only records an event fires once, naming the user.
    let r = admin
        .post(
            "/v1/admin/traffic-quotas",
            json!({ "user_id": host.user_id, "limit_bytes": 1, "period": "monthly" }),
        )
        .await;
    let q = r.expect(201).clone();
    assert_eq!(
        (q["action"].as_str(), q["exceeded"].as_bool()),
        (Some("event"), Some(true)),
        "{q}"
    );
    let fired = admin
        .get(&format!(
            "/v1/admin/events?type=traffic.quota_exceeded&user_id={}",
            host.user_id
        ))
        .await;
    assert_eq!(fired.total(), 2, "{}", fired.text);
    assert!(
        probe_204(&container, net.probe_ip()).await,
        "an event-only quota cuts nothing"
    );

    // Bad input: a JSON error with a code, nothing written.
    for (body, field) in [
        (json!({ "limit_bytes": 10 }), "host_id"),
        (
            json!({ "host_id": host.id, "user_id": host.user_id, "limit_bytes": 10 }),
            "host_id",
        ),
        (json!({ "host_id": host.id, "limit_bytes": 0 }), "limit_bytes"),
    ] {
        let r = admin.post("/v1/admin/traffic-quotas", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{body}: {}", r.text);
    }
    let r = admin
        .get(&format!(
            "/v1/admin/hosts/{}/traffic?since=2020-01-01T00:00:00Z",
            host.id
        ))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
}
