//! `cloud-cli-proxy-bench ssh`: the SSH gateway against a direct connection to the same host.
//!
//! One control plane with its embedded agent and gateway, one tenant with a running host, then:
//!
//! 1. bulk throughput: `--mib` MiB (default 1024) streamed down (`head -c N /dev/zero` in the host)
//!    and up (`cat > /dev/null` in the host), each through the gateway and straight to the host's
//!    sshd, with the same OpenSSH client and default algorithms, alternating, three rounds; the
//!    best round of each is compared (target ratio ≥ 0.9);
//! 2. connect + auth + exec latency: `--logins` (default 20) runs of `ssh … true` each way,
//!    alternating; p50 of each and the difference (what the gateway adds).
//!
//! Password logins through `sshpass -e` on both paths: the tenant's password at the gateway, the
//! host's SSH password at the host. Use release binaries (`CCP_BIN_DIR=target/release`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cloud_cli_proxy_tests::Node;
use cloud_cli_proxy_tests::gateway::{Login, argv, shell_line, ssh_command};

const TARGET_RATIO: f64 = 0.9;
const ROUNDS: usize = 3;
const RUN_LIMIT: Duration = Duration::from_secs(600);

struct Args {
    mib: u64,
    logins: usize,
}

fn parse(args: Vec<String>) -> anyhow::Result<Args> {
    let flags = super::numeric_flags(args, &["--mib", "--logins"])?;
    Ok(Args {
        mib: flags.get("--mib").copied().unwrap_or(1024),
        logins: usize::try_from(flags.get("--logins").copied().unwrap_or(20))?,
    })
}

/// One way to reach the host: a command line of `sshpass -e ssh …` and its password.
pub(crate) struct Path {
    pub(crate) name: &'static str,
    pub(crate) argv: Vec<String>,
    pub(crate) password: String,
}

impl Path {
    pub(crate) fn gateway(port: u16, login: &str, password: &str) -> Self {
        let cmd = ssh_command(port, login, &Login::Password(password.to_owned()), "ssh");
        Self::from_command(&cmd, "through the gateway", password)
    }

    fn direct(ip: std::net::Ipv4Addr, user: &str, password: &str) -> Self {
        let cmd = ssh_command(22, user, &Login::Password(password.to_owned()), "ssh");
        let mut path = Self::from_command(&cmd, "direct to the host", password);
        // ssh_command aims at 127.0.0.1; the direct path dials the host's own address.
        if let Some(last) = path.argv.last_mut() {
            *last = format!("{user}@{ip}");
        }
        path
    }

    fn from_command(cmd: &tokio::process::Command, name: &'static str, password: &str) -> Self {
        Self {
            name,
            argv: argv(cmd),
            password: password.to_owned(),
        }
    }

    /// Runs `remote` on the host with `stdin_bytes` of zeros fed to it (0: no input); the
    /// command's output is thrown away. Returns the wall time.
    pub(crate) async fn time(&self, remote: &str, stdin_bytes: u64) -> anyhow::Result<Duration> {
        let mut line = self.argv.clone();
        line.push(remote.to_owned());
        let script = if stdin_bytes > 0 {
            format!("head -c {stdin_bytes} /dev/zero | {}", shell_line(&line))
        } else {
            format!("{} </dev/null", shell_line(&line))
        };
        let t0 = Instant::now();
        // spawn + wait_with_output rather than output(), which would capture stdout (the whole
        // transfer) into this process's memory, whatever was configured.
        let child = tokio::process::Command::new("bash")
            .args(["-c", &script])
            .env("SSHPASS", &self.password)
            .env_remove("SSH_AUTH_SOCK")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
            .await
            .with_context(|| format!("{}: over {RUN_LIMIT:?}", self.name))??;
        let took = t0.elapsed();
        if !out.status.success() {
            bail!(
                "{} `{remote}` failed ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(took)
    }
}

pub(crate) fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1_048_576.0 / d.as_secs_f64()
}

pub async fn main(args: Vec<String>) -> anyhow::Result<()> {
    let args = parse(args)?;
    cloud_cli_proxy_tests::docker::require_docker();
    let node = Node::embedded(&[]).await;
    let tenant = node.tenant("bench").await;
    let ip = node.host_ip(&tenant.host.short_id).await;
    let gateway = Path::gateway(node.cp.ssh_port(), &tenant.login(), &tenant.password);
    let direct = Path::direct(ip, "bench", &tenant.host.ssh_password);
    let bytes = args.mib << 20;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);

    // Both paths must work before anything is timed.
    for path in [&gateway, &direct] {
        path.time("true", 0)
            .await
            .with_context(|| format!("{} does not work", path.name))?;
    }

    let down = format!("head -c {bytes} /dev/zero");
    let up = "cat > /dev/null";
    let mut best = [[Duration::MAX; 2]; 2]; // [down, up] × [gateway, direct]
    for round in 1..=ROUNDS {
        for (which, path) in [&gateway, &direct].into_iter().enumerate() {
            let d = path.time(&down, 0).await?;
            let u = path.time(up, bytes).await?;
            best[0][which] = best[0][which].min(d);
            best[1][which] = best[1][which].min(u);
            eprintln!(
                "  round {round}: {:<22} down {:>8.1} MiB/s   up {:>8.1} MiB/s",
                path.name,
                mib_per_s(bytes, d),
                mib_per_s(bytes, u)
            );
        }
    }

    let mut logins = [Vec::new(), Vec::new()];
    for _ in 0..args.logins {
        for (which, path) in [&gateway, &direct].into_iter().enumerate() {
            logins[which].push(path.time("true", 0).await?);
        }
    }

    println!();
    println!("cloud-cli-proxy bench: ssh");
    println!(
        "  node {}, {cpus} CPUs, {} MiB per transfer, best of {ROUNDS}",
        node.name, args.mib
    );
    println!();
    println!("  {:<26} {:>14} {:>14} {:>8}", "", "gateway", "direct", "ratio");
    for (i, label) in ["down (host → client)", "up (client → host)"].iter().enumerate() {
        let (g, d) = (mib_per_s(bytes, best[i][0]), mib_per_s(bytes, best[i][1]));
        let ratio = g / d;
        println!(
            "  {label:<26} {:>9.1} MiB/s {:>9.1} MiB/s {ratio:>8.2}   (target ≥ {TARGET_RATIO}: {})",
            g,
            d,
            if ratio >= TARGET_RATIO { "met" } else { "NOT met" }
        );
    }
    let (g, d) = (
        super::percentile(&logins[0], 50.0),
        super::percentile(&logins[1], 50.0),
    );
    println!();
    println!(
        "  connect + auth + exec, p50 of {}: gateway {:.0} ms, direct {:.0} ms, added {:.0} ms",
        args.logins,
        g.as_secs_f64() * 1000.0,
        d.as_secs_f64() * 1000.0,
        (g.as_secs_f64() - d.as_secs_f64()) * 1000.0
    );
    Ok(())
}
