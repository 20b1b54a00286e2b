//! The control-plane process under test: spawn, wait for its listening line, capture its logs, stop.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::api::Api;
use crate::fixtures;

/// How long a control plane may take to print its listening line (migrations, argon2 at start).
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the process is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// Environment of one control-plane process.
#[derive(Debug, Clone)]
pub struct Options {
    /// The SQLite file; `None` means a fresh file in a temporary directory owned by the process handle.
    pub db_path: Option<PathBuf>,
    pub admin_username: String,
    pub admin_password: String,
    pub jwt_secret: String,
    /// Further variables (`TOKEN_TTL_SECS`, `LOGIN_MAX_FAILURES_PER_ACCOUNT`, `MAX_BODY_BYTES`, …).
    pub env: Vec<(String, String)>,
    /// PEM file of the CA that signed the certificate of `TLS_CERT_FILE`: set, the API is dialled
    /// over HTTPS trusting it, and so are standalone agents (`CONTROL_PLANE_CA_FILE`).
    pub tls_ca_file: Option<PathBuf>,
    /// The PostgreSQL database, when the control plane keeps its state there: made at the start
    /// under `CCP_E2E_DATABASE=postgres` unless `db_path` names an SQLite file, or given to share
    /// one database between replicas ([`Options::postgres`]).
    pub postgres: Option<Arc<crate::database::PgDatabase>>,
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Options {
    /// Fresh random secrets, so a test can look for them in the logs.
    pub fn new() -> Self {
        Self {
            db_path: None,
            admin_username: "admin".to_owned(),
            admin_password: format!("adm-{}", fixtures::random_alnum(24)),
            jwt_secret: fixtures::jwt_secret(),
            env: Vec::new(),
            tls_ca_file: None,
            postgres: None,
        }
    }

    /// Keep the state in this PostgreSQL database (shared with whoever else is given it).
    pub fn postgres(mut self, db: Arc<crate::database::PgDatabase>) -> Self {
        self.postgres = Some(db);
        self
    }

    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn db(mut self, path: impl Into<PathBuf>) -> Self {
        self.db_path = Some(path.into());
        self
    }

    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.jwt_secret = secret.into();
        self
    }
}

/// Where the binaries are: `$CCP_BIN_DIR`, else the workspace's `target/debug`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("CCP_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("debug"),
    }
}

pub fn control_plane_bin() -> PathBuf {
    let bin = bin_dir().join("cloud-cli-proxy-control-plane");
    assert!(
        bin.is_file(),
        "{} does not exist: run `cargo build --workspace --bins` first (or set CCP_BIN_DIR)",
        bin.display()
    );
    bin
}

/// What the process wrote on stdout and stderr, line by line, shared with the drain threads.
#[derive(Debug, Clone, Default)]
pub struct Logs(Arc<Mutex<String>>);

impl Logs {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    fn push_line(&self, line: &str) {
        let mut buf = self.0.lock().unwrap();
        buf.push_str(line);
        buf.push('\n');
    }

    pub(crate) fn drain(&self, stream: impl Read + Send + 'static) -> JoinHandle<()> {
        let logs = self.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            // Byte lines, so a stray invalid UTF-8 byte cannot stop the draining.
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                logs.push_line(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']));
                line.clear();
            }
        })
    }
}

/// A running (or stopped) control plane. Dropping it kills the process and removes its temp dir.
pub struct ControlPlane {
    child: Option<Child>,
    drains: Vec<JoinHandle<()>>,
    logs: Logs,
    addr: SocketAddr,
    /// Port of the embedded SSH gateway (on 127.0.0.1).
    ssh_port: u16,
    db_path: PathBuf,
    opts: Options,
    // Declared last: dropped after the process is gone.
    _dir: Option<TempDir>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("addr", &self.addr)
            .field("db", &self.db_path)
            .finish()
    }
}

impl ControlPlane {
    /// Starts the binary and waits until it listens.
    pub async fn start(mut opts: Options) -> Self {
        if opts.postgres.is_none()
            && opts.db_path.is_none()
            && crate::database::backend() == crate::database::Backend::Postgres
        {
            opts.postgres = Some(crate::database::PgDatabase::create());
        }
        let (dir, db_path) = match &opts.db_path {
            Some(p) => (None, p.clone()),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("ccp-e2e-")
                    .tempdir()
                    .expect("temp dir");
                let path = dir.path().join("control-plane.db");
                (Some(dir), path)
            }
        };
        let mut cp = Self {
            child: None,
            drains: Vec::new(),
            logs: Logs::default(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ssh_port: 0,
            db_path,
            opts,
            _dir: dir,
        };
        cp.spawn().await;
        cp
    }

