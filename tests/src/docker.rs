//! Docker as the tests see it, through the `docker` CLI: the host image, inspecting what the agent
//! built, running commands in containers, and removing everything a test's node labelled.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

/// Labels the agent puts on everything it creates (the `wire` crate's names).
pub const MANAGED: &str = "io.cloud-cli-proxy.managed";
pub const HOST_ID: &str = "io.cloud-cli-proxy.host-id";
pub const NODE: &str = "io.cloud-cli-proxy.node";
pub const ROLE: &str = "io.cloud-cli-proxy.role";
/// Label of objects a test makes by itself (the benchmark's bare containers, say).
pub const TEST: &str = "io.cloud-cli-proxy.test";

/// Bound of one `docker` call made while a test runs.
const CALL_LIMIT: Duration = Duration::from_secs(120);

/// What one command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout and stderr together, for messages.
    pub fn both(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `program args` with a time limit; panics only when it cannot be started or runs over.
pub async fn run_program(program: &str, args: &[&str], limit: Duration) -> Out {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`{program} {}` took longer than {limit:?}", args.join(" ")))
        .unwrap_or_else(|e| panic!("waiting for {program}: {e}"));
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `docker args…`.
pub async fn docker(args: &[&str]) -> Out {
    run_program("docker", args, CALL_LIMIT).await
}

/// `docker args…`, asserting success; returns stdout.
#[track_caller]
pub fn docker_ok<'a>(args: &'a [&'a str]) -> impl std::future::Future<Output = String> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        let out = docker(args).await;
        assert!(
            out.success(),
            "`docker {}` (at {caller}) failed: {}",
            args.join(" "),
            out.both()
        );
        out.stdout
    }
}

/// Fails the test with a clear message unless the Docker engine answers (these tests are part of
/// the normal suite: a missing Docker is an error, never a silent skip).
pub fn require_docker() {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "these tests need a running Docker engine (as root): `docker version` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("these tests need Docker: cannot run the `docker` CLI: {e}"),
    }
}

/// The workspace root (the parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Builds the host image with `images/build.sh` (idempotent: up to date in a fraction of a second;
/// about 5 minutes the first time) and returns its reference. One build at a time across processes
/// (`flock`), once per process. `CCP_HOST_IMAGE` in the environment names a prebuilt image instead.
pub fn host_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            require_docker();
            if let Some(image) = std::env::var("CCP_HOST_IMAGE").ok().filter(|s| !s.is_empty()) {
                let ok = Command::new("docker")
                    .args(["image", "inspect", "--format", "{{.Id}}", &image])
                    .output()
                    .is_ok_and(|o| o.status.success());
                assert!(ok, "CCP_HOST_IMAGE={image} is not an image Docker has");
                return image;
            }
            let script = workspace_root().join("images").join("build.sh");
            let lock = std::env::temp_dir().join("cloud-cli-proxy-host-image.lock");
            let out = Command::new("flock")
                .arg(&lock)
                .arg(&script)
                .arg("host")
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run flock {}: {e}", script.display()));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{} failed ({}); it needs root, debootstrap and Docker. Its output:\n{}",
                script.display(),
                out.status,
                tail(&stderr, 40)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let image = stdout
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_else(|| panic!("{} printed no image reference", script.display()))
                .trim()
                .to_owned();
            assert!(
                image.starts_with("cloud-cli-proxy/host:"),
                "unexpected image reference from build.sh: {image}"
            );
            image
        })
        .clone()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `docker inspect` of a container, `None` when there is no such container.
pub async fn inspect_container(name: &str) -> Option<Value> {
    let out = docker(&["container", "inspect", name]).await;
    if !out.success() {
        assert!(
            out.stderr.contains("No such"),
            "docker container inspect {name}: {}",
            out.stderr
        );
        return None;
    }
    let v: Value = serde_json::from_str(&out.stdout).expect("docker inspect prints JSON");
    v.get(0).cloned()
}

/// A container's state as the tests need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub running: bool,
    pub status: String,
    pub started_at: String,
    pub labels: Value,
}

pub async fn container(name: &str) -> Option<ContainerInfo> {
    let v = inspect_container(name).await?;
    Some(ContainerInfo {
        id: v["Id"].as_str().unwrap_or_default().to_owned(),
        running: v["State"]["Running"].as_bool().unwrap_or(false),
        status: v["State"]["Status"].as_str().unwrap_or_default().to_owned(),
        started_at: v["State"]["StartedAt"].as_str().unwrap_or_default().to_owned(),
        labels: v["Config"]["Labels"].clone(),
    })
}

