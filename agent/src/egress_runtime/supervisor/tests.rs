//! The supervisor's decisions against a fake clock: a base `Instant` plus the time the test lets
//! pass, and a scripted world that answers the supervisor's commands the way the loop would.

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::*;
use crate::egress_runtime::{RuntimeConfig, State};

const DIR: &str = "/run/ccp-egress";
const SELF_EXE: &str = "/usr/local/bin/cloud-cli-proxy-egress";
const SING_BOX: &str = "/usr/local/bin/sing-box";
const NETNS: u64 = 4026532000;
const FIRST_PID: u32 = 100;
const SIGKILL: i32 = 9;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn wg_bytes() -> Vec<u8> {
    serde_json::to_vec(&crate::egress_runtime::tests::wg_config()).unwrap()
}

fn proxy_config() -> RuntimeConfig {
    let outbound = serde_json::from_value(serde_json::json!({
        "type": "shadowsocks", "server": "proxy.example.test", "server_port": 8388,
        "method": "2022-blake3-aes-128-gcm", "password": "AAECAwQFBgcICQoLDA0ODw=="
    }))
    .unwrap();
    RuntimeConfig {
        spec: wire::EgressSpec {
            egress_ip_id: "e2".into(),
            declared_ip: "198.18.6.1".into(),
            dns_server: "198.18.6.53".into(),
            tunnel: wire::Tunnel::Proxy { outbound },
        },
        endpoint_ip: "198.18.6.1".parse().unwrap(),
        netns_inode: None,
    }
}

fn proxy_bytes() -> Vec<u8> {
    serde_json::to_vec(&proxy_config()).unwrap()
}

fn wg_launch() -> Launch {
    Launch {
        program: SELF_EXE.into(),
        args: vec![
            "--log-format".into(),
            "json".into(),
            "wireguard".into(),
            "--config".into(),
            format!("{DIR}/wireguard.json"),
        ],
        watch_handshake: true,
    }
}

fn sing_box_launch() -> Launch {
    Launch {
        program: SING_BOX.into(),
        args: vec![
            "run".into(),
            "--disable-color".into(),
            "-c".into(),
            format!("{DIR}/sing-box.json"),
        ],
        watch_handshake: false,
    }
}

fn report(
    state: State,
    tunnel: Option<&str>,
    restarts: u64,
    last_error: Option<&str>,
    pid: Option<u32>,
) -> Report {
    Report {
        state,
        tunnel: tunnel.map(str::to_owned),
        restarts,
        last_error: last_error.map(str::to_owned),
        pid,
    }
}

fn exited_line() -> String {
    format!("tunnel process exited ({})", ExitStatus::from_raw(SIGKILL))
}

/// The supervisor, the fake clock, and what the loop would answer.
struct World {
    sup: Supervisor,
    base: Instant,
    elapsed: Duration,
    /// `egress.json`.
    config: Option<Vec<u8>>,
    link: Link,
    next_pid: u32,
    start_fails: bool,
    prepare_fails: bool,
    routes_fail: bool,
    status_write_fails: bool,
    /// `status.json`.
    status: Option<Report>,
    /// Every command, with the time it was given at.
    log: Vec<(Duration, Command)>,
}

impl World {
    fn new(config: Option<Vec<u8>>) -> Self {
        let opts = Options {
            dir: DIR.into(),
            sing_box: SING_BOX.into(),
            self_exe: SELF_EXE.into(),
            log_format: "json".into(),
        };
        World {
            sup: Supervisor::new(&opts, Ok(NETNS)),
            base: Instant::now(),
            elapsed: Duration::ZERO,
            config,
            link: Link::Absent,
            next_pid: FIRST_PID,
            start_fails: false,
            prepare_fails: false,
            routes_fail: false,
            status_write_fails: false,
            status: None,
            log: Vec::new(),
        }
    }

    fn pass(&mut self, d: Duration) {
        self.elapsed += d;
    }

