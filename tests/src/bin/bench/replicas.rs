//! `cloud-cli-proxy-bench api` and `cloud-cli-proxy-bench fleet`: what the control plane carries on
//! each database, and how far one and two replicas go.
//!
//! `api [--seconds N] [--clients N]`: requests per second of a read route
//! (`GET /v1/admin/users?page_size=50`, 60 users) and a write route (`POST /v1/admin/egress-ips`, a
//! WireGuard egress with its secrets sealed and an event written), from N concurrent clients for N
//! seconds each, on SQLite, on PostgreSQL with one replica and with two (clients spread over both),
//! in one run; each figure with its ratio to SQLite's.
//!
//! `fleet [--hosts N] [--step N] [--max N] [--window N] [--interval N] [--replicas 1|2]`: simulated
//! agents speaking
//! the real agent protocol (enrol, register, heartbeat every `--interval` seconds with N running
//! hosts each, as a real agent reports them; no Docker behind them), added `--step` at a time every
//! `--window` seconds, until the heartbeats' p99 in a window passes one second or `--max` nodes run;
//! for one replica and for two (or only the one `--replicas` names). Reports the most nodes held with p99 ≤ 1 s, and the CPU the
//! database server and the replicas used in the last window.
//!
//! Both need PostgreSQL: `CCP_TEST_POSTGRES` names a role that may create databases (tests/run.sh
//! sets one up). Build the control plane in release mode and point `CCP_BIN_DIR` at it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cloud_cli_proxy_tests::database::PgDatabase;
use cloud_cli_proxy_tests::fixtures::{random_alnum, wireguard_egress};
use cloud_cli_proxy_tests::{Api, ControlPlane, Options};
use serde_json::json;
use tokio::sync::Mutex;

/// The heartbeat p99 a replica must keep.
const P99_BOUND: Duration = Duration::from_secs(1);

fn flag(args: &[String], name: &str, default: u64) -> anyhow::Result<u64> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{name} needs a value"))?
            .parse()
            .with_context(|| format!("{name} needs a number")),
        None => Ok(default),
    }
}

fn check_flags(args: &[String], known: &[&str]) -> anyhow::Result<()> {
    for (i, a) in args.iter().enumerate() {
        if i % 2 == 0 && !known.contains(&a.as_str()) {
            bail!("unknown flag {a} (known: {})", known.join(", "));
        }
    }
    Ok(())
}

/// Control planes sharing one database: SQLite (one process) or PostgreSQL (`replicas` of them).
struct Cluster {
    replicas: Vec<ControlPlane>,
    _db: Option<Arc<PgDatabase>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(postgres: bool, replicas: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::new()
            .env("EMBEDDED_SSH_PROXY", "false")
            // Load from one address: the sign-in limits are not what is measured.
            .env("LOGIN_MAX_FAILURES_PER_IP", 100_000);
        let db = postgres.then(PgDatabase::create);
        if let Some(db) = &db {
            opts = opts
                .postgres(db.clone())
                .env("SECRETS_KEY_FILE", dir.path().join("secrets.key").display());
        } else {
            opts = opts.db(dir.path().join("bench.db"));
        }
        let mut started = Vec::new();
        for _ in 0..replicas {
            started.push(ControlPlane::start(opts.clone()).await);
        }
        Self {
            replicas: started,
            _db: db,
            _dir: dir,
        }
    }

    fn name(&self) -> String {
        match (&self._db, self.replicas.len()) {
            (None, _) => "SQLite, 1 process".to_owned(),
            (Some(_), 1) => "PostgreSQL, 1 replica".to_owned(),
            (Some(_), n) => format!("PostgreSQL, {n} replicas"),
        }
    }

    /// CPU seconds the replicas have used.
    fn replicas_cpu(&self) -> f64 {
        self.replicas.iter().map(|cp| process_cpu(cp.pid())).sum()
    }
}

/// CPU seconds (user + system) of process `pid`, from /proc.
fn process_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// CPU seconds used by every `postgres` process on the machine (the database server).
fn postgres_cpu() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .map(process_cpu)
        .sum()
}

