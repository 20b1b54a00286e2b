//! Sessions through the gateway: exec with exit codes and stderr, an interactive pty, environment
//! and signals, agent forwarding, `-L` and concurrent `-R` forwards, many sessions at once.

use std::time::Duration;

use cloud_cli_proxy_tests::Node;
use cloud_cli_proxy_tests::gateway::{Login, output};

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
