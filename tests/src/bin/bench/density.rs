//! `cloud-cli-proxy-bench density [--hosts N] [--in-flight N] [--settle S] [--opens N] [--bound N]`: how many
//! idle hosts a node holds. Creates N hosts (default 100) on this node through the API, `--in-flight`
//! at a time (default 4, the agent's task slots), and reports:
//!
//! - create → sshd: from `POST /v1/admin/hosts` to sshd's banner on the host's address, p50 and p99
//!   over all hosts and p50 per quarter, as the node fills;
//! - memory per idle host, `--settle` seconds (default 30) after the last one answered: what the
//!   memory cgroups of its two containers (the host and its egress container) are charged
//!   (`memory.current` on cgroup v2, `memory.usage_in_bytes` on v1) with its split into anonymous
//!   memory, page cache and kernel memory, the PSS of their processes, and the node's
//!   `MemAvailable` drop divided by N; and how many hosts run any desktop program (none should);
//! - the control plane's and the agent's resident memory (`VmRSS`, and the peak `VmHWM`), each a
//!   process of its own here (standalone agent);
//! - opening the desktop of `--opens` cold hosts (default 5) through the VNC proxy: from the
//!   WebSocket request to the first FramebufferUpdate, p50 and max; and one host's memory with its
//!   desktop open;
//! - with `--bound N` (default 0): N idle hosts bound to a WireGuard egress IP and N to a shadowsocks
//!   one (servers of a fake internet, `cloud_cli_proxy_tests::fakenet`), restarted so that the
//!   binding takes, and, once the agent's egress health check saw each come out healthy at its
//!   server's address, their memory read the same way: what a bound idle host costs, its tunnel
//!   process (in the egress container) included. Nothing is run inside them for the check.
//!
//! Why these measures (docs/density.md): the cgroup's charge is what the kernel bills the containers,
//! including the page cache they touched first and kernel memory, so summed over a node it adds up
//! to what the hosts cost it; PSS splits shared pages fairly among processes but leaves out page
//! cache and kernel memory. Everything is deleted at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cloud_cli_proxy_tests::egress::Egress;
use cloud_cli_proxy_tests::fakenet::{FakeInternet, Kind};
use cloud_cli_proxy_tests::{AgentMode, Node, desktop, docker, process};
use tokio::sync::Semaphore;

use crate::{READY_LIMIT, ask_for_host, delete_hosts, percentile, ready, secs};

/// How long a cold desktop may take to open before the bench counts it as failed.
const OPEN_LIMIT: Duration = Duration::from_secs(30);
/// Time given the desktop session (openbox, tint2, xterm) to start before its memory is read.
const SESSION_SETTLE: Duration = Duration::from_secs(5);
/// Most hosts of each kind `--bound` takes: their WireGuard addresses are .10 upwards of the fake
/// server's /24.
const MAX_BOUND: usize = 100;

