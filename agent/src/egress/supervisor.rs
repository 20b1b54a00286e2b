//! The supervisor (`cloud-cli-proxy-egress run`): watches `DIR/egress.json`, runs the tunnel
//! process for it, restarts that process when it dies, and keeps `DIR/status.json` current.
//!
//! One thread, one loop ticking every [`TICK`]: the config file is read every [`CONFIG_POLL`];
//! the child's exit, the tun device and the handshake flag are looked at on every tick, so a dead
//! tunnel process is started again within a tick (then with [`backoff`]).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wire::Tunnel;

use super::{
    CONFIG_FILE, Error, RuntimeConfig, STATUS_FILE, State, Status, TUN_NAME, current_netns_inode, routes,
    singbox, wireguard, write_private,
};

/// Granularity of the loop (child exit, tun device, handshake).
pub const TICK: Duration = Duration::from_millis(50);
/// How often `egress.json` is read.
pub const CONFIG_POLL: Duration = Duration::from_millis(200);
/// Longest wait between two starts of a tunnel process that keeps dying.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A tunnel process that lived this long is considered healthy: the next restart is immediate again.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How long a tunnel interface may stay down before the supervisor sets it up (and between tries).
const LINK_PATIENCE: Duration = Duration::from_secs(1);

/// After this long without a first handshake, `last_error` says so (the state stays `starting`).
const HANDSHAKE_PATIENCE: Duration = Duration::from_secs(6);

/// The two files the tunnel processes read, in the runtime directory.
const WIREGUARD_FILE: &str = "wireguard.json";
const SING_BOX_FILE: &str = "sing-box.json";

/// Wait before start number `failures + 1` of a tunnel process that died `failures` times in a row:
/// 0, 100 ms, 200 ms, 400 ms, ... capped at [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => Duration::from_millis(100u64.saturating_mul(1 << (n - 1).min(16))).min(MAX_BACKOFF),
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Holds `egress.json` (from the agent), `status.json` and the tunnel process's config.
    pub dir: PathBuf,
    pub sing_box: PathBuf,
    /// This binary, re-executed as `wireguard --config FILE` for a WireGuard tunnel.
    pub self_exe: PathBuf,
    /// `human` or `json`, passed on to the WireGuard process.
    pub log_format: String,
}

/// What is run for the current config.
struct Active {
    cfg: RuntimeConfig,
    program: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    started: Instant,
    /// Deaths in a row (reset once a process lived [`HEALTHY_AFTER`]).
    failures: u32,
    restart_at: Option<Instant>,
    /// Set by the reader of a WireGuard process's stdout on its first handshake.
    handshake: Arc<AtomicBool>,
    routed: bool,
    /// When the supervisor last set a downed tunnel interface up.
    link_tried: Option<Instant>,
}

impl Active {
    fn wireguard(&self) -> bool {
        matches!(self.cfg.spec.tunnel, Tunnel::Wireguard(_))
    }
}

struct Supervisor {
    opts: Options,
    status: Status,
    written: Option<Status>,
    active: Option<Active>,
    config_bytes: Option<Vec<u8>>,
}

/// Runs until `stop` is set; then the tunnel process is killed and the state left idle.
pub fn run(opts: Options, stop: &AtomicBool) -> Result<(), Error> {
    std::fs::create_dir_all(&opts.dir).map_err(Error::io(format!("create {}", opts.dir.display())))?;
    let mut sup = Supervisor {
        opts,
        status: Status {
            state: State::Idle,
            tunnel: None,
            restarts: 0,
            last_error: None,
            pid: None,
            updated_at: chrono::Utc::now(),
        },
        written: None,
        active: None,
        config_bytes: None,
    };
    let mut last_poll: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if last_poll.is_none_or(|t| t.elapsed() >= CONFIG_POLL) {
            last_poll = Some(Instant::now());
            sup.poll_config();
        }
        sup.tend();
        sup.write_status();
        std::thread::sleep(TICK);
    }
    sup.stop_tunnel();
    sup.set_idle(None);
    sup.write_status();
    Ok(())
}