    /// Hands `observation` in and answers every command as the loop would; all the commands.
    fn feed(&mut self, observation: Observation) -> Vec<Command> {
        let mut all = Vec::new();
        let mut next = Some(observation);
        while let Some(observation) = next.take() {
            let commands = self.sup.step(self.base + self.elapsed, observation);
            for command in commands {
                self.log.push((self.elapsed, command.clone()));
                if let Some(answer) = self.answer(&command) {
                    assert!(next.is_none(), "two questions at once: {all:?} {command:?}");
                    next = Some(answer);
                }
                all.push(command);
            }
        }
        all
    }

    fn answer(&mut self, command: &Command) -> Option<Observation> {
        let failure = |what: &str| Err(Error::Invalid(format!("{what} refused")));
        Some(match command {
            Command::ReadConfig => Observation::Config(match &self.config {
                None => ConfigFile::Missing,
                Some(bytes) => ConfigFile::Read(bytes.clone()),
            }),
            Command::Prepare(_) => Observation::Prepared(if self.prepare_fails {
                failure("sing-box check")
            } else {
                Ok(())
            }),
            Command::Start(_) if self.start_fails => {
                Observation::Started(Err(std::io::Error::from(std::io::ErrorKind::NotFound)))
            }
            Command::Start(_) => {
                self.next_pid += 1;
                Observation::Started(Ok(self.next_pid - 1))
            }
            Command::Kill => return None,
            Command::SetLinkUp => Observation::LinkSetUp(Ok(())),
            Command::InstallRoutes(_) => Observation::RoutesInstalled(if self.routes_fail {
                failure("ip route")
            } else {
                Ok(())
            }),
            Command::WriteStatus(report) => {
                if self.status_write_fails {
                    Observation::StatusWritten(failure("write"))
                } else {
                    self.status = Some(report.clone());
                    Observation::StatusWritten(Ok(()))
                }
            }
        })
    }

    /// One round of the loop: the interface as it is, then the tick.
    fn round(&mut self) -> Vec<Command> {
        let mut all = self.feed(Observation::Link(self.link));
        all.extend(self.feed(Observation::Tick));
        all
    }

    /// The loop seeing the tunnel process dead, then the rest of that round.
    fn kill_round(&mut self) -> Vec<Command> {
        let mut all = self.feed(Observation::Exited(ExitStatus::from_raw(SIGKILL)));
        all.extend(self.round());
        all
    }

    /// Rounds every `step` for `span` (the first after one step); the commands with their times.
    fn rounds(&mut self, span: Duration, step: Duration) -> Vec<(Duration, Command)> {
        let mut out = Vec::new();
        let end = self.elapsed + span;
        while self.elapsed + step <= end {
            self.pass(step);
            let at = self.elapsed;
            out.extend(self.round().into_iter().map(|c| (at, c)));
        }
        out
    }

    /// Rounds every `step` until one starts a process; how long that took.
    fn until_start(&mut self, step: Duration) -> Duration {
        let from = self.elapsed;
        if self.round().iter().any(is_start) {
            return Duration::ZERO;
        }
        for _ in 0..10_000 {
            self.pass(step);
            if self.round().iter().any(is_start) {
                return self.elapsed - from;
            }
        }
        panic!("never started again");
    }

    fn status(&self) -> &Report {
        self.status.as_ref().expect("a status was written")
    }

    /// A WireGuard tunnel started at the current time, its interface up and routed.
    fn wireguard_routed() -> Self {
        let mut w = World::new(Some(wg_bytes()));
        w.round();
        w.pass(ms(50));
        w.link = Link::Up;
        w.round();
        w
    }
}

fn is_start(c: &Command) -> bool {
    matches!(c, Command::Start(_))
}

fn without_config_reads(commands: Vec<(Duration, Command)>) -> Vec<(Duration, Command)> {
    commands
        .into_iter()
        .filter(|(_, c)| *c != Command::ReadConfig)
        .collect()
}

