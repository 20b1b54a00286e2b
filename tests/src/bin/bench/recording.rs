//! `cloud-cli-proxy-bench recording`: what session recording costs the SSH gateway, in one run.
//!
//! One control plane with its embedded agent and gateway (`SESSION_RECORDING=off`), one tenant with
//! a running host whose recording override is switched `on` and `off` between the timed runs (the
//! same host, client and path both ways), then, alternating, three rounds of:
//!
//! 1. a non-pty transfer: `head -c N` of `--mib` MiB (default 1024) streamed down by an exec
//!    without a pty. Never recorded, so the cost is the gateway's check per block (target: within
//!    a few percent);
//! 2. pty output: `--pty-mib` MiB (default 64) of zeros as base64 text (`base64 -w 100`, a terminal
//!    full of lines) printed by a command run with `ssh -tt`: recorded when on, so this is what
//!    recording costs (formatting, gzip and uploads, and the database writes of the control plane
//!    on the same machine).
//!
//! The best round of each is compared; the size recorded and stored for one pty run is reported.
//! Use release binaries (`CCP_BIN_DIR=target/release`).

use std::time::Duration;

use anyhow::{Context as _, bail};
use cloud_cli_proxy_tests::Node;
use serde_json::json;

use super::ssh::{Path, mib_per_s};

const ROUNDS: usize = 3;
/// What "a few percent" means for the non-pty transfer.
const NON_PTY_TARGET: f64 = 0.95;

struct Args {
    mib: u64,
    pty_mib: u64,
}

fn parse(args: Vec<String>) -> anyhow::Result<Args> {
    let flags = super::numeric_flags(args, &["--mib", "--pty-mib"])?;
    Ok(Args {
        mib: flags.get("--mib").copied().unwrap_or(1024),
        pty_mib: flags.get("--pty-mib").copied().unwrap_or(64),
    })
}

/// `path` with a terminal forced (`ssh -tt`).
fn with_pty(path: &Path) -> Path {
    let mut argv = path.argv.clone();
    let at = argv.iter().position(|a| a == "ssh").map_or(0, |i| i + 1);
    argv.insert(at, "-tt".to_owned());
    Path {
        name: "through the gateway, with a pty",
        argv,
        password: path.password.clone(),
    }
}

pub async fn main(args: Vec<String>) -> anyhow::Result<()> {
    let args = parse(args)?;
    cloud_cli_proxy_tests::docker::require_docker();
    let node = Node::embedded(&[("SESSION_RECORDING", "off")]).await;
    let tenant = node.tenant("bench").await;
    let plain = Path::gateway(node.cp.ssh_port(), &tenant.login(), &tenant.password);
    let pty = with_pty(&plain);
    let admin = &node.admin;
    let setting = format!("/v1/admin/hosts/{}/recording", tenant.host.id);
    let set = |on: bool| {
        let setting = setting.clone();
        async move {
            let r = admin
                .put(&setting, json!({"recording": if on { "on" } else { "off" }}))
                .await;
            if r.status != 200 || r.body["effective"] != on {
                bail!("cannot switch recording {on}: {} {}", r.status, r.text);
            }
            Ok(())
        }
    };
    let bytes = args.mib << 20;
    let pty_bytes = args.pty_mib << 20;
    // base64 prints 4 characters per 3 bytes, and a newline per 100.
    let pty_printed = pty_bytes / 3 * 4 * 101 / 100;
    let down = format!("head -c {bytes} /dev/zero");
    let printed = format!("head -c {pty_bytes} /dev/zero | base64 -w 100");
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);

    for path in [&plain, &pty] {
        path.time("true", 0)
            .await
            .with_context(|| format!("{} does not work", path.name))?;
    }

    // [non-pty, pty] × [off, on]
    let mut best = [[Duration::MAX; 2]; 2];
    for round in 1..=ROUNDS {
        // Alternate which goes first, so drift in the machine's load falls on both alike.
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            set(on).await?;
            let which = usize::from(on);
            let d = plain.time(&down, 0).await?;
            let p = pty.time(&printed, 0).await?;
            best[0][which] = best[0][which].min(d);
            best[1][which] = best[1][which].min(p);
            eprintln!(
                "  round {round}: recording {:<3} non-pty {:>8.1} MiB/s   pty {:>8.1} MiB/s",
                if on { "on" } else { "off" },
                mib_per_s(bytes, d),
                mib_per_s(pty_printed, p)
            );
        }
    }
    set(false).await?;

    // What one pty run left behind (the newest recording).
    let recs = admin
        .get(&format!(
            "/v1/admin/recordings?host_id={}&page_size=1",
            tenant.host.id
        ))
        .await;
    let newest = recs.body["data"][0].clone();
    let recordings = recs.total();

    println!();
    println!("cloud-cli-proxy bench: recording");
    println!(
        "  node {}, {cpus} CPUs, non-pty {} MiB, pty {} MiB printed, best of {ROUNDS}",
        node.name,
        args.mib,
        pty_printed >> 20
    );
    println!();
    println!(
        "  {:<30} {:>14} {:>14} {:>8}",
        "", "recording off", "recording on", "on/off"
    );
    for (i, (label, n)) in [("non-pty exec (down)", bytes), ("pty output", pty_printed)]
        .into_iter()
        .enumerate()
    {
        let (off, on) = (mib_per_s(n, best[i][0]), mib_per_s(n, best[i][1]));
        let ratio = on / off;
        let verdict = if i == 0 {
            format!(
                "   (target ≥ {NON_PTY_TARGET}: {})",
                if ratio >= NON_PTY_TARGET { "met" } else { "NOT met" }
            )
        } else {
            String::new()
        };
        println!("  {label:<30} {off:>9.1} MiB/s {on:>9.1} MiB/s {ratio:>8.2}{verdict}");
    }
    println!();
    println!(
        "  recordings made: {recordings} (pty runs only); the newest: {} bytes of asciicast, {} stored, {} chunks",
        newest["size_bytes"], newest["stored_bytes"], newest["chunks"]
    );
    Ok(())
}
