//! `cloud-cli-proxy-bench hosts|ssh|recording|egress|egress-test|dashboard|api|fleet|spread|density`: how long a host takes to
//! become usable (`hosts`, below), what the SSH gateway costs against a direct connection (`ssh`, in
//! `ssh.rs`), what session recording costs the gateway (`recording`, in `recording.rs`),
//! what an egress tunnel costs a host against the node's direct path, with the time to recover from
//! a killed tunnel (`egress`, in `egress.rs`, whose bulk server runs as `egress-sink`), how long the
//! operator's egress test takes for every tunnel kind, healthy and dead (`egress-test`, in
//! `egress_test.rs`), and how the
//! dashboard's pages compare with the API calls they make and its desktop with noVNC straight to
//! the host (`dashboard`, in `dashboard/`), and what the API carries on SQLite and PostgreSQL with
//! one and two replicas, and how many simulated nodes they hold (`api` and `fleet`, in `replicas.rs`),
//! and how long 200 hosts asked for at once take to run across two agents (`spread`, in `spread.rs`),
//! and how many idle hosts a node holds: memory per host, create → sshd as the node fills, the
//! control plane's and agent's own memory, and a cold desktop's first frame (`density`, in
//! `density.rs`).
//!
//! Starts a control plane with its embedded agent on a temporary database, then measures:
//!
//! 1. ten hosts one after another: `POST /v1/admin/hosts` → sshd's `SSH-2.0` banner on the host's
//!    address (polled every 50 ms), against ten bare `docker run -d` of the same image (same
//!    capabilities and secrets mount as images/README.md shows, on a network of the bench's own) →
//!    the same banner; p50, max and the ratio of the p50s (target ≤ 1.5). The two kinds alternate, so
//!    that drift in the machine's load affects both alike;
//! 2. twenty hosts asked for at once: how many became ready and when the last one did.
//!
//! Everything it creates is removed at the end (and on a panic).
//!
//! `cargo run -p cloud-cli-proxy-tests --release --bin cloud-cli-proxy-bench -- hosts [--sequential N]
//! [--burst N]`, `… -- ssh [--mib N] [--logins N]`, `… -- recording [--mib N] [--pty-mib N]`,
//! `… -- egress [--mib N] [--rounds N] [--kills N] [--congestion-control NAME]`, `… -- egress-test [--runs N]`
//! (root), `… -- dashboard [--runs N] [--hosts N] [--seconds N] [--rounds N]` (root, chromium). The
//! control plane binary is taken from `CCP_BIN_DIR` (default `target/debug`; build it
//! with `cargo build --workspace --bins`).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark program: it reports on stdout and stops loudly"
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod dashboard;
mod density;
mod egress;
mod egress_test;
mod recording;
mod replicas;
mod spread;
mod ssh;

use anyhow::{Context as _, bail};
use cloud_cli_proxy_tests::docker::{self, docker_ok, remove_labelled, run_program};
use cloud_cli_proxy_tests::fixtures::random_alnum;
use cloud_cli_proxy_tests::hosts::{ACTION_LIMIT, CREATE_LIMIT, ssh_banner};
use cloud_cli_proxy_tests::{Node, process};

const POLL: Duration = Duration::from_millis(50);
/// How often a container's address is asked of Docker. Each ask is a `docker inspect` process: at
/// 50 ms, twenty hosts waiting at once kept both cores of the machine busy with the bench itself.
/// The address is there from the (egress) container's start, well before sshd answers, so the
/// coarser poll does not delay the banner, which is still polled every 50 ms.
const ADDRESS_POLL: Duration = Duration::from_millis(500);
/// Bound of one host becoming ready in the sequential series.
const READY_LIMIT: Duration = Duration::from_secs(180);
/// Bound of the whole burst.
const BURST_LIMIT: Duration = Duration::from_secs(900);
const TARGET_RATIO: f64 = 1.5;