pub async fn main(args: Vec<String>) -> anyhow::Result<()> {
    let flags = crate::numeric_flags(
        args,
        &["--hosts", "--in-flight", "--settle", "--opens", "--bound"],
    )?;
    let count = usize::try_from(*flags.get("--hosts").unwrap_or(&100))?;
    let in_flight = usize::try_from(*flags.get("--in-flight").unwrap_or(&4))?;
    let settle = Duration::from_secs(*flags.get("--settle").unwrap_or(&30));
    let opens = usize::try_from(*flags.get("--opens").unwrap_or(&5))?.min(count);
    let bound = usize::try_from(*flags.get("--bound").unwrap_or(&0))?;
    if bound > MAX_BOUND {
        bail!("--bound takes at most {MAX_BOUND} hosts of each kind");
    }
    docker::require_docker();
    // The bound hosts' servers; built first, as the agent is told where the probe is.
    let mut net = if bound > 0 {
        Some(FakeInternet::build("density").context("fake internet")?)
    } else {
        None
    };
    eprintln!("building or checking the host image (images/build.sh)…");
    let image = tokio::task::spawn_blocking(docker::host_image).await?;
    eprintln!(
        "control plane and agent: {} (CCP_BIN_DIR picks another build)",
        process::bin_dir().display()
    );
    let eg = Arc::new(match &net {
        Some(net) => Egress::start_mode(net, AgentMode::Standalone, &[]).await,
        None => Egress {
            node: Node::standalone(&[]).await,
        },
    });
    let node = &eg.node;
    let user_id = node.user("density").await;
    let available_before = mem_available_kib()?;

    // Fill the node, `in_flight` creations at a time.
    eprintln!("creating {count} hosts, {in_flight} at a time…");
    let slots = Arc::new(Semaphore::new(in_flight.max(1)));
    let started = Instant::now();
    let mut creations = tokio::task::JoinSet::new();
    for i in 0..count {
        let (eg, user_id, slots) = (eg.clone(), user_id.clone(), slots.clone());
        creations.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("semaphore");
            let t0 = Instant::now();
            let node = &eg.node;
            let (id, short_id, task_id) = ask_for_host(node, &user_id).await;
            let t = ready(&node.egress_container(&short_id), &node.network, t0, READY_LIMIT).await;
            let done = started.elapsed();
            (i, id, short_id, task_id, t, done)
        });
    }
    let mut hosts = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = creations.join_next().await {
        let (i, id, short_id, task_id, t, done) = joined?;
        match t {
            Ok(t) => hosts.push(Created {
                id,
                short_id,
                task_id,
                create_to_sshd: t,
                done,
            }),
            Err(e) => failures.push(format!("host {}: {e:#}", i + 1)),
        }
        let n = hosts.len() + failures.len();
        if n % 10 == 0 {
            eprintln!("  {n}/{count} answered or failed ({})", secs(started.elapsed()));
        }
    }
    let filled_in = started.elapsed();
    let mut failed_tasks = 0;
    for h in &hosts {
        if node.task_finished(&h.task_id, READY_LIMIT).await["status"] != "succeeded" {
            failed_tasks += 1;
        }
    }
    // In the order they answered: the quarters show the node filling.
    hosts.sort_by_key(|h| h.done);

    eprintln!("letting the hosts settle for {}…", secs(settle));
    tokio::time::sleep(settle).await;
    let available_idle = mem_available_kib()?;
    let mut idle = Vec::new();
    for h in &hosts {
        idle.push(
            host_memory(node, &h.short_id)
                .await
                .with_context(|| format!("memory of host {}", h.short_id))?,
        );
    }
    let with_desktop = idle.iter().filter(|m| m.desktop_programs > 0).count();
    let cp_rss = status_kib(node.cp.pid(), "VmRSS")?;
    let cp_peak = status_kib(node.cp.pid(), "VmHWM")?;
    let agent_pid = node
        .agent
        .as_ref()
        .and_then(cloud_cli_proxy_tests::AgentProcess::pid)
        .context("the standalone agent is not running")?;
    let agent_rss = status_kib(agent_pid, "VmRSS")?;
    let agent_peak = status_kib(agent_pid, "VmHWM")?;

    // Open the desktop of a few cold hosts through the proxy.
    let mut open_times = Vec::new();
    let mut open_errors = Vec::new();
    let mut open_memory = None;
    for (n, h) in hosts.iter().take(opens).enumerate() {
        let path = format!("/v1/admin/hosts/{}/vnc", h.id);
        let opened = tokio::time::timeout(
            OPEN_LIMIT,
            desktop::open(&node.cp.base_url(), &path, node.admin.token()),
        )
        .await;
        match opened {
            Ok(Ok(d)) => {
                open_times.push(d.first_frame);
                if n == 0 {
                    tokio::time::sleep(SESSION_SETTLE).await;
                    open_memory = Some(host_memory(node, &h.short_id).await?);
                }
                d.close().await;
            }
            Ok(Err(e)) => open_errors.push(format!("{}: {e}", h.short_id)),
            Err(_) => open_errors.push(format!("{}: not open within {OPEN_LIMIT:?}", h.short_id)),
        }
    }

    // Bind idle hosts whose desktop was not opened, and read them again.
    let bound_memory = match net.as_mut() {
        Some(net) => {
            let idle_hosts = hosts.get(opens..).unwrap_or_default();
            bound_hosts_memory(&eg, net, idle_hosts, bound, settle).await?
        }
        None => Vec::new(),
    };

    let ids: Vec<String> = hosts.iter().map(|h| h.id.clone()).collect();
    eprintln!("deleting the hosts…");
    delete_hosts(node, &ids).await;

    // Report.
    let n = hosts.len();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!();
    println!("cloud-cli-proxy bench: density");
    println!("  node {}, image {image}, {cpus} CPUs", node.name);
    println!(
        "  {n}/{count} hosts answered SSH ({} creations at a time) in {}; {failed_tasks} create tasks did not succeed",
        in_flight,
        secs(filled_in)
    );
    for e in failures.iter().take(5) {
        println!("    {e}");
    }
    if n == 0 {
        bail!("no host became ready");
    }
    let times: Vec<Duration> = hosts.iter().map(|h| h.create_to_sshd).collect();
    println!();
    println!(
        "  create → sshd banner     p50 {:>8}   p99 {:>8}   max {:>8}",
        secs(percentile(&times, 50.0)),
        secs(percentile(&times, 99.0)),
        secs(*times.iter().max().expect("hosts"))
    );
    let quarter = n.div_ceil(4);
    let quarters: Vec<String> = times.chunks(quarter).map(|q| secs(percentile(q, 50.0))).collect();
    println!(
        "  p50 per quarter, in the order they answered: {}",
        quarters.join(" · ")
    );
    println!();
    println!(
        "  memory per idle host (host + egress container), {} after the last answered:",
        secs(settle)
    );
    let mib = |kib: f64| format!("{:.1} MiB", kib / 1024.0);
    let column = |f: &dyn Fn(&HostMemory) -> u64| -> Vec<u64> { idle.iter().map(f).collect() };
    let row = |label: &str, values: Vec<u64>| {
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
        println!(
            "    {label:<38} mean {:>10}   p50 {:>10}   max {:>10}",
            mib(mean),
            mib(sorted[sorted.len() / 2] as f64),
            mib(*sorted.last().expect("values") as f64)
        );
    };
    row("cgroup memory (charged to it)", column(&|m| m.current_kib));
    row("  of it anonymous", column(&|m| m.anon_kib));
    row("  of it page cache", column(&|m| m.file_kib));
    row("  of it kernel", column(&|m| m.kernel_kib));
    row("  of it the egress container", column(&|m| m.egress_current_kib));
    row("PSS of the containers' processes", column(&|m| m.pss_kib));
    let dropped = available_before.saturating_sub(available_idle);
    println!(
        "    {:<38} {:>15}",
        "node MemAvailable drop / hosts",
        mib(dropped as f64 / n as f64)
    );
    println!("    hosts running any desktop program: {with_desktop}/{n}");
    println!();
    println!(
        "  control plane (with the SSH gateway)   VmRSS {:>10}   peak {:>10}",
        mib(cp_rss as f64),
        mib(cp_peak as f64)
    );
    println!(
        "  agent                                  VmRSS {:>10}   peak {:>10}",
        mib(agent_rss as f64),
        mib(agent_peak as f64)
    );
    println!();
    if !open_times.is_empty() {
        println!(
            "  cold desktop, WebSocket → first frame ({} hosts)   p50 {:>8}   max {:>8}",
            open_times.len(),
            secs(percentile(&open_times, 50.0)),
            secs(*open_times.iter().max().expect("opens"))
        );
    }
    for e in &open_errors {
        println!("    failed: {e}");
    }
    if let Some(m) = open_memory {
        println!(
            "  one host with its desktop open: cgroup memory {}, PSS {}",
            mib(m.current_kib as f64),
            mib(m.pss_kib as f64)
        );
    }
    for kind in [Kind::Wireguard, Kind::Shadowsocks] {
        let of_kind: Vec<HostMemory> = bound_memory
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, m)| *m)
            .collect();
        if of_kind.is_empty() {
            continue;
        }
        println!();
        println!(
            "  idle hosts bound to a {} egress IP ({}), {} after the last came out there:",
            kind.name(),
            of_kind.len(),
            secs(settle)
        );
        let column = |f: &dyn Fn(&HostMemory) -> u64| -> Vec<u64> { of_kind.iter().map(f).collect() };
        row("cgroup memory (charged to it)", column(&|m| m.current_kib));
        row("  of it the egress container", column(&|m| m.egress_current_kib));
        row("PSS of the containers' processes", column(&|m| m.pss_kib));
    }
    Ok(())
}

