//! Part 3 of `cloud-cli-proxy-bench dashboard`: the web desktop's frames per second through the
//! dashboard's viewer and the VNC proxy, against noVNC straight to the host (see `dashboard.rs`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Component, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use cloud_cli_proxy_tests::browser::{Browser, WINDOW};
use cloud_cli_proxy_tests::docker::{self, docker_ok};
use cloud_cli_proxy_tests::hosts::{ACTION_LIMIT, CREATE_LIMIT, linux_user};
use cloud_cli_proxy_tests::{ControlPlane, Node, eventually};
use serde_json::{Value, json};

use super::Args;

/// A viewer's time between connecting and the start of its measurement.
const WARM_UP: Duration = Duration::from_secs(3);
/// The desktop's scroller, run as the host's user on its display.
const SCROLLER: &str = "while :; do head -c 4000 /dev/urandom | base64; done";
const XAUTHORITY: &str = "/run/host-init/x11/Xauthority";
/// TigerVNC's `FrameRate` default, which the host image keeps.
const XVNC_FRAME_RATE: u32 = 60;

/// The page of the direct path and its files (served by [`DirectPage`]).
const DIRECT_HTML: &str = include_str!("direct.html");
const DIRECT_JS: &str = include_str!("direct.js");
const DIRECT_CSS: &str = include_str!("direct.css");

pub(super) struct DesktopFigures {
    canvas: (u64, u64),
    /// Frames per second of each round: [through the proxy, direct].
    fps: [Vec<f64>; 2],
    shots: Vec<PathBuf>,
}

impl DesktopFigures {
    pub(super) fn print(&self, args: &Args) {
        println!();
        println!(
            "  3. desktop frames per second, an xterm scrolling random text; {} s per path after a \
             {} s warm-up, {} rounds with each path first in turn; canvas {}x{} on both",
            args.seconds,
            WARM_UP.as_secs(),
            args.rounds,
            self.canvas.0,
            self.canvas.1
        );
        println!("     {:<52} {:>9} {:>9} {:>9}", "", "p50", "min", "max");
        let labels = [
            "dashboard viewer through the VNC proxy",
            "noVNC straight to the host's websockify",
        ];
        for (label, fps) in labels.iter().zip(&self.fps) {
            let min = fps.iter().copied().fold(f64::INFINITY, f64::min);
            let max = fps.iter().copied().fold(0.0, f64::max);
            println!(
                "     {label:<52} {:>5.1} fps {:>5.1} fps {:>5.1} fps",
                median(fps),
                min,
                max
            );
        }
        println!(
            "     {:<52} {:>9.2}",
            "ratio of the p50s, proxy/direct",
            median(&self.fps[0]) / median(&self.fps[1])
        );
        println!(
            "     (Xvnc sends a client at most {XVNC_FRAME_RATE} updates per second, its FrameRate \
             default: near that, the server sets the pace, not the path)"
        );
        println!("     for context: noVNC reached 8.4 fps against 13.2 for a native viewer");
        for shot in &self.shots {
            println!("     screenshot: {}", shot.display());
        }
    }
}

