//! `agent::run` against a fake control plane on 127.0.0.1:0 and the real Docker engine: registration
//! retried after a 503, re-registration when a heartbeat answers 404, tasks claimed and run with
//! progress, a cancellation honoured, a result POST retried after a 503, and shutdown.
//!
//! Needs what `docker_actions` needs (root, Docker, nft/nsenter, the host image); otherwise it says why
//! and passes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use wire::{Assignment, ContainerState, HostSpec, Outcome, TaskKind};

const IMAGE: &str = "cloud-cli-proxy/host:latest";
const TOKEN: &str = "test-agent-token";

fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        return Some("not running as root".into());
    }
    if !Path::new("/var/run/docker.sock").exists() {
        return Some("no Docker socket".into());
    }
    let image = Command::new("docker").args(["image", "inspect", IMAGE]).output();
    if !image.is_ok_and(|o| o.status.success()) {
        return Some(format!("image {IMAGE} is missing (run images/build.sh)"));
    }
    for tool in ["nft", "nsenter"] {
        if !Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

struct Cleanup {
    node: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={}={}", wire::labels::NODE, self.node);
        for (list, remove) in [
            (vec!["ps", "-aq"], vec!["rm", "-f", "-v"]),
            (vec!["volume", "ls", "-q"], vec!["volume", "rm", "-f"]),
            (vec!["network", "ls", "-q"], vec!["network", "rm"]),
        ] {
            let ids: Vec<String> = Command::new("docker")
                .args(&list)
                .args(["--filter", &filter])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if !ids.is_empty() {
                let _ = Command::new("docker").args(&remove).args(&ids).output();
            }
        }
    }
}

#[derive(Default)]
struct Fake {
    register_calls: usize,
    node_ids: Vec<String>,
    heartbeats: Vec<wire::Heartbeat>,
    forgot_first_node: bool,
    queue: VecDeque<Assignment>,
    progress: Vec<(String, wire::Progress)>,
    cancel_tasks: Vec<String>,
    result_calls: HashMap<String, usize>,
    results: HashMap<String, wire::TaskResult>,
    bad_tokens: usize,
    handed_out: usize,
}

type Shared = Arc<Mutex<Fake>>;