/// Binds `per_kind` of `hosts` to a WireGuard egress IP and as many to a shadowsocks one, restarts
/// them, waits until each comes out at its server's address, lets them settle for `settle` and reads
/// their memory.
async fn bound_hosts_memory(
    eg: &Egress,
    net: &mut FakeInternet,
    hosts: &[Created],
    per_kind: usize,
    settle: Duration,
) -> anyhow::Result<Vec<(Kind, HostMemory)>> {
    let kinds = [Kind::Wireguard, Kind::Shadowsocks];
    let mut ips = Vec::new();
    for kind in kinds {
        ips.push(eg.create(net, kind, &format!("density-{}", kind.name())).await);
        net.allow_endpoint(net.server(kind).ip)?;
    }
    let chosen: Vec<(Kind, &Created)> = hosts
        .iter()
        .take(2 * per_kind)
        .enumerate()
        .map(|(i, h)| (kinds[i % 2], h))
        .collect();
    eprintln!("binding {} idle hosts to egress IPs…", chosen.len());
    for (i, (kind, h)) in chosen.iter().enumerate() {
        let ip = &ips[i % 2];
        // .1 is the server's own address and .2 the one the egress body offers.
        let peer = format!("198.19.77.{}/32", 10 + i);
        eg.bind_at(net, *kind, &h.id, ip, &peer).await;
        eg.restart(&h.id).await;
    }
    // The agent's egress health check (from inside the host's namespace, every tunnel kind) says
    // when each host comes out at its server's address. Nothing runs in the host container for it:
    // a curl there would leave its libraries in the host's page cache and be counted as the
    // binding's cost.
    for (kind, h) in &chosen {
        eg.health(&h.id, true, net.server(*kind).ip).await;
    }
    eprintln!("letting the bound hosts settle for {}…", secs(settle));
    tokio::time::sleep(settle).await;
    let mut memory = Vec::new();
    for (kind, h) in &chosen {
        let m = host_memory(&eg.node, &h.short_id)
            .await
            .with_context(|| format!("memory of bound host {}", h.short_id))?;
        memory.push((*kind, m));
    }
    Ok(memory)
}

