//! The access scripts into real hosts on a real Docker node (embedded agent): a stopped host is
//! started by `curl -sSf …/v1/bootstrap/script | bash`, with its progress shown, then the real
//! OpenSSH client logs in through the SSH gateway with the single-use secret and runs a command in
//! the host; the entry link does the same with the askpass helper instead of sshpass.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::time::Duration;

use cloud_cli_proxy_tests::Node;
use cloud_cli_proxy_tests::access::{SCRIPT_TOOLS, handoff_row, pipe_to_bash, reachable_env, tool_dir};
use cloud_cli_proxy_tests::docker;
use cloud_cli_proxy_tests::hosts::{ACTION_LIMIT, NewHost};
use cloud_cli_proxy_tests::terminal::Terminal;

const PROMPT: Duration = Duration::from_secs(30);

/// A node whose control plane the scripts can reach, with alice's host created and then stopped.
async fn node_with_stopped_host() -> (Node, String, NewHost) {
    let (env, base, _ssh_port) = reachable_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = Node::embedded(&env).await;
    let host = node.running_host("alice").await;
    let task = node.host_action(&host.id, "stop").await;
    node.task_succeeded(&task, ACTION_LIMIT, "stop").await;
    (node, base, host)
}

/// Sets alice's password (the harness generates one) and returns it.
async fn alice_password(node: &Node, host: &NewHost) -> String {
    let r = node
        .admin
        .post(&format!("/v1/admin/users/{}/rotate-password", host.user_id), None)
        .await;
    r.expect(200)["password"].as_str().unwrap().to_owned()
}

/// Types the answers at the script's prompts.
async fn sign_in(term: &mut Terminal, username: Option<&str>, password: &str) {
    if let Some(username) = username {
        term.expect("Username: ", PROMPT).await;
        term.send_line(username);
    }
    term.expect("Password: ", PROMPT).await;
    term.send_line(password);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_starts_a_stopped_host_and_hands_ssh_the_secret() {
    // Everything up to the SSH gateway, with a stand-in `ssh` that records what it was given.
    let (node, base, host) = node_with_stopped_host().await;
    let password = alice_password(&node, &host).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    std::fs::create_dir(&log).unwrap();
    let tools: Vec<&str> = SCRIPT_TOOLS.iter().copied().chain(["sshpass"]).collect();
    let bin = tool_dir(dir.path(), &tools, Some(&log));
    let env = [
        ("PATH", bin.to_str().unwrap()),
        ("HOME", dir.path().to_str().unwrap()),
    ];
    let mut term = pipe_to_bash(&format!("{base}/v1/bootstrap/script"), &env);
    sign_in(&mut term, Some("alice"), &password).await;
    term.expect("starting your host:", PROMPT).await;
    let (code, screen) = term.wait(ACTION_LIMIT).await;
    assert_eq!(code, 0, "the terminal showed:\n{screen}\n{}", node.diagnostics());
    assert!(screen.contains("%"), "progress in percent: {screen}");
    assert!(screen.contains("FAKE-SSH-DONE"), "{screen}");
    assert_eq!(node.host(&host.id).await["status"], "running");
    assert!(docker::is_running(&node.host_container(&host.short_id)).await);
    let secret = std::fs::read_to_string(log.join("secret")).unwrap();
    assert_eq!(
        handoff_row(&node.cp, &secret).await,
        Some((host.id.clone(), false))
    );
    let args = std::fs::read_to_string(log.join("args")).unwrap();
    assert!(args.contains(&format!("alice+{}", host.short_id)), "{args}");
}

/// Runs a command in the shell the script opened, checks it ran in the host, and exits.
async fn command_in_host(node: &Node, host: &NewHost, term: &mut Terminal) {
    term.expect("connecting to ", PROMPT).await;
    // The shell's prompt (`alice@<hostname>`), then a command whose output differs from its echo.
    term.expect("alice@", Duration::from_secs(60)).await;
    term.send_line("printf 'in-%s\\n' \"$(cat /etc/hostname)\"-$((6*7))");
    let container = node.host_container(&host.short_id);
    let hostname = docker::exec_root(&container, &["cat", "/etc/hostname"]).await;
    term.expect(&format!("in-{}-42", hostname.stdout.trim()), PROMPT)
        .await;
    term.send_line("exit");
    let (code, screen) = term.wait(PROMPT).await;
    assert_eq!(code, 0, "the terminal showed:\n{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_script_opens_a_shell_in_the_host() {
    let (node, base, host) = node_with_stopped_host().await;
    let password = alice_password(&node, &host).await;
    let home = tempfile::tempdir().unwrap();
    let env = [("HOME", home.path().to_str().unwrap())];
    let mut term = pipe_to_bash(&format!("{base}/v1/bootstrap/script"), &env);
    sign_in(&mut term, Some("alice"), &password).await;
    term.expect("starting your host:", PROMPT).await;
    command_in_host(&node, &host, &mut term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_link_with_askpass_opens_a_shell_in_the_host() {
    let (node, base, host) = node_with_stopped_host().await;
    let password = alice_password(&node, &host).await;
    let dir = tempfile::tempdir().unwrap();
    // No sshpass on PATH: the script falls back to its askpass helper.
    let bin = tool_dir(dir.path(), &[SCRIPT_TOOLS, &["ssh"]].concat(), None);
    let env = [
        ("PATH", bin.to_str().unwrap()),
        ("HOME", dir.path().to_str().unwrap()),
    ];
    let mut term = pipe_to_bash(&format!("{base}/entry/{}", host.short_id), &env);
    sign_in(&mut term, None, &password).await;
    command_in_host(&node, &host, &mut term).await;
}