#[test]
fn a_config_is_prepared_started_and_reported_in_the_first_round() {
    let mut w = World::new(Some(wg_bytes()));
    let commands = w.round();
    let [
        Command::ReadConfig,
        Command::Prepare(prepare),
        Command::Start(launch),
        Command::WriteStatus(written),
    ] = commands.as_slice()
    else {
        panic!("{commands:?}");
    };
    assert_eq!(prepare.file, PathBuf::from(format!("{DIR}/wireguard.json")));
    assert_eq!(prepare.check_with, None);
    let child: wireguard::ChildConfig = serde_json::from_slice(&prepare.contents).unwrap();
    assert_eq!(child.endpoint_ip.to_string(), "198.18.5.1");
    assert!(!format!("{prepare:?}").contains("yAnz5TF"), "Debug shows no key");
    assert_eq!(*launch, wg_launch());
    assert_eq!(
        *written,
        report(State::Starting, Some("wireguard"), 0, None, Some(FIRST_PID))
    );
}

#[test]
fn the_config_is_read_every_config_poll() {
    let mut w = World::new(None);
    w.round();
    let reads: Vec<Duration> = w
        .rounds(ms(1000), ms(50))
        .into_iter()
        .filter(|(_, c)| *c == Command::ReadConfig)
        .map(|(at, _)| at)
        .collect();
    assert_eq!(reads, [ms(200), ms(400), ms(600), ms(800), ms(1000)]);
    assert_eq!(CONFIG_POLL, ms(200));
}

#[test]
fn a_dying_process_is_started_again_after_0_100_200_400_ms_up_to_2_s() {
    let mut w = World::new(Some(wg_bytes()));
    w.round();
    let mut waits = Vec::new();
    for died in 1..=9u64 {
        w.pass(ms(10));
        w.feed(Observation::Exited(ExitStatus::from_raw(SIGKILL)));
        waits.push(w.until_start(ms(10)));
        assert_eq!(w.sup.report().restarts, died);
        assert_eq!(w.sup.report().state, State::Starting);
    }
    let expected: Vec<Duration> = [0, 100, 200, 400, 800, 1600, 2000, 2000, 2000].map(ms).to_vec();
    assert_eq!(waits, expected);
    assert_eq!(MAX_BACKOFF, ms(2000));
}

#[test]
fn while_waiting_to_restart_the_status_says_restarting() {
    let mut w = World::new(Some(wg_bytes()));
    w.round();
    w.pass(ms(10));
    w.kill_round();
    w.pass(ms(10));
    let commands = w.kill_round();
    assert_eq!(
        commands,
        [Command::WriteStatus(report(
            State::Restarting,
            Some("wireguard"),
            2,
            Some(&exited_line()),
            None
        ))]
    );
    w.pass(ms(90));
    assert!(!w.round().iter().any(is_start), "not before 100 ms");
    w.pass(ms(10));
    assert_eq!(w.round()[0], Command::Start(wg_launch()));
}

#[test]
fn a_killed_process_is_started_again_in_the_round_that_sees_it_dead() {
    let mut w = World::wireguard_routed();
    w.feed(Observation::Handshake);
    w.pass(ms(50));
    w.round();
    assert_eq!(w.status().state, State::Up);
    w.pass(ms(50));
    w.link = Link::Absent;
    assert_eq!(
        w.kill_round(),
        [
            Command::Start(wg_launch()),
            Command::WriteStatus(report(
                State::Starting,
                Some("wireguard"),
                1,
                Some(&exited_line()),
                Some(FIRST_PID + 1)
            )),
        ]
    );
}

#[test]
fn a_process_that_lived_healthy_after_is_started_again_at_once() {
    let mut w = World::new(Some(wg_bytes()));
    w.round();
    for _ in 0..3 {
        w.pass(ms(10));
        w.feed(Observation::Exited(ExitStatus::from_raw(SIGKILL)));
        w.until_start(ms(10));
    }
    // Three deaths in a row: a fourth one just short of healthy waits 400 ms.
    w.pass(HEALTHY_AFTER - ms(10));
    w.feed(Observation::Exited(ExitStatus::from_raw(SIGKILL)));
    assert_eq!(w.until_start(ms(10)), ms(400));
    // One that lived HEALTHY_AFTER is started again in the same round.
    w.pass(HEALTHY_AFTER);
    w.feed(Observation::Exited(ExitStatus::from_raw(SIGKILL)));
    assert_eq!(w.until_start(ms(10)), Duration::ZERO);
    // And the count starts over: the next quick death waits 100 ms.
    w.pass(ms(10));
    w.feed(Observation::Exited(ExitStatus::from_raw(SIGKILL)));
    assert_eq!(w.until_start(ms(10)), ms(100));
    assert_eq!(w.sup.report().restarts, 6);
}