fn authorised(headers: &HeaderMap, fake: &Shared) -> bool {
    let ok = headers
        .get(wire::AGENT_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        == Some(TOKEN);
    if !ok {
        fake.lock().unwrap().bad_tokens += 1;
    }
    ok
}

async fn register(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<wire::Register>,
) -> Response {
    if !authorised(&headers, &fake) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut f = fake.lock().unwrap();
    f.register_calls += 1;
    if f.register_calls == 1 {
        // The control plane is not ready yet: the agent must retry.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    assert!(body.node_name.starts_with("loop"));
    let id = format!("node-{}", f.node_ids.len() + 1);
    f.node_ids.push(id.clone());
    Json(wire::Registered {
        node_id: id,
        heartbeat_secs: 1,
    })
    .into_response()
}

async fn heartbeat(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<wire::Heartbeat>,
) -> Response {
    if !authorised(&headers, &fake) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut f = fake.lock().unwrap();
    if body.node_id == "node-1" {
        // Forget the first registration once: the agent must register again.
        f.forgot_first_node = true;
        return StatusCode::NOT_FOUND.into_response();
    }
    f.heartbeats.push(body);
    let hosts = f
        .queue
        .iter()
        .map(|a| wire::DesiredHost {
            host_id: a.host.host_id.clone(),
            busy: true,
            egress_cut: false,
        })
        .collect();
    Json(wire::HeartbeatReply { hosts, probe: None }).into_response()
}

async fn claim(State(fake): State<Shared>, headers: HeaderMap, Json(body): Json<wire::Claim>) -> Response {
    if !authorised(&headers, &fake) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    assert!(body.wait_secs > 0);
    let next = {
        let mut f = fake.lock().unwrap();
        if body.node_id == "node-1" && f.forgot_first_node {
            return StatusCode::NOT_FOUND.into_response();
        }
        // Tasks of one host in order: hand out the next only when the previous one has a result.
        if f.results.len() < f.handed_out {
            None
        } else {
            let next = f.queue.pop_front();
            f.handed_out += usize::from(next.is_some());
            next
        }
    };
    match next {
        Some(a) => Json(a).into_response(),
        None => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

async fn progress(
    State(fake): State<Shared>,
    headers: HeaderMap,
    UrlPath(task_id): UrlPath<String>,
    Json(body): Json<wire::Progress>,
) -> Response {
    if !authorised(&headers, &fake) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut f = fake.lock().unwrap();
    let cancel = f.cancel_tasks.contains(&task_id);
    f.progress.push((task_id, body));
    Json(wire::ProgressReply {
        cancel_requested: cancel,
        lease_lost: false,
    })
    .into_response()
}

async fn result(
    State(fake): State<Shared>,
    headers: HeaderMap,
    UrlPath(task_id): UrlPath<String>,
    Json(body): Json<wire::TaskResult>,
) -> Response {
    if !authorised(&headers, &fake) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut f = fake.lock().unwrap();
    let calls = f.result_calls.entry(task_id.clone()).or_default();
    *calls += 1;
    if *calls == 1 {
        // Lost the first delivery: the agent must post it again.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    f.results.insert(task_id, body);
    Json(serde_json::json!({})).into_response()
}

fn assignment(task_id: &str, kind: TaskKind, host: &HostSpec) -> Assignment {
    Assignment {
        task_id: task_id.into(),
        lease: format!("lease-{task_id}"),
        kind,
        attempt: 1,
        host: host.clone(),
        wipe: false,
    }
}

async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_tasks_for_a_control_plane() {
    if let Some(why) = missing_prerequisite() {
        assert!(
            std::env::var("CCP_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "CCP_REQUIRE_DOCKER=1 but {why}"
        );
        eprintln!("SKIPPED agent_runs_tasks_for_a_control_plane: {why}");
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let node = format!("loop{}-{:x}", std::process::id(), nanos & 0xffff);
    let _cleanup = Cleanup { node: node.clone() };
    let state_dir = tempfile::tempdir().unwrap();

    let host = HostSpec {
        host_id: format!("{node}-a"),
        short_id: "a1".into(),
        linux_user: "bob".into(),
        memory_mb: 256,
        cpu_millis: 500,
        pids_limit: 256,
        password_crypt: "$6$itestsalt1$4qgAhoZNtP7nYdOjspFMxNWHUHj5VpR1MerOvN.6l9oisFTaAmtI6E463eUVo/pY6fiswAzOiG7lbR7n/zngQ0".into(),
        authorized_keys: vec![],
        vnc_secret: String::new(),
        egress: None,
        egress_cut: false,
    };
    let fake: Shared = Arc::default();
    {
        let mut f = fake.lock().unwrap();
        f.queue.push_back(assignment("t-create", TaskKind::Create, &host));
        f.queue
            .push_back(assignment("t-stop-cancelled", TaskKind::Stop, &host));
        f.queue.push_back(assignment("t-delete", TaskKind::Delete, &host));
        f.cancel_tasks.push("t-stop-cancelled".into());
    }
    let app = Router::new()
        .route("/v1/agent/register", post(register))
        .route("/v1/agent/heartbeat", post(heartbeat))
        .route("/v1/agent/claim", post(claim))
        .route("/v1/agent/tasks/{task_id}/progress", post(progress))
        .route("/v1/agent/tasks/{task_id}/result", post(result))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut config = agent::Config::new(url);
    config.credential = Some(TOKEN.into());
    config.node_name = node.clone();
    config.state_dir = state_dir.path().to_owned();
    config.host_image = IMAGE.into();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agent::run(config, async {
        let _ = stopped.await;
    }));

    let f = fake.clone();
    eventually("all three results", Duration::from_secs(120), || {
        f.lock().unwrap().results.len() == 3
    })
    .await;
    let f = fake.clone();
    eventually(
        "a heartbeat under the second registration",
        Duration::from_secs(30),
        || f.lock().unwrap().heartbeats.iter().any(|h| h.node_id == "node-2"),
    )
    .await;

    {
        let f = fake.lock().unwrap();
        assert_eq!(f.bad_tokens, 0);
        assert!(f.register_calls >= 3, "registered {} times", f.register_calls);
        let create = &f.results["t-create"];
        assert_eq!(create.outcome, Outcome::Succeeded, "{create:?}");
        assert_eq!(create.lease, "lease-t-create");
        let observed = create.observed.as_ref().unwrap();
        assert_eq!(observed.state, ContainerState::Running);
        assert!(observed.address.is_some());
        assert_eq!(f.results["t-stop-cancelled"].outcome, Outcome::Cancelled);
        let deleted = &f.results["t-delete"];
        assert_eq!(deleted.outcome, Outcome::Succeeded, "{deleted:?}");
        assert_eq!(
            deleted.observed.as_ref().map(|o| o.state),
            Some(ContainerState::Missing)
        );
        assert!(
            f.result_calls.values().all(|n| *n == 2),
            "each result was posted twice: {:?}",
            f.result_calls
        );
        let create_progress: Vec<u8> = f
            .progress
            .iter()
            .filter(|(t, _)| t == "t-create")
            .map(|(_, p)| p.percent)
            .collect();
        assert!(
            create_progress.windows(2).all(|w| w[0] <= w[1]),
            "{create_progress:?}"
        );
        assert_eq!(create_progress.last(), Some(&100));
        // The cancelled stop stopped at its first step: the host kept running until the delete.
        let stop_steps = f.progress.iter().filter(|(t, _)| t == "t-stop-cancelled").count();
        assert_eq!(stop_steps, 1);
    }

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
