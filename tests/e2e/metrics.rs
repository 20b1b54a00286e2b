//! Prometheus metrics against the real binaries: `/metrics` after known traffic shows the series
//! docs/metrics.md lists, with counts that match the traffic, monotone histogram buckets and no
//! ids in labels; who may read it (the operator, a `metrics` token) and who may not. With Docker:
//! a host built by the embedded agent and an SSH login through a standalone gateway, whose own
//! `METRICS_ADDR` is scraped as well.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cloud_cli_proxy_tests::gateway::{GatewayProcess, Login, output, ssh_command};
use cloud_cli_proxy_tests::{
    AgentMode, Api, ControlPlane, Node, Options, assert_error, enrolment, eventually,
};
use serde_json::json;

/// One sample: the series name, its labels, its value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A series' labels but `le`, in order.
type LabelPairs = Vec<(String, String)>;

/// A parsed exposition (Prometheus text format 0.0.4).
#[derive(Debug)]
struct Exposition {
    samples: Vec<Sample>,
    /// `# TYPE` of every family.
    types: BTreeMap<String, String>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("`# TYPE name kind`");
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            samples.push(parse_sample(line));
        }
        Self { samples, types }
    }

    /// The samples of `name` whose labels include every pair of `with`.
    fn matching<'a>(&'a self, name: &'a str, with: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the samples of `name` matching `with`; `None` when there is none.
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        let mut found = false;
        let mut total = 0.0;
        for s in self.matching(name, with) {
            found = true;
            total += s.value;
        }
        found.then_some(total)
    }

    fn value(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.sum(name, with)
            .unwrap_or_else(|| panic!("no sample {name} {with:?} in the exposition"))
    }

    fn has_family(&self, family: &str, kind: &str) -> bool {
        self.types.get(family).map(String::as_str) == Some(kind)
    }

    /// Every histogram: buckets cumulative (never decreasing with `le`), `+Inf` equal to `_count`.
    fn check_histograms(&self) {
        let histograms: Vec<&String> = self
            .types
            .iter()
            .filter(|(_, k)| k.as_str() == "histogram")
            .map(|(n, _)| n)
            .collect();
        assert!(!histograms.is_empty(), "no histogram at all");
        for family in histograms {
            let bucket = format!("{family}_bucket");
            let mut series: BTreeMap<LabelPairs, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self.samples.iter().filter(|s| s.name == bucket) {
                let le = s.labels.get("le").expect("a bucket without `le`");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                let key: LabelPairs = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k.as_str() != "le")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                series.entry(key).or_default().push((le, s.value));
            }
            for (labels, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
                for pair in buckets.windows(2) {
                    assert!(
                        pair[0].1 <= pair[1].1,
                        "{family} {labels:?}: buckets decrease: {buckets:?}"
                    );
                }
                let (top, inf) = *buckets.last().unwrap();
                assert!(top.is_infinite(), "{family} {labels:?} has no +Inf bucket");
                let with: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let count = self.value(&format!("{family}_count"), &with);
                assert_eq!(inf, count, "{family} {labels:?}: +Inf bucket and _count differ");
            }
        }
    }

    /// No label value is an id: no UUID, no short id of a host, no address.
    fn check_no_ids(&self, ids: &[&str]) {
        for s in &self.samples {
            for (k, v) in &s.labels {
                assert!(
                    uuid::Uuid::parse_str(v).is_err() && !looks_like_uuid_inside(v),
                    "{} has an id in label {k}: {v}",
                    s.name
                );
                for id in ids {
                    assert!(!v.contains(id), "{} has {id} in label {k}: {v}", s.name);
                }
                assert!(
                    v.parse::<std::net::IpAddr>().is_err(),
                    "{} has an address in {k}: {v}",
                    s.name
                );
            }
        }
    }
}

/// A UUID-shaped run (8-4-4-4-12 hex) anywhere in `v`.
fn looks_like_uuid_inside(v: &str) -> bool {
    v.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .any(|part| uuid::Uuid::parse_str(part).is_ok())
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("bad sample line: {line}"));
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
    };
    let (name, labels) = match series.split_once('{') {
        None => (series.to_owned(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("unclosed labels: {line}"));
            (name.to_owned(), parse_labels(body))
        }
    };
    Sample { name, labels, value }
}

fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} without a quoted value");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// Scrapes `/metrics` with `api`'s credential; the status, content type and text.
async fn scrape(api: &Api) -> Exposition {
    let r = api.get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let kind = r.header("content-type").unwrap_or_default();
    assert!(kind.starts_with("text/plain"), "content type {kind}");
    Exposition::parse(&r.text)
}