#[test]
fn a_process_that_cannot_be_started_is_tried_again_with_backoff() {
    let mut w = World::new(Some(wg_bytes()));
    w.start_fails = true;
    w.round();
    assert_eq!(
        *w.status(),
        report(
            State::Restarting,
            Some("wireguard"),
            0,
            Some(&format!(
                "cannot start {SELF_EXE}: {}",
                std::io::Error::from(std::io::ErrorKind::NotFound)
            )),
            None
        )
    );
    w.start_fails = false;
    assert_eq!(w.until_start(ms(10)), ms(100));
    assert_eq!(w.sup.report().restarts, 0);
}

#[test]
fn a_changed_config_kills_the_process_and_starts_the_new_program() {
    let mut w = World::wireguard_routed();
    w.feed(Observation::Handshake);
    w.pass(ms(50));
    w.round();
    assert_eq!(w.status().state, State::Up);
    w.config = Some(proxy_bytes());
    // Read at the next poll only (the last one was at 0).
    assert!(w.rounds(ms(50), ms(50)).is_empty());
    w.pass(ms(50));
    let commands = w.round();
    let [
        Command::ReadConfig,
        Command::Kill,
        Command::Prepare(prepare),
        Command::Start(launch),
        Command::WriteStatus(written),
    ] = commands.as_slice()
    else {
        panic!("{commands:?}");
    };
    assert_eq!(prepare.file, PathBuf::from(format!("{DIR}/sing-box.json")));
    assert_eq!(prepare.check_with, Some(PathBuf::from(SING_BOX)));
    let rendered = singbox::to_json(&singbox::render(&proxy_config()).unwrap()).unwrap();
    assert_eq!(prepare.contents, rendered);
    assert_eq!(*launch, sing_box_launch());
    assert_eq!(
        *written,
        report(
            State::Starting,
            Some("proxy/shadowsocks"),
            0,
            None,
            Some(FIRST_PID + 1)
        )
    );
}

#[test]
fn the_same_config_rewritten_changes_nothing() {
    let mut w = World::wireguard_routed();
    w.config = Some(wg_bytes());
    let commands = w.rounds(ms(1000), ms(50));
    assert!(without_config_reads(commands).is_empty());
}

#[test]
fn a_removed_config_kills_the_process_and_idles() {
    let mut w = World::wireguard_routed();
    w.config = None;
    w.pass(ms(150));
    assert_eq!(
        w.round(),
        [
            Command::ReadConfig,
            Command::Kill,
            Command::WriteStatus(report(State::Idle, None, 0, None, None)),
        ]
    );
    w.link = Link::Absent;
    assert!(without_config_reads(w.rounds(ms(5000), ms(50))).is_empty());
}

#[test]
fn a_removed_config_while_waiting_to_restart_kills_nothing() {
    let mut w = World::new(Some(wg_bytes()));
    w.round();
    for _ in 0..4 {
        w.pass(ms(10));
        w.feed(Observation::Exited(ExitStatus::from_raw(SIGKILL)));
        w.until_start(ms(10));
    }
    w.pass(ms(10));
    w.kill_round();
    assert_eq!(w.status().state, State::Restarting);
    w.config = None;
    let commands = without_config_reads(w.rounds(ms(3000), ms(50)));
    assert_eq!(
        commands.into_iter().map(|(_, c)| c).collect::<Vec<_>>(),
        [Command::WriteStatus(report(State::Idle, None, 0, None, None))]
    );
}

#[test]
fn a_config_that_does_not_parse_fails_and_runs_nothing() {
    let mut w = World::new(Some(b"{\"spec\": 1}".to_vec()));
    let commands = w.round();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert_eq!(commands[0], Command::ReadConfig);
    let status = w.status();
    assert_eq!(
        (status.state, status.tunnel.as_deref(), status.pid),
        (State::Failed, None, None)
    );
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("invalid egress config"),
        "{status:?}"
    );
}