pub(super) async fn run(args: &Args) -> anyhow::Result<DesktopFigures> {
    let node = Node::embedded(&[]).await;
    let base = node.cp.base_url();
    let username = "bench";
    let user_id = node.user(username).await;
    let host = node.create_host(&user_id).await;
    node.task_succeeded(&host.task_id, CREATE_LIMIT, "create").await;
    // The first request starts the desktop: wait until websockify answers through the proxy.
    let page = format!("/v1/admin/hosts/{}/vnc/vnc.html", host.id);
    eventually(Duration::from_secs(90), "noVNC through the proxy", || async {
        (node.admin.get(&page).await.status == 200).then_some(())
    })
    .await;
    let secret = vnc_secret(&node.cp, &host.id).await?;
    let ip = node.host_ip(&host.short_id).await;
    let container = node.host_container(&host.short_id);
    let user = linux_user(username);
    docker_ok(&[
        "exec",
        "-d",
        "-u",
        &user,
        "-e",
        "DISPLAY=:1",
        "-e",
        &format!("XAUTHORITY={XAUTHORITY}"),
        &container,
        "xterm",
        "-geometry",
        "160x50+0+0",
        "-e",
        "sh",
        "-c",
        SCROLLER,
    ])
    .await;
    eventually(Duration::from_secs(20), "the xterm in the host", || async {
        docker::docker(&["exec", &container, "pgrep", "-u", &user, "-x", "xterm"])
            .await
            .success()
            .then_some(())
    })
    .await;

    let browser = Browser::start_reaching(WINDOW, &[IpAddr::V4(ip)])
        .await
        .context("this benchmark needs chromium and chromedriver")?;
    browser.goto(&format!("{base}/")).await;
    super::sign_in(&browser, &node.cp).await;

    let proxy = Viewer {
        url: format!("{base}/ui/desktop.html?scope=admin&host={}", host.id),
        css: "[data-test=desktop-viewer]",
    };
    browser.goto(&proxy.url).await;
    browser
        .wait_for("[data-test=desktop-viewer][data-state=connected]")
        .await;
    let size = browser
        .exec_js(
            "const r = document.querySelector('[data-test=desktop-viewer] .screen').getBoundingClientRect(); \
             return [Math.round(r.width), Math.round(r.height)];",
            vec![],
        )
        .await;
    let server = DirectPage::serve(json!({
        "url": format!("ws://{}/websockify", SocketAddr::from((ip, 6080))),
        "password": secret,
        "width": size[0],
        "height": size[1],
    }))
    .await?;
    let direct = Viewer {
        url: server.url.clone(),
        css: "[data-test=direct-viewer]",
    };

    let mut fps = [Vec::new(), Vec::new()];
    let mut canvases = Vec::new();
    let mut shots = Vec::new();
    let paths = [("proxy", &proxy), ("direct", &direct)];
    for round in 1..=args.rounds {
        // Proxy first in odd rounds, direct first in even ones: neither always follows the other.
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for which in order {
            let (name, viewer) = paths[which];
            let sample = viewer
                .measure(&browser, Duration::from_secs(args.seconds))
                .await
                .with_context(|| format!("round {round}, {name}"))?;
            if round == 1 {
                // While the measured connection is still open: both must show the xterm.
                shots.push(browser.shot(&format!("desktop-{name}")).await);
            }
            eprintln!(
                "  desktop round {round}: {name:<6} {:>5.1} fps ({} frames, canvas {}x{})",
                sample.fps, sample.frames, sample.canvas.0, sample.canvas.1
            );
            fps[which].push(sample.fps);
            canvases.push(sample.canvas);
        }
    }
    drop(server);
    drop(browser);
    let r = node.admin.delete(&format!("/v1/admin/hosts/{}", host.id)).await;
    if r.status != 202 {
        bail!("delete the host: {} {}", r.status, r.text);
    }
    node.host_gone(&host.id, ACTION_LIMIT * 2).await;

    let canvas = canvases[0];
    if canvases.iter().any(|c| *c != canvas) {
        bail!("the two paths drew canvases of different sizes: {canvases:?}");
    }
    Ok(DesktopFigures { canvas, fps, shots })
}

/// One way to see the desktop: a page and its viewer element (`data-state`, `data-frames`).
struct Viewer {
    url: String,
    css: &'static str,
}

struct Sample {
    fps: f64,
    frames: u64,
    canvas: (u64, u64),
}

impl Viewer {
    /// Opens the page, waits for the connection and the warm-up, then counts frames for `window`.
    async fn measure(&self, browser: &Browser, window: Duration) -> anyhow::Result<Sample> {
        browser.goto(&self.url).await;
        browser
            .wait_for(&format!("{}[data-state=connected]", self.css))
            .await;
        tokio::time::sleep(WARM_UP).await;
        let before = self.read(browser).await?;
        tokio::time::sleep(window).await;
        let after = self.read(browser).await?;
        if after.state != "connected" {
            bail!("the viewer is {} after the measurement", after.state);
        }
        let frames = after.frames.saturating_sub(before.frames);
        let secs = (after.at - before.at) / 1000.0;
        Ok(Sample {
            fps: frames as f64 / secs,
            frames,
            canvas: after.canvas,
        })
    }