/// Scrapes an unauthenticated metrics listener.
async fn scrape_addr(addr: SocketAddr) -> Exposition {
    let r = reqwest::get(format!("http://{addr}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    Exposition::parse(&r.text().await.unwrap())
}

/// The address a process logged for its metrics listener (JSON logs).
fn metrics_addr(logs: &str) -> Option<SocketAddr> {
    logs.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = v.get("fields").unwrap_or(&v);
        let message = fields.get("message").or_else(|| v.get("message"))?.as_str()?;
        if message != "metrics listener listening" {
            return None;
        }
        fields
            .get("addr")
            .or_else(|| v.get("addr"))?
            .as_str()?
            .parse()
            .ok()
    })
}

/// The series docs/metrics.md lists under `heading` (`Control plane`, `SSH gateway`, `Node
/// agent`): name and type, from its tables.
fn documented(heading: &str) -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md")).unwrap();
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no section {heading} in docs/metrics.md"));
    let series: Vec<(String, String)> = section
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix("`ccp_")?.strip_suffix('`')?;
            Some((format!("ccp_{name}"), cells.next()?.to_owned()))
        })
        .collect();
    assert!(!series.is_empty(), "no series under {heading}");
    series
}

/// Every series of `heading` in docs/metrics.md is in the exposition, with its type, but those in
/// `not_yet` (a series with labels appears with its first sample, and the traffic made had none).
fn check_documented(m: &Exposition, heading: &str, not_yet: &[&str]) {
    for (name, kind) in documented(heading) {
        if not_yet.contains(&name.as_str()) {
            continue;
        }
        assert!(
            m.has_family(&name, &kind),
            "{heading}: {kind} {name} is documented but not exposed; exposed: {:?}",
            m.types
        );
    }
    // And nothing of this process is undocumented.
    let prefix = match heading {
        "SSH gateway" => Some("ccp_gateway_"),
        "Node agent" => Some("ccp_agent_"),
        _ => None,
    };
    if let Some(prefix) = prefix {
        let listed: Vec<String> = documented(heading).into_iter().map(|(n, _)| n).collect();
        for family in m.types.keys().filter(|t| t.starts_with(prefix)) {
            assert!(
                listed.contains(family),
                "{family} is exposed but not in docs/metrics.md"
            );
        }
    }
}