#[test]
fn a_refused_prepare_fails_with_the_tunnel_kind() {
    let mut w = World::new(Some(proxy_bytes()));
    w.prepare_fails = true;
    let commands = w.round();
    assert!(!commands.iter().any(is_start), "{commands:?}");
    assert_eq!(
        *w.status(),
        report(
            State::Failed,
            Some("proxy/shadowsocks"),
            0,
            Some("invalid egress config: sing-box check refused"),
            None
        )
    );
}

#[test]
fn a_config_for_another_namespace_idles_until_the_agent_rewrites_it() {
    let mut cfg = crate::egress_runtime::tests::wg_config();
    cfg.netns_inode = Some(NETNS + 1);
    let mut w = World::new(Some(serde_json::to_vec(&cfg).unwrap()));
    assert_eq!(
        w.round(),
        [
            Command::ReadConfig,
            Command::WriteStatus(report(
                State::Idle,
                None,
                0,
                Some(&format!(
                    "config is for network namespace {}, this is {NETNS}: waiting for the agent",
                    NETNS + 1
                )),
                None
            )),
        ]
    );
    cfg.netns_inode = Some(NETNS);
    w.config = Some(serde_json::to_vec(&cfg).unwrap());
    w.pass(CONFIG_POLL);
    assert!(w.round().contains(&Command::Start(wg_launch())));
}

#[test]
fn a_downed_interface_is_set_up_after_link_patience_and_not_again_within_it() {
    let mut w = World::new(Some(wg_bytes()));
    w.round();
    // The process created its interface but it stays down: the process has LINK_PATIENCE to
    // bring it up itself, then the supervisor tries every LINK_PATIENCE.
    w.link = Link::Down;
    let set_up: Vec<Duration> = w
        .rounds(ms(2500), ms(50))
        .into_iter()
        .filter(|(_, c)| *c == Command::SetLinkUp)
        .map(|(at, _)| at)
        .collect();
    assert_eq!(set_up, [LINK_PATIENCE, 2 * LINK_PATIENCE]);
    assert_eq!(LINK_PATIENCE, ms(1000));
}

#[test]
fn an_absent_interface_is_not_set_up() {
    let mut w = World::new(Some(wg_bytes()));
    w.round();
    assert!(
        !w.rounds(ms(3000), ms(50))
            .iter()
            .any(|(_, c)| *c == Command::SetLinkUp)
    );
}

#[test]
fn an_interface_set_down_later_is_set_up_again_and_routed() {
    let mut w = World::wireguard_routed();
    w.feed(Observation::Handshake);
    w.pass(ms(5000));
    w.round();
    assert_eq!(w.status().state, State::Up);
    // Down long after the start, no try yet: set up in the round that sees it.
    w.link = Link::Down;
    w.pass(ms(50));
    assert_eq!(
        w.round(),
        [
            Command::SetLinkUp,
            Command::WriteStatus(report(
                State::Starting,
                Some("wireguard"),
                0,
                None,
                Some(FIRST_PID)
            )),
        ]
    );
    w.link = Link::Up;
    w.pass(ms(50));
    let commands = w.round();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(matches!(commands[0], Command::InstallRoutes(_)), "{commands:?}");
    assert_eq!(w.status().state, State::Up);
    // Down again 300 ms after that try: the next one waits for LINK_PATIENCE since it.
    w.pass(ms(200));
    w.link = Link::Down;
    let set_up: Vec<Duration> = w
        .rounds(ms(1500), ms(50))
        .into_iter()
        .filter(|(_, c)| *c == Command::SetLinkUp)
        .map(|(at, _)| at)
        .collect();
    assert_eq!(set_up, [ms(5100) + LINK_PATIENCE]);
}

#[test]
fn wireguard_without_a_handshake_says_so_after_handshake_patience_and_stays_starting() {
    let mut w = World::wireguard_routed();
    let line = "no WireGuard handshake after 6 s (server unreachable, or keys that do not match?)";
    let written: Vec<(Duration, Command)> = w
        .rounds(ms(7000), ms(50))
        .into_iter()
        .filter(|(_, c)| matches!(c, Command::WriteStatus(_)))
        .collect();
    // Started at 0.
    assert_eq!(
        written,
        [(
            HANDSHAKE_PATIENCE,
            Command::WriteStatus(report(
                State::Starting,
                Some("wireguard"),
                0,
                Some(line),
                Some(FIRST_PID)
            ))
        )]
    );
    w.feed(Observation::Handshake);
    w.pass(ms(50));
    w.round();
    assert_eq!(w.status().state, State::Up);
    assert_eq!(
        w.status().last_error,
        None,
        "the late handshake answered the complaint"
    );
}

