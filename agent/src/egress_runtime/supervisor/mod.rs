//! The supervisor (`cloud-cli-proxy-egress run`): watches `DIR/egress.json`, runs the tunnel
//! process for it, restarts that process when it dies, and keeps `DIR/status.json` current.
//!
//! Split in two. The decisions (what to run, when to restart it with [`backoff`], when to set a
//! downed interface up, when to route into it, what the status says) are [`machine::Supervisor`],
//! a state machine that turns [`Observation`]s into [`Command`]s and never reads a clock, a file
//! or a process, so it is tested with a fake clock. [`run`] is the thin loop around it: every
//! [`TICK`] it looks at the tunnel process (exit, handshake line) and its interface, hands that in
//! with the time, and carries out the commands (read `egress.json`, write the tunnel's config,
//! start and kill the process, `ip`, write `status.json`), handing each outcome back in. The
//! config file is read every [`CONFIG_POLL`]; a dead tunnel process is started again in the round
//! that sees it dead (then with [`backoff`]).

pub mod machine;
#[cfg(test)]
mod tests;

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use machine::{Command, ConfigFile, Launch, Link, Observation, Prepare, Report, Supervisor};

use super::{
    CONFIG_FILE, Error, STATUS_FILE, TUN_NAME, current_netns_inode, routes, singbox, wireguard, write_private,
};

/// Granularity of the loop (child exit, tun device, handshake).
pub const TICK: Duration = Duration::from_millis(50);
/// How often `egress.json` is read.
pub const CONFIG_POLL: Duration = Duration::from_millis(200);
/// Longest wait between two starts of a tunnel process that keeps dying.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A tunnel process that lived this long is considered healthy: the next restart is immediate again.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How long a tunnel process has to bring its interface up itself before the supervisor sets a
/// downed one up, and the least time between two such tries.
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
    /// `human` or `json`, handed on to the WireGuard process as `--log-format`.
    pub log_format: String,
}

/// Runs until `stop` is set; then the tunnel process is killed and the state left idle.
pub fn run(opts: Options, stop: &AtomicBool) -> Result<(), Error> {
    std::fs::create_dir_all(&opts.dir).map_err(Error::io(format!("create {}", opts.dir.display())))?;
    let netns = current_netns_inode().map_err(|e| e.to_string());
    let mut sup = Supervisor::new(&opts, netns);
    let mut io = Io { opts, running: None };
    while !stop.load(Ordering::Relaxed) {
        for seen in io.look() {
            io.feed(&mut sup, seen);
        }
        io.feed(&mut sup, Observation::Tick);
        std::thread::sleep(TICK);
    }
    io.feed(&mut sup, Observation::Stop);
    Ok(())
}

/// The supervisor's hands: the files, the tunnel process, the interface.
struct Io {
    opts: Options,
    running: Option<Running>,
}

struct Running {
    child: Child,
    /// Set by the reader of a WireGuard process's stdout on its first handshake.
    handshake: Arc<AtomicBool>,
    handshake_told: bool,
}

impl Io {
    /// What changed in the tunnel process, and its interface as it is now.
    fn look(&mut self) -> Vec<Observation> {
        let mut seen = Vec::new();
        if let Some(running) = self.running.as_mut() {
            match running.child.try_wait() {
                Ok(Some(exit)) => {
                    self.running = None;
                    seen.push(Observation::Exited(exit));
                }
                Ok(None) => {
                    if !running.handshake_told && running.handshake.load(Ordering::Relaxed) {
                        running.handshake_told = true;
                        seen.push(Observation::Handshake);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot look at the tunnel process"),
            }
        }
        let link = if routes::link_up(TUN_NAME) {
            Link::Up
        } else if routes::link_exists(TUN_NAME) {
            Link::Down
        } else {
            Link::Absent
        };
        seen.push(Observation::Link(link));
        seen
    }

    /// Hands `observation` in, carries out the commands, and hands each answer in before the next
    /// command (the supervisor asks one question at a time).
    fn feed(&mut self, sup: &mut Supervisor, observation: Observation) {
        let mut next = Some(observation);
        while let Some(observation) = next.take() {
            for command in sup.step(Instant::now(), observation) {
                if let Some(answer) = self.carry_out(command) {
                    next = Some(answer);
                }
            }
        }
    }

    fn carry_out(&mut self, command: Command) -> Option<Observation> {
        Some(match command {
            Command::ReadConfig => Observation::Config(self.read_config()),
            Command::Prepare(prepare) => Observation::Prepared(prepare_files(&prepare)),
            Command::Start(launch) => Observation::Started(self.start(&launch)),
            Command::Kill => {
                if let Some(mut running) = self.running.take() {
                    let _ = running.child.kill();
                    let _ = running.child.wait();
                    tracing::info!(pid = running.child.id(), "tunnel process stopped");
                }
                return None;
            }
            Command::SetLinkUp => Observation::LinkSetUp(routes::set_link_up(TUN_NAME)),
            Command::InstallRoutes(cidrs) => {
                Observation::RoutesInstalled(routes::install_tunnel(TUN_NAME, &cidrs))
            }
            Command::WriteStatus(report) => Observation::StatusWritten(self.write_status(report)),
        })
    }

    fn read_config(&self) -> ConfigFile {
        match std::fs::read(self.opts.dir.join(CONFIG_FILE)) {
            Ok(bytes) => ConfigFile::Read(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::Missing,
            Err(e) => ConfigFile::Unreadable(e),
        }
    }

    fn start(&mut self, launch: &Launch) -> Result<u32, std::io::Error> {
        let mut child = std::process::Command::new(&launch.program)
            .args(&launch.args)
            .stdin(Stdio::null())
            .stdout(if launch.watch_handshake {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .stderr(Stdio::inherit())
            .spawn()?;
        let handshake = Arc::new(AtomicBool::new(false));
        if let Some(stdout) = child.stdout.take() {
            let flag = handshake.clone();
            let _ = std::thread::Builder::new()
                .name("tunnel-stdout".into())
                .spawn(move || watch_handshake(stdout, &flag));
        }
        let pid = child.id();
        self.running = Some(Running {
            child,
            handshake,
            handshake_told: false,
        });
        Ok(pid)
    }

    fn write_status(&self, report: Report) -> Result<(), Error> {
        let status = report.at(chrono::Utc::now());
        let written = serde_json::to_vec_pretty(&status)
            .map_err(|e| Error::Invalid(e.to_string()))
            .and_then(|json| write_private(&self.opts.dir.join(STATUS_FILE), &json));
        if let Err(e) = &written {
            tracing::warn!(error = %e, "cannot write status");
        }
        written
    }
}

/// Writes the tunnel process's config, has sing-box check it when asked, and installs the policy
/// routing.
fn prepare_files(prepare: &Prepare) -> Result<(), Error> {
    write_private(&prepare.file, &prepare.contents)?;
    if let Some(sing_box) = &prepare.check_with {
        singbox::check(sing_box, &prepare.file)?;
    }
    routes::install_policy()
}

/// Sets `flag` when the WireGuard process prints its handshake line.
fn watch_handshake(stdout: std::process::ChildStdout, flag: &AtomicBool) {
    for line in std::io::BufReader::new(stdout).lines() {
        match line {
            Ok(l) if l.trim() == wireguard::HANDSHAKE_LINE => flag.store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(_) => break,
        }
    }
}
