//! The supervisor's decisions, without I/O: what to run for `egress.json`, when to start the tunnel
//! process again, when to set its interface up, when to route into it, and what `status.json` says.
//!
//! [`Supervisor::step`] takes the time and one [`Observation`] and returns the [`Command`]s to carry
//! out, in order. It reads no clock, file or process. The loop in [`super::run`] does, and feeds
//! the outcome of each command that is *answered* back as the next observation, before anything
//! else; the supervisor asks one such question at a time and goes on with its round once it has
//! the answer.
//!
//! One round of the loop: what the loop saw since the last one ([`Observation::Exited`],
//! [`Observation::Handshake`], [`Observation::Link`]), then [`Observation::Tick`]. On the tick the
//! supervisor tends the tunnel (restart when due; interface, routes, state), then reads
//! `egress.json` when [`CONFIG_POLL`] has passed (a changed one stops the process and starts the
//! new one), then writes the status if anything but its time changed.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Instant;

use wire::Tunnel;

use super::{
    CONFIG_POLL, HANDSHAKE_PATIENCE, HEALTHY_AFTER, LINK_PATIENCE, Options, SING_BOX_FILE, WIREGUARD_FILE,
    backoff,
};
use crate::egress_runtime::{CONFIG_FILE, Error, RuntimeConfig, State, Status, singbox, wireguard};
use crate::firewall::Ipv4Cidr;

/// What the loop saw or did, fed to [`Supervisor::step`].
#[derive(Debug)]
pub enum Observation {
    /// A round begins its decisions (every [`super::TICK`]), after what the loop saw of the tunnel
    /// process and its interface.
    Tick,
    /// The tunnel process exited (by itself, or killed from outside).
    Exited(ExitStatus),
    /// The tunnel process reported its first WireGuard handshake.
    Handshake,
    /// The tunnel interface as it is now.
    Link(Link),
    /// Answer to [`Command::ReadConfig`].
    Config(ConfigFile),
    /// Answer to [`Command::Prepare`].
    Prepared(Result<(), Error>),
    /// Answer to [`Command::Start`]: the process id.
    Started(Result<u32, std::io::Error>),
    /// Answer to [`Command::SetLinkUp`].
    LinkSetUp(Result<(), Error>),
    /// Answer to [`Command::InstallRoutes`].
    RoutesInstalled(Result<(), Error>),
    /// Answer to [`Command::WriteStatus`].
    StatusWritten(Result<(), Error>),
    /// The supervisor is told to stop (SIGTERM): the tunnel process goes and the state is idle.
    Stop,
}

/// `egress.json` as read.
pub enum ConfigFile {
    Missing,
    /// There, but it cannot be read: nothing changes.
    Unreadable(std::io::Error),
    Read(Vec<u8>),
}

impl std::fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bytes hold keys and passwords.
        match self {
            ConfigFile::Missing => f.write_str("Missing"),
            ConfigFile::Unreadable(e) => f.debug_tuple("Unreadable").field(e).finish(),
            ConfigFile::Read(bytes) => write!(f, "Read(<{} bytes>)", bytes.len()),
        }
    }
}

/// The tunnel interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// There and administratively up.
    Up,
    /// There, set down.
    Down,
    Absent,
}

/// What the loop is to do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Read `egress.json`; answered by [`Observation::Config`].
    ReadConfig,
    /// Make ready what a tunnel process needs; answered by [`Observation::Prepared`].
    Prepare(Prepare),
    /// Start the tunnel process; answered by [`Observation::Started`].
    Start(Launch),
    /// Kill the tunnel process and reap it (it is not reported as exited).
    Kill,
    /// Set the tunnel interface up; answered by [`Observation::LinkSetUp`].
    SetLinkUp,
    /// Route these destinations into the tunnel interface; answered by
    /// [`Observation::RoutesInstalled`].
    InstallRoutes(Vec<Ipv4Cidr>),
    /// Write `status.json` (stamped with the time of writing); answered by
    /// [`Observation::StatusWritten`].
    WriteStatus(Report),
}

