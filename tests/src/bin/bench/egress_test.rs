//! `cloud-cli-proxy-bench egress-test`: how long the operator's egress test
//! (`POST /v1/admin/egress-ips/{id}/test`) takes, end to end, for every tunnel kind, against a
//! healthy server and against a dead one.
//!
//! A fake internet (`cloud_cli_proxy_tests::fakenet`) with a server of every kind, and a control
//! plane with its embedded agent pointed at it; one egress IP per kind. Then:
//!
//! 1. the first test of all, which finds no warm namespace on the node (printed on its own);
//! 2. `--runs` rounds (default 10) of one test per kind against its healthy server, the kinds in
//!    turn within each round, so that drift in the machine's load affects them alike; each must
//!    pass all three checks;
//! 3. per kind, its server made unreachable (the fake internet's router drops everything to and
//!    from it: the worst case, where nothing answers), then `--runs` tests, each of which must fail
//!    connectivity; then the server is reachable again.
//!
//! Each test is timed from just before the API call to its answer; p50 and max per kind are printed,
//! with the packets that left the node for anything but a tunnel server over the whole run (0
//! expected). Timing figures are printed, never judged; a test with the wrong outcome is an error.
//! Needs root, Docker with the host image, sing-box, nft, iproute2 and the workspace binaries
//! (`cargo build --workspace --bins`; `CCP_BIN_DIR`).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cloud_cli_proxy_tests::docker;
use cloud_cli_proxy_tests::egress::Egress;
use cloud_cli_proxy_tests::fakenet::{FakeInternet, Kind};
use serde_json::Value;

use super::{numeric_flags, percentile};

/// The budgets the figures are read against (printed beside them, never asserted).
const HEALTHY_BUDGET: Duration = Duration::from_secs(2);
const DEAD_BUDGET: Duration = Duration::from_secs(5);

pub async fn main(args: Vec<String>) -> anyhow::Result<()> {
    let flags = numeric_flags(args, &["--runs"])?;
    let runs = usize::try_from(flags.get("--runs").copied().unwrap_or(10))?;
    docker::require_docker();
    let mut net = FakeInternet::build("bench-etest").context("fake internet")?;
    let eg = Egress::start(&net).await;
    eprintln!(
        "node {}: control plane {}, {runs} runs per kind",
        eg.node.name,
        cloud_cli_proxy_tests::process::control_plane_bin().display()
    );
    let mut ips = Vec::new();
    for kind in Kind::ALL {
        let ip = eg.create(&mut net, kind, &format!("bench-{}", kind.name())).await;
        net.allow_endpoint(net.server(kind).ip)?;
        ips.push((kind, ip));
    }
    net.reset_leaks()?;

    let (first_kind, first_ip) = &ips[0];
    let (took, _) = timed_test(&eg, first_ip, *first_kind, true).await?;
    println!(
        "first test on the node ({}, no warm namespace yet): {} ms",
        first_kind.name(),
        took.as_millis()
    );

    let mut healthy: Vec<Vec<Duration>> = vec![Vec::new(); ips.len()];
    for round in 1..=runs {
        for (i, (kind, ip)) in ips.iter().enumerate() {
            let (took, _) = timed_test(&eg, ip, *kind, true).await?;
            healthy[i].push(took);
        }
        eprintln!("healthy round {round}/{runs} done");
    }

    let mut dead: Vec<Vec<Duration>> = vec![Vec::new(); ips.len()];
    let mut reasons = Vec::new();
    for (i, (kind, ip)) in ips.iter().enumerate() {
        net.set_reachable(*kind, false)?;
        let mut reason = String::new();
        for _ in 0..runs {
            let (took, result) = timed_test(&eg, ip, *kind, false).await?;
            dead[i].push(took);
            reason = connectivity_error(&result);
        }
        net.set_reachable(*kind, true)?;
        reasons.push(reason);
        eprintln!("dead server, {}: done", kind.name());
    }
    let leaked = net.leaks()?.total();

    println!();
    println!(
        "egress test, end to end (API call to answer), {runs} runs per kind; budgets {} ms healthy, {} ms dead",
        HEALTHY_BUDGET.as_millis(),
        DEAD_BUDGET.as_millis()
    );
    println!(
        "{:<12} {:>12} {:>12} {:>12} {:>12}",
        "kind", "healthy p50", "healthy max", "dead p50", "dead max"
    );
    let ms = |d: Duration| format!("{} ms", d.as_millis());
    for (i, (kind, _)) in ips.iter().enumerate() {
        let max = |s: &[Duration]| s.iter().max().copied().unwrap_or_default();
        println!(
            "{:<12} {:>12} {:>12} {:>12} {:>12}",
            kind.name(),
            ms(percentile(&healthy[i], 50.0)),
            ms(max(&healthy[i])),
            ms(percentile(&dead[i], 50.0)),
            ms(max(&dead[i])),
        );
    }
    println!();
    println!("what a dead server's test said (connectivity):");
    for ((kind, _), reason) in ips.iter().zip(&reasons) {
        println!("  {:<12} {reason}", kind.name());
    }
    println!("packets from the node to anything but a tunnel server: {leaked}");
    Ok(())
}

/// One test, timed around the API call; it must pass (`healthy`) or fail connectivity.
async fn timed_test(eg: &Egress, ip: &str, kind: Kind, healthy: bool) -> anyhow::Result<(Duration, Value)> {
    let started = Instant::now();
    let result = eg.test(ip).await;
    let took = started.elapsed();
    let connected = result["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "connectivity"))
        .map(|c| c["passed"] == true);
    if healthy && result["passed"] != true {
        bail!("{}: a test of the healthy server failed: {result:#}", kind.name());
    }
    if !healthy && connected != Some(false) {
        bail!(
            "{}: a test of the dead server did not fail connectivity: {result:#}",
            kind.name()
        );
    }
    Ok((took, result))
}

fn connectivity_error(result: &Value) -> String {
    result["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "connectivity"))
        .and_then(|c| c["error"].as_str())
        .unwrap_or("?")
        .to_owned()
}