    /// The viewer's frame count the moment it next writes it (every 250 ms while frames come),
    /// with the page's time then: a count and a time that belong together.
    async fn read(&self, browser: &Browser) -> anyhow::Result<Reading> {
        let v = browser
            .client()
            .execute_async(
                "const [css, done] = arguments; \
                 const el = document.querySelector(css); \
                 if (!el) { done({ error: `nothing matches ${css}` }); return; } \
                 const observer = new MutationObserver(() => { \
                   observer.disconnect(); \
                   const c = el.querySelector('canvas'); \
                   done({ frames: Number(el.dataset.frames), at: performance.now(), \
                          state: el.dataset.state, canvas: c ? [c.width, c.height] : [0, 0] }); \
                 }); \
                 observer.observe(el, { attributes: true, attributeFilter: ['data-frames'] });",
                vec![json!(self.css)],
            )
            .await
            .context("no new frame count within the script timeout: is the screen still changing?")?;
        if let Some(error) = v.get("error") {
            bail!("{error}");
        }
        Ok(Reading {
            frames: v["frames"].as_u64().context("data-frames")?,
            at: v["at"].as_f64().context("performance.now()")?,
            state: v["state"].as_str().unwrap_or("").to_owned(),
            canvas: (
                v["canvas"][0].as_u64().unwrap_or(0),
                v["canvas"][1].as_u64().unwrap_or(0),
            ),
        })
    }
}

struct Reading {
    frames: u64,
    /// `performance.now()` of the page, in milliseconds.
    at: f64,
    state: String,
    canvas: (u64, u64),
}

/// The host's VNC secret, from the control plane's database (stored sealed; opened with the key
/// file beside it).
async fn vnc_secret(cp: &ControlPlane, host_id: &str) -> anyhow::Result<String> {
    use control_plane::secrets::{field, keyfile};

    let pool = sqlx::SqlitePool::connect(&format!("{}?mode=ro", cp.database_url())).await?;
    let (sealed,): (String,) = sqlx::query_as("SELECT vnc_secret FROM hosts WHERE id = ?")
        .bind(host_id)
        .fetch_one(&pool)
        .await
        .context("the host's vnc_secret")?;
    pool.close().await;
    let dir = cp.db_path().parent().context("the database's folder")?;
    let key = keyfile::load(&dir.join("secrets.key")).context("the secrets key")?;
    key.open(field::HOST_VNC_SECRET, &sealed)
        .context("open the host's vnc_secret")
}

/// The direct path's page on a loopback port of its own: the page, its script and style, its
/// configuration (the host's address and VNC secret, the canvas size), and noVNC's files and the
/// viewer's frame counter read from `control-plane/web/` on disk. Stops when dropped.
struct DirectPage {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl DirectPage {
    async fn serve(config: Value) -> anyhow::Result<Self> {
        use axum::routing::get;
        let web = docker::workspace_root().join("control-plane/web");
        let (novnc, js) = (web.join("vendor/novnc"), web.join("js"));
        let app = axum::Router::new()
            .route("/", get(|| async { Html(DIRECT_HTML) }))
            .route(
                "/direct.js",
                get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], DIRECT_JS) }),
            )
            .route(
                "/direct.css",
                get(|| async { ([(header::CONTENT_TYPE, "text/css")], DIRECT_CSS) }),
            )
            .route("/config.json", get(move || async move { axum::Json(config) }))
            // The dashboard viewer's own frame counter, so both paths count alike.
            .route(
                "/frames.js",
                get(move || file(js.clone(), "frames.js".to_owned())),
            )
            .route(
                "/novnc/{*path}",
                get(move |axum::extract::Path(path): axum::extract::Path<String>| file(novnc.clone(), path)),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("the direct page's server stopped: {e}");
            }
        });
        Ok(Self {
            url: format!("http://{addr}/"),
            task,
        })
    }
}

impl Drop for DirectPage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A file under `root` (noVNC's, or the dashboard's frame counter); scripts as JavaScript (module
/// scripts need the type).
async fn file(root: PathBuf, path: String) -> Response {
    let rel = std::path::Path::new(&path);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let content_type = if path.ends_with(".js") {
        "text/javascript"
    } else {
        "application/octet-stream"
    };
    match tokio::fs::read(root.join(rel)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        f64::midpoint(sorted[n / 2 - 1], sorted[n / 2])
    }
}