/// Writing the tunnel process's config file (readable by its owner only), checking it with
/// sing-box when asked, then installing the policy routing.
#[derive(Clone, PartialEq, Eq)]
pub struct Prepare {
    pub file: PathBuf,
    pub contents: Vec<u8>,
    /// The sing-box binary to run `check` on the file with.
    pub check_with: Option<PathBuf>,
}

impl std::fmt::Debug for Prepare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The contents hold keys and passwords.
        f.debug_struct("Prepare")
            .field("file", &self.file)
            .field("contents", &format_args!("<{} bytes>", self.contents.len()))
            .field("check_with", &self.check_with)
            .finish()
    }
}

/// A tunnel process to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Pipe its stdout and report [`Observation::Handshake`] on its first handshake line
    /// (WireGuard); otherwise stdout is inherited.
    pub watch_handshake: bool,
}

/// `status.json` but its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub state: State,
    pub tunnel: Option<String>,
    pub restarts: u64,
    pub last_error: Option<String>,
    pub pid: Option<u32>,
}

impl Report {
    pub fn at(self, updated_at: chrono::DateTime<chrono::Utc>) -> Status {
        Status {
            state: self.state,
            tunnel: self.tunnel,
            restarts: self.restarts,
            last_error: self.last_error,
            pid: self.pid,
            updated_at,
        }
    }
}

/// The supervisor's state; see the module docs.
pub struct Supervisor {
    dir: PathBuf,
    sing_box: PathBuf,
    self_exe: PathBuf,
    /// Handed on to the WireGuard process (`--log-format`).
    log_format: String,
    /// This process's network namespace (it never changes under a process).
    netns: Result<u64, String>,
    status: Report,
    /// What `status.json` holds.
    written: Option<Report>,
    /// `egress.json` as last acted upon.
    config: Option<Vec<u8>>,
    last_poll: Option<Instant>,
    active: Option<Active>,
    /// The part of the round still to come (none between rounds).
    round: Option<Phase>,
    /// The command whose answer the round waits for.
    waiting: Option<Waiting>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Tend,
    Config,
    Report,
}

enum Waiting {
    Config,
    /// The config being prepared, active once that succeeded.
    Prepare(Box<Active>),
    Start,
    LinkUp,
    Routes,
    Status(Report),
}

/// What runs for the current config.
struct Active {
    cfg: RuntimeConfig,
    launch: Launch,
    run: Option<Run>,
    /// Deaths in a row (forgotten once a process lived [`HEALTHY_AFTER`]).
    failures: u32,
    restart_at: Option<Instant>,
    /// When the supervisor last set a downed tunnel interface up.
    link_tried: Option<Instant>,
}

/// One tunnel process, from its start.
struct Run {
    started: Instant,
    handshake: bool,
    routed: bool,
    /// The interface as last seen since this process started.
    link: Option<Link>,
}

impl Active {
    fn wireguard(&self) -> bool {
        matches!(self.cfg.spec.tunnel, Tunnel::Wireguard(_))
    }
}

impl Supervisor {
    /// `netns` is the inode of this process's network namespace, or why it cannot be known.
    pub fn new(opts: &Options, netns: Result<u64, String>) -> Self {
        Self {
            dir: opts.dir.clone(),
            sing_box: opts.sing_box.clone(),
            self_exe: opts.self_exe.clone(),
            log_format: opts.log_format.clone(),
            netns,
            status: Report {
                state: State::Idle,
                tunnel: None,
                restarts: 0,
                last_error: None,
                pid: None,
            },
            written: None,
            config: None,
            last_poll: None,
            active: None,
            round: None,
            waiting: None,
        }
    }

    /// The status as it stands (written at the end of the round).
    pub fn report(&self) -> &Report {
        &self.status
    }