    /// Starts the binary expecting it to refuse: returns its exit status and everything it wrote.
    pub async fn start_failing(opts: Options) -> (ExitStatus, String) {
        let dir = tempfile::Builder::new()
            .prefix("ccp-e2e-")
            .tempdir()
            .expect("temp dir");
        let db = opts
            .db_path
            .clone()
            .unwrap_or_else(|| dir.path().join("control-plane.db"));
        let mut child = command(&opts, &db).spawn().expect("spawn control plane");
        let logs = Logs::default();
        let drains = [
            logs.drain(child.stdout.take().expect("stdout")),
            logs.drain(child.stderr.take().expect("stderr")),
        ];
        let status = wait_with_deadline(&mut child, START_DEADLINE).await;
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "control plane was expected to exit but is still running; logs:\n{}",
                logs.text()
            );
        };
        for d in drains {
            let _ = d.join();
        }
        (status, logs.text())
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "control plane already running");
        // The log buffer is shared with earlier runs of this handle: only look at what this run writes.
        let skip = self.logs.text().len();
        let mut child = command(&self.opts, &self.db_path)
            .spawn()
            .expect("spawn control plane");
        let out = self.logs.drain(child.stdout.take().expect("stdout"));
        let err = self.logs.drain(child.stderr.take().expect("stderr"));
        self.drains = vec![out, err];
        let deadline = Instant::now() + START_DEADLINE;
        let (addr, ssh_port) = loop {
            let text = self.logs.text();
            if let Some(found) = listening_addr(text.get(skip..).unwrap_or("")) {
                break found;
            }
            if let Ok(Some(status)) = child.try_wait() {
                for d in self.drains.drain(..) {
                    let _ = d.join();
                }
                panic!(
                    "control plane exited with {status} before listening; logs:\n{}",
                    self.logs.text()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "control plane did not log `control plane listening` within {START_DEADLINE:?}; logs:\n{text}"
                );
            }
            tokio::time::sleep(POLL).await;
        };
        self.addr = addr;
        self.ssh_port = ssh_port;
        self.child = Some(child);
    }

    /// SIGTERM, then wait for a graceful exit; killed if it does not come.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("control plane is not running");
        let pid = child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let status = match wait_with_deadline(&mut child, STOP_DEADLINE).await {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "control plane ignored SIGTERM for {STOP_DEADLINE:?}; logs:\n{}",
                    self.logs.text()
                );
            }
        };
        for d in self.drains.drain(..) {
            let _ = d.join();
        }
        status
    }

    /// `kill -9`: the process gets no chance to clean up (a crash), and is reaped.
    pub async fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("control plane is not running");
        let _ = child.kill();
        let status = child.wait().expect("reap the control plane");
        for d in self.drains.drain(..) {
            let _ = d.join();
        }
        status
    }

    /// Whether the process is running (it was started and neither stopped nor killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops (if running) and starts again on the same database with `opts`.
    pub async fn restart(&mut self, opts: Options) {
        if self.child.is_some() {
            let status = self.stop().await;
            assert!(status.success(), "graceful stop should exit 0, got {status}");
        }
        self.opts = Options {
            db_path: Some(self.db_path.clone()),
            postgres: self.opts.postgres.clone(),
            ..opts
        };
        self.spawn().await;
    }

    /// The URL to dial: loopback when the process listens on every interface; `https` when the
    /// options name a CA.
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let scheme = if self.opts.tls_ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}")
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("control plane is not running").id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Port of the SSH gateway running inside the control plane, on 127.0.0.1.
    pub fn ssh_port(&self) -> u16 {
        self.ssh_port
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// URL of the database: `postgres://…` when it is PostgreSQL, else `sqlite://…`.
    pub fn database_url(&self) -> String {
        match &self.opts.postgres {
            Some(pg) => pg.url().to_owned(),
            None => format!("sqlite://{}", self.db_path.display()),
        }
    }

    /// Whether the state is in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.opts.postgres.is_some()
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Everything the process wrote so far (stdout and stderr, all runs of this handle).
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// A line of the process's `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM` — the peak).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    }

    /// An anonymous client.
    pub fn api(&self) -> Api {
        let ca =
            self.opts.tls_ca_file.as_ref().map(|path| {
                std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            });
        Api::trusting(self.base_url(), ca.as_deref())
    }

    /// A client signed in as the operator.
    pub async fn admin(&self) -> Api {
        self.api()
            .login_as(&self.opts.admin_username, &self.opts.admin_password)
            .await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn agent_bin() -> PathBuf {
    let bin = bin_dir().join("cloud-cli-proxy-agent");
    assert!(
        bin.is_file(),
        "{} does not exist: run `cargo build --workspace --bins` first (or set CCP_BIN_DIR)",
        bin.display()
    );
    bin
}

/// Environment of one standalone node agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub control_plane_url: String,
    /// `ENROLMENT_KEY`: used by an agent whose state directory holds no credential yet.
    pub enrolment_key: String,
    pub node_name: String,
    pub state_dir: PathBuf,
    /// Further variables (`HOST_IMAGE`, `HOSTS_NETWORK`, …).
    pub env: Vec<(String, String)>,
}

/// A standalone `cloud-cli-proxy-agent` process. Dropping it kills the process.
pub struct AgentProcess {
    child: Option<Child>,
    drains: Vec<JoinHandle<()>>,
    logs: Logs,
}

impl std::fmt::Debug for AgentProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentProcess")
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish()
    }
}