struct Created {
    id: String,
    short_id: String,
    task_id: String,
    create_to_sshd: Duration,
    done: Duration,
}

/// One host's memory: its two containers together.
#[derive(Debug, Clone, Copy, Default)]
struct HostMemory {
    current_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    kernel_kib: u64,
    egress_current_kib: u64,
    pss_kib: u64,
    desktop_programs: usize,
}

async fn host_memory(node: &Node, short_id: &str) -> anyhow::Result<HostMemory> {
    let mut total = HostMemory::default();
    for (container, is_egress) in [
        (node.host_container(short_id), false),
        (node.egress_container(short_id), true),
    ] {
        let cgroup = cgroup_of(&container).await?;
        let stat = std::fs::read_to_string(cgroup.dir.join("memory.stat"))?;
        let field = |name: &str| -> u64 {
            stat.lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
                / 1024
        };
        let current = match cgroup.version {
            Cgroup::V2 => {
                total.anon_kib += field("anon");
                total.file_kib += field("file");
                total.kernel_kib += field("kernel");
                read_u64(&cgroup.dir.join("memory.current"))? / 1024
            }
            Cgroup::V1 => {
                total.anon_kib += field("rss");
                total.file_kib += field("cache");
                total.kernel_kib += read_u64(&cgroup.dir.join("memory.kmem.usage_in_bytes"))? / 1024;
                read_u64(&cgroup.dir.join("memory.usage_in_bytes"))? / 1024
            }
        };
        total.current_kib += current;
        if is_egress {
            total.egress_current_kib += current;
        }
        let procs = std::fs::read_to_string(cgroup.dir.join("cgroup.procs"))?;
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            // A process may end between the listing and the read.
            if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
                total.pss_kib += rollup
                    .lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
            if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                && matches!(comm.trim(), "Xvnc" | "openbox" | "tint2" | "xterm" | "python3")
            {
                total.desktop_programs += 1;
            }
        }
    }
    Ok(total)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cgroup {
    /// `memory.current`; `memory.stat`'s `anon`, `file`, `kernel`.
    V2,
    /// `memory.usage_in_bytes`; `memory.stat`'s `rss`, `cache`; `memory.kmem.usage_in_bytes`.
    V1,
}

struct CgroupDir {
    version: Cgroup,
    dir: PathBuf,
}

/// The memory cgroup of a running container, from its main process's `/proc/PID/cgroup`: the
/// unified hierarchy where the memory controller is there, else v1's `memory` hierarchy.
async fn cgroup_of(container: &str) -> anyhow::Result<CgroupDir> {
    let info = docker::inspect_container(container)
        .await
        .with_context(|| format!("no container {container}"))?;
    let pid = info["State"]["Pid"]
        .as_u64()
        .filter(|p| *p > 0)
        .with_context(|| format!("{container} is not running"))?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let v1 = text.lines().find_map(|l| {
        let (_, rest) = l.split_once(':')?;
        let (controllers, path) = rest.split_once(':')?;
        controllers.split(',').any(|c| c == "memory").then_some(path)
    });
    if let Some(path) = v1 {
        return Ok(CgroupDir {
            version: Cgroup::V1,
            dir: PathBuf::from(format!("/sys/fs/cgroup/memory{path}")),
        });
    }
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .with_context(|| format!("no memory cgroup in /proc/{pid}/cgroup"))?;
    Ok(CgroupDir {
        version: Cgroup::V2,
        dir: PathBuf::from(format!("/sys/fs/cgroup{path}")),
    })
}

fn read_u64(path: &std::path::Path) -> anyhow::Result<u64> {
    std::fs::read_to_string(path)?
        .trim()
        .parse()
        .with_context(|| format!("{} is not a number", path.display()))
}

/// A `/proc/PID/status` line in KiB.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn mem_available_kib() -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no MemAvailable in /proc/meminfo")
}