/// Capabilities of a host container, as images/README.md lists them.
const HOST_CAPS: [&str; 6] = ["CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "KILL"];

struct Args {
    sequential: usize,
    burst: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        sequential: 10,
        burst: 20,
    };
    match args.next().as_deref() {
        Some("hosts") => {}
        Some("-h" | "--help") | None => {
            bail!(
                "usage: cloud-cli-proxy-bench hosts [--sequential N] [--burst N] | ssh [--mib N] [--logins N] \
                 | recording [--mib N] [--pty-mib N] \
                 | egress [--mib N] [--rounds N] [--kills N] [--congestion-control NAME] | egress-test [--runs N] \
                 | dashboard [--runs N] [--hosts N] [--seconds N] [--rounds N] \
                 | api [--seconds N] [--clients N] \
                 | fleet [--hosts N] [--step N] [--max N] [--window N] [--interval N] [--replicas 1|2] \
                 | spread [--hosts N] [--users N] [--in-flight N] \
                 | density [--hosts N] [--in-flight N] [--settle S] [--opens N] [--bound N]"
            )
        }
        Some(other) => {
            bail!(
                "unknown benchmark `{other}` (known: hosts, ssh, recording, egress, egress-test, dashboard, api, fleet, spread, density)"
            )
        }
    }
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse::<usize>()
            .with_context(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--sequential" if value >= 1 => parsed.sequential = value,
            "--burst" => parsed.burst = value,
            _ => bail!("unknown or invalid flag {flag} {value}"),
        }
    }
    Ok(parsed)
}

/// Polls (every 500 ms) for the container's address on `network`, then (every 50 ms) for sshd's
/// banner there; returns the time since `t0`.
async fn ready(container: &str, network: &str, t0: Instant, limit: Duration) -> anyhow::Result<Duration> {
    let deadline = t0 + limit;
    let ip = loop {
        if let Some(ip) = docker::ip_on(container, network).await {
            break ip;
        }
        if Instant::now() > deadline {
            bail!("{container} got no address on {network} within {limit:?}");
        }
        tokio::time::sleep(ADDRESS_POLL).await;
    };
    let addr = SocketAddr::from((ip, 22));
    loop {
        let tried = Instant::now();
        if ssh_banner(addr, Duration::from_secs(1)).await {
            return Ok(t0.elapsed());
        }
        if Instant::now() > deadline {
            bail!("sshd at {addr} did not answer within {limit:?}");
        }
        tokio::time::sleep(POLL.saturating_sub(tried.elapsed())).await;
    }
}

/// Bare containers of the image, on a network of the bench's own; everything labelled
/// `io.cloud-cli-proxy.test=<tag>` and removed on drop.
struct Bare {
    tag: String,
    network: String,
    image: String,
    secrets: tempfile::TempDir,
    count: usize,
}

