//! `cloud-cli-proxy-bench spread [--hosts N] [--users N] [--in-flight N]`: N hosts (default 200)
//! asked for at once from a control plane on PostgreSQL with two standalone agents attached (two
//! agents on this machine stand in for two Docker nodes, each with its own name, hosts network and
//! state); how long until every host is running, how the hosts spread over the two nodes, and how
//! long until the last one's sshd answers.
//!
//! The hosts belong to `--users` users (default 20), and the `POST /v1/admin/hosts` go out
//! `--in-flight` at a time (default 16). Each host counts as running when the API first lists it so
//! (polled every 500 ms), and as reachable when its sshd sends its banner on the hosts network.
//! Everything is deleted at the end, and every object of both nodes removed even on a panic.
//!
//! An idle host takes about 25 MiB (its desktop starts only when opened; docs/density.md): 200 of
//! them need some 5 GiB of memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cloud_cli_proxy_tests::database::PgDatabase;
use cloud_cli_proxy_tests::node::Cleanup;
use cloud_cli_proxy_tests::{AgentMode, AgentOptions, AgentProcess, Node, Options, docker};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::{percentile, ready, secs};

/// How long the whole spread may take before the bench gives up on the stragglers.
const SPREAD_LIMIT: Duration = Duration::from_secs(1800);
const LIST_POLL: Duration = Duration::from_millis(500);
/// How long the running hosts' sshd may take to answer once the list shows them running.
const BANNER_LIMIT: Duration = Duration::from_secs(120);

