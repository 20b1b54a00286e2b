//! Sessions through the gateway: exec with exit codes and stderr, an interactive pty, environment
//! and signals, agent forwarding, `-L` and concurrent `-R` forwards, many sessions at once.

use std::time::Duration;

use cloud_cli_proxy_tests::Node;
use cloud_cli_proxy_tests::gateway::{Login, output, terminal_login};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_and_exit_codes() {
    let node = Node::embedded(&[]).await;
    let alice = node.tenant("alice").await;
    let pw = Login::Password(alice.password.clone());

    let mut cmd = node.gateway_ssh(&alice.login(), &pw);
    cmd.arg("echo out-$(whoami); echo err-line >&2; exit 7");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(out.code, Some(7), "{out:?}");
    assert_eq!(out.stdout.trim(), "out-alice", "{out:?}");
    assert_eq!(out.stderr.trim(), "err-line", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn environment_signals_and_plain_login() {
    let node = Node::embedded(&[]).await;
    let bob = node.tenant("bob").await;
    let pw = Login::Password(bob.password.clone());

    // sshd accepts LC_* (AcceptEnv): the variable crosses both hops.
    let mut cmd = node.gateway_ssh(&bob.login(), &pw);
    cmd.args(["-o", "SetEnv=LC_CCP_CHECK=relayed", "echo env-$LC_CCP_CHECK"]);
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(out.stdout.trim(), "env-relayed", "{out:?}");

    // A command killed by a signal: the client learns it from the relayed exit-signal.
    let mut cmd = node.gateway_ssh(&bob.login(), &pw);
    cmd.arg("kill -TERM $$");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(
        out.code,
        Some(255),
        "exit-signal is reported as 255 by OpenSSH: {out:?}"
    );

    // The plain login works for a user with one host; stdin reaches the command and EOF ends it.
    let mut cmd = node.gateway_ssh("bob", &pw);
    cmd.arg("wc -c");
    let out = output(cmd, Some(&[b'x'; 100_000]), LIMIT).await;
    assert_eq!(out.stdout.trim(), "100000", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interactive_pty() {
    let node = Node::embedded(&[]).await;
    let carol = node.tenant("carol").await;
    // `script` gives the client a real terminal of 33x101; the pty request carries the size and
    // TERM to the host, whose shell is driven by the typed lines.
    let inner = format!(
        "stty cols 101 rows 33; TERM=xterm-256color {}",
        terminal_login(&node, &carol, None)
    );
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qefc", &inner, "/dev/null"])
        .env("SSHPASS", &carol.password)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let typed = b"tty\nstty size\necho term=$TERM\nexit 5\n";
    let out = output(cmd, Some(typed), LIMIT).await;
    assert_eq!(out.code, Some(5), "{out:?}");
    assert!(out.stdout.contains("/dev/pts/"), "no pty in the host: {out:?}");
    assert!(out.stdout.contains("33 101"), "window size not relayed: {out:?}");
    assert!(
        out.stdout.contains("term=xterm-256color"),
        "TERM not relayed: {out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_sessions_at_once() {
    let node = Node::embedded(&[]).await;
    let dave = node.tenant("dave").await;
    let pw = Login::Password(dave.password.clone());
    let runs = (0..20).map(|i| {
        let mut cmd = node.gateway_ssh(&dave.login(), &pw);
        cmd.arg(format!("sleep 1; echo session-{i}"));
        output(cmd, None, Duration::from_secs(120))
    });
    let outs = futures::future::join_all(runs).await;
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(out.stdout.trim(), format!("session-{i}"), "session {i}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_directions_at_once() {
    // `cat` in the host echoes 64 MiB back while it is still being sent: both directions of one
    // channel are saturated at the same time, which must neither stall nor lose a byte.
    let node = Node::embedded(&[]).await;
    let kim = node.tenant("kim").await;
    let mut cmd = node.gateway_ssh(&kim.login(), &Login::Password(kim.password.clone()));
    cmd.arg("cat");
    let input: Vec<u8> = (0..64u32 << 20).map(|i| b'!' + (i % 94) as u8).collect();
    let out = output(cmd, Some(&input), Duration::from_secs(180)).await;
    assert!(
        out.success(),
        "exit {:?}, {} of {} bytes echoed, stderr: {}",
        out.code,
        out.stdout.len(),
        input.len(),
        out.stderr
    );
    assert_eq!(out.stdout.len(), input.len(), "echoed bytes");
    assert!(
        out.stdout.as_bytes() == input.as_slice(),
        "the echo differs from the input"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn window_changes_reach_the_host() {
    // tmux gives the client a terminal that the test resizes; the host's pty must follow.
    let node = Node::embedded(&[]).await;
    let lou = node.tenant("lou").await;
    let login = terminal_login(
        &node,
        &lou,
        Some(
            "stty size; while [ \"$(stty size)\" = \"24 80\" ]; do sleep 0.2; done; echo now $(stty size); sleep 30",
        ),
    );
    let socket = format!("ccp-test-{}", cloud_cli_proxy_tests::fixtures::random_alnum(8));
    let tmux = |args: &[&str]| {
        let out = std::process::Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let secret = format!("SSHPASS={}", lou.password);
    // No status line, so that the pane is the whole window from the start.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tmux.conf");
    std::fs::write(&conf, "set -g status off\n").unwrap();
    let conf = conf.display().to_string();
    tmux(&[
        "-f",
        &conf,
        "new-session",
        "-d",
        "-x",
        "80",
        "-y",
        "24",
        "-e",
        &secret,
        &login,
    ]);
    let pane = || tmux(&["capture-pane", "-p"]);
    cloud_cli_proxy_tests::eventually(LIMIT, "the first size in the host", || async {
        pane().contains("24 80").then_some(())
    })
    .await;
    tmux(&["resize-window", "-x", "100", "-y", "30"]);
    let seen = cloud_cli_proxy_tests::eventually(LIMIT, "the new size in the host", || async {
        let text = pane();
        text.contains("now 30 100").then_some(text)
    })
    .await;
    tmux(&["kill-server"]);
    assert!(seen.contains("now 30 100"), "{seen}");
}

/// A client that accepts any host key (the gateway's key is not what this test is about).
struct AnyHostKey;

impl russh::client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signals_reach_the_command() {
    // The OpenSSH client never sends `signal` requests; a russh client does.
    let node = Node::embedded(&[]).await;
    let max = node.tenant("max").await;
    let config = std::sync::Arc::new(russh::client::Config::default());
    let mut client = russh::client::connect(config, ("127.0.0.1", node.cp.ssh_port()), AnyHostKey)
        .await
        .expect("connect to the gateway");
    let auth = client
        .authenticate_password(max.login(), max.password.clone())
        .await
        .expect("password auth");
    assert!(auth.success(), "login refused");
    let mut channel = client.channel_open_session().await.expect("session channel");
    channel
        .exec(true, "echo started; exec sleep 60")
        .await
        .expect("exec");
    let mut started = false;
    let mut exit = None;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, channel.wait()).await {
        match msg {
            russh::ChannelMsg::Data { data } if data.starts_with(b"started") => {
                started = true;
                channel.signal(russh::Sig::TERM).await.expect("send the signal");
            }
            russh::ChannelMsg::ExitSignal { signal_name, .. } => exit = Some(format!("{signal_name:?}")),
            russh::ChannelMsg::Close => break,
            _ => {}
        }
    }
    assert!(started, "the command did not start");
    assert_eq!(exit.as_deref(), Some("TERM"), "the command should end by SIGTERM");
}