/// Requests per second `clients` clients get from `apis` (round robin) in `seconds`, each request
/// made by `request`; fails on any error answer.
async fn rate<F, Fut>(apis: &[Api], clients: usize, seconds: u64, request: F) -> anyhow::Result<f64>
where
    F: Fn(Api, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = u16> + Send + 'static,
{
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for c in 0..clients {
        let api = apis[c % apis.len()].clone();
        let (done, failed, request) = (done.clone(), failed.clone(), request.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0_u64;
            while Instant::now() < until {
                let status = request(api.clone(), (u64::try_from(c).unwrap_or(0) << 32) | n).await;
                n += 1;
                if status < 300 {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} requests failed");
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

pub async fn api(args: Vec<String>) -> anyhow::Result<()> {
    check_flags(&args, &["--seconds", "--clients"])?;
    let seconds = flag(&args, "--seconds", 10)?;
    let clients = usize::try_from(flag(&args, "--clients", 16)?)?;
    println!("API requests per second, {clients} clients, {seconds} s per figure");
    println!(
        "{:<26} {:>10} {:>8} {:>10} {:>8}",
        "database", "read/s", "ratio", "write/s", "ratio"
    );
    let mut base: Option<(f64, f64)> = None;
    for (postgres, replicas) in [(false, 1), (true, 1), (true, 2)] {
        let cluster = Cluster::start(postgres, replicas).await;
        let admin = cluster.replicas[0].admin().await;
        for i in 0..60 {
            admin
                .post(
                    "/v1/admin/users",
                    json!({"username": format!("reader-{i}"), "password": "bench-password-1"}),
                )
                .await
                .expect(201);
        }
        let apis: Vec<Api> = cluster
            .replicas
            .iter()
            .map(|cp| cp.api().with_token(admin.token()))
            .collect();
        let read = rate(&apis, clients, seconds, |api, _| async move {
            api.get("/v1/admin/users?page_size=50").await.status
        })
        .await
        .context("read route")?;
        let tag = random_alnum(6).to_lowercase();
        let write = rate(&apis, clients, seconds, move |api, n| {
            let label = format!("bench-{tag}-{n:x}");
            async move {
                api.post("/v1/admin/egress-ips", wireguard_egress(&label))
                    .await
                    .status
            }
        })
        .await
        .context("write route")?;
        let (r0, w0) = *base.get_or_insert((read, write));
        println!(
            "{:<26} {:>10.0} {:>8.2} {:>10.0} {:>8.2}",
            cluster.name(),
            read,
            read / r0,
            write,
            write / w0
        );
    }
    Ok(())
}

/// One simulated node: its agent link and the hosts it reports.
struct SimNode {
    api: Api,
    node_id: String,
    observed: serde_json::Value,
}

/// Heartbeat latencies of the current window.
#[derive(Default)]
struct Window {
    latencies: Vec<Duration>,
    failures: u64,
}

fn p99(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[(v.len() * 99).div_ceil(100).saturating_sub(1)]
}

/// Enrols and registers node `i` through `cp`, and places `hosts` running hosts of `user_id` on it
/// straight in the database (how they got there is not what is measured).
async fn add_node(
    cp: &ControlPlane,
    key: &str,
    i: usize,
    hosts: usize,
    user_id: &str,
    pool: &sqlx::PgPool,
) -> anyhow::Result<SimNode> {
    let name = format!("sim-{i:04}");
    let r = cp
        .api()
        .post("/v1/agent/enrol", json!({"key": key, "name": name}))
        .await;
    let credential = r.expect(201)["credential"].as_str().unwrap().to_owned();
    let api = cp.api().with_header("x-agent-token", &credential);
    let r = api
        .post(
            "/v1/agent/register",
            json!({"node_name": name, "agent_version": "sim", "reach_address": null}),
        )
        .await;
    let node_id = r.expect(200)["node_id"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut observed = Vec::new();
    let mut tx = pool.begin().await?;
    for h in 0..hosts {
        let id = uuid::Uuid::new_v4().to_string();
        let short: String = random_alnum(8).to_lowercase();
        sqlx::query(
            "INSERT INTO hosts (id, short_id, user_id, name, status, memory_mb, cpu_millis, pids_limit, \
             ssh_password_hash, node_id, created_at, updated_at, entry_id, address) \
             VALUES ($1, $2, $3, $4, 'running', 2048, 1000, 512, 'x', $5, $6, $6, $2, $7)",
        )
        .bind(&id)
        .bind(&short)
        .bind(user_id)
        .bind(format!("{name}-{h}"))
        .bind(&node_id)
        .bind(&now)
        .bind(format!("10.{}.{}.{}", i / 250, i % 250, h + 2))
        .execute(&mut *tx)
        .await?;
        observed.push(json!({"host_id": id, "state": "running", "address": format!("10.{}.{}.{}", i / 250, i % 250, h + 2)}));
    }
    tx.commit().await?;
    let observed = json!({"node_id": node_id, "observed": observed});
    Ok(SimNode {
        api,
        node_id,
        observed,
    })
}

pub async fn fleet(args: Vec<String>) -> anyhow::Result<()> {
    check_flags(
        &args,
        &[
            "--hosts",
            "--step",
            "--max",
            "--window",
            "--interval",
            "--replicas",
        ],
    )?;
    let hosts = usize::try_from(flag(&args, "--hosts", 100)?)?;
    let step = usize::try_from(flag(&args, "--step", 50)?)?.max(1);
    let max = usize::try_from(flag(&args, "--max", 1000)?)?;
    let window = Duration::from_secs(flag(&args, "--window", 20)?);
    let interval = Duration::from_secs(flag(&args, "--interval", 15)?.max(1));
    let sizes: &[usize] = match flag(&args, "--replicas", 0)? {
        0 => &[1, 2],
        1 => &[1],
        2 => &[2],
        n => bail!("--replicas takes 1 or 2, not {n}"),
    };
    println!(
        "fleet: simulated nodes with {hosts} hosts each, heartbeating every {interval:?}, {step} more \
         every {window:?} until p99 > {P99_BOUND:?} or {max} nodes"
    );
    for &replicas in sizes {
        let cluster = Cluster::start(true, replicas).await;
        let url = cluster._db.as_ref().unwrap().url().to_owned();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await?;
        let admin = cluster.replicas[0].admin().await;
        let user = admin
            .post(
                "/v1/admin/users",
                json!({"username": "fleet", "password": "fleet-password-1"}),
            )
            .await;
        let user_id = user.expect(201)["id"].as_str().unwrap().to_owned();
        let window_state = Arc::new(Mutex::new(Window::default()));
        let mut held = 0;
        let mut last = (Duration::ZERO, 0.0, 0.0);
        let mut nodes = 0;
        let mut beaters = Vec::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        while nodes < max {
            let key_r = admin
                .post(
                    "/v1/admin/enrolment-keys",
                    json!({"kind": "agent", "name": format!("fleet-{nodes}"), "usage_limit": step}),
                )
                .await;
            let key = key_r.expect(201)["secret"].as_str().unwrap().to_owned();
            for i in nodes..nodes + step {
                let cp = &cluster.replicas[i % replicas];
                let node = add_node(cp, &key, i, hosts, &user_id, &pool).await?;
                let (window_state, stop) = (window_state.clone(), stop.clone());
                // Spread the first beats over the interval, as agents that started apart would.
                let offset = interval.mul_f64((i % step) as f64 / step as f64);
                beaters.push(tokio::spawn(async move {
                    tokio::time::sleep(offset).await;
                    let mut tick = tokio::time::interval(interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let t = Instant::now();
                        let r = node.api.post("/v1/agent/heartbeat", node.observed.clone()).await;
                        let took = t.elapsed();
                        let mut w = window_state.lock().await;
                        if r.status == 200 {
                            w.latencies.push(took);
                        } else {
                            w.failures += 1;
                        }
                        let _ = &node.node_id;
                    }
                }));
            }
            nodes += step;
            *window_state.lock().await = Window::default();
            let (db0, cp0) = (postgres_cpu(), cluster.replicas_cpu());
            tokio::time::sleep(window).await;
            let (db1, cp1) = (postgres_cpu(), cluster.replicas_cpu());
            let w = std::mem::take(&mut *window_state.lock().await);
            let secs = window.as_secs_f64();
            let p = p99(w.latencies.clone());
            println!(
                "  {replicas} replica(s), {nodes:>5} nodes ({:>6} hosts): {:>5} heartbeats, p99 {:>6.0} ms, \
                 {} failed; CPU: database {:.0} %, replicas {:.0} %",
                nodes * hosts,
                w.latencies.len(),
                p.as_secs_f64() * 1000.0,
                w.failures,
                (db1 - db0) / secs * 100.0,
                (cp1 - cp0) / secs * 100.0
            );
            if p > P99_BOUND || w.failures > 0 {
                break;
            }
            held = nodes;
            last = (p, (db1 - db0) / secs * 100.0, (cp1 - cp0) / secs * 100.0);
        }
        stop.store(true, Ordering::Relaxed);
        for b in beaters {
            b.abort();
        }
        println!(
            "{}: holds {held} nodes ({} hosts) with heartbeat p99 {:.0} ms ≤ 1 s; database CPU {:.0} %, \
             replicas CPU {:.0} % (of one core) at that size",
            cluster.name(),
            held * hosts,
            last.0.as_secs_f64() * 1000.0,
            last.1,
            last.2
        );
        pool.close().await;
    }
    Ok(())
}
