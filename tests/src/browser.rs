//! A real headless Chromium for the dashboard's browser tests, driven over WebDriver: one
//! `chromedriver` per [`Browser`] on a free loopback port, one session in it, and helpers that wait
//! with a deadline and fail with the page's URL and a screenshot.
//!
//! Chromium must not reach past the machine. Besides the switches that turn off its background
//! services (component and extension updates, sync, metrics, translation, optimization hints,
//! network time), two catch-alls stop whatever a new version adds: `--host-resolver-rules` makes
//! every name other than `localhost` unresolvable without asking DNS, and `--proxy-server` sends all
//! non-loopback traffic (an IP literal included) to a closed loopback port. Loopback is never
//! proxied, so the server under test is reached directly. [`Browser::start_reaching`] lets a page
//! also reach a few given addresses (containers on a network the caller created) past both
//! catch-alls, and nothing else. Debian's `/usr/bin/chromium` is a shell
//! launcher that adds Google API keys and remote extensions from `/etc/chromium.d`; the harness runs
//! the binary behind it so the flags below are the whole story. `HOME` and the XDG directories point
//! into the browser's temporary directory, so nothing is written to the real home (crash-report
//! database, dconf, NSS).
//!
//! CSP violations and uncaught script errors are recorded by a small script installed through
//! chromedriver's DevTools passthrough (`POST /session/{id}/goog/cdp/execute` with
//! `Page.addScriptToEvaluateOnNewDocument`): Chromium runs it in every new document before any of
//! the page's own scripts, so a violation raised while the `<head>` is parsed is caught too, which a
//! script injected after navigation would miss. [`Browser::violations`] and [`Browser::js_errors`]
//! read what the current document recorded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use fantoccini::error::CmdError;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::process::Logs;

pub use fantoccini::elements::Element;
pub use fantoccini::key::Key;

/// The page size of [`Browser::start`]: a laptop screen.
pub const WINDOW: (u32, u32) = (1280, 860);
/// A phone held upright, for the narrow-screen layout.
pub const NARROW_WINDOW: (u32, u32) = (390, 844);
/// How long the waiting helpers wait before failing the test ([`Browser::set_wait`] changes it).
pub const WAIT: Duration = Duration::from_secs(15);

/// How long chromedriver may take to answer `/status` with `ready`.
const DRIVER_START: Duration = Duration::from_secs(30);
/// How long creating the session (starting Chromium) may take.
const SESSION_START: Duration = Duration::from_secs(60);
/// How long ending the session (Chromium shutting down) may take before everything is killed.
const QUIT: Duration = Duration::from_secs(10);
/// How long the processes of a killed browser may take to be gone.
const GONE: Duration = Duration::from_secs(5);
/// How long a navigation and a script may take before chromedriver gives up on them.
const PAGE_LOAD: Duration = Duration::from_secs(60);
const SCRIPT: Duration = Duration::from_secs(30);
/// How long the URL and the screenshot of a failure may take: the page may be what hangs.
const DIAGNOSE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// Where the harness looks for the programs, and what the skip or failure message names.
const CHROMEDRIVER_ENV: &str = "CCP_CHROMEDRIVER";
const CHROMIUM_ENV: &str = "CCP_CHROMIUM";
const REQUIRE_ENV: &str = "CCP_REQUIRE_BROWSER";
const DEBIAN_PACKAGES: &str = "chromium chromium-driver";
/// The browser binary behind Debian's `/usr/bin/chromium` launcher script.
const DEBIAN_CHROMIUM: &str = "/usr/lib/chromium/chromium";
/// Where non-loopback traffic is sent: the discard port, on which nothing listens here.
const DEAD_PROXY: &str = "http://127.0.0.1:9";