    /// Takes in one observation at `now`; returns what to do, in order.
    pub fn step(&mut self, now: Instant, observation: Observation) -> Vec<Command> {
        let mut out = Vec::new();
        match observation {
            Observation::Tick => self.round = Some(Phase::Tend),
            Observation::Exited(exit) => self.exited(now, exit),
            Observation::Handshake => {
                if let Some(run) = self.run_mut() {
                    run.handshake = true;
                }
            }
            Observation::Link(link) => {
                if let Some(run) = self.run_mut() {
                    run.link = Some(link);
                }
            }
            Observation::Stop => {
                self.waiting = None;
                self.stop_tunnel(&mut out);
                self.set_idle(None);
                self.round = Some(Phase::Report);
            }
            answer => self.answer(now, answer, &mut out),
        }
        self.advance(now, &mut out);
        out
    }

    fn run_mut(&mut self) -> Option<&mut Run> {
        self.active.as_mut().and_then(|a| a.run.as_mut())
    }

    /// Goes through the rest of the round until a command needs an answer.
    fn advance(&mut self, now: Instant, out: &mut Vec<Command>) {
        while self.waiting.is_none() {
            let Some(phase) = self.round.take() else {
                return;
            };
            match phase {
                Phase::Tend => {
                    self.round = Some(Phase::Config);
                    self.tend(now, out);
                }
                Phase::Config => {
                    self.round = Some(Phase::Report);
                    if self
                        .last_poll
                        .is_none_or(|t| now.saturating_duration_since(t) >= CONFIG_POLL)
                    {
                        self.last_poll = Some(now);
                        out.push(Command::ReadConfig);
                        self.waiting = Some(Waiting::Config);
                    }
                }
                Phase::Report => {
                    if self.written.as_ref() != Some(&self.status) {
                        out.push(Command::WriteStatus(self.status.clone()));
                        self.waiting = Some(Waiting::Status(self.status.clone()));
                    }
                }
            }
        }
    }

    fn answer(&mut self, now: Instant, answer: Observation, out: &mut Vec<Command>) {
        let Some(waiting) = self.waiting.take() else {
            tracing::debug!("an answer to no question: ignored");
            return;
        };
        match (waiting, answer) {
            (Waiting::Config, Observation::Config(file)) => self.config_read(file, out),
            (Waiting::Prepare(active), Observation::Prepared(result)) => self.prepared(*active, result, out),
            (Waiting::Start, Observation::Started(result)) => self.started(now, result),
            (Waiting::LinkUp, Observation::LinkSetUp(result)) => match result {
                Ok(()) => tracing::warn!(
                    device = crate::egress_runtime::TUN_NAME,
                    "tunnel interface was down; set it up again"
                ),
                Err(e) => self.status.last_error = Some(e.to_string()),
            },
            (Waiting::Routes, Observation::RoutesInstalled(result)) => match result {
                Ok(()) => {
                    if let Some(run) = self.run_mut() {
                        run.routed = true;
                    }
                    self.judge(now);
                }
                Err(e) => self.status.last_error = Some(e.to_string()),
            },
            (Waiting::Status(report), Observation::StatusWritten(result)) => {
                // A failed write is tried again at the end of the next round.
                if result.is_ok() {
                    self.written = Some(report);
                }
            }
            (waiting, _) => {
                tracing::debug!("not the answer awaited: ignored");
                self.waiting = Some(waiting);
            }
        }
    }

