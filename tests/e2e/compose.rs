//! The compose deployment (`deploy/compose/`) brought up by its own `up.sh` from the images
//! `images/build.sh` makes, under a compose project and node name of its own, on free loopback
//! ports: sign in through the HTTP balancer, make a user and a host (built by the deployment's
//! agent), log in to it with the real `ssh` through the TCP balancer and a gateway behind it (the
//! PROXY protocol carries the client's address), keep answering with one replica stopped, then
//! delete the host and `down -v`, leaving nothing of the project or the node behind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use cloud_cli_proxy_tests::access::free_port;
use cloud_cli_proxy_tests::docker::{self, NODE, Out};
use cloud_cli_proxy_tests::gateway::{self, Login};
use cloud_cli_proxy_tests::hosts::{CREATE_LIMIT, linux_user};
use cloud_cli_proxy_tests::{Api, eventually, fixtures, process};

/// Label compose puts on the containers, networks and volumes of a project.
const PROJECT: &str = "com.docker.compose.project";
/// `up.sh` from images that are up to date takes seconds; the first run builds them (debootstrap).
const UP_LIMIT: Duration = Duration::from_secs(1200);
const CALL_LIMIT: Duration = Duration::from_secs(300);
/// The client address the SSH login comes from, which only the PROXY protocol header tells the
/// gateway: its own connection comes from the balancer at 127.0.0.1.
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// One deployment: its settings, and `down -v` when dropped, whatever happened.
struct Deployment {
    project: String,
    node: String,
    dir: tempfile::TempDir,
    http_port: u16,
    ssh_port: u16,
    compose: Vec<String>,
}

impl Deployment {
    fn new() -> Self {
        let suffix = fixtures::random_alnum(8).to_lowercase();
        let dir = tempfile::Builder::new().prefix("ccp-compose-").tempdir().unwrap();
        let project = format!("ccp-e2e-{suffix}");
        let mut compose = compose_program();
        for arg in [
            "--project-name",
            &project,
            "--file",
            &compose_file().display().to_string(),
            "--env-file",
            &dir.path().join("env").display().to_string(),
        ] {
            compose.push(arg.to_owned());
        }
        Self {
            node: format!("ce2e{suffix}"),
            project,
            dir,
            http_port: free_port(),
            ssh_port: free_port(),
            compose,
        }
    }

    fn env_file(&self) -> PathBuf {
        self.dir.path().join("env")
    }