impl Bare {
    async fn new(image: &str) -> anyhow::Result<Self> {
        let tag = format!("bench-{}", random_alnum(8).to_lowercase());
        let label = format!("{}={tag}", docker::TEST);
        let network = format!("ccp-{tag}");
        docker_ok(&["network", "create", "--label", &label, &network]).await;
        let secrets = tempfile::Builder::new().prefix("ccp-bench-secrets-").tempdir()?;
        // The same files the agent mounts: the password hash and the VNC password (so the desktop
        // can start on demand, as in a managed host), root-owned 0600.
        let hash = run_program(
            "sh",
            &[
                "-c",
                "printf '%s' \"$0\" | openssl passwd -6 -stdin",
                &random_alnum(16),
            ],
            Duration::from_secs(30),
        )
        .await;
        if !hash.success() {
            bail!("openssl passwd failed: {}", hash.both());
        }
        let vnc = std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                "sh",
                image,
                "-c",
            ])
            .arg(format!("printf '%s\\n' '{}' | vncpasswd -f", random_alnum(8)))
            .output()
            .context("docker run vncpasswd")?;
        if !vnc.status.success() || vnc.stdout.is_empty() {
            bail!(
                "vncpasswd -f in the image failed: {}",
                String::from_utf8_lossy(&vnc.stderr)
            );
        }
        write_private(&secrets.path().join("password.hash"), hash.stdout.as_bytes())?;
        write_private(&secrets.path().join("vnc.passwd"), &vnc.stdout)?;
        Ok(Self {
            tag,
            network,
            image: image.to_owned(),
            secrets,
            count: 0,
        })
    }

    /// `docker run -d` of one more container; its readiness time from just before the command.
    async fn run_one(&mut self) -> anyhow::Result<Duration> {
        self.count += 1;
        let name = format!("ccp-{}-{}", self.tag, self.count);
        let label = format!("{}={}", docker::TEST, self.tag);
        let home = format!("{name}-home");
        docker_ok(&["volume", "create", "--label", &label, &home]).await;
        let secrets = format!("{}:/run/cloud-cli-proxy:ro", self.secrets.path().display());
        let home_mount = format!("{home}:/home");
        let mut args: Vec<&str> = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &label,
            "--cap-drop",
            "ALL",
        ];
        for cap in HOST_CAPS {
            args.extend(["--cap-add", cap]);
        }
        args.extend([
            "--log-opt",
            "max-size=10m",
            "--log-opt",
            "max-file=3",
            "-e",
            "HOST_USER=bench",
            "-v",
            &secrets,
            "-v",
            &home_mount,
            "--network",
            &self.network,
            &self.image,
        ]);
        let t0 = Instant::now();
        docker_ok(&args).await;
        ready(&name, &self.network, t0, READY_LIMIT).await
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        remove_labelled(docker::TEST, &self.tag);
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Creates a host through the API; returns (host id, short id, task id).
async fn ask_for_host(node: &Node, user_id: &str) -> (String, String, String) {
    let host = node.create_host(user_id).await;
    (host.id, host.short_id, host.task_id)
}

async fn delete_hosts(node: &Node, ids: &[String]) {
    for id in ids {
        let r = node.admin.delete(&format!("/v1/admin/hosts/{id}")).await;
        assert!(r.status == 202 || r.status == 404, "delete {id}: {}", r.text);
    }
    for id in ids {
        node.host_gone(id, ACTION_LIMIT * 2).await;
    }
}

