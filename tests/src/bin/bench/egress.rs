//! `cloud-cli-proxy-bench egress`: what an egress tunnel costs a host against the node's direct
//! path, and how long a host is cut off when its tunnel process dies.
//!
//! A fake internet (198.18.0.0/15 in network namespaces, `cloud_cli_proxy_tests::fakenet`), a
//! control plane with its embedded agent pointed at it, one running host, and a bulk HTTP server of
//! this program's own (`egress-sink`, below) in the probe's namespace. Then:
//!
//! 1. throughput: `--mib` MiB (default 256) downloaded (`curl -o /dev/null`) and uploaded
//!    (`head -c N /dev/zero | curl -T -`) from inside the host, timed by curl itself, over three
//!    paths in turn: the host unbound (the node's NAT), bound to the fake WireGuard server, bound to
//!    the fake shadowsocks server (unbind, bind, restart: the documented way a binding takes
//!    effect, checked by the exit IP the probe reports). `--rounds` rounds (default 3) of the three
//!    paths, alternating; the median of each and the ratios tunnel/direct;
//! 2. restore time: with the host bound to WireGuard, then to shadowsocks, a loop in the host asks
//!    the probe's `/generate_204` every 20 ms (`curl --max-time 1`, start and end stamped with
//!    bash's `$EPOCHREALTIME`); the tunnel process (the `pid` of the host's `status.json`, found on
//!    the node through its PID namespace) gets `kill -9`; the time from the kill to the end of the
//!    first successful request that started after it. `--kills` (default 5) each, every kill at
//!    least 11 s after the last restart (the runtime restarts at once only a process that lived
//!    10 s); p50 and max;
//! 3. leaks: the fake internet's counter of packets leaving the node for anything but the two
//!    tunnel servers, summed over every tunnelled phase (should be 0); the direct phases count as
//!    leaks by design, and are printed as the counter's positive control;
//! 4. CPU: around every tunnelled transfer, the user+system time of the host's tunnel process (the
//!    same `status.json` pid, read from `/proc/PID/stat` on the node) and of the fake internet's
//!    server for that tunnel, as CPU-seconds per GiB moved; and, in the same run, what the AEAD
//!    alone costs on this machine: ChaCha20-Poly1305 seals of 1420-byte packets with ring (the
//!    crate boringtun encrypts with), CPU-seconds per GiB on one thread. The tunnel process's
//!    figure over the AEAD's is how far the data path is from its floor.
//!
//! The fake WireGuard server is `cloud-cli-proxy-fake-wg` (the agent's batched data path as a
//! responder), not the wireguard-go the e2e suites talk to: wireguard-go spent two to three times
//! the client's CPU per GiB, so on a two-core machine it set the speed the bench measured.
//! `CCP_FAKENET_WG=wireguard-go` measures against wireguard-go all the same.
//!
//! `--congestion-control NAME` sets the TCP congestion control of the namespaces where the measured
//! connections start (the sink's, the shadowsocks server's, the host's); the senders' is printed
//! either way, as it shapes every figure. NAME must be in the node's
//! `tcp_allowed_congestion_control`, the only ones a namespace other than the node's may pick.
//!
//! Timing figures are printed, never judged; a path that does not work is an error (exit 1).
//! Needs root, Docker with the host image, sing-box, nft, iproute2 and the workspace binaries
//! (`cargo build --workspace --bins`; `CCP_BIN_DIR`), among them the fake WireGuard server.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent::egress_runtime::{State, Status, read_status};
use anyhow::{Context as _, bail};
use cloud_cli_proxy_tests::docker::{self, docker_ok};
use cloud_cli_proxy_tests::egress::Egress;
use cloud_cli_proxy_tests::fakenet::{FakeInternet, Kind, WgServerProgram};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