pub async fn main(args: Vec<String>) -> anyhow::Result<()> {
    let flags = crate::numeric_flags(args, &["--hosts", "--users", "--in-flight"])?;
    let hosts = usize::try_from(*flags.get("--hosts").unwrap_or(&200))?;
    let users = usize::try_from(*flags.get("--users").unwrap_or(&20))?.min(hosts);
    let in_flight = usize::try_from(*flags.get("--in-flight").unwrap_or(&16))?;
    docker::require_docker();
    eprintln!("building or checking the host image (images/build.sh)…");

    let key_dir = tempfile::tempdir()?;
    let opts = Options::new()
        .postgres(PgDatabase::create())
        .env("SECRETS_KEY_FILE", key_dir.path().join("secrets.key").display());
    let mut node = Node::start_with(AgentMode::Standalone, opts, &[]).await;
    let second_name = format!("{}b", node.name);
    // Declared after the node so that it is dropped first: the second agent stops (below) and its
    // objects go, then the node's own.
    let _second_cleanup = Cleanup::new(&second_name);
    let second_state = tempfile::Builder::new().prefix("ccp-agent-").tempdir()?;
    let second = AgentOptions {
        node_name: second_name.clone(),
        state_dir: second_state.path().to_path_buf(),
        ..node.agent_options()
    };
    let mut second_agent = AgentProcess::start(&second);
    wait_agents(&node, 2).await?;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    eprintln!(
        "two agents connected ({} and {second_name}); asking for {hosts} hosts of {users} users",
        node.name
    );

    let mut user_ids = Vec::new();
    for u in 0..users {
        user_ids.push(node.user(&format!("spread{u}")).await);
    }

    // Every host asked for at once (at most `in_flight` requests open).
    let t0 = Instant::now();
    let gate = Arc::new(Semaphore::new(in_flight.max(1)));
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..hosts {
        let (api, user_id, gate) = (node.admin.clone(), user_ids[i % users].clone(), gate.clone());
        posts.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let r = api.post("/v1/admin/hosts", json!({ "user_id": user_id })).await;
            (r.status, r.body)
        });
    }
    let mut asked: HashMap<String, String> = HashMap::new();
    let mut refused = Vec::new();
    while let Some(r) = posts.join_next().await {
        let (status, body) = r?;
        match (status, body["id"].as_str(), body["short_id"].as_str()) {
            (201, Some(id), Some(short)) => {
                asked.insert(id.to_owned(), short.to_owned());
            }
            _ => refused.push(format!("{status} {body}")),
        }
    }
    let asked_in = t0.elapsed();
    eprintln!(
        "{} hosts asked for in {} ({} refused)",
        asked.len(),
        secs(asked_in),
        refused.len()
    );

    // Follow the list until every host runs (or errs, or the limit passes).
    let mut running_at: HashMap<String, Duration> = HashMap::new();
    let mut node_of: HashMap<String, String> = HashMap::new();
    let mut errored: BTreeMap<String, String> = BTreeMap::new();
    let mut last_report = Instant::now();
    loop {
        let listed = list_hosts(&node).await?;
        let now = t0.elapsed();
        for h in &listed {
            let Some(id) = h["id"].as_str() else { continue };
            if !asked.contains_key(id) {
                continue;
            }
            match h["status"].as_str() {
                Some("running") => {
                    running_at.entry(id.to_owned()).or_insert(now);
                    if let Some(n) = h["node_id"].as_str() {
                        node_of.insert(id.to_owned(), n.to_owned());
                    }
                }
                Some("error") => {
                    errored.insert(id.to_owned(), h.to_string());
                }
                _ => {}
            }
        }
        if running_at.len() + errored.len() >= asked.len() || now > SPREAD_LIMIT {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            eprintln!(
                "  {:>6}: {} running, {} in error",
                secs(now),
                running_at.len(),
                errored.len()
            );
            last_report = Instant::now();
        }
        if let Some(status) = second_agent.exited() {
            bail!("the second agent exited with {status}:\n{}", second_agent.logs());
        }
        tokio::time::sleep(LIST_POLL).await;
    }
    let all_listed = t0.elapsed();

    // sshd of every running host, checked once all run (the banner comes from the host's own
    // address on its node's network).
    let names = node_names(&node).await?;
    // The banners get a bound of their own from now: the list may have been followed up to its
    // own limit.
    let banner_limit = t0.elapsed() + BANNER_LIMIT;
    let mut banners = tokio::task::JoinSet::new();
    for (id, node_id) in &node_of {
        let short = &asked[id];
        let Some(node_name) = names.get(node_id) else {
            bail!("host {id} runs on node {node_id}, which the API does not list");
        };
        let egress = format!("ccp-{node_name}-egress-{short}");
        let network = format!("ccp-hosts-{node_name}");
        let gate = gate.clone();
        banners.spawn(async move {
            let _permit = gate.acquire_owned().await;
            ready(&egress, &network, t0, banner_limit).await
        });
    }
    let mut unreachable = Vec::new();
    while let Some(r) = banners.join_next().await {
        if let Err(e) = r? {
            unreachable.push(format!("{e:#}"));
        }
    }
    let all_reachable = t0.elapsed();

    let mut times: Vec<Duration> = running_at.values().copied().collect();
    times.sort();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for n in node_of.values() {
        let name = names.get(n).cloned().unwrap_or_else(|| n.clone());
        *per_node.entry(name).or_default() += 1;
    }

    println!();
    println!("cloud-cli-proxy bench: spread");
    println!(
        "  PostgreSQL, one control plane, two agents ({} and {second_name}) on one machine, {cpus} CPUs",
        node.name
    );
    println!(
        "  {hosts} hosts of {users} users asked for at once ({in_flight} requests open at a time); POSTs took {}",
        secs(asked_in)
    );
    println!("  {:<44} {:>9}", "refused", refused.len());
    println!(
        "  {:<44} {:>9}",
        "running",
        format!("{}/{}", running_at.len(), asked.len())
    );
    if !times.is_empty() {
        println!("  {:<44} {:>9}", "first running", secs(times[0]));
        println!("  {:<44} {:>9}", "p50 running", secs(percentile(&times, 50.0)));
        println!("  {:<44} {:>9}", "p99 running", secs(percentile(&times, 99.0)));
        let label = if running_at.len() == asked.len() {
            "all running"
        } else {
            "last of those running"
        };
        println!("  {label:<44} {:>9}", secs(*times.last().unwrap()));
    }
    println!(
        "  {:<44} {:>9}",
        "every running host's sshd answered by",
        secs(all_reachable)
    );
    for (n, count) in &per_node {
        println!("  {:<44} {:>9}", format!("hosts on node {n}"), count);
    }
    println!("  {:<44} {:>9}", "in error", errored.len());
    println!(
        "  (the list was followed until {}; unreachable sshd: {})",
        secs(all_listed),
        unreachable.len()
    );
    for r in refused.iter().take(5) {
        println!("  refused: {r}");
    }
    for (id, detail) in errored.iter().take(5) {
        println!("  error: {id}: {detail}");
    }
    for u in unreachable.iter().take(5) {
        println!("  unreachable: {u}");
    }

    eprintln!("deleting {} hosts…", asked.len());
    let mut deletes = tokio::task::JoinSet::new();
    for id in asked.keys() {
        let (api, id, gate) = (node.admin.clone(), id.clone(), gate.clone());
        deletes.spawn(async move {
            let _permit = gate.acquire_owned().await;
            api.delete(&format!("/v1/admin/hosts/{id}")).await.status
        });
    }
    while let Some(r) = deletes.join_next().await {
        let status = r?;
        if status != 202 && status != 404 {
            eprintln!("a delete answered {status}");
        }
    }
    let deadline = Instant::now() + SPREAD_LIMIT;
    while !list_hosts(&node).await?.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    second_agent.kill();
    node.kill_agent();
    Ok(())
}

/// Waits until `n` agents are connected.
async fn wait_agents(node: &Node, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = node.admin.get("/v1/admin/dashboard/stats").await;
        if stats.body["agents"]["connected"] == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{n} agents never connected: {}", stats.text);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Node id → node name, from `GET /v1/admin/nodes`.
async fn node_names(node: &Node) -> anyhow::Result<HashMap<String, String>> {
    let r = node.admin.get("/v1/admin/nodes?page_size=500").await;
    if r.status != 200 {
        bail!("listing nodes answered {}: {}", r.status, r.text);
    }
    Ok(r.data()
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?.to_owned(), n["name"].as_str()?.to_owned())))
        .collect())
}

/// Every host the API lists (500 a page).
async fn list_hosts(node: &Node) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut all = Vec::new();
    for page in 1.. {
        let r = node
            .admin
            .get(&format!("/v1/admin/hosts?page={page}&page_size=500"))
            .await;
        if r.status != 200 {
            bail!("listing hosts answered {}: {}", r.status, r.text);
        }
        let data = r.data().clone();
        let total = usize::try_from(r.total()).context("a negative total")?;
        let n = data.len();
        all.extend(data);
        if n == 0 || all.len() >= total {
            break;
        }
    }
    Ok(all)
}
