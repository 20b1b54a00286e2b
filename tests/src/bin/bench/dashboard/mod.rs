//! `cloud-cli-proxy-bench dashboard`: the dashboard in headless Chromium against the API calls it
//! makes, and the web desktop through the VNC proxy against noVNC straight to the host.
//!
//! 1. Sign-in to overview painted: from the sign-in form's `submit` event to the first frame painted
//!    with every part of the overview filled in (host counts shown, no part still loading), `--runs`
//!    times (default 10), signing out between runs; p50 and max. Baseline: the same requests timed
//!    from here with reqwest as the page issues them: `POST /v1/auth/session`, then the overview's
//!    six GETs at once (js/pages/overview.js); the ratio of the p50s is page/API.
//! 2. The hosts page with `--hosts` hosts (default 1,000; ten per user, seeded through the API):
//!    `#/hosts` with its first page painted (50 rows and the total), the Last button to the last
//!    page, and a search (`q`, sent with Enter) narrowing to one host; p50 of each over `--runs`,
//!    against the same `GET /v1/admin/hosts?…` the page sends. The control plane runs without an
//!    agent, so the hosts are rows whose create tasks stay queued; no container is made.
//! 3. Desktop frames per second while an xterm in the host scrolls random text: the dashboard's
//!    viewer (`/ui/desktop.html`, js/desktop.js, through the VNC proxy) against noVNC from the
//!    vendored files in a page of this program's own loopback server (another origin: the
//!    dashboard's `connect-src 'self'` rightly forbids the container), connected straight to the
//!    host's websockify with the host's VNC secret, in the same browser, the same options and the
//!    same canvas size. Each path is measured for `--seconds` (default 20) after a 3 s warm-up,
//!    over `--rounds` (default 5) in which the two take turns going first; p50 of each and the
//!    ratio proxy/direct. Both pages count the FramebufferUpdates noVNC completes (its
//!    `display.flip()` calls; the dashboard viewer's `data-frames`), read the moment the page
//!    writes the count, with the page's clock.
//!
//! Page times are taken inside the page with `performance.now()`: a MutationObserver installed
//! before the action sees the awaited content; `requestAnimationFrame` then runs just before the
//! frame that shows it is painted, and a task queued from there just after, which ends the
//! measurement. WebDriver only starts the action and collects the figures.
//!
//! Parts 1 and 2 share a control plane without an agent; part 3 starts a node with its embedded
//! agent (Docker, the host image). The browser reaches only loopback and, in part 3, the one host's
//! address on the node's network. Everything is removed at the end, and on an error or a panic.
//!
//! `cargo run -p cloud-cli-proxy-tests --bin cloud-cli-proxy-bench -- dashboard [--runs N]
//! [--hosts N] [--seconds N] [--rounds N]` (root, Docker, chromium and chromedriver).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::http::header;
use cloud_cli_proxy_tests::browser::{Browser, WINDOW};
use cloud_cli_proxy_tests::docker;
use cloud_cli_proxy_tests::fixtures::random_alnum;
use cloud_cli_proxy_tests::{Api, ControlPlane, Options, process};
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{Value, json};

use super::percentile;

mod desktop;

/// The dashboard's list page size (js/list.js).
const PAGE_SIZE: usize = 50;
const HOSTS_PER_USER: usize = 10;
/// Requests in flight while seeding.
const SEED_CONCURRENCY: usize = 4;
/// What the overview asks for once signed in (js/pages/overview.js), all at once.
const OVERVIEW_GETS: [&str; 6] = [
    "/v1/admin/dashboard/stats",
    "/v1/admin/nodes?page_size=20",
    "/v1/admin/gateways?page_size=20",
    "/v1/admin/tasks?status=running&page_size=10",
    "/v1/admin/events?page_size=10",
    "/v1/admin/egress-ips?page_size=10",
];
/// How long a page may take to finish loading before a run starts.
const SETTLE: Duration = Duration::from_secs(15);

/// Times one action in the page: see the script's header.
const MEASURE: &str = include_str!("measure.js");

pub(super) struct Args {
    pub(super) runs: usize,
    pub(super) hosts: usize,
    pub(super) seconds: u64,
    pub(super) rounds: usize,
}