/// Flags of the form `--name N` with N ≥ 1, each one of `names`; anything else is refused.
fn numeric_flags(
    args: Vec<String>,
    names: &[&str],
) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    let mut found = std::collections::HashMap::new();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} needs a number"))?;
        if value < 1 || !names.contains(&flag.as_str()) {
            bail!("unknown or invalid flag {flag} {value}");
        }
        found.insert(flag, value);
    }
    Ok(found)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("ssh") => return ssh::main(std::env::args().skip(2).collect()).await,
        Some("recording") => return recording::main(std::env::args().skip(2).collect()).await,
        Some("egress") => return egress::main(std::env::args().skip(2).collect()).await,
        Some("egress-sink") => return egress::sink(std::env::args().skip(2).collect()).await,
        Some("egress-test") => return egress_test::main(std::env::args().skip(2).collect()).await,
        Some("dashboard") => return dashboard::main(std::env::args().skip(2).collect()).await,
        Some("api") => return replicas::api(std::env::args().skip(2).collect()).await,
        Some("fleet") => return replicas::fleet(std::env::args().skip(2).collect()).await,
        Some("spread") => return spread::main(std::env::args().skip(2).collect()).await,
        Some("density") => return density::main(std::env::args().skip(2).collect()).await,
        _ => {}
    }
    let args = parse_args()?;
    docker::require_docker();
    eprintln!("building or checking the host image (images/build.sh)…");
    let image = tokio::task::spawn_blocking(docker::host_image).await?;
    eprintln!(
        "control plane: {} (CCP_BIN_DIR picks another build)",
        process::control_plane_bin().display()
    );
    let node = Node::embedded(&[]).await;
    let user_id = node.user("bench").await;
    let mut bare = Bare::new(&image).await?;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);

    // 1. One after another, alternating API hosts and bare containers.
    let mut api_times = Vec::new();
    let mut bare_times = Vec::new();
    let mut hosts = Vec::new();
    for i in 0..args.sequential {
        let t0 = Instant::now();
        let (id, short_id, task_id) = ask_for_host(&node, &user_id).await;
        let t = ready(&node.egress_container(&short_id), &node.network, t0, READY_LIMIT)
            .await
            .with_context(|| format!("host {} of the series", i + 1))?;
        node.task_succeeded(&task_id, CREATE_LIMIT, "create").await;
        api_times.push(t);
        hosts.push(id);
        let b = bare
            .run_one()
            .await
            .with_context(|| format!("bare container {}", i + 1))?;
        bare_times.push(b);
        eprintln!("  {:>2}: API {:>8}   docker run {:>8}", i + 1, secs(t), secs(b));
    }
    delete_hosts(&node, &hosts).await;
    drop(bare);

    // 2. A burst: every host asked for at once, readiness tracked concurrently.
    let t0 = Instant::now();
    let mut asked = Vec::new();
    for _ in 0..args.burst {
        asked.push(ask_for_host(&node, &user_id).await);
    }
    let asked_in = t0.elapsed();
    let mut waits = tokio::task::JoinSet::new();
    for (_, short_id, _) in &asked {
        let (egress, network) = (node.egress_container(short_id), node.network.clone());
        waits.spawn(async move { ready(&egress, &network, t0, BURST_LIMIT).await });
    }
    let mut burst_times = Vec::new();
    let mut burst_errors = Vec::new();
    while let Some(r) = waits.join_next().await {
        match r? {
            Ok(t) => burst_times.push(t),
            Err(e) => burst_errors.push(format!("{e:#}")),
        }
    }
    let mut failed_tasks = 0;
    for (_, _, task_id) in &asked {
        if node.task_finished(task_id, CREATE_LIMIT).await["status"] != "succeeded" {
            failed_tasks += 1;
        }
    }
    let burst_ids: Vec<String> = asked.iter().map(|(id, _, _)| id.clone()).collect();
    delete_hosts(&node, &burst_ids).await;

    // Report.
    let api_p50 = percentile(&api_times, 50.0);
    let bare_p50 = percentile(&bare_times, 50.0);
    let ratio = api_p50.as_secs_f64() / bare_p50.as_secs_f64();
    println!();
    println!("cloud-cli-proxy bench: hosts");
    println!("  node {}, image {image}, {cpus} CPUs", node.name);
    println!();
    println!(
        "  {:<42} {:>9} {:>9} {:>9}",
        format!("one after another ({} each)", args.sequential),
        "p50",
        "max",
        "min"
    );
    let row = |label: &str, t: &[Duration]| {
        println!(
            "  {label:<42} {:>9} {:>9} {:>9}",
            secs(percentile(t, 50.0)),
            secs(*t.iter().max().unwrap()),
            secs(*t.iter().min().unwrap())
        );
    };
    row("POST /v1/admin/hosts → sshd banner", &api_times);
    row("bare docker run -d → sshd banner", &bare_times);
    println!(
        "  {:<42} {:>9.2}   (target ≤ {TARGET_RATIO}: {})",
        "ratio of the p50s",
        ratio,
        if ratio <= TARGET_RATIO { "met" } else { "NOT met" }
    );
    println!();
    println!(
        "  {} hosts asked for at once (POSTs took {})",
        args.burst,
        secs(asked_in)
    );
    println!(
        "  {:<42} {:>9}",
        "ready (sshd banner)",
        format!("{}/{}", burst_times.len(), args.burst)
    );
    if !burst_times.is_empty() {
        println!(
            "  {:<42} {:>9}",
            "first ready",
            secs(*burst_times.iter().min().unwrap())
        );
        println!(
            "  {:<42} {:>9}",
            "p50 ready",
            secs(percentile(&burst_times, 50.0))
        );
        let label = if burst_times.len() == args.burst {
            "all ready"
        } else {
            "last of those ready"
        };
        println!("  {label:<42} {:>9}", secs(*burst_times.iter().max().unwrap()));
    }
    println!("  {:<42} {:>9}", "create tasks not succeeded", failed_tasks);
    for e in &burst_errors {
        println!("  not ready: {e}");
    }
    Ok(())
}
