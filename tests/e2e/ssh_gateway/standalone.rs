//! The gateway as its own process, as when several run behind a load balancer: it registers its
//! key with the control plane, hosts created afterwards trust it, and logins through it work. A
//! gateway with the wrong token is refused by the control plane and lets nobody in.

use std::time::Duration;

use cloud_cli_proxy_tests::Node;
use cloud_cli_proxy_tests::fixtures::random_alnum;
use cloud_cli_proxy_tests::gateway::{GatewayProcess, Login, output, ssh_command};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_separate_gateway_process() {
    let token = random_alnum(40);
    let node = Node::embedded(&[("EMBEDDED_SSH_PROXY", "false"), ("GATEWAY_TOKEN", &token)]).await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = GatewayProcess::start(&node.cp.base_url(), &token, &dir.path().join("good"), true).await;
    let nina = node.tenant("nina").await;
    let pw = Login::Password(nina.password.clone());

    let mut cmd = ssh_command(gateway.port, &nina.login(), &pw, "ssh");
    cmd.arg("echo via-$(whoami)");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(
        out.stdout.trim(),
        "via-nina",
        "{out:?}\ngateway logs:\n{}",
        gateway.logs()
    );

    // The same keys give the same host key across restarts: clients keep trusting the gateway.
    let key = std::fs::read(dir.path().join("good").join("ssh_host_ed25519_key")).unwrap();
    drop(gateway);
    let again = GatewayProcess::start(&node.cp.base_url(), &token, &dir.path().join("good"), true).await;
    assert_eq!(
        std::fs::read(dir.path().join("good").join("ssh_host_ed25519_key")).unwrap(),
        key
    );
    let mut cmd = ssh_command(again.port, &nina.login(), &pw, "ssh");
    cmd.arg("true");
    assert!(output(cmd, None, LIMIT).await.success());

    // A gateway holding the wrong token: the control plane answers it nothing, so nobody gets in.
    let rogue = GatewayProcess::start(
        &node.cp.base_url(),
        &random_alnum(40),
        &dir.path().join("rogue"),
        false,
    )
    .await;
    let mut cmd = ssh_command(rogue.port, &nina.login(), &pw, "ssh");
    cmd.arg("true");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(out.code, Some(255), "{out:?}");
    assert!(rogue.logs().contains("cannot register"), "{}", rogue.logs());
}