impl AgentProcess {
    /// The process id, while it runs (for its memory in `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Spawns the agent; it registers (and retries registering) on its own.
    pub fn start(opts: &AgentOptions) -> Self {
        let mut cmd = Command::new(agent_bin());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CONTROL_PLANE_URL", &opts.control_plane_url)
            .env("ENROLMENT_KEY", &opts.enrolment_key)
            .env("NODE_NAME", &opts.node_name)
            .env("AGENT_STATE_DIR", &opts.state_dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the agent");
        let logs = Logs::default();
        let drains = vec![
            logs.drain(child.stdout.take().expect("stdout")),
            logs.drain(child.stderr.take().expect("stderr")),
        ];
        Self {
            child: Some(child),
            drains,
            logs,
        }
    }

    /// `kill -9`, then reap.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent is not running");
        let _ = child.kill();
        let status = child.wait().expect("reap the agent");
        for d in self.drains.drain(..) {
            let _ = d.join();
        }
        status
    }

    /// The exit status if the process has ended on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn logs(&self) -> String {
        self.logs.text()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn command(opts: &Options, db_path: &Path) -> Command {
    let mut cmd = Command::new(control_plane_bin());
    // A clean environment: no inherited RUST_LOG or stray configuration changes what is tested.
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            match &opts.postgres {
                Some(pg) => pg.url().to_owned(),
                None => format!("sqlite://{}", db_path.display()),
            },
        )
        .env("ADMIN_USERNAME", &opts.admin_username)
        .env("ADMIN_PASSWORD", &opts.admin_password)
        .env("ADMIN_JWT_SECRET", &opts.jwt_secret)
        .env("CONTROL_PLANE_ADDR", "127.0.0.1:0")
        .env("SSH_PROXY_ADDR", "127.0.0.1:0")
        .env(
            "SSH_PROXY_STATE_DIR",
            db_path.parent().unwrap_or(Path::new("/tmp")).join("ssh-proxy"),
        )
        .env("PUBLIC_BASE_URL", crate::PUBLIC_BASE_URL)
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        // API tests keep host tasks queued; the Docker suites turn the agent on explicitly.
        .env("EMBEDDED_AGENT", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if opts.postgres.is_some() {
        // Beside the SQLite file's place: the handle's temporary directory.
        cmd.env(
            "SECRETS_KEY_FILE",
            db_path.parent().unwrap_or(Path::new("/tmp")).join("secrets.key"),
        );
    }
    for (k, v) in &opts.env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd
}

/// The API address and the SSH gateway's port in the `control plane listening` JSON log line, if
/// it was written.
fn listening_addr(logs: &str) -> Option<(SocketAddr, u16)> {
    logs.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v.get("message")?.as_str()? != "control plane listening" {
            return None;
        }
        let addr = v.get("addr")?.as_str()?.parse().ok()?;
        let ssh_port = v.get("ssh_port")?.as_u64().and_then(|p| u16::try_from(p).ok())?;
        Some((addr, ssh_port))
    })
}

async fn wait_with_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for control plane") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_listening_line() {
        let logs = "{\"message\":\"starting\"}\nnot json\n\
                    {\"timestamp\":\"x\",\"level\":\"INFO\",\"message\":\"control plane listening\",\"addr\":\"127.0.0.1:4321\",\"ssh_port\":2222}\n";
        assert_eq!(
            super::listening_addr(logs),
            Some(("127.0.0.1:4321".parse().unwrap(), 2222))
        );
        assert!(super::listening_addr("{\"message\":\"control plane listening\"}").is_none());
    }
}
