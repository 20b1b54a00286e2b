//! `curl -sSf URL | bash` for the bootstrap script and entry links, on a pseudo-terminal with typed
//! answers, against the real binary: each refusal's exit status, and the SSH secret reaching `ssh`
//! through `sshpass` and through the askpass helper. A stand-in agent brings hosts "up", and a
//! stand-in `ssh` records what it was given: the real SSH step is `access_ssh`'s.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

#[path = "access_scripts/api.rs"]
mod api;

use std::time::Duration;

use cloud_cli_proxy_tests::access::{
    FakeAgent, SCRIPT_TOOLS, free_port, handoff_row, pipe_to_bash, reachable, ssh_proxy_addr, tool_dir,
};
use cloud_cli_proxy_tests::fixtures::id;
use cloud_cli_proxy_tests::terminal::Terminal;
use cloud_cli_proxy_tests::{Api, ControlPlane, Options};
use serde_json::json;

const PROMPT: Duration = Duration::from_secs(30);
const END: Duration = Duration::from_secs(60);

/// Runs a script to its end with the given answers typed at its prompts; returns exit code and screen.
async fn answer(mut term: Terminal, username: Option<&str>, password: &str) -> (i32, String) {
    if let Some(username) = username {
        term.expect("Username: ", PROMPT).await;
        term.send_line(username);
    }
    term.expect("Password: ", PROMPT).await;
    term.send_line(password);
    term.wait(END).await
}

#[track_caller]
fn assert_exit(got: (i32, String), code: i32, line: &str) {
    assert_eq!(
        got.0, code,
        "expected exit {code} ({line}); the terminal showed:\n{}",
        got.1
    );
    assert!(
        got.1.contains(line),
        "expected {line:?}; the terminal showed:\n{}",
        got.1
    );
}

struct Setup {
    cp: ControlPlane,
    admin: Api,
    base: String,
    agent: FakeAgent,
}