fn parse(args: Vec<String>) -> anyhow::Result<Args> {
    let flags = super::numeric_flags(args, &["--runs", "--hosts", "--seconds", "--rounds"])?;
    let parsed = Args {
        runs: usize::try_from(flags.get("--runs").copied().unwrap_or(10))?,
        hosts: usize::try_from(flags.get("--hosts").copied().unwrap_or(1000))?,
        seconds: flags.get("--seconds").copied().unwrap_or(20),
        rounds: usize::try_from(flags.get("--rounds").copied().unwrap_or(5))?,
    };
    if !parsed.hosts.is_multiple_of(HOSTS_PER_USER) || parsed.hosts <= PAGE_SIZE {
        bail!("--hosts must be a multiple of {HOSTS_PER_USER} above {PAGE_SIZE} (one page)");
    }
    Ok(parsed)
}

pub async fn main(args: Vec<String>) -> anyhow::Result<()> {
    let args = parse(args)?;
    let began = Instant::now();
    docker::require_docker();
    eprintln!(
        "control plane: {} (CCP_BIN_DIR picks another build)",
        process::control_plane_bin().display()
    );
    let pages = pages(&args).await?;
    let desktop = desktop::run(&args).await?;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);

    println!();
    println!("cloud-cli-proxy bench: dashboard");
    println!(
        "  {cpus} CPUs, headless Chromium with a {}x{} page, control plane {}",
        WINDOW.0,
        WINDOW.1,
        process::control_plane_bin().display()
    );
    pages.print(&args);
    desktop.print(&args);
    println!();
    println!("  wall time {:.0} s", began.elapsed().as_secs_f64());
    Ok(())
}

// ---- Parts 1 and 2: pages against the API ----

struct PageFigures {
    sign_in_page: Vec<Duration>,
    sign_in_api: Vec<Duration>,
    users: usize,
    queued: i64,
    seeding: Duration,
    query: String,
    /// [first page, last page, search] × [page, API].
    hosts: [[Vec<Duration>; 2]; 3],
}

impl PageFigures {
    fn print(&self, args: &Args) {
        println!();
        println!(
            "  1. sign-in → overview painted, {} runs ({} users and {} hosts in the database)",
            args.runs, self.users, args.hosts
        );
        println!("     {:<52} {:>9} {:>9}", "", "p50", "max");
        let row = |label: &str, t: &[Duration]| {
            let max = t.iter().max().copied().unwrap_or_default();
            println!("     {label:<52} {:>9} {:>9}", ms(percentile(t, 50.0)), ms(max));
        };
        row("page: submit → overview painted", &self.sign_in_page);
        row(
            "API: POST /v1/auth/session, then 6 GETs at once",
            &self.sign_in_api,
        );
        println!(
            "     {:<52} {:>9.2}",
            "ratio of the p50s, page/API",
            ratio(&self.sign_in_page, &self.sign_in_api)
        );
        println!();
        println!(
            "  2. hosts page, {} hosts of {} users, p50 of {} runs",
            args.hosts, self.users, args.runs
        );
        println!(
            "     (the hosts are rows whose create tasks are queued: no agent runs, no container \
             exists; {} tasks queued; seeded through the API in {:.0} s)",
            self.queued,
            self.seeding.as_secs_f64()
        );
        let last = args.hosts.div_ceil(PAGE_SIZE);
        println!("     {:<52} {:>9} {:>9} {:>7}", "", "page", "API", "ratio");
        let labels = [
            format!("#/hosts: first {PAGE_SIZE} rows and the total painted"),
            format!("Last: page {last} of {last} painted"),
            format!("search q={} (Enter) → the one host painted", self.query),
        ];
        for (label, [page, api]) in labels.iter().zip(&self.hosts) {
            println!(
                "     {label:<52} {:>9} {:>9} {:>7.2}",
                ms(percentile(page, 50.0)),
                ms(percentile(api, 50.0)),
                ratio(page, api)
            );
        }
        println!(
            "     API: GET /v1/admin/hosts?page=1&page_size={PAGE_SIZE}, ?page={last}&page_size={PAGE_SIZE}, \
             ?q=…&page=1&page_size={PAGE_SIZE}"
        );
    }
}