/// The sample dashboard queries documented series only.
#[test]
fn the_grafana_dashboard_uses_documented_series() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/cloud-cli-proxy.json"
    );
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut known: Vec<String> = Vec::new();
    for heading in ["Control plane", "SSH gateway", "Node agent"] {
        for (name, kind) in documented(heading) {
            if kind == "histogram" {
                for suffix in ["_bucket", "_count", "_sum"] {
                    known.push(format!("{name}{suffix}"));
                }
            } else {
                known.push(name);
            }
        }
    }
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("ccp_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                assert!(
                    known.iter().any(|k| k == name),
                    "the dashboard queries {name}, not in docs/metrics.md"
                );
                used += 1;
            }
        }
    }
    assert!(used >= 19, "{used}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_traffic_and_who_may_read_them() {
    let cp = ControlPlane::start(Options::new().env("METRICS_ADDR", "127.0.0.1:0")).await;
    let anonymous = cp.api();
    let admin = cp.admin().await;

    // Who may not: nobody anonymous, no tenant, no token without the scope.
    assert_error(&anonymous.get("/metrics").await, 401, "unauthorized");
    let alice_id = cloud_cli_proxy_tests::fixtures::id(
        admin
            .post(
                "/v1/admin/users",
                json!({"username": "alice", "password": "alice-password"}),
            )
            .await
            .expect(201),
    );
    let alice = anonymous.login_as("alice", "alice-password").await;
    assert_error(&alice.get("/metrics").await, 403, "forbidden");
    let mint = |api: &Api, body: serde_json::Value| {
        let api = api.clone();
        async move { api.post("/v1/auth/api-tokens", body).await }
    };
    let token = |r: &cloud_cli_proxy_tests::Resp| r.expect(201)["token"].as_str().unwrap().to_owned();
    let refused = mint(&alice, json!({"name": "prom", "scope": "metrics"})).await;
    assert_error(&refused, 403, "forbidden");
    let alice_full = anonymous.with_token(token(&mint(&alice, json!({"name": "ci"})).await));
    assert_error(&alice_full.get("/metrics").await, 403, "forbidden");
    let admin_read = anonymous.with_token(token(&mint(&admin, json!({"name": "ro", "scope": "read"})).await));
    assert_error(&admin_read.get("/metrics").await, 403, "insufficient_scope");
    let created = mint(&admin, json!({"name": "prometheus", "scope": "metrics"})).await;
    assert_eq!(created.expect(201)["scope"], "metrics");
    let scraper = anonymous.with_token(token(&created));
    // A metrics token opens nothing else, not even reads, and mints nothing wider.
    for r in [
        scraper.get("/v1/admin/users").await,
        scraper.get("/v1/auth/me").await,
        scraper
            .post("/v1/auth/api-tokens", json!({"name": "x", "scope": "read"}))
            .await,
    ] {
        assert_error(&r, 403, "insufficient_scope");
    }

    // Known traffic: sign-ins good and bad, reads of a templated route, unknown paths.
    for _ in 0..3 {
        let r = anonymous
            .post(
                "/v1/auth/login",
                json!({"username": "alice", "password": "not-her-password"}),
            )
            .await;
        assert_error(&r, 401, "unauthorized");
    }
    for _ in 0..4 {
        admin
            .get(&format!("/v1/admin/users/{alice_id}"))
            .await
            .expect(200);
    }
    for path in ["/no/such/route", &format!("/v1/admin/nothing/{alice_id}")] {
        assert_error(&admin.get(path).await, 404, "route_not_found");
    }

    let m = scrape(&admin).await;
    // No host task ran, and no SSH session reached a host.
    check_documented(
        &m,
        "Control plane",
        &["ccp_tasks_finished_total", "ccp_task_duration_seconds"],
    );
    check_documented(
        &m,
        "SSH gateway",
        &["ccp_gateway_upstream_connect_duration_seconds"],
    );
    let user_route = [
        ("method", "GET"),
        ("route", "/v1/admin/users/{user_id}"),
        ("status", "200"),
    ];
    assert_eq!(m.value("ccp_http_requests_total", &user_route), 4.0);
    assert_eq!(
        m.value(
            "ccp_http_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/v1/admin/users/{user_id}")]
        ),
        4.0
    );
    assert_eq!(
        m.value(
            "ccp_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "ccp_http_requests_total",
            &[("route", "/metrics"), ("status", "401")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "ccp_http_requests_total",
            &[("route", "/metrics"), ("status", "403")]
        ),
        3.0
    );
    assert_eq!(
        m.value(
            "ccp_sign_ins_total",
            &[("way", "api"), ("result", "wrong_password")]
        ),
        3.0
    );
    // The operator's and alice's sign-ins.
    assert_eq!(
        m.value("ccp_sign_ins_total", &[("way", "api"), ("result", "granted")]),
        2.0
    );
    for status in ["pending", "creating", "running", "stopped", "error", "deleting"] {
        assert_eq!(m.value("ccp_hosts", &[("status", status)]), 0.0, "{status}");
    }
    assert_eq!(m.value("ccp_tasks", &[("state", "queued")]), 0.0);
    assert_eq!(m.value("ccp_nodes", &[("state", "live")]), 0.0);
    // The embedded gateway registers at start.
    assert_eq!(m.value("ccp_gateways", &[("state", "live")]), 1.0);
    let max = m.value("ccp_db_pool_max_connections", &[]);
    let open = m.value("ccp_db_pool_connections", &[]);
    assert!(max >= 1.0 && open >= 1.0 && open <= max, "pool {open} of {max}");
    // The embedded gateway's series are there; no agent runs in this process.
    assert!(m.has_family("ccp_gateway_connections", "gauge"), "{:?}", m.types);
    assert!(
        !m.types.keys().any(|t| t.starts_with("ccp_agent_")),
        "{:?}",
        m.types
    );
    m.check_histograms();
    m.check_no_ids(&[&alice_id]);

    // The metrics token reads the same; its own scrape is counted.
    let again = scrape(&scraper).await;
    assert_eq!(
        again.value(
            "ccp_http_requests_total",
            &[("route", "/metrics"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(again.value("ccp_http_requests_total", &user_route), 4.0);

    // METRICS_ADDR serves the same registry without a credential, and nothing else.
    let addr = metrics_addr(&cp.logs()).expect("the control plane logs its metrics listener");
    assert!(addr.ip().is_loopback());
    let open = scrape_addr(addr).await;
    assert_eq!(open.value("ccp_http_requests_total", &user_route), 4.0);
    let other = reqwest::get(format!("http://{addr}/v1/admin/users"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_and_an_ssh_login_through_a_separate_gateway() {
    const LIMIT: Duration = Duration::from_secs(60);
    let node = Node::start(AgentMode::Embedded, &[("EMBEDDED_SSH_PROXY", "false")]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = enrolment::key(&node.admin, "gateway", 1).await;
    let gateway = GatewayProcess::start_with(
        &node.cp.base_url(),
        &key,
        "gw-metrics",
        dir.path(),
        true,
        &[("METRICS_ADDR", "127.0.0.1:0")],
    )
    .await;
    let nina = node.tenant("nina").await;
    let mut cmd = ssh_command(
        gateway.port,
        &nina.login(),
        &Login::Password(nina.password.clone()),
        "ssh",
    );
    // 20,000 bytes up (read and dropped), 100,000 down.
    cmd.arg("cat >/dev/null; head -c 100000 /dev/zero | tr '\\0' x");
    let out = output(cmd, Some(&[b'u'; 20_000]), LIMIT).await;
    assert_eq!(out.stdout.len(), 100_000, "{}\n{}", out.stderr, gateway.logs());
    let mut cmd = ssh_command(
        gateway.port,
        &nina.login(),
        &Login::Password("wrong".into()),
        "ssh",
    );
    cmd.arg("true");
    assert_eq!(output(cmd, None, LIMIT).await.code, Some(255));

    // The gateway's own listener: the login, the bytes, the time to reach the host.
    let addr = metrics_addr(&gateway.logs()).expect("the gateway logs its metrics listener");
    let g = eventually(
        LIMIT,
        "the session to end in the gateway's metrics",
        || async move {
            let g = scrape_addr(addr).await;
            (g.value("ccp_gateway_sessions", &[]) == 0.0).then_some(g)
        },
    )
    .await;
    assert_eq!(
        g.value(
            "ccp_gateway_auth_attempts_total",
            &[("method", "password"), ("result", "accepted")]
        ),
        1.0
    );
    assert_eq!(
        g.value(
            "ccp_gateway_auth_attempts_total",
            &[("method", "password"), ("result", "denied")]
        ),
        1.0
    );
    assert!(g.value("ccp_gateway_relayed_bytes_total", &[("direction", "to_client")]) >= 100_000.0);
    assert!(g.value("ccp_gateway_relayed_bytes_total", &[("direction", "to_host")]) >= 20_000.0);
    assert_eq!(
        g.value(
            "ccp_gateway_upstream_connect_duration_seconds_count",
            &[("result", "ok")]
        ),
        1.0
    );
    assert_eq!(g.value("ccp_gateway_connections", &[]), 0.0);
    check_documented(&g, "SSH gateway", &[]);
    g.check_histograms();
    g.check_no_ids(&[&nina.host.short_id]);

    // The control plane: the task, the host, the node and gateway seen, the embedded agent's
    // Docker calls, and the SSH sign-ins decided for the gateway.
    let m = scrape(&node.admin).await;
    let create = [("kind", "create"), ("state", "succeeded")];
    assert_eq!(m.value("ccp_tasks_finished_total", &create), 1.0);
    assert_eq!(m.value("ccp_task_duration_seconds_count", &create), 1.0);
    assert!(m.value("ccp_task_duration_seconds_sum", &create) > 0.0);
    assert_eq!(m.value("ccp_hosts", &[("status", "running")]), 1.0);
    assert_eq!(m.value("ccp_nodes", &[("state", "live")]), 1.0);
    assert_eq!(m.value("ccp_gateways", &[("state", "live")]), 1.0);
    assert_eq!(
        m.value(
            "ccp_sign_ins_total",
            &[("way", "ssh_password"), ("result", "granted")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "ccp_sign_ins_total",
            &[("way", "ssh_password"), ("result", "wrong_password")]
        ),
        1.0
    );
    assert!(
        m.value(
            "ccp_agent_docker_operation_duration_seconds_count",
            &[("op", "container create"), ("result", "ok")]
        ) >= 1.0,
        "{:?}",
        m.samples
            .iter()
            .filter(|s| s.name.starts_with("ccp_agent_docker"))
            .collect::<Vec<_>>()
    );
    check_documented(&m, "Control plane", &[]);
    check_documented(&m, "Node agent", &[]);
    // This control plane embeds no gateway: the gateway's series are the gateway's own.
    assert!(
        !m.types.keys().any(|t| t.starts_with("ccp_gateway_")),
        "{:?}",
        m.types
    );
    m.check_histograms();
    m.check_no_ids(&[&nina.host.short_id, &node.name]);
}