async fn setup(extra: &[(&str, &str)]) -> Setup {
    let (opts, base) = reachable(Options::new());
    let (mut opts, _) = ssh_proxy_addr(opts);
    for (k, v) in extra {
        opts = opts.env(k, v);
    }
    let cp = ControlPlane::start(opts).await;
    let admin = cp.admin().await;
    let agent = FakeAgent::register(&cp).await;
    Setup {
        cp,
        admin,
        base,
        agent,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_exit_status() {
    let s = setup(&[("LOGIN_MAX_FAILURES_PER_ACCOUNT", "3")]).await;
    let boot = format!("{}/v1/bootstrap/script", s.base);
    let alice = s.admin.create_user("alice", "alice-password").await;
    let host = s.admin.create_host(&id(&alice)).await;
    let short = host["short_id"].as_str().unwrap();
    let entry = format!("{}/entry/{short}", s.base);

    // 10: wrong password, unknown user, an entry link with the wrong password or to no host.
    assert_exit(
        answer(pipe_to_bash(&boot, &[]), Some("alice"), "wrong-one").await,
        10,
        "wrong username or password",
    );
    assert_exit(
        answer(pipe_to_bash(&boot, &[]), Some("nobody"), "whatever1").await,
        10,
        "wrong username or password",
    );
    assert_exit(
        answer(pipe_to_bash(&entry, &[]), None, "wrong-two").await,
        10,
        "wrong username or password",
    );
    let nowhere = format!("{}/entry/zzzzzzzz", s.base);
    assert_exit(
        answer(pipe_to_bash(&nowhere, &[]), None, "whatever2").await,
        10,
        "wrong username or password",
    );

    // 11 disabled, 12 expired, 13 no host.
    let carol = s.admin.create_user("carol", "carol-password").await;
    let carol_host = s.admin.create_host(&id(&carol)).await;
    s.admin
        .patch(
            &format!("/v1/admin/users/{}", id(&carol)),
            json!({"status": "disabled"}),
        )
        .await
        .expect(200);
    assert_exit(
        answer(pipe_to_bash(&boot, &[]), Some("carol"), "carol-password").await,
        11,
        "disabled",
    );
    let carol_entry = format!("{}/entry/{}", s.base, carol_host["short_id"].as_str().unwrap());
    assert_exit(
        answer(pipe_to_bash(&carol_entry, &[]), None, "carol-password").await,
        11,
        "disabled",
    );
    let dave = s.admin.create_user("dave", "dave-password").await;
    s.admin
        .put(
            &format!("/v1/admin/users/{}/expiry", id(&dave)),
            json!({"expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await
        .expect(200);
    assert_exit(
        answer(pipe_to_bash(&boot, &[]), Some("dave"), "dave-password").await,
        12,
        "expired",
    );
    s.admin.create_user("bob", "bob-password").await;
    assert_exit(
        answer(pipe_to_bash(&boot, &[]), Some("bob"), "bob-password").await,
        13,
        "no host",
    );

    // 14: the task bringing the host up fails while the script shows its progress.
    let mut term = pipe_to_bash(&boot, &[]);
    term.expect("Username: ", PROMPT).await;
    term.send_line("alice");
    term.expect("Password: ", PROMPT).await;
    term.send_line("alice-password");
    term.expect("starting your host:", PROMPT).await;
    s.agent.finish_next(&id(&host), false).await;
    assert_exit(term.wait(END).await, 14, "could not be started");

    // 16: past the per-account limit, even the right password.
    let erin = s.admin.create_user("erin", "erin-password").await;
    s.admin.create_host(&id(&erin)).await;
    for _ in 0..3 {
        assert_exit(
            answer(pipe_to_bash(&boot, &[]), Some("erin"), "bad-guess").await,
            10,
            "wrong",
        );
    }
    assert_exit(
        answer(pipe_to_bash(&boot, &[]), Some("erin"), "erin-password").await,
        16,
        "too many attempts",
    );

    // 17: no terminal at all (a new session has no controlling terminal).
    let out = tokio::process::Command::new("setsid")
        .args(["-w", "bash", "-c", &format!("curl -sSf {boot} | bash")])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(17),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no terminal"));

    // An empty answer is 17 too, before anything is sent.
    assert_exit(
        answer(pipe_to_bash(&boot, &[]), Some("alice"), "").await,
        17,
        "no password",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_exit_15() {
    // The script comes from this process, but the URL it talks to (PUBLIC_BASE_URL) is closed.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cp = ControlPlane::start(Options::new().env("PUBLIC_BASE_URL", &dead)).await;
    let url = format!("{}/v1/bootstrap/script", cp.base_url());
    let got = answer(pipe_to_bash(&url, &[]), Some("alice"), "alice-password").await;
    assert_exit(got, 15, "cannot reach the server");
}

/// A script run with only `tools` on `PATH`, a stand-in `ssh` and a fresh `HOME`.
struct Run {
    term: Terminal,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    async fn start(url: &str, username: Option<&str>, password: &str, tools: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::create_dir(&log).unwrap();
        let bin = tool_dir(dir.path(), tools, Some(&log));
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let env = [("PATH", bin.to_str().unwrap()), ("HOME", home.to_str().unwrap())];
        let mut term = pipe_to_bash(url, &env);
        if let Some(username) = username {
            term.expect("Username: ", PROMPT).await;
            term.send_line(username);
        }
        term.expect("Password: ", PROMPT).await;
        term.send_line(password);
        Self { term, log, _dir: dir }
    }

    /// Waits for the end; returns the arguments the stand-in `ssh` got and the secret it was given.
    async fn finish(mut self, via: &str) -> (Vec<String>, String) {
        let (code, screen) = self.term.wait(END).await;
        assert_eq!(code, 0, "the terminal showed:\n{screen}");
        assert!(screen.contains("FAKE-SSH-DONE"), "{screen}");
        assert_eq!(std::fs::read_to_string(self.log.join("via")).unwrap().trim(), via);
        let secret = std::fs::read_to_string(self.log.join("secret")).unwrap();
        let args = std::fs::read_to_string(self.log.join("args")).unwrap();
        assert!(
            !args.contains(&secret),
            "the secret was on ssh's command line: {args}"
        );
        assert!(!screen.contains(&secret), "the secret was shown: {screen}");
        (args.lines().map(str::to_owned).collect(), secret)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_reaches_ssh_by_sshpass_and_by_askpass() {
    let s = setup(&[]).await;
    let alice = s.admin.create_user("alice", "alice-password").await;
    let host = s.admin.create_host(&id(&alice)).await;
    let short = host["short_id"].as_str().unwrap().to_owned();
    let ssh_port =
        s.cp.options()
            .env
            .iter()
            .find(|(k, _)| k == "SSH_PROXY_ADDR")
            .unwrap()
            .1
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned();
    let boot = format!("{}/v1/bootstrap/script", s.base);

    // Bootstrap while the host is being created: progress, then the handoff, then sshpass.
    let with_sshpass: Vec<&str> = SCRIPT_TOOLS.iter().copied().chain(["sshpass"]).collect();
    let mut run = Run::start(&boot, Some("alice"), "alice-password", &with_sshpass).await;
    run.term.expect("starting your host:", PROMPT).await;
    s.agent.finish_next(&id(&host), true).await;
    let (args, secret) = run.finish("terminal").await;
    assert_eq!(
        handoff_row(&s.cp, &secret).await,
        Some((id(&host), false)),
        "a live, unused secret of the host"
    );
    assert!(
        args.windows(2).any(|w| w == ["-p", ssh_port.as_str()]),
        "{args:?}"
    );
    assert!(
        args.windows(2)
            .any(|w| w[0] == "-l" && w[1] == format!("alice+{short}")),
        "{args:?}"
    );
    assert_eq!(args.last().map(String::as_str), Some("127.0.0.1"), "{args:?}");

    // The entry link of the running host, with sshpass hidden: the askpass helper.
    let entry = format!("{}/entry/{short}", s.base);
    let run = Run::start(&entry, None, "alice-password", SCRIPT_TOOLS).await;
    let (_, secret2) = run.finish("askpass").await;
    assert_ne!(secret, secret2);
    assert_eq!(handoff_row(&s.cp, &secret2).await, Some((id(&host), false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_links_work_on_the_entry_listener_alone() {
    // ENTRY_ADDR on a free port, and PUBLIC_BASE_URL naming it, as `:80` would in production.
    let entry_port = free_port();
    let entry_base = format!("http://127.0.0.1:{entry_port}");
    let (opts, _) = ssh_proxy_addr(Options::new());
    let opts = opts
        .env("ENTRY_ADDR", format!("127.0.0.1:{entry_port}"))
        .env("PUBLIC_BASE_URL", &entry_base);
    let cp = ControlPlane::start(opts).await;
    let admin = cp.admin().await;
    let agent = FakeAgent::register(&cp).await;
    let alice = admin.create_user("alice", "alice-password").await;
    let host = admin.create_host(&id(&alice)).await;
    agent.finish_next(&id(&host), true).await;
    let short = host["short_id"].as_str().unwrap();
    let entry_api = Api::new(&entry_base);
    // Only the access routes are there.
    let r = entry_api.get("/v1/admin/users").await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = entry_api
        .post("/v1/auth/login", json!({"username": "admin", "password": "x"}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let url = format!("{entry_base}/entry/{short}");
    let with_sshpass: Vec<&str> = SCRIPT_TOOLS.iter().copied().chain(["sshpass"]).collect();
    let run = Run::start(&url, None, "alice-password", &with_sshpass).await;
    let (args, secret) = run.finish("terminal").await;
    assert_eq!(handoff_row(&cp, &secret).await, Some((id(&host), false)));
    assert!(args.iter().any(|a| a == &format!("alice+{short}")), "{args:?}");
}