/// Chromium's switches besides the window size and the profile directory.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    // The tests run as root, where Chromium refuses its sandbox.
    "--no-sandbox",
    "--disable-gpu",
    // /dev/shm is small in containers; shared memory goes to /tmp instead.
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-search-engine-choice-screen",
    "--disable-extensions",
    "--disable-component-extensions-with-background-pages",
    "--disable-default-apps",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-field-trial-config",
    "--metrics-recording-only",
    "--no-pings",
    // Chromium still starts two crashpad handlers, each in a session of its own: their database is
    // under XDG_CONFIG_HOME (the temporary directory), and they exit with Chromium.
    // (`--disable-crashpad-for-testing` would spare them but leaves the renderer unresponsive.)
    "--disable-breakpad",
    "--password-store=basic",
    "--disable-features=OptimizationHints,OptimizationHintsFetching,OptimizationTargetPrediction,\
     Translate,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication,NetworkTimeServiceQuerying",
];

/// The first catch-all (see the module documentation): no name resolves but these.
const RESOLVER_RULES: &str = "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1";

/// Records CSP violations and uncaught errors of the document into a global the harness reads.
/// Installed before any page script runs; `error` events of failed resource loads are not
/// `ErrorEvent`s and are left out.
const RECORDER: &str = r#"(() => {
  if (Object.prototype.hasOwnProperty.call(window, '__ccpRecorder')) return;
  const seen = { violations: [], errors: [] };
  Object.defineProperty(window, '__ccpRecorder', { value: seen });
  window.addEventListener('securitypolicyviolation', (e) => {
    seen.violations.push({
      directive: e.effectiveDirective || e.violatedDirective || '',
      blocked_uri: e.blockedURI || '',
      source_file: e.sourceFile || '',
      line: e.lineNumber || 0,
      sample: e.sample || '',
      disposition: e.disposition || '',
    });
  }, true);
  window.addEventListener('error', (e) => {
    if (!(e instanceof ErrorEvent)) return;
    seen.errors.push({
      message: e.message || String(e.error),
      source: e.filename || '',
      line: e.lineno || 0,
      column: e.colno || 0,
    });
  }, true);
  window.addEventListener('unhandledrejection', (e) => {
    const reason = e.reason && e.reason.message ? e.reason.message : String(e.reason);
    seen.errors.push({ message: 'Unhandled promise rejection: ' + reason, source: '', line: 0, column: 0 });
  }, true);
})();"#;

/// A Content-Security-Policy violation the page reported (`securitypolicyviolation`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CspViolation {
    /// The directive that refused, e.g. `script-src-elem`.
    pub directive: String,
    /// `inline`, `eval`, or the refused URL.
    pub blocked_uri: String,
    pub source_file: String,
    pub line: u64,
    /// The first characters of a refused inline script or style.
    pub sample: String,
    /// `enforce` or `report`.
    pub disposition: String,
}

/// An uncaught script error or unhandled promise rejection of the page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JsError {
    pub message: String,
    pub source: String,
    pub line: u64,
    pub column: u64,
}

/// A cookie as the browser holds it for the current page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None`, when the browser reports one.
    pub same_site: Option<String>,
    pub path: Option<String>,
    pub domain: Option<String>,
}

/// A headless Chromium with its chromedriver. Dropping it ends the session, kills chromedriver
/// and anything left of Chromium, and removes the profile; when the test is panicking it first
/// saves a screenshot of the page.
pub struct Browser {
    client: Client,
    session: String,
    driver: Driver,
    /// Names the screenshots: the test's name.
    label: String,
    wait: Duration,
    failures: AtomicU32,
    /// A helper already saved a screenshot for the failure, so `Drop` need not.
    failure_shot: AtomicBool,
    // Declared last: removed after the processes that write into it are gone.
    _home: TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("session", &self.session)
            .field("driver_port", &self.driver.port)
            .field("label", &self.label)
            .finish()
    }
}

/// The answer of one probe of a waiting helper.
enum Probe<T> {
    Ready(T),
    /// Not yet; what was seen instead, for the failure message.
    Waiting(String),
    /// An error that waiting will not cure.
    Failed(String),
}

impl Browser {
    /// A browser whose page is [`WINDOW`] in size; `None` (after a line on stderr) when chromium or
    /// chromedriver is not installed, unless `CCP_REQUIRE_BROWSER=1`, which makes that a failure.
    pub async fn start() -> Option<Self> {
        Self::start_with(WINDOW).await
    }