/// How long one transfer may take inside the host.
const TRANSFER_LIMIT: Duration = Duration::from_secs(110);
/// A tunnel process that lived this long is restarted at once when it dies (the runtime's
/// `HEALTHY_AFTER` is 10 s).
const SETTLE: Duration = Duration::from_secs(11);
/// Bound of one kill-and-restore measurement.
const RESTORE_LIMIT: Duration = Duration::from_secs(60);
/// Bound of a bound host's first request through its new tunnel.
const PATH_READY: Duration = Duration::from_secs(60);
/// Successful requests the loop must show before the tunnel is killed.
const BASELINE: usize = 3;
/// What the AEAD measurement seals: 1 GiB in packets of the WireGuard MTU.
const AEAD_PACKET: usize = 1420;
const AEAD_BYTES: u64 = 1 << 30;

struct Args {
    mib: u64,
    rounds: usize,
    kills: usize,
    /// The TCP congestion control the senders' namespaces are set to; none: as the node made them.
    congestion_control: Option<String>,
}

fn parse(mut args: Vec<String>) -> anyhow::Result<Args> {
    let mut congestion_control = None;
    if let Some(at) = args.iter().position(|a| a == "--congestion-control") {
        let name = args
            .get(at + 1)
            .context("--congestion-control needs a name")?
            .clone();
        let list = |what: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/tcp_{what}_congestion_control"))
                .with_context(|| format!("read the {what} congestion controls"))
        };
        let (available, allowed) = (list("available")?, list("allowed")?);
        if !available.split_whitespace().any(|a| a == name) {
            bail!(
                "--congestion-control {name}: not available here (available: {})",
                available.trim()
            );
        }
        // The kernel lets a namespace other than the node's pick only an allowed one.
        if !allowed.split_whitespace().any(|a| a == name) {
            bail!(
                "--congestion-control {name}: available, but network namespaces may only use the \
                 allowed ones ({}); allow it on the node first, e.g. \
                 `sysctl -w net.ipv4.tcp_allowed_congestion_control=\"{} {name}\"`",
                allowed.trim(),
                allowed.trim()
            );
        }
        congestion_control = Some(name);
        args.drain(at..at + 2);
    }
    let flags = super::numeric_flags(args, &["--mib", "--rounds", "--kills"])?;
    let count = |name: &str, default: u64| usize::try_from(flags.get(name).copied().unwrap_or(default));
    Ok(Args {
        mib: flags.get("--mib").copied().unwrap_or(256),
        rounds: count("--rounds", 3)?,
        kills: count("--kills", 5)?,
        congestion_control,
    })
}

/// One way out of the host.
#[derive(Clone)]
struct Route {
    name: &'static str,
    /// The kind and egress IP bound for it; none: direct.
    egress_ip: Option<(Kind, String)>,
    /// What the probe must see as the host's address.
    exit: Ipv4Addr,
}

/// The host under test and what reaches it.
struct Bench {
    eg: Egress,
    host_id: String,
    container: String,
    egress_container: String,
    probe: Ipv4Addr,
    sink: SocketAddr,
    /// `--congestion-control`, set again in the host's namespace after every restart (a
    /// restarted container has a new one).
    congestion_control: Option<String>,
}