    /// `deploy/compose/up.sh`, as the README runs it, with the settings of this test.
    async fn up(&self, host_image: &str) -> Out {
        let script = docker::workspace_root().join("deploy/compose/up.sh");
        let root = self.dir.path();
        let mut cmd = tokio::process::Command::new(&script);
        cmd.arg(self.env_file())
            .env("CCP_BIN_DIR", process::bin_dir())
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env("NODE_NAME", &self.node)
            .env("LISTEN_ADDR", "127.0.0.1")
            .env("HTTP_PORT", self.http_port.to_string())
            .env("SSH_PORT", self.ssh_port.to_string())
            .env("PUBLIC_BASE_URL", format!("http://127.0.0.1:{}", self.http_port))
            .env("SECRETS_DIR", root.join("secrets"))
            .env("STATE_DIR", root.join("state"))
            .env("HOST_IMAGE", host_image)
            .env("UP_TIMEOUT_SECS", "240");
        for name in ["CP1_PORT", "CP2_PORT", "GW1_PORT", "GW2_PORT", "PG_PORT"] {
            cmd.env(name, free_port().to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        gateway::output(cmd, None, UP_LIMIT).await
    }

    async fn compose(&self, args: &[&str]) -> Out {
        let mut all: Vec<&str> = self.compose[1..].iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        docker::run_program(&self.compose[0], &all, CALL_LIMIT).await
    }

    /// A setting `init.sh` wrote.
    fn setting(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.env_file()).expect("the env file init.sh wrote");
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .next_back()
            .unwrap_or_else(|| panic!("no {name} in the env file"))
            .to_owned()
    }

    async fn logs(&self) -> String {
        let out = self.compose(&["logs", "--no-color", "--tail", "40"]).await;
        docker::tail(&out.both(), 200)
    }

    /// Everything Docker still holds of the project and of the node.
    async fn leftovers(&self) -> Vec<String> {
        let mut all = docker::labelled(PROJECT, &self.project).await;
        all.extend(docker::labelled(NODE, &self.node).await);
        all
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = Command::new(&self.compose[0])
            .args(&self.compose[1..])
            .args(["down", "--volumes", "--remove-orphans", "--timeout", "20"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        docker::remove_labelled(NODE, &self.node);
    }
}

/// `docker compose` where the plugin is installed, else Debian's `docker-compose`.
fn compose_program() -> Vec<String> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if plugin {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

fn compose_file() -> PathBuf {
    docker::workspace_root().join("deploy/compose/compose.yaml")
}

async fn task_succeeded(admin: &Api, task_id: &str, deployment: &Deployment) {
    let task: Value = eventually(CREATE_LIMIT, "the host's create task to finish", || async {
        let r = admin.get(&format!("/v1/admin/tasks/{task_id}")).await;
        let task = r.expect(200).clone();
        let status = task["status"].as_str().unwrap_or_default().to_owned();
        matches!(status.as_str(), "succeeded" | "failed" | "cancelled").then_some(task)
    })
    .await;
    assert_eq!(
        task["status"],
        "succeeded",
        "create task: {task}\n{}",
        deployment.logs().await
    );
}

fn require_tools() {
    for tool in ["ssh", "sshpass", "ssh-keygen", "curl", "flock"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "the compose test needs {tool}");
    }
    let compose = compose_program();
    let found = Command::new(&compose[0])
        .args(&compose[1..])
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the compose test needs docker-compose or the docker compose plugin"
    );
    let binary = process::bin_dir().join("cloud-cli-proxy-control-plane");
    assert!(
        Path::new(&binary).is_file(),
        "no {}: build the workspace binaries first (cargo build --workspace --bins)",
        binary.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_deployment_serves_a_host_through_both_balancers_and_leaves_nothing() {
    docker::require_docker();
    require_tools();
    let host_image = docker::host_image();
    let deployment = Deployment::new();

    let started = std::time::Instant::now();
    let up = deployment.up(&host_image).await;
    assert!(
        up.success(),
        "up.sh failed: {}\n{}",
        docker::tail(&up.both(), 60),
        deployment.logs().await
    );
    eprintln!("up.sh: {:.1}s", started.elapsed().as_secs_f64());
    assert!(
        up.stdout
            .contains(&format!("http://127.0.0.1:{}", deployment.http_port)),
        "up.sh does not print the URL: {}",
        up.stdout
    );
    assert!(
        up.stdout.contains(&deployment.env_file().display().to_string()),
        "up.sh does not say where the operator's credentials are: {}",
        up.stdout
    );
    let env_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(deployment.env_file()).unwrap().permissions(),
    );
    assert_eq!(env_mode & 0o777, 0o600, "the env file holds secrets");

    // Signed in through the HTTP balancer; the agent and both gateways enrolled by themselves.
    let api = Api::new(format!("http://127.0.0.1:{}", deployment.http_port));
    let admin = api
        .login_as(
            &deployment.setting("ADMIN_USERNAME"),
            &deployment.setting("ADMIN_PASSWORD"),
        )
        .await;
    let nodes = admin.get("/v1/admin/nodes").await;
    let node = nodes
        .data()
        .iter()
        .find(|n| n["name"] == deployment.node.as_str())
        .unwrap_or_else(|| panic!("node {} is not registered: {}", deployment.node, nodes.text));
    assert_eq!(node["connected"], true, "{node}");
    let gateways = admin.get("/v1/admin/gateways").await;
    let mut names: Vec<String> = gateways
        .data()
        .iter()
        .filter_map(|g| g["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("{}-gw1", deployment.node),
            format!("{}-gw2", deployment.node)
        ],
        "{}",
        gateways.text
    );

    // A user and a host, built by the deployment's agent.
    let username = format!("c{}", fixtures::random_alnum(8).to_lowercase());
    let password = format!("pw-{}", fixtures::random_alnum(16));
    let user = admin
        .post(
            "/v1/admin/users",
            json!({ "username": username, "password": password }),
        )
        .await;
    let user_id = fixtures::id(user.expect(201));
    let host = admin.post("/v1/admin/hosts", json!({ "user_id": user_id })).await;
    let host = host.expect(201).clone();
    let host_id = fixtures::id(&host);
    let short_id = host["short_id"].as_str().unwrap().to_owned();
    task_succeeded(&admin, host["task_id"].as_str().unwrap(), &deployment).await;

    // The real OpenSSH client through the TCP balancer, from another loopback address than the
    // balancer's own.
    let login = format!("{username}+{short_id}");
    let mut ssh = gateway::ssh_from(
        deployment.ssh_port,
        &login,
        &Login::Password(password.clone()),
        CLIENT,
    );
    ssh.arg("echo compose-$(id -un)");
    let out = gateway::output(ssh, None, Duration::from_secs(90)).await;
    assert!(
        out.success(),
        "ssh through the balancer: {}\n{}",
        out.both(),
        deployment.logs().await
    );
    assert_eq!(out.stdout.trim(), format!("compose-{}", linux_user(&username)));
    let events = admin
        .get(&format!(
            "/v1/admin/events?type=ssh.login_succeeded&host_id={host_id}"
        ))
        .await;
    let ips: Vec<&Value> = events.data().iter().map(|e| &e["ip"]).collect();
    assert!(
        !ips.is_empty() && ips.iter().all(|ip| *ip == CLIENT.to_string().as_str()),
        "the gateway must see the client's address from the PROXY header: {}",
        events.text
    );

    // One replica down: the balancer sends everything to the other, and the session token, signed
    // with the shared secret, is good there too.
    let stop = deployment.compose(&["stop", "--timeout", "20", "cp1"]).await;
    assert!(stop.success(), "stop cp1: {}", stop.both());
    for _ in 0..4 {
        let r = admin.get(&format!("/v1/admin/hosts/{host_id}")).await;
        assert_eq!(r.status, 200, "with cp1 stopped: {}", r.text);
    }
    let start = deployment.compose(&["start", "cp1"]).await;
    assert!(start.success(), "start cp1: {}", start.both());

    // Deleting the host removes what the agent made; `down -v` removes the rest.
    let deleted = admin.delete(&format!("/v1/admin/hosts/{host_id}")).await;
    deleted.expect(202);
    eventually(
        Duration::from_secs(180),
        "the agent to remove the host's containers, volume and network",
        || async {
            let r = admin.get(&format!("/v1/admin/hosts/{host_id}")).await;
            (r.status == 404 && docker::labelled(NODE, &deployment.node).await.is_empty()).then_some(())
        },
    )
    .await;
    let down = deployment
        .compose(&["down", "--volumes", "--timeout", "20"])
        .await;
    assert!(down.success(), "down -v: {}", down.both());
    let left = deployment.leftovers().await;
    assert!(left.is_empty(), "left behind by down -v: {left:?}");
}