    /// Like [`Browser::start`] with a page of `(width, height)` CSS pixels (`innerWidth` and
    /// `innerHeight`, and the size of screenshots), e.g. [`NARROW_WINDOW`].
    pub async fn start_with(window: (u32, u32)) -> Option<Self> {
        Self::start_reaching(window, &[]).await
    }

    /// Like [`Browser::start_with`], and pages may also reach `direct` (e.g. a container on a
    /// network the caller created) without going through the dead proxy.
    pub async fn start_reaching(window: (u32, u32), direct: &[IpAddr]) -> Option<Self> {
        let (driver_bin, chromium) = match (chromedriver_bin(), chromium_bin()) {
            (Ok(d), Ok(c)) => (d, c),
            (Err(why), _) | (_, Err(why)) => {
                assert!(
                    std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
                    "{REQUIRE_ENV}=1 but {why}: install the Debian packages {DEBIAN_PACKAGES}"
                );
                eprintln!(
                    "skipping browser test: {why} (Debian packages: {DEBIAN_PACKAGES}; \
                     {REQUIRE_ENV}=1 makes this a failure)"
                );
                return None;
            }
        };
        let home = tempfile::Builder::new()
            .prefix("ccp-browser-")
            .tempdir()
            .expect("temp dir for the browser");
        let driver = Driver::start(&driver_bin, home.path()).await;
        let profile = home.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        let mut rules = RESOLVER_RULES.to_owned();
        for ip in direct {
            rules.push_str(&format!(", EXCLUDE {ip}"));
        }
        args.push(format!("--host-resolver-rules={rules}"));
        args.push(format!("--proxy-server={DEAD_PROXY}"));
        if !direct.is_empty() {
            let list: Vec<String> = direct.iter().map(IpAddr::to_string).collect();
            args.push(format!("--proxy-bypass-list={}", list.join(";")));
        }
        args.push(format!("--window-size={},{}", window.0, window.1));
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            // chromedriver's own 300 s would outlast any test's patience.
            "timeouts": { "pageLoad": PAGE_LOAD.as_millis(), "script": SCRIPT.as_millis() },
            "goog:chromeOptions": { "binary": chromium, "args": args },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let url = format!("http://127.0.0.1:{}", driver.port);
        let client = match tokio::time::timeout(SESSION_START, builder.connect(&url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "chromedriver could not start {}: {e}; its output:\n{}",
                chromium.display(),
                driver.logs.text()
            ),
            Err(_) => panic!(
                "chromedriver did not start {} within {SESSION_START:?}; its output:\n{}",
                chromium.display(),
                driver.logs.text()
            ),
        };
        let session = client
            .session_id()
            .await
            .expect("session id")
            .expect("chromedriver gave no session id");
        let browser = Self {
            client,
            session,
            driver,
            label: test_label(),
            wait: WAIT,
            failures: AtomicU32::new(0),
            failure_shot: AtomicBool::new(false),
            _home: home,
        };
        browser
            .cdp(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": RECORDER }),
            )
            .await;
        // Headless Chromium still reserves room for a toolbar (a 1280x860 window has a 1280x717
        // page) and keeps windows at least 500 wide; the page gets exactly the size asked for.
        browser
            .cdp(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": window.0, "height": window.1, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
        Some(browser)
    }

    /// How long the waiting helpers wait from now on.
    pub fn set_wait(&mut self, limit: Duration) {
        self.wait = limit;
    }

    /// The WebDriver client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// What chromedriver and Chromium wrote on stdout and stderr so far.
    pub fn driver_logs(&self) -> String {
        self.driver.logs.text()
    }

    /// Opens `url` and waits for its `load` event.
    pub async fn goto(&self, url: &str) {
        if let Err(e) = self.client.goto(url).await {
            self.fail(format!("goto({url:?}): {e}")).await
        }
    }

    /// The address of the current page.
    pub async fn url(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => panic!("the browser could not say its URL: {e}"),
        }
    }

    /// The first element matching `css`, once there is one.
    pub async fn wait_for(&self, css: &str) -> Element {
        self.until(&format!("wait_for({css:?})"), async || {
            match self.find(css).await {
                Ok(Some(el)) => Probe::Ready(el),
                Ok(None) => Probe::Waiting("no element matches".to_owned()),
                Err(e) => Probe::Failed(e.to_string()),
            }
        })
        .await
    }