#[test]
fn wireguard_is_up_once_routed_and_a_handshake_was_seen() {
    let mut w = World::new(Some(wg_bytes()));
    w.round();
    w.feed(Observation::Handshake);
    w.pass(ms(50));
    w.round();
    assert_eq!(w.status().state, State::Starting, "interface not up yet");
    w.link = Link::Up;
    w.pass(ms(50));
    let commands = w.round();
    let [Command::InstallRoutes(cidrs), Command::WriteStatus(written)] = commands.as_slice() else {
        panic!("{commands:?}");
    };
    assert_eq!(*cidrs, vec!["0.0.0.0/0".parse().unwrap()]);
    assert_eq!(
        *written,
        report(State::Up, Some("wireguard"), 0, None, Some(FIRST_PID))
    );
}

#[test]
fn a_handshake_of_an_earlier_process_does_not_count() {
    let mut w = World::wireguard_routed();
    w.feed(Observation::Handshake);
    w.pass(ms(50));
    w.kill_round();
    w.link = Link::Up;
    w.pass(ms(50));
    w.round();
    assert_eq!(w.status().state, State::Starting);
}

#[test]
fn sing_box_is_up_once_its_interface_is_up_and_routed() {
    let mut w = World::new(Some(proxy_bytes()));
    w.round();
    w.pass(ms(50));
    w.round();
    assert_eq!(w.status().state, State::Starting);
    w.link = Link::Up;
    w.pass(ms(50));
    assert_eq!(
        w.round(),
        [
            Command::InstallRoutes(vec!["0.0.0.0/0".parse().unwrap()]),
            Command::WriteStatus(report(
                State::Up,
                Some("proxy/shadowsocks"),
                0,
                None,
                Some(FIRST_PID)
            )),
        ]
    );
}

#[test]
fn routes_that_fail_are_tried_again_in_the_next_round() {
    let mut w = World::new(Some(proxy_bytes()));
    w.round();
    w.routes_fail = true;
    w.link = Link::Up;
    w.pass(ms(50));
    w.round();
    assert_eq!(
        *w.status(),
        report(
            State::Starting,
            Some("proxy/shadowsocks"),
            0,
            Some("invalid egress config: ip route refused"),
            Some(FIRST_PID)
        )
    );
    w.routes_fail = false;
    w.pass(ms(50));
    assert!(matches!(w.round()[0], Command::InstallRoutes(_)));
    assert_eq!(w.status().state, State::Up);
}

#[test]
fn the_status_is_written_when_it_changes_and_again_after_a_failed_write() {
    let mut w = World::wireguard_routed();
    assert!(without_config_reads(w.rounds(ms(1000), ms(50))).is_empty());
    w.status_write_fails = true;
    w.feed(Observation::Handshake);
    w.pass(ms(50));
    assert!(matches!(w.round().last(), Some(Command::WriteStatus(_))));
    w.status_write_fails = false;
    w.pass(ms(50));
    assert_eq!(
        w.round(),
        [Command::WriteStatus(report(
            State::Up,
            Some("wireguard"),
            0,
            None,
            Some(FIRST_PID)
        ))]
    );
}

#[test]
fn stop_kills_the_process_and_leaves_idle() {
    let mut w = World::wireguard_routed();
    assert_eq!(
        w.feed(Observation::Stop),
        [
            Command::Kill,
            Command::WriteStatus(report(State::Idle, None, 0, None, None)),
        ]
    );
}

#[test]
fn backoff_starts_immediately_and_is_capped() {
    assert_eq!(backoff(0), Duration::ZERO);
    assert_eq!(backoff(1), Duration::from_millis(100));
    assert_eq!(backoff(3), Duration::from_millis(400));
    assert_eq!(backoff(6), MAX_BACKOFF);
    assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
}