    fn exited(&mut self, now: Instant, exit: ExitStatus) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some(run) = active.run.take() else {
            return;
        };
        if now.saturating_duration_since(run.started) >= HEALTHY_AFTER {
            active.failures = 0;
        }
        let wait = backoff(active.failures);
        active.failures = active.failures.saturating_add(1);
        active.restart_at = Some(now + wait);
        tracing::warn!(%exit, restart_in_ms = wait.as_millis() as u64, "tunnel process exited");
        self.status.state = State::Restarting;
        self.status.pid = None;
        self.status.restarts = self.status.restarts.saturating_add(1);
        self.status.last_error = Some(format!("tunnel process exited ({exit})"));
    }

    /// Looks after the tunnel: its restart, its interface, its routes, its state.
    fn tend(&mut self, now: Instant, out: &mut Vec<Command>) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some(run) = active.run.as_mut() else {
            if active.restart_at.is_some_and(|t| now >= t) {
                self.start(out);
            }
            return;
        };
        let Some(link) = run.link else {
            return;
        };
        if link != Link::Up {
            run.routed = false;
            if self.status.state == State::Up {
                self.status.state = State::Starting;
            }
            // Set down from outside (the tunnel process brings it up itself when it starts): up
            // again, and the routes come back on the next round. Traffic meanwhile has no route.
            let settled = now.saturating_duration_since(run.started) >= LINK_PATIENCE;
            let due = active
                .link_tried
                .is_none_or(|t| now.saturating_duration_since(t) >= LINK_PATIENCE);
            if settled && due && link == Link::Down {
                active.link_tried = Some(now);
                out.push(Command::SetLinkUp);
                self.waiting = Some(Waiting::LinkUp);
            }
            return;
        }
        if !run.routed {
            match active.cfg.routed() {
                Ok(cidrs) => {
                    out.push(Command::InstallRoutes(cidrs));
                    self.waiting = Some(Waiting::Routes);
                }
                Err(e) => self.status.last_error = Some(e.to_string()),
            }
            return;
        }
        self.judge(now);
    }

    /// With the interface up and routed: up once the tunnel works (a handshake for WireGuard).
    fn judge(&mut self, now: Instant) {
        let Some(active) = self.active.as_ref() else {
            return;
        };
        let Some(run) = active.run.as_ref() else {
            return;
        };
        if !active.wireguard() || run.handshake {
            self.status.state = State::Up;
            // A late handshake ends what the complaint was about.
            if self.status.last_error.as_deref() == Some(no_handshake().as_str()) {
                self.status.last_error = None;
            }
        } else if now.saturating_duration_since(run.started) >= HANDSHAKE_PATIENCE
            && self.status.last_error.is_none()
        {
            self.status.last_error = Some(no_handshake());
        }
    }

    fn config_read(&mut self, file: ConfigFile, out: &mut Vec<Command>) {
        let bytes = match file {
            ConfigFile::Missing => None,
            ConfigFile::Read(bytes) => Some(bytes),
            ConfigFile::Unreadable(e) => {
                let path = self.dir.join(CONFIG_FILE);
                tracing::warn!(error = %e, path = %path.display(), "cannot read the egress config");
                return;
            }
        };
        if bytes == self.config {
            return;
        }
        self.config = bytes.clone();
        self.stop_tunnel(out);
        match bytes {
            None => {
                tracing::info!("no egress config: idle");
                self.set_idle(None);
            }
            Some(bytes) => self.load(&bytes, out),
        }
    }

    fn load(&mut self, bytes: &[u8], out: &mut Vec<Command>) {
        let cfg = match RuntimeConfig::parse(bytes) {
            Ok(cfg) => cfg,
            Err(e) => return self.fail(None, e.to_string()),
        };
        tracing::info!(config = ?cfg, "new egress config");
        if let Some(expected) = cfg.netns_inode {
            match &self.netns {
                Ok(inode) if *inode == expected => {}
                Ok(inode) => {
                    return self.set_idle(Some(format!(
                        "config is for network namespace {expected}, this is {inode}: waiting for the agent"
                    )));
                }
                Err(e) => return self.fail(Some(cfg.tunnel_kind()), e.clone()),
            }
        }
        match self.launch(&cfg) {
            Ok((prepare, launch)) => {
                out.push(Command::Prepare(prepare));
                self.waiting = Some(Waiting::Prepare(Box::new(Active {
                    cfg,
                    launch,
                    run: None,
                    failures: 0,
                    restart_at: None,
                    link_tried: None,
                })));
            }
            Err(e) => self.fail(Some(cfg.tunnel_kind()), e.to_string()),
        }
    }

    /// The tunnel process's config file and command line: the re-executed binary for WireGuard,
    /// sing-box for a proxy.
    fn launch(&self, cfg: &RuntimeConfig) -> Result<(Prepare, Launch), Error> {
        match &cfg.spec.tunnel {
            Tunnel::Wireguard(wg) => {
                let file = self.dir.join(WIREGUARD_FILE);
                let child = wireguard::ChildConfig {
                    wireguard: wg.clone(),
                    endpoint_ip: cfg.endpoint_ip,
                };
                let contents = serde_json::to_vec(&child).map_err(|e| Error::Invalid(e.to_string()))?;
                let args = vec![
                    "--log-format".to_owned(),
                    self.log_format.clone(),
                    "wireguard".to_owned(),
                    "--config".to_owned(),
                    file.display().to_string(),
                ];
                Ok((
                    Prepare {
                        file,
                        contents,
                        check_with: None,
                    },
                    Launch {
                        program: self.self_exe.clone(),
                        args,
                        watch_handshake: true,
                    },
                ))
            }
            Tunnel::Proxy { .. } => {
                let file = self.dir.join(SING_BOX_FILE);
                let contents = singbox::render(cfg).and_then(|c| singbox::to_json(&c))?;
                let args = vec![
                    "run".to_owned(),
                    "--disable-color".to_owned(),
                    "-c".to_owned(),
                    file.display().to_string(),
                ];
                Ok((
                    Prepare {
                        file,
                        contents,
                        check_with: Some(self.sing_box.clone()),
                    },
                    Launch {
                        program: self.sing_box.clone(),
                        args,
                        watch_handshake: false,
                    },
                ))
            }
        }
    }

    fn prepared(&mut self, active: Active, result: Result<(), Error>, out: &mut Vec<Command>) {
        match result {
            Ok(()) => {
                self.status.tunnel = Some(active.cfg.tunnel_kind());
                self.status.restarts = 0;
                self.status.last_error = None;
                self.active = Some(active);
                self.start(out);
            }
            Err(e) => self.fail(Some(active.cfg.tunnel_kind()), e.to_string()),
        }
    }

    fn start(&mut self, out: &mut Vec<Command>) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        active.run = None;
        active.restart_at = None;
        out.push(Command::Start(active.launch.clone()));
        self.waiting = Some(Waiting::Start);
    }

    fn started(&mut self, now: Instant, result: Result<u32, std::io::Error>) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        match result {
            Ok(pid) => {
                tracing::info!(pid, program = %active.launch.program.display(), "tunnel process started");
                self.status.pid = Some(pid);
                self.status.state = State::Starting;
                active.run = Some(Run {
                    started: now,
                    handshake: false,
                    routed: false,
                    link: None,
                });
            }
            Err(e) => {
                active.failures = active.failures.saturating_add(1);
                active.restart_at = Some(now + backoff(active.failures));
                self.status.state = State::Restarting;
                self.status.pid = None;
                self.status.last_error =
                    Some(format!("cannot start {}: {e}", active.launch.program.display()));
            }
        }
    }

    fn stop_tunnel(&mut self, out: &mut Vec<Command>) {
        if self.active.take().is_some_and(|a| a.run.is_some()) {
            out.push(Command::Kill);
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
}

/// `last_error` while a WireGuard process has had no handshake for [`HANDSHAKE_PATIENCE`].
fn no_handshake() -> String {
    format!(
        "no WireGuard handshake after {} s (server unreachable, or keys that do not match?)",
        HANDSHAKE_PATIENCE.as_secs()
    )
}