async fn pages(args: &Args) -> anyhow::Result<PageFigures> {
    let cp = ControlPlane::start(Options::new().env("EMBEDDED_AGENT", "false")).await;
    let base = cp.base_url();
    let (admin_name, admin_password) = (
        cp.options().admin_username.clone(),
        cp.options().admin_password.clone(),
    );
    let admin = cp.admin().await;
    let seed_start = Instant::now();
    let (users, query) = seed(&admin, args.hosts).await?;
    let seeding = seed_start.elapsed();
    let queued = admin
        .get("/v1/admin/tasks?status=queued&page_size=1")
        .await
        .total();
    eprintln!(
        "seeded {users} users and {} hosts in {:.0} s ({queued} create tasks queued)",
        args.hosts,
        seeding.as_secs_f64()
    );
    let browser = Browser::start()
        .await
        .context("this benchmark needs chromium and chromedriver")?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;

    // 1. Sign-in to the overview, page and API alternating.
    browser.goto(&format!("{base}/")).await;
    let mut sign_in_page = Vec::new();
    let mut sign_in_api = Vec::new();
    for run in 1..=args.runs {
        browser.wait_for("[data-test=login-form]").await;
        browser.fill("[data-test=login-username]", &admin_name).await;
        browser.fill("[data-test=login-password]", &admin_password).await;
        let page = page_time(
            &browser,
            json!({ "kind": "submit", "css": "[data-test=login-submit]" }),
            json!([
                ["[data-test=hosts-by-status]", 1, 1, null],
                ["[data-test=main] .loading", 0, 0, null],
            ]),
        )
        .await
        .with_context(|| format!("sign-in run {run}"))?;
        if browser
            .exec_js(
                "return document.querySelectorAll('[data-test=main] .alert-error').length",
                vec![],
            )
            .await
            != 0
        {
            bail!("the overview shows an error after sign-in run {run}");
        }
        browser.click("[data-test=signout]").await;

        let t0 = Instant::now();
        let session = ApiSession::sign_in(&http, &base, &admin_name, &admin_password).await?;
        futures::future::try_join_all(OVERVIEW_GETS.iter().map(|path| session.get(path))).await?;
        let api = t0.elapsed();
        session.sign_out().await?;
        eprintln!("  sign-in {run:>2}: page {:>9}   API {:>9}", ms(page), ms(api));
        sign_in_page.push(page);
        sign_in_api.push(api);
    }

    // 2. The hosts page, from a light page each run.
    sign_in(&browser, &cp).await;
    let session = ApiSession::sign_in(&http, &base, &admin_name, &admin_password).await?;
    let last = args.hosts.div_ceil(PAGE_SIZE);
    let last_rows = args.hosts - (last - 1) * PAGE_SIZE;
    let api_paths = [
        format!("/v1/admin/hosts?page=1&page_size={PAGE_SIZE}"),
        format!("/v1/admin/hosts?page={last}&page_size={PAGE_SIZE}"),
        format!("/v1/admin/hosts?q={query}&page=1&page_size={PAGE_SIZE}"),
    ];
    let found = session.get(&api_paths[2]).await?;
    if found["total_records"] != 1 {
        bail!("the search for {query} should find one host: {found}");
    }
    let mut hosts: [[Vec<Duration>; 2]; 3] = Default::default();
    for run in 1..=args.runs {
        browser.exec_js("location.hash = '#/tokens';", vec![]).await;
        settled(&browser).await?;
        let first = page_time(
            &browser,
            json!({ "kind": "hash", "value": "#/hosts" }),
            json!([
                ["[data-test=host-row]", PAGE_SIZE, PAGE_SIZE, null],
                [
                    "[data-test=pager] > .muted",
                    1,
                    1,
                    format!("{} records", args.hosts)
                ],
            ]),
        )
        .await
        .with_context(|| format!("hosts run {run}: first page"))?;
        let paged = page_time(
            &browser,
            json!({ "kind": "click", "css": "[data-test=page-last]" }),
            json!([
                ["[data-test=page-current]", 1, 1, format!("Page {last} of {last}")],
                ["[data-test=host-row]", last_rows, last_rows, null],
            ]),
        )
        .await
        .with_context(|| format!("hosts run {run}: last page"))?;
        let searched = page_time(
            &browser,
            json!({ "kind": "enter", "css": "[data-test=hosts-search]", "value": query.as_str() }),
            json!([
                ["[data-test=host-row]", 1, 1, null],
                ["[data-test=pager] > .muted", 1, 1, "1 record"],
            ]),
        )
        .await
        .with_context(|| format!("hosts run {run}: search"))?;
        let mut api = [Duration::ZERO; 3];
        for (i, path) in api_paths.iter().enumerate() {
            let t0 = Instant::now();
            session.get(path).await?;
            api[i] = t0.elapsed();
        }
        for (i, page) in [first, paged, searched].into_iter().enumerate() {
            hosts[i][0].push(page);
            hosts[i][1].push(api[i]);
        }
        eprintln!(
            "  hosts {run:>2}: first {:>9} / {:>9}   last {:>9} / {:>9}   search {:>9} / {:>9}  (page / API)",
            ms(first),
            ms(api[0]),
            ms(paged),
            ms(api[1]),
            ms(searched),
            ms(api[2])
        );
    }
    browser.shot("hosts-search").await;
    session.sign_out().await?;
    drop(browser);
    Ok(PageFigures {
        sign_in_page,
        sign_in_api,
        users,
        queued,
        seeding,
        query,
        hosts,
    })
}