impl Bench {
    /// Unbinds, binds `route`'s egress IP if it has one, restarts the host, and waits until the
    /// probe sees the host come out at `route.exit`.
    async fn take(&self, net: &mut FakeInternet, route: &Route) -> anyhow::Result<()> {
        self.eg.unbind(&self.host_id).await;
        if let Some((kind, ip)) = &route.egress_ip {
            // A WireGuard binding brings a key pair of its own, made a peer of the fake server.
            self.eg.bind(net, *kind, &self.host_id, ip).await;
        }
        self.eg.restart(&self.host_id).await;
        if let Some(name) = &self.congestion_control {
            set_congestion_control(&netns_of(&self.egress_container).await, name).await?;
        }
        let url = format!("http://{}/ip", self.probe);
        let deadline = Instant::now() + PATH_READY;
        loop {
            let out = self.exec(&format!("curl -sS --fail --max-time 5 {url}")).await;
            if out.success() && out.stdout.trim() == route.exit.to_string() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: the probe sees the host as `{}`, not {}: {}",
                    route.name,
                    out.stdout.trim(),
                    route.exit,
                    out.stderr.trim()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn exec(&self, script: &str) -> docker::Out {
        docker::exec_root(&self.container, &["bash", "-c", script]).await
    }

    /// `bytes` down from the sink (`up`: to it) inside the host; MiB/s as curl timed it.
    async fn transfer(&self, bytes: u64, up: bool) -> anyhow::Result<f64> {
        let limit = TRANSFER_LIMIT.as_secs();
        let script = if up {
            // A known length and no chunking: the sink reads exactly Content-Length bytes.
            format!(
                "head -c {bytes} /dev/zero | curl -sS --fail --max-time {limit} -T - \
                 -H 'Content-Length: {bytes}' -H 'Transfer-Encoding:' -H 'Expect:' -o /dev/null \
                 -w '%{{size_upload}} %{{time_total}}' http://{}/upload",
                self.sink
            )
        } else {
            format!(
                "curl -sS --fail --max-time {limit} -o /dev/null \
                 -w '%{{size_download}} %{{time_total}}' http://{}/bytes/{bytes}",
                self.sink
            )
        };
        let out = self.exec(&script).await;
        if !out.success() {
            bail!("curl in the host failed: {}", out.both().trim());
        }
        let mut words = out.stdout.split_whitespace();
        let size: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let secs: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
        if size != bytes || secs <= 0.0 {
            bail!("curl moved {size} of {bytes} bytes in {secs} s");
        }
        Ok(bytes as f64 / 1_048_576.0 / secs)
    }

    fn egress_dir(&self) -> std::path::PathBuf {
        self.eg.node.host_files(&self.host_id).join("egress")
    }

    /// Waits until `status.json` says `up` with a process other than `not_pid`; returns it.
    async fn tunnel_up(&self, not_pid: Option<u32>) -> anyhow::Result<Status> {
        let deadline = Instant::now() + RESTORE_LIMIT;
        loop {
            let status = read_status(&self.egress_dir());
            if let Ok(s) = &status
                && s.state == State::Up
                && s.pid.is_some()
                && s.pid != not_pid
            {
                return Ok(s.clone());
            }
            if Instant::now() > deadline {
                bail!("the tunnel is not up again: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node's pid of the tunnel process now running (`status.json` says `up`).
    async fn tunnel_pid(&self) -> anyhow::Result<u32> {
        let status = self.tunnel_up(None).await?;
        node_pid(&self.egress_container, status.pid.context("no tunnel pid")?).await
    }

    /// One kill of the tunnel process and the time until a request gets through again.
    async fn kill_and_restore(&self) -> anyhow::Result<Restore> {
        let before = self.tunnel_up(None).await?;
        let inner = before.pid.context("no tunnel pid")?;
        let pid = node_pid(&self.egress_container, inner).await?;
        let url = format!("http://{}/generate_204", self.probe);
        let mut child = tokio::process::Command::new("docker")
            .args([
                "exec",
                "-i",
                "-u",
                "0",
                &self.container,
                "bash",
                "-c",
                PROBE_LOOP,
                "loop",
                &url,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("docker exec of the request loop")?;
        let mut stdin = child.stdin.take().context("loop stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("loop stdout")?).lines();
        let run = async {
            let mut ok = 0;
            while ok < BASELINE {
                let line = lines
                    .next_line()
                    .await?
                    .context("the loop ended before the kill")?;
                if Attempt::parse(&line)?.ok {
                    ok += 1;
                }
            }
            let killed = kill(pid).await?;
            stdin.write_all(format!("{killed}\n").as_bytes()).await?;
            let mut after = Vec::new();
            while let Some(line) = lines.next_line().await? {
                let a = Attempt::parse(&line)?;
                if a.start >= killed {
                    after.push(a);
                }
            }
            anyhow::Ok((killed, after))
        };
        let (killed, after) = tokio::time::timeout(RESTORE_LIMIT, run)
            .await
            .context("the request loop ran over")??;
        let status = child.wait().await?;
        let first = after
            .iter()
            .position(|a| a.ok)
            .with_context(|| format!("no request got through after the kill (loop: {status})"))?;
        let restarted = self.tunnel_up(Some(inner)).await?;
        if restarted.restarts <= before.restarts {
            bail!("status.json shows no restart: {before:?} → {restarted:?}");
        }
        let up_at = u64::try_from(restarted.updated_at.timestamp_micros()).unwrap_or(0);
        Ok(Restore {
            took: Duration::from_micros(after[first].end.saturating_sub(killed)),
            up: Duration::from_micros(up_at.saturating_sub(killed)),
            failed: first,
        })
    }
}

/// Requests to `$1` from inside the host, one line each: `start_us end_us http_code`. The kill
/// time (µs since the epoch) comes in on stdin; the loop ends after the first 204 of a request that
/// started at or after it, or after 60 s. The 20 ms wait is the `read` on stdin.
const PROBE_LOOP: &str = r#"
now() { local t=$EPOCHREALTIME; echo "${t/[.,]/}"; }
end=$(( $(now) + 60000000 )); killed=
while :; do
    t0=$(now)
    code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$1")
    t1=$(now)
    echo "$t0 $t1 $code"
    [[ -n $killed && $code == 204 && $t0 -ge $killed ]] && exit 0
    (( t1 > end )) && exit 1
    if read -r -t 0.02 line; then killed=$line; elif (( $? <= 128 )); then exit 2; fi
done
"#;

/// One request of the loop.
struct Attempt {
    start: u64,
    end: u64,
    ok: bool,
}

impl Attempt {
    fn parse(line: &str) -> anyhow::Result<Self> {
        let mut w = line.split_whitespace();
        let mut micros = || -> anyhow::Result<u64> {
            w.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("loop printed `{line}`"))
        };
        let (start, end) = (micros()?, micros()?);
        Ok(Self {
            start,
            end,
            ok: w.next() == Some("204"),
        })
    }
}

struct Restore {
    took: Duration,
    /// Until the runtime wrote `up` for the new process (`updated_at` of `status.json`; for
    /// WireGuard, after its first handshake).
    up: Duration,
    /// Requests that failed after the kill before one got through.
    failed: usize,
}

/// The node's id of process `inner` of `container`'s PID namespace (`NSpid` in /proc).
async fn node_pid(container: &str, inner: u32) -> anyhow::Result<u32> {
    let ns = std::fs::read_link(format!("/proc/{}/ns/pid", init_pid(container).await))
        .with_context(|| format!("PID namespace of {container}"))?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_ref() != Some(&ns) {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let innermost = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|ids| ids.split_whitespace().last())
            .and_then(|id| id.parse::<u32>().ok());
        if innermost == Some(inner) {
            return Ok(pid);
        }
    }
    bail!("no process {inner} in {container}")
}

/// The node's id of `container`'s first process, as it runs now.
async fn init_pid(container: &str) -> String {
    docker_ok(&["inspect", "-f", "{{.State.Pid}}", container])
        .await
        .trim()
        .to_owned()
}

/// The network namespace of `container` as it runs now, as an `nsenter` target.
async fn netns_of(container: &str) -> String {
    format!("/proc/{}/ns/net", init_pid(container).await)
}

/// `sysctl FLAG SETTING` in the network namespace of `ns` (an `nsenter` target: a file under
/// /run/netns or /proc/PID/ns); its output if it succeeded.
async fn netns_sysctl(ns: &str, flag: &str, setting: &str) -> Option<String> {
    let out = tokio::process::Command::new("nsenter")
        .arg(format!("--net={ns}"))
        .args(["sysctl", flag, setting])
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Sets the TCP congestion control new sockets get in the network namespace of `ns`; `name` is
/// one the kernel has.
async fn set_congestion_control(ns: &str, name: &str) -> anyhow::Result<()> {
    netns_sysctl(ns, "-qw", &format!("net.ipv4.tcp_congestion_control={name}"))
        .await
        .map(drop)
        .with_context(|| format!("setting the congestion control in {ns} failed"))
}

/// The TCP congestion control new sockets get in the network namespace of `ns`: the senders'
/// choice shapes every path's figures (docs/egress.md).
async fn congestion_control(ns: &str) -> String {
    netns_sysctl(ns, "-n", "net.ipv4.tcp_congestion_control")
        .await
        .unwrap_or_else(|| "unknown".to_owned())
}

/// User plus system time of process `pid` so far, in clock ticks (`/proc/PID/stat` fields 14-15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when that is missing).
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// CPU time of this thread so far, in clock ticks.
fn thread_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The AEAD's own cost: ChaCha20-Poly1305 (ring, as boringtun uses it) sealing [`AEAD_BYTES`] in
/// [`AEAD_PACKET`]-byte packets in place, each with its own nonce, on one thread. Returns
/// (CPU-seconds per GiB, MiB/s of wall time).
fn aead_cost(ticks_per_sec: f64) -> anyhow::Result<(f64, f64)> {
    use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
    let key = UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32])
        .map_err(|_| anyhow::anyhow!("ring refused the key"))?;
    let key = LessSafeKey::new(key);
    let mut packet = vec![0x5au8; AEAD_PACKET];
    let packets = AEAD_BYTES / AEAD_PACKET as u64;
    let cpu0 = thread_cpu_ticks().context("/proc/thread-self/stat")?;
    let wall = Instant::now();
    for counter in 0..packets {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_le_bytes());
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut packet)
            .map_err(|_| anyhow::anyhow!("seal failed"))?;
        let _ = std::hint::black_box(tag);
    }
    let secs = wall.elapsed().as_secs_f64();
    let cpu = (thread_cpu_ticks().context("/proc/thread-self/stat")? - cpu0) as f64 / ticks_per_sec;
    let gib = (packets * AEAD_PACKET as u64) as f64 / f64::from(1u32 << 30);
    Ok((cpu / gib, gib * 1024.0 / secs))
}

/// CPU-seconds per GiB moved, summed over transfers: `ticks` of one process over `bytes`.
#[derive(Default, Clone, Copy)]
struct CpuPerGib {
    ticks: u64,
    bytes: u64,
}

impl CpuPerGib {
    fn add(&mut self, ticks: u64, bytes: u64) {
        self.ticks += ticks;
        self.bytes += bytes;
    }

    fn value(self, ticks_per_sec: f64) -> Option<f64> {
        (self.bytes > 0)
            .then(|| self.ticks as f64 / ticks_per_sec / (self.bytes as f64 / f64::from(1u32 << 30)))
    }
}

fn epoch_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `kill -9 pid` on the node; the time just after it returned (µs since the epoch).
async fn kill(pid: u32) -> anyhow::Result<u64> {
    let status = tokio::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .await?;
    let at = epoch_micros();
    if !status.success() {
        bail!("kill -9 {pid}: {status}");
    }
    Ok(at)
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Starts this program's `egress-sink` in `netns` on `ip` (a free port); returns it and its address.
async fn start_sink(netns: &str, ip: Ipv4Addr) -> anyhow::Result<(tokio::process::Child, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(&exe)
        .args(["egress-sink", "--listen", &format!("{ip}:0")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start the sink")?;
    let mut lines = BufReader::new(child.stdout.take().context("sink stdout")?).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("the sink did not start")??
        .context("the sink ended")?;
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("the sink said `{first}`"))?;
    Ok((child, addr))
}

pub async fn main(args: Vec<String>) -> anyhow::Result<()> {
    let args = parse(args)?;
    docker::require_docker();
    let wg_program = WgServerProgram::from_env_or(WgServerProgram::Batched)?;
    let mut net = FakeInternet::build_with("bench", wg_program).context("fake internet")?;
    let (sink_process, sink) = start_sink(net.probe_netns(), net.probe_ip()).await?;
    let eg = Egress::start(&net).await;
    eprintln!(
        "node {}: control plane {}, egress runtime beside it",
        eg.node.name,
        cloud_cli_proxy_tests::process::control_plane_bin().display()
    );
    let host = eg.node.running_host("bench").await;
    let wg = eg.create(&mut net, Kind::Wireguard, "bench-wg").await;
    let ss = eg.create(&mut net, Kind::Shadowsocks, "bench-ss").await;
    for kind in [Kind::Wireguard, Kind::Shadowsocks] {
        net.allow_endpoint(net.server(kind).ip)?;
    }
    let sink_netns = format!("/run/netns/{}", net.probe_netns());
    if let Some(name) = &args.congestion_control {
        // Every namespace where a TCP connection of the measured paths starts: the sink's (down),
        // the shadowsocks server's (its legs to the sink and back to the host), and the host's,
        // which its egress container and sing-box share (up, and the proxy's leg to its server;
        // set by `Bench::take` after each restart).
        let ss_netns = format!("/run/netns/{}", net.server(Kind::Shadowsocks).netns);
        for ns in [&sink_netns, &ss_netns] {
            set_congestion_control(ns, name).await?;
        }
    }
    let bench = Bench {
        container: eg.node.host_container(&host.short_id),
        egress_container: eg.node.egress_container(&host.short_id),
        host_id: host.id,
        probe: net.probe_ip(),
        sink,
        congestion_control: args.congestion_control.clone(),
        eg,
    };
    let routes = [
        Route {
            name: "direct (node NAT)",
            egress_ip: None,
            exit: net.node_public_ip(),
        },
        Route {
            name: "WireGuard",
            egress_ip: Some((Kind::Wireguard, wg)),
            exit: net.server(Kind::Wireguard).ip,
        },
        Route {
            name: "shadowsocks",
            egress_ip: Some((Kind::Shadowsocks, ss)),
            exit: net.server(Kind::Shadowsocks).ip,
        },
    ];
    let bytes = args.mib << 20;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let ticks_per_sec = clock_ticks_per_sec();
    let (aead_per_gib, aead_speed) = tokio::task::spawn_blocking(move || aead_cost(ticks_per_sec))
        .await
        .context("the AEAD measurement")??;
    eprintln!("  AEAD alone: {aead_per_gib:.2} CPU-s/GiB ({aead_speed:.0} MiB/s on one thread)");

    // 1. Throughput, the three routes in turn each round.
    let mut speeds = vec![[Vec::new(), Vec::new()]; routes.len()]; // [down, up] per route
    // [down, up] per route: the host's tunnel process, and the fake internet's server.
    let mut tunnel_cpu = vec![[CpuPerGib::default(); 2]; routes.len()];
    let mut server_cpu = vec![[CpuPerGib::default(); 2]; routes.len()];
    let mut tunnel_leaks = 0;
    let mut direct_leaks = 0;
    for round in 1..=args.rounds {
        for (i, route) in routes.iter().enumerate() {
            bench.take(&mut net, route).await?;
            net.reset_leaks()?;
            let mut moved = [0.0; 2];
            for (dir, up) in [false, true].into_iter().enumerate() {
                let pids = match &route.egress_ip {
                    Some((kind, _)) => Some((bench.tunnel_pid().await?, net.server_pid(*kind))),
                    None => None,
                };
                let before = pids.map(|(t, s)| (cpu_ticks(t), s.and_then(cpu_ticks)));
                moved[dir] = bench.transfer(bytes, up).await.context(route.name)?;
                if let (Some((t, s)), Some((t0, s0))) = (pids, before) {
                    // A process that died in between (a restart) would make the difference
                    // meaningless: such a transfer is left out of the CPU figure.
                    if let (Some(t0), Some(t1)) = (t0, cpu_ticks(t)) {
                        tunnel_cpu[i][dir].add(t1 - t0, bytes);
                    }
                    if let (Some(s0), Some(s1)) = (s0, s.and_then(cpu_ticks)) {
                        server_cpu[i][dir].add(s1 - s0, bytes);
                    }
                }
            }
            let [down, up] = moved;
            let leaked = net.leaks()?.total();
            if route.egress_ip.is_some() {
                tunnel_leaks += leaked;
            } else {
                direct_leaks += leaked;
            }
            speeds[i][0].push(down);
            speeds[i][1].push(up);
            eprintln!(
                "  round {round}: {:<18} down {down:>8.1} MiB/s   up {up:>8.1} MiB/s",
                route.name
            );
        }
    }

    // 2. Restore after kill -9 of the tunnel process.
    let mut restores = Vec::new();
    for route in &routes[1..] {
        bench.take(&mut net, route).await?;
        let mut restarted = Instant::now();
        let mut times = Vec::new();
        let mut ups = Vec::new();
        let mut failed = Vec::new();
        net.reset_leaks()?;
        for i in 1..=args.kills {
            tokio::time::sleep(SETTLE.saturating_sub(restarted.elapsed())).await;
            let r = bench
                .kill_and_restore()
                .await
                .with_context(|| format!("{}: kill {i}", route.name))?;
            restarted = Instant::now();
            eprintln!(
                "  {:<18} kill {i}: first 204 after {:>6.0} ms, status up after {:>6.0} ms ({} requests failed)",
                route.name,
                r.took.as_secs_f64() * 1000.0,
                r.up.as_secs_f64() * 1000.0,
                r.failed
            );
            times.push(r.took);
            ups.push(r.up);
            failed.push(r.failed);
        }
        tunnel_leaks += net.leaks()?.total();
        restores.push((route.name, times, ups, failed));
    }
    drop(sink_process);
    let sink_cc = congestion_control(&sink_netns).await;
    let host_cc = congestion_control(&netns_of(&bench.egress_container).await).await;

    println!();
    println!("cloud-cli-proxy bench: egress");
    println!(
        "  node {}, {cpus} CPUs, {} MiB per transfer, median of {} rounds, curl inside the host",
        bench.eg.node.name, args.mib, args.rounds
    );
    let server = match wg_program {
        WgServerProgram::Batched => "cloud-cli-proxy-fake-wg (the agent's batched data path)",
        WgServerProgram::WireguardGo => "wireguard-go",
    };
    println!("  fake WireGuard server: {server}");
    println!(
        "  shadowsocks method: {} (CCP_FAKENET_SS_METHOD picks another)",
        cloud_cli_proxy_tests::fakenet::shadowsocks_method_name(net.server(Kind::Shadowsocks).method)
    );
    let set_by = if args.congestion_control.is_some() {
        " (set by --congestion-control)"
    } else {
        " (as the node made them)"
    };
    println!("  TCP congestion control of the senders: sink (down) {sink_cc}, host (up) {host_cc}{set_by}");
    println!();
    println!(
        "  {:<22} {:>14} {:>8} {:>14} {:>8}",
        "", "down", "ratio", "up", "ratio"
    );
    let direct = [median(&speeds[0][0]), median(&speeds[0][1])];
    for (i, route) in routes.iter().enumerate() {
        let (d, u) = (median(&speeds[i][0]), median(&speeds[i][1]));
        println!(
            "  {:<22} {d:>8.1} MiB/s {:>8.2} {u:>8.1} MiB/s {:>8.2}",
            route.name,
            d / direct[0],
            u / direct[1]
        );
    }
    println!("  (ratio: against the direct path; down = sink → host, up = host → sink)");
    println!();
    println!(
        "  CPU-seconds per GiB moved        {:>14} {:>14} {:>14} {:>14}",
        "tunnel down", "tunnel up", "server down", "server up"
    );
    let shown = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    for (i, route) in routes.iter().enumerate().skip(1) {
        println!(
            "  {:<32} {:>14} {:>14} {:>14} {:>14}",
            route.name,
            shown(tunnel_cpu[i][0].value(ticks_per_sec)),
            shown(tunnel_cpu[i][1].value(ticks_per_sec)),
            shown(server_cpu[i][0].value(ticks_per_sec)),
            shown(server_cpu[i][1].value(ticks_per_sec)),
        );
    }
    println!(
        "  AEAD alone (ChaCha20-Poly1305, ring, 1420-byte packets, one thread): {aead_per_gib:.2} CPU-s/GiB \
         ({aead_speed:.0} MiB/s)"
    );
    for (i, route) in routes.iter().enumerate().skip(1) {
        let ratio =
            |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}×", v / aead_per_gib));
        println!(
            "  {:<32} tunnel process / AEAD: down {}, up {}",
            route.name,
            ratio(tunnel_cpu[i][0].value(ticks_per_sec)),
            ratio(tunnel_cpu[i][1].value(ticks_per_sec)),
        );
    }
    println!(
        "  (tunnel: the host's tunnel process; server: the fake internet's; user+system time from /proc)"
    );
    println!();
    println!(
        "  {:<46} {:>8} {:>8} {:>8}",
        format!("kill -9 of the tunnel process → first 204 ({} each)", args.kills),
        "p50",
        "max",
        "min"
    );
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    for (name, times, ups, failed) in &restores {
        println!(
            "  {name:<46} {:>8} {:>8} {:>8}   (failed requests per kill: {failed:?})",
            ms(super::percentile(times, 50.0)),
            ms(*times.iter().max().unwrap()),
            ms(*times.iter().min().unwrap())
        );
        println!(
            "  {:<46} {:>8} {:>8} {:>8}",
            format!("  {name}: kill -9 → status.json `up` again"),
            ms(super::percentile(ups, 50.0)),
            ms(*ups.iter().max().unwrap()),
            ms(*ups.iter().min().unwrap())
        );
    }
    println!("  (requests every ~20 ms + curl's own time: the resolution is a few tens of ms)");
    println!();
    println!("  leaked packets while tunnelled (should be 0): {tunnel_leaks}");
    println!("  packets counted on the direct path (the counter's positive control): {direct_leaks}");
    Ok(())
}

/// `cloud-cli-proxy-bench egress-sink --listen ADDR`: a bulk HTTP/1.1 server for the benchmark,
/// started inside the fake internet. `GET /bytes/N` answers N zero bytes; `PUT` or `POST` with a
/// `Content-Length` reads and discards that many. One request per connection. Prints
/// `listening on ADDR` (the bound address) first.
pub async fn sink(args: Vec<String>) -> anyhow::Result<()> {
    let listen = match args.as_slice() {
        [flag, addr] if flag == "--listen" => addr.parse::<SocketAddr>().context("--listen ADDR")?,
        _ => bail!("usage: cloud-cli-proxy-bench egress-sink --listen ADDR"),
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(stream).await {
                eprintln!("egress-sink: {e:#}");
            }
        });
    }
}

const CHUNK: usize = 1 << 20;

async fn serve(mut stream: tokio::net::TcpStream) -> anyhow::Result<()> {
    let mut head = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let end = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("connection closed in the request head");
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 16 * 1024 {
            bail!("request head over 16 KiB");
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut request = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
    let header = |name: &str| {
        text.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    match method {
        "GET" => {
            let Some(n) = target.strip_prefix("/bytes/").and_then(|n| n.parse::<u64>().ok()) else {
                return respond(&mut stream, "404 Not Found", b"").await;
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nContent-Type: application/octet-stream\r\n\
                 Connection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            buf.fill(0);
            let mut left = n;
            while left > 0 {
                let take = usize::try_from(left.min(CHUNK as u64))?;
                stream.write_all(&buf[..take]).await?;
                left -= take as u64;
            }
            stream.shutdown().await?;
            Ok(())
        }
        "PUT" | "POST" => {
            if header("transfer-encoding").is_some_and(|v| !v.is_empty()) {
                return respond(&mut stream, "411 Length Required", b"no chunked uploads").await;
            }
            let Some(n) = header("content-length").and_then(|v| v.parse::<u64>().ok()) else {
                return respond(&mut stream, "411 Length Required", b"").await;
            };
            let mut got = (head.len() - end) as u64;
            while got < n {
                let r = stream.read(&mut buf).await?;
                if r == 0 {
                    bail!("upload ended after {got} of {n} bytes");
                }
                got += r as u64;
            }
            respond(&mut stream, "200 OK", got.to_string().as_bytes()).await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", b"").await,
    }
}

async fn respond(stream: &mut tokio::net::TcpStream, status: &str, body: &[u8]) -> anyhow::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_parse_and_medians_take_the_middle() {
        let a = Attempt::parse("1796219681538828 1796219681541000 204").unwrap();
        assert_eq!(
            (a.start, a.end, a.ok),
            (1_796_219_681_538_828, 1_796_219_681_541_000, true)
        );
        assert!(!Attempt::parse("1 2 000").unwrap().ok);
        assert!(Attempt::parse("curl: oops").is_err());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn flags_are_checked() {
        let a = parse(vec!["--mib".into(), "64".into(), "--kills".into(), "2".into()]).unwrap();
        assert_eq!((a.mib, a.rounds, a.kills), (64, 3, 2));
        assert!(parse(vec!["--rounds".into(), "0".into()]).is_err());
        assert!(parse(vec!["--fast".into(), "1".into()]).is_err());
    }
}