/// Whether the container exists and runs.
pub async fn is_running(name: &str) -> bool {
    container(name).await.is_some_and(|c| c.running)
}

/// The container's IPv4 address on `network` (by network name), if attached and running.
pub async fn ip_on(name: &str, network: &str) -> Option<Ipv4Addr> {
    let v = inspect_container(name).await?;
    v["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("an IPv4 address"))
}

/// Subnet and gateway of a network.
pub async fn network_gateway(network: &str) -> (String, Ipv4Addr) {
    let out = docker_ok(&["network", "inspect", network]).await;
    let v: Value = serde_json::from_str(&out).expect("docker network inspect prints JSON");
    let cfg = &v[0]["IPAM"]["Config"][0];
    let subnet = cfg["Subnet"].as_str().unwrap_or_default().to_owned();
    let gateway = cfg["Gateway"]
        .as_str()
        .unwrap_or_else(|| panic!("network {network} has no gateway: {v}"))
        .parse()
        .expect("gateway is IPv4");
    (subnet, gateway)
}

/// `docker exec -u 0 CONTAINER args…` (root inside the container, as a tenant with sudo would be).
pub async fn exec_root(container: &str, args: &[&str]) -> Out {
    let mut all = vec!["exec", "-u", "0", container];
    all.extend_from_slice(args);
    docker(&all).await
}

/// Names of containers (all states) matching every `label=…` filter.
pub async fn containers(filters: &[String]) -> Vec<String> {
    listed(&["ps", "-a", "--format", "{{.Names}}"], filters).await
}

pub async fn volumes(filters: &[String]) -> Vec<String> {
    listed(&["volume", "ls", "--format", "{{.Name}}"], filters).await
}

pub async fn networks(filters: &[String]) -> Vec<String> {
    listed(&["network", "ls", "--format", "{{.Name}}"], filters).await
}

async fn listed(base: &[&str], filters: &[String]) -> Vec<String> {
    let mut args: Vec<String> = base.iter().map(|s| (*s).to_owned()).collect();
    for f in filters {
        args.push("--filter".into());
        args.push(format!("label={f}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = docker_ok(&refs).await;
    let mut names: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// Every Docker object (container, volume, network) labelled `key=value`, as `kind name` lines.
pub async fn labelled(key: &str, value: &str) -> Vec<String> {
    let f = [format!("{key}={value}")];
    let mut all = Vec::new();
    all.extend(containers(&f).await.into_iter().map(|n| format!("container {n}")));
    all.extend(volumes(&f).await.into_iter().map(|n| format!("volume {n}")));
    all.extend(networks(&f).await.into_iter().map(|n| format!("network {n}")));
    all
}

/// The `host-id` labels of containers and volumes of `node`: the hosts Docker holds for it.
pub async fn host_ids_on_node(node: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for kind in ["container", "volume"] {
        let base: &[&str] = if kind == "container" {
            &["ps", "-a", "--format"]
        } else {
            &["volume", "ls", "--format"]
        };
        let format = format!("{{{{.Names}}}}\t{{{{.Label \"{HOST_ID}\"}}}}");
        let format = if kind == "volume" {
            format.replace(".Names", ".Name")
        } else {
            format
        };
        let mut args: Vec<&str> = base.to_vec();
        args.push(&format);
        let filter = format!("label={NODE}={node}");
        args.extend(["--filter", &filter]);
        let text = docker_ok(&args).await;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, id) = line.split_once('\t').unwrap_or((line, ""));
            out.push((format!("{kind} {name}"), id.trim().to_owned()));
        }
    }
    out
}

/// Removes every container, volume and network labelled `key=value` (synchronously: used from
/// `Drop`). Returns what it removed.
pub fn remove_labelled(key: &str, value: &str) -> Vec<String> {
    let filter = format!("label={key}={value}");
    let list = |args: &[&str]| -> Vec<String> {
        Command::new("docker")
            .args(args)
            .args(["--filter", &filter])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut removed = Vec::new();
    let containers = list(&["ps", "-aq"]);
    if !containers.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&containers)
            .output();
        removed.extend(containers.into_iter().map(|c| format!("container {c}")));
    }
    let volumes = list(&["volume", "ls", "-q"]);
    if !volumes.is_empty() {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f"])
            .args(&volumes)
            .output();
        removed.extend(volumes.into_iter().map(|v| format!("volume {v}")));
    }
    let networks = list(&["network", "ls", "-q"]);
    if !networks.is_empty() {
        let _ = Command::new("docker")
            .args(["network", "rm"])
            .args(&networks)
            .output();
        removed.extend(networks.into_iter().map(|n| format!("network {n}")));
    }
    removed
}