impl Supervisor {
    fn poll_config(&mut self) {
        let path = self.opts.dir.join(CONFIG_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot read the egress config");
                return;
            }
        };
        if bytes == self.config_bytes {
            return;
        }
        self.config_bytes = bytes.clone();
        self.stop_tunnel();
        match bytes {
            None => {
                tracing::info!("no egress config: idle");
                self.set_idle(None);
            }
            Some(bytes) => self.load(&bytes),
        }
    }

    fn load(&mut self, bytes: &[u8]) {
        let cfg = match RuntimeConfig::parse(bytes) {
            Ok(cfg) => cfg,
            Err(e) => return self.fail(None, e.to_string()),
        };
        tracing::info!(config = ?cfg, "new egress config");
        if let Some(expected) = cfg.netns_inode {
            match current_netns_inode() {
                Ok(inode) if inode == expected => {}
                Ok(inode) => {
                    return self.set_idle(Some(format!(
                        "config is for network namespace {expected}, this is {inode}: waiting for the agent"
                    )));
                }
                Err(e) => return self.fail(Some(cfg.tunnel_kind()), e.to_string()),
            }
        }
        match self.prepare(cfg) {
            Ok(active) => {
                self.status.tunnel = Some(active.cfg.tunnel_kind());
                self.status.restarts = 0;
                self.status.last_error = None;
                self.active = Some(active);
                self.start_child();
            }
            Err((kind, e)) => self.fail(kind, e.to_string()),
        }
    }

    /// Writes the tunnel process's config, checks it, and installs the policy routing.
    fn prepare(&self, cfg: RuntimeConfig) -> Result<Active, (Option<String>, Error)> {
        let kind = Some(cfg.tunnel_kind());
        let err = |e| (kind.clone(), e);
        let (program, args) = match &cfg.spec.tunnel {
            Tunnel::Wireguard(wg) => {
                let file = self.opts.dir.join(WIREGUARD_FILE);
                let child = wireguard::ChildConfig {
                    wireguard: wg.clone(),
                    endpoint_ip: cfg.endpoint_ip,
                };
                let json = serde_json::to_vec(&child).map_err(|e| err(Error::Invalid(e.to_string())))?;
                write_private(&file, &json).map_err(err)?;
                let args = vec![
                    "wireguard".to_owned(),
                    "--config".to_owned(),
                    file.display().to_string(),
                ];
                (self.opts.self_exe.clone(), args)
            }
            Tunnel::Proxy { .. } => {
                let file = self.opts.dir.join(SING_BOX_FILE);
                let json = singbox::render(&cfg)
                    .and_then(|c| singbox::to_json(&c))
                    .map_err(err)?;
                write_private(&file, &json).map_err(err)?;
                singbox::check(&self.opts.sing_box, &file).map_err(err)?;
                let args = vec![
                    "run".to_owned(),
                    "--disable-color".to_owned(),
                    "-c".to_owned(),
                    file.display().to_string(),
                ];
                (self.opts.sing_box.clone(), args)
            }
        };
        routes::install_policy().map_err(err)?;
        Ok(Active {
            cfg,
            program,
            args,
            child: None,
            started: Instant::now(),
            failures: 0,
            restart_at: None,
            handshake: Arc::new(AtomicBool::new(false)),
            routed: false,
            link_tried: None,
        })
    }

    fn start_child(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let wireguard = active.wireguard();
        let mut cmd = Command::new(&active.program);
        cmd.args(&active.args)
            .stdin(Stdio::null())
            .stdout(if wireguard {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .stderr(Stdio::inherit());
        active.handshake = Arc::new(AtomicBool::new(false));
        active.routed = false;
        active.restart_at = None;
        match cmd.spawn() {
            Ok(mut child) => {
                if let Some(stdout) = child.stdout.take() {
                    let flag = active.handshake.clone();
                    let _ = std::thread::Builder::new()
                        .name("tunnel-stdout".into())
                        .spawn(move || {
                            for line in std::io::BufReader::new(stdout).lines() {
                                match line {
                                    Ok(l) if l.trim() == wireguard::HANDSHAKE_LINE => {
                                        flag.store(true, Ordering::Relaxed)
                                    }
                                    Ok(_) => {}
                                    Err(_) => break,
                                }
                            }
                        });
                }
                tracing::info!(pid = child.id(), program = %active.program.display(), "tunnel process started");
                self.status.pid = Some(child.id());
                self.status.state = State::Starting;
                active.started = Instant::now();
                active.child = Some(child);
            }
            Err(e) => {
                let wait = backoff(active.failures.saturating_add(1));
                active.failures = active.failures.saturating_add(1);
                active.restart_at = Some(Instant::now() + wait);
                self.status.state = State::Restarting;
                self.status.pid = None;
                self.status.last_error = Some(format!("cannot start {}: {e}", active.program.display()));
            }
        }
    }

    /// Looks after the running tunnel: its exit, its device, its routes.
    fn tend(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if let Some(child) = active.child.as_mut() {
            match child.try_wait() {
                Ok(Some(exit)) => {
                    active.child = None;
                    if active.started.elapsed() >= HEALTHY_AFTER {
                        active.failures = 0;
                    }
                    let wait = backoff(active.failures);
                    active.failures = active.failures.saturating_add(1);
                    active.restart_at = Some(Instant::now() + wait);
                    tracing::warn!(%exit, restart_in_ms = wait.as_millis() as u64, "tunnel process exited");
                    self.status.state = State::Restarting;
                    self.status.pid = None;
                    self.status.restarts = self.status.restarts.saturating_add(1);
                    self.status.last_error = Some(format!("tunnel process exited ({exit})"));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot look at the tunnel process"),
            }
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if active.child.is_none() {
            if active.restart_at.is_some_and(|t| Instant::now() >= t) {
                self.start_child();
            }
            return;
        }
        if !routes::link_up(TUN_NAME) {
            active.routed = false;
            if self.status.state == State::Up {
                self.status.state = State::Starting;
            }
            // Set down from outside (the tunnel process brings it up itself when it starts): up
            // again, and the routes come back on the next tick. Traffic meanwhile has no route.
            let settled = active.started.elapsed() >= LINK_PATIENCE;
            let due = active.link_tried.is_none_or(|t| t.elapsed() >= LINK_PATIENCE);
            if settled && due && routes::link_exists(TUN_NAME) {
                active.link_tried = Some(Instant::now());
                match routes::set_link_up(TUN_NAME) {
                    Ok(()) => tracing::warn!(device = TUN_NAME, "tunnel interface was down; set it up again"),
                    Err(e) => self.status.last_error = Some(e.to_string()),
                }
            }
            return;
        }
        if !active.routed {
            let cidrs = active.cfg.routed();
            match cidrs.and_then(|c| routes::install_tunnel(TUN_NAME, &c)) {
                Ok(()) => active.routed = true,
                Err(e) => {
                    self.status.last_error = Some(e.to_string());
                    return;
                }
            }
        }
        if !active.wireguard() || active.handshake.load(Ordering::Relaxed) {
            self.status.state = State::Up;
        } else if active.started.elapsed() >= HANDSHAKE_PATIENCE && self.status.last_error.is_none() {
            self.status.last_error = Some(format!(
                "no WireGuard handshake after {} s (server unreachable, or keys that do not match?)",
                HANDSHAKE_PATIENCE.as_secs()
            ));
        }
    }

    fn stop_tunnel(&mut self) {
        if let Some(mut active) = self.active.take()
            && let Some(mut child) = active.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
            tracing::info!(pid = child.id(), "tunnel process stopped");
        }
        self.status.pid = None;
    }

    fn set_idle(&mut self, why: Option<String>) {
        self.status.state = State::Idle;
        self.status.tunnel = None;
        self.status.restarts = 0;
        self.status.pid = None;
        self.status.last_error = why;
    }

    fn fail(&mut self, kind: Option<String>, error: String) {
        tracing::warn!(%error, "egress config cannot be run");
        self.status.state = State::Failed;
        self.status.tunnel = kind;
        self.status.pid = None;
        self.status.last_error = Some(error);
    }

    /// Rewrites `status.json` when something other than the timestamp changed.
    fn write_status(&mut self) {
        let unchanged = self.written.as_ref().is_some_and(|w| {
            Status {
                updated_at: w.updated_at,
                ..self.status.clone()
            } == *w
        });
        if unchanged {
            return;
        }
        self.status.updated_at = chrono::Utc::now();
        match serde_json::to_vec_pretty(&self.status) {
            Ok(json) => match write_private(&self.opts.dir.join(STATUS_FILE), &json) {
                Ok(()) => self.written = Some(self.status.clone()),
                Err(e) => tracing::warn!(error = %e, "cannot write status"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot render status"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_immediately_and_is_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