    /// Waits until the text of the first element matching `css` contains `needle`; returns the text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let what = format!("wait_for_text({css:?}, {needle:?})");
        self.until(&what, async || match self.find(css).await {
            Ok(Some(el)) => match el.text().await {
                Ok(text) if text.contains(needle) => Probe::Ready(text),
                Ok(text) => Probe::Waiting(format!("the text is {text:?}")),
                Err(e) => retry_on(e, "the element went away"),
            },
            Ok(None) => Probe::Waiting("no element matches".to_owned()),
            Err(e) => Probe::Failed(e.to_string()),
        })
        .await
    }

    /// Waits until no element matches `css`.
    pub async fn wait_gone(&self, css: &str) {
        self.until(&format!("wait_gone({css:?})"), async || {
            match self.client.find_all(Locator::Css(css)).await {
                Ok(found) if found.is_empty() => Probe::Ready(()),
                Ok(found) => Probe::Waiting(format!("{} elements match", found.len())),
                Err(e) => Probe::Failed(e.to_string()),
            }
        })
        .await
    }

    /// Clicks the first element matching `css`, waiting until it exists and can be clicked.
    pub async fn click(&self, css: &str) {
        self.until(&format!("click({css:?})"), async || match self.find(css).await {
            Ok(Some(el)) => match el.click().await {
                Ok(()) => Probe::Ready(()),
                Err(e) => retry_on(e, "it cannot be clicked"),
            },
            Ok(None) => Probe::Waiting("no element matches".to_owned()),
            Err(e) => Probe::Failed(e.to_string()),
        })
        .await
    }

    /// Empties the field matching `css`, then types `text` into it.
    pub async fn fill(&self, css: &str, text: &str) {
        self.until(&format!("fill({css:?})"), async || match self.find(css).await {
            Ok(Some(el)) => match el.clear().await {
                Ok(()) => match el.send_keys(text).await {
                    Ok(()) => Probe::Ready(()),
                    Err(e) => retry_on(e, "it takes no typing"),
                },
                Err(e) => retry_on(e, "it cannot be cleared"),
            },
            Ok(None) => Probe::Waiting("no element matches".to_owned()),
            Err(e) => Probe::Failed(e.to_string()),
        })
        .await
    }

    /// Types `keys` into the element matching `css`: text with [`Key`]s in it, e.g. `&Key::Enter`,
    /// `&(Key::Control + "a")` (a modifier stays down until [`Key::Null`] or the end of `keys`).
    pub async fn key(&self, css: &str, keys: &str) {
        self.until(&format!("key({css:?}, {keys:?})"), async || {
            match self.find(css).await {
                Ok(Some(el)) => match el.send_keys(keys).await {
                    Ok(()) => Probe::Ready(()),
                    Err(e) => retry_on(e, "it takes no typing"),
                },
                Ok(None) => Probe::Waiting("no element matches".to_owned()),
                Err(e) => Probe::Failed(e.to_string()),
            }
        })
        .await
    }

    /// Types a username and password into the dashboard's sign-in form and sends it.
    pub async fn sign_in(&self, username: &str, password: &str) {
        self.fill("[data-test=login-username]", username).await;
        self.fill("[data-test=login-password]", password).await;
        self.click("[data-test=login-submit]").await;
    }

    /// The rendered text of the first element matching `css`, once there is one.
    pub async fn text(&self, css: &str) -> String {
        self.until(&format!("text({css:?})"), async || match self.find(css).await {
            Ok(Some(el)) => match el.text().await {
                Ok(text) => Probe::Ready(text),
                Err(e) => retry_on(e, "the element went away"),
            },
            Ok(None) => Probe::Waiting("no element matches".to_owned()),
            Err(e) => Probe::Failed(e.to_string()),
        })
        .await
    }

    /// Runs `script` as the body of a function in the page (`arguments` holds `args`) and returns
    /// what it returns; a script that throws fails the test.
    pub async fn exec_js(&self, script: &str, args: Vec<Value>) -> Value {
        match self.client.execute(script, args).await {
            Ok(v) => v,
            Err(e) => self.fail(format!("exec_js({script:?}): {e}")).await,
        }
    }

    /// The framebuffer updates the dashboard's desktop viewer has completed (its `data-frames`; 0
    /// before it has one).
    pub async fn viewer_frames(&self) -> u64 {
        let script =
            "return Number(document.querySelector('[data-test=desktop-viewer]').dataset.frames || 0);";
        self.exec_js(script, vec![]).await.as_u64().unwrap_or(0)
    }

    /// Sends a DevTools command through chromedriver to the session's window; returns its result.
    pub async fn cdp(&self, method: &str, params: Value) -> Value {
        let cmd = Cdp {
            method: method.to_owned(),
            params,
        };
        match self.client.issue_cmd(cmd).await {
            Ok(v) => v,
            Err(e) => self.fail(format!("DevTools {method}: {e}")).await,
        }
    }

    /// Writes a PNG of the window to `path` (creating its directory).
    pub async fn screenshot(&self, path: &Path) {
        if let Err(e) = self.try_screenshot(path).await {
            panic!("screenshot to {}: {e}", path.display());
        }
    }

    /// Writes `<target>/browser-shots/<test>-<name>.png` and returns its path.
    pub async fn shot(&self, name: &str) -> PathBuf {
        let path = self.shot_path(name);
        self.screenshot(&path).await;
        path
    }

    /// The cookies the browser holds for the current page, `HttpOnly` ones included.
    pub async fn cookies(&self) -> Vec<Cookie> {
        let all = match self.client.get_all_cookies().await {
            Ok(all) => all,
            Err(e) => return self.fail(format!("cookies(): {e}")).await,
        };
        all.into_iter()
            .map(|c| Cookie {
                name: c.name().to_owned(),
                value: c.value().to_owned(),
                http_only: c.http_only().unwrap_or(false),
                secure: c.secure().unwrap_or(false),
                same_site: c.same_site().map(|s| s.to_string()),
                path: c.path().map(str::to_owned),
                domain: c.domain().map(str::to_owned),
            })
            .collect()
    }

    /// The CSP violations the current document reported so far.
    pub async fn violations(&self) -> Vec<CspViolation> {
        self.recorded("violations").await
    }

    /// The uncaught errors and unhandled rejections of the current document so far.
    pub async fn js_errors(&self) -> Vec<JsError> {
        self.recorded("errors").await
    }

    async fn recorded<T: serde::de::DeserializeOwned>(&self, list: &str) -> Vec<T> {
        let script = format!(
            "const r = window.__ccpRecorder; return r ? JSON.parse(JSON.stringify(r.{list})) : null;"
        );
        let value = self.exec_js(&script, Vec::new()).await;
        if value.is_null() {
            return self
                .fail(format!(
                    "the page has no recorder of {list} (it is installed in documents opened after the \
                     browser started, not in about:blank or error pages)"
                ))
                .await;
        }
        match serde_json::from_value(value.clone()) {
            Ok(items) => items,
            Err(e) => self.fail(format!("recorded {list} {value}: {e}")).await,
        }
    }

    /// The first element matching `css`, `None` when there is none yet.
    async fn find(&self, css: &str) -> Result<Option<Element>, CmdError> {
        match self.client.find(Locator::Css(css)).await {
            Ok(el) => Ok(Some(el)),
            Err(e) if e.is_no_such_element() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Probes until `probe` is ready, failing the test when it fails or the wait is over.
    async fn until<T>(&self, what: &str, mut probe: impl AsyncFnMut() -> Probe<T>) -> T {
        let deadline = Instant::now() + self.wait;
        loop {
            let seen = match probe().await {
                Probe::Ready(v) => return v,
                Probe::Failed(e) => return self.fail(format!("{what}: {e}")).await,
                Probe::Waiting(seen) => seen,
            };
            if Instant::now() >= deadline {
                return self.fail(format!("{what}: after {:?}, {seen}", self.wait)).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails the test with `what`, the current URL and a fresh screenshot.
    async fn fail<T>(&self, what: String) -> T {
        let url = match tokio::time::timeout(DIAGNOSE, self.client.current_url()).await {
            Ok(Ok(url)) => url.to_string(),
            Ok(Err(e)) => format!("unknown ({e})"),
            Err(_) => format!("unknown (no answer within {DIAGNOSE:?})"),
        };
        let n = self.failures.fetch_add(1, Ordering::Relaxed);
        let path = self.shot_path(&format!("failure-{n}"));
        let shot = match tokio::time::timeout(DIAGNOSE, self.try_screenshot(&path)).await {
            Ok(Ok(())) => path.display().to_string(),
            Ok(Err(e)) => format!("none ({e})"),
            Err(_) => format!("none (no answer within {DIAGNOSE:?})"),
        };
        self.failure_shot.store(true, Ordering::Relaxed);
        panic!("browser: {what}\n  page: {url}\n  screenshot: {shot}");
    }

    async fn try_screenshot(&self, path: &Path) -> Result<(), String> {
        let png = self.client.screenshot().await.map_err(|e| e.to_string())?;
        write_png(path, &png)
    }

    fn shot_path(&self, name: &str) -> PathBuf {
        shots_dir().join(format!("{}-{}.png", self.label, file_safe(name)))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed assertion of the test itself: show the page it failed on.
        if std::thread::panicking() && !self.failure_shot.load(Ordering::Relaxed) {
            let path = self.shot_path("panic");
            let shot = blocking_request(
                self.driver.port,
                "GET",
                &format!("/session/{}/screenshot", self.session),
            )
            .and_then(|v| v["value"].as_str().map(str::to_owned))
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .map(|png| write_png(&path, &png));
            match shot {
                Some(Ok(())) => eprintln!("browser: screenshot of the failing page: {}", path.display()),
                Some(Err(e)) => eprintln!("browser: no screenshot of the failing page: {e}"),
                None => {
                    eprintln!("browser: no screenshot of the failing page: chromedriver did not give one")
                }
            }
        }
        // Chromium exits cleanly and chromedriver reaps it; the driver's drop kills what is left.
        let _ = blocking_request(self.driver.port, "DELETE", &format!("/session/{}", self.session));
    }
}

/// A chromedriver process, the leader of its own process group (so Chromium can be killed with it).
struct Driver {
    child: Child,
    port: u16,
    logs: Logs,
    /// Found in the command line of every Chromium process (profile and crash database paths).
    marker: String,
}

impl Driver {
    /// Spawns chromedriver on a free loopback port and waits until it is ready; a second port is
    /// tried when the first was taken between finding it and chromedriver binding it.
    async fn start(bin: &Path, home: &Path) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let mut cmd = Command::new(bin);
            cmd.arg(format!("--port={port}"))
                .env("HOME", home)
                .env("XDG_CONFIG_HOME", home.join("config"))
                .env("XDG_CACHE_HOME", home.join("cache"))
                .env("XDG_DATA_HOME", home.join("data"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let logs = Logs::default();
            // Not joined: Chromium inherits the pipes, and the threads end when the last writer does.
            logs.drain(child.stdout.take().expect("stdout"));
            logs.drain(child.stderr.take().expect("stderr"));
            let mut driver = Self {
                child,
                port,
                logs,
                marker: home.display().to_string(),
            };
            let deadline = Instant::now() + DRIVER_START;
            loop {
                if driver.ready(&http).await {
                    return driver;
                }
                if let Ok(Some(status)) = driver.child.try_wait() {
                    assert!(
                        attempt < 2,
                        "chromedriver exited with {status} before it was ready on port {port}; its \
                         output:\n{}",
                        driver.logs.text()
                    );
                    eprintln!("chromedriver exited with {status} on port {port}; trying another port");
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "chromedriver was not ready on port {port} within {DRIVER_START:?}; its output:\n{}",
                        driver.logs.text()
                    );
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }

    async fn ready(&self, http: &reqwest::Client) -> bool {
        let url = format!("http://127.0.0.1:{}/status", self.port);
        let Ok(resp) = http.get(url).send().await else {
            return false;
        };
        let Ok(body) = resp.json::<Value>().await else {
            return false;
        };
        body["value"]["ready"].as_bool() == Some(true)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = i32::try_from(self.child.id()).ok().map(Pid::from_raw);
        if let Some(group) = group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium's processes are orphans now; wait until none runs (a zombie waiting for init to
        // reap it holds no files), so the profile can be removed. Any that outlived the group kill
        // (it never should) is killed by its pid.
        let deadline = Instant::now() + GONE;
        let mut killed = false;
        loop {
            let left = live_processes(group, &self.marker);
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("browser: processes still running after {GONE:?}: {left:?}");
                return;
            }
            if !killed && Instant::now() + GONE / 2 > deadline {
                for pid in &left {
                    let _ = kill(*pid, Signal::SIGKILL);
                }
                killed = true;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// A custom WebDriver command: chromedriver's DevTools passthrough.
#[derive(Debug)]
struct Cdp {
    method: String,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.method, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// The directory of [`Browser::shot`]: `browser-shots` in the workspace's target directory
/// (`CARGO_TARGET_DIR` when set, else `target` beside the crates).
pub fn shots_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    target.join("browser-shots")
}

/// chromedriver: `$CCP_CHROMEDRIVER`, else on `PATH`.
fn chromedriver_bin() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(CHROMEDRIVER_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{CHROMEDRIVER_ENV}={} is not a file", path.display()))
        };
    }
    on_path("chromedriver").ok_or_else(|| "chromedriver is not on PATH".to_owned())
}

/// Chromium: `$CCP_CHROMIUM` as given, else `chromium` on `PATH`, with Debian's launcher script
/// replaced by the binary it runs.
fn chromium_bin() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(CHROMIUM_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{CHROMIUM_ENV}={} is not a file", path.display()))
        };
    }
    let found = on_path("chromium").ok_or_else(|| "chromium is not on PATH".to_owned())?;
    let is_script = std::fs::File::open(&found)
        .and_then(|mut f| {
            let mut head = [0u8; 2];
            f.read_exact(&mut head).map(|()| head == *b"#!")
        })
        .unwrap_or(false);
    if is_script && Path::new(DEBIAN_CHROMIUM).is_file() {
        Ok(PathBuf::from(DEBIAN_CHROMIUM))
    } else {
        Ok(found)
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// The running test's name (libtest names the thread after it), fit for a file name.
fn test_label() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => file_safe(name),
        _ => "browser".to_owned(),
    }
}

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// An error unless `png` is a PNG; else written to `path`.
fn write_png(path: &Path, png: &[u8]) -> Result<(), String> {
    if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(format!("the browser gave {} bytes that are not a PNG", png.len()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, png).map_err(|e| format!("write {}: {e}", path.display()))
}

/// Retries on errors of an element that is not ready yet (gone, hidden, covered); fails on others.
fn retry_on<T>(e: CmdError, waiting: &str) -> Probe<T> {
    if e.is_stale_element_reference()
        || e.is_element_not_interactable()
        || e.is_invalid_element_state()
        || matches!(&e, CmdError::Standard(w) if w.error == fantoccini::error::ErrorStatus::ElementClickIntercepted)
    {
        Probe::Waiting(format!("{waiting}: {e}"))
    } else {
        Probe::Failed(e.to_string())
    }
}

/// One request to chromedriver on a blocking socket, for `Drop`, which cannot await; the JSON body
/// of the answer, `None` on any failure. The body is read by its `Content-Length`: chromedriver
/// keeps the connection open after answering even when asked to close it.
fn blocking_request(port: u16, method: &str, path: &str) -> Option<Value> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, QUIT).ok()?;
    stream.set_read_timeout(Some(QUIT)).ok()?;
    stream.set_write_timeout(Some(QUIT)).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reader = BufReader::new(stream);
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length?];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// Processes not yet dead that belong to the process group `group` or whose command line contains
/// `marker`.
fn live_processes(group: Option<Pid>, marker: &str) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid pgrp …`; the name may hold spaces and parentheses.
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let pgrp: i32 = fields.nth(1)?.parse().ok()?;
            if state == "Z" || state == "X" {
                return None;
            }
            let in_group = group.is_some_and(|g| g.as_raw() == pgrp);
            let marked = || {
                std::fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
            };
            (in_group || marked()).then_some(Pid::from_raw(pid))
        })
        .collect()
}