/// Signs the operator in through the form and waits for the overview's host counts.
pub(super) async fn sign_in(browser: &Browser, cp: &ControlPlane) {
    browser.wait_for("[data-test=login-form]").await;
    let opts = cp.options();
    browser.sign_in(&opts.admin_username, &opts.admin_password).await;
    browser.wait_for("[data-test=hosts-by-status]").await;
}

/// Creates `hosts / 10` users with ten hosts each; returns the number of users and the short id
/// of one host in the middle, to search for.
async fn seed(admin: &Api, hosts: usize) -> anyhow::Result<(usize, String)> {
    let users = hosts / HOSTS_PER_USER;
    let user_ids: Vec<String> = futures::stream::iter(0..users)
        .map(|i| async move {
            let name = format!("bench-u{i:04}");
            let user = admin.create_user(&name, &random_alnum(16)).await;
            cloud_cli_proxy_tests::fixtures::id(&user)
        })
        .buffered(SEED_CONCURRENCY)
        .collect()
        .await;
    let short_ids: Vec<String> = futures::stream::iter(0..hosts)
        .map(|i| {
            let user_id = user_ids[i / HOSTS_PER_USER].clone();
            async move {
                let r = admin
                    .post(
                        "/v1/admin/hosts",
                        json!({ "user_id": user_id, "name": format!("bench-{i:04}") }),
                    )
                    .await;
                r.expect(201)["short_id"]
                    .as_str()
                    .map(str::to_owned)
                    .context("a created host without short_id")
            }
        })
        .buffered(SEED_CONCURRENCY)
        .try_collect()
        .await?;
    Ok((users, short_ids[hosts / 2].clone()))
}

/// Times `action` in the page until it shows `want` (see [`MEASURE`]): from the action to the
/// frame painted after it.
async fn page_time(browser: &Browser, action: Value, want: Value) -> anyhow::Result<Duration> {
    let out = browser
        .client()
        .execute_async(MEASURE, vec![action.clone(), want])
        .await
        .with_context(|| format!("timing {action} in the page"))?;
    if let Some(error) = out.get("error") {
        bail!("timing {action}: {error}");
    }
    match (out["start"].as_f64(), out["painted"].as_f64()) {
        (Some(start), Some(painted)) if painted >= start => {
            Ok(Duration::from_secs_f64((painted - start) / 1000.0))
        }
        _ => bail!("timing {action}: the page answered {out}"),
    }
}

/// Waits until nothing in the page's main area is still loading.
async fn settled(browser: &Browser) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let loading = browser
            .exec_js(
                "const m = document.querySelector('[data-test=main]'); \
                 return !m || m.childElementCount === 0 || !!m.querySelector('.loading');",
                vec![],
            )
            .await;
        if loading == false {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} still loading after {SETTLE:?}", browser.url().await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A browser session of the API, driven as the dashboard drives it: the session cookie, JSON.
struct ApiSession<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    cookie: String,
    csrf: String,
}

impl<'a> ApiSession<'a> {
    async fn sign_in(
        http: &'a reqwest::Client,
        base: &'a str,
        username: &str,
        password: &str,
    ) -> anyhow::Result<Self> {
        let resp = http
            .post(format!("{base}/v1/auth/session"))
            .header(header::ACCEPT, "application/json")
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await?;
        if resp.status() != 200 {
            bail!("POST /v1/auth/session: {}", resp.status());
        }
        let cookie = resp
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .context("POST /v1/auth/session set no cookie")?
            .to_owned();
        let body: Value = resp.json().await?;
        let csrf = body["csrf_token"]
            .as_str()
            .context("no csrf_token in the session")?
            .to_owned();
        Ok(Self {
            http,
            base,
            cookie,
            csrf,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(header::ACCEPT, "application/json")
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        if resp.status() != 200 {
            bail!("GET {path}: {}", resp.status());
        }
        Ok(resp.json().await?)
    }

    async fn sign_out(self) -> anyhow::Result<()> {
        let resp = self
            .http
            .delete(format!("{}/v1/auth/session", self.base))
            .header(header::COOKIE, &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .send()
            .await?;
        if resp.status() != 204 {
            bail!("DELETE /v1/auth/session: {}", resp.status());
        }
        Ok(())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn ratio(page: &[Duration], api: &[Duration]) -> f64 {
    percentile(page, 50.0).as_secs_f64() / percentile(api, 50.0).as_secs_f64()
}
