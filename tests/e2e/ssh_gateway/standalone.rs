//! The gateway as its own process, as when several run behind a load balancer: it enrols with a
//! key the operator made, registers its key with the control plane, hosts created afterwards trust
//! it, and logins through it work. A gateway without a usable key is refused and never serves.
//! Removing the gateway takes its key out of a running host's authorized_keys.

use std::time::Duration;

use cloud_cli_proxy_tests::fixtures::random_alnum;
use cloud_cli_proxy_tests::gateway::{GatewayProcess, Login, output, ssh_command};
use cloud_cli_proxy_tests::{Node, docker, enrolment, eventually};

const LIMIT: Duration = Duration::from_secs(60);
/// The gateway's client key in its state directory.
const CLIENT_KEY_FILE: &str = "gateway_client_ed25519_key";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_separate_gateway_process() {
    let node = Node::embedded(&[("EMBEDDED_SSH_PROXY", "false")]).await;
    let url = node.cp.base_url();
    let dir = tempfile::tempdir().unwrap();
    let key = enrolment::key(&node.admin, "gateway", 1).await;
    let name = format!("gw-{}", random_alnum(6).to_lowercase());
    let gateway = GatewayProcess::start(&url, &key, &name, &dir.path().join("good"), true).await;
    let credential = dir.path().join("good").join("credential");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&credential).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the credential file is private");
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

    // The same state directory gives the same host key and credential across restarts: the
    // single-use key, used up now, is not needed again.
    let host_key = std::fs::read(dir.path().join("good").join("ssh_host_ed25519_key")).unwrap();
    drop(gateway);
    let again = GatewayProcess::start(&url, &key, &name, &dir.path().join("good"), true).await;
    assert_eq!(
        std::fs::read(dir.path().join("good").join("ssh_host_ed25519_key")).unwrap(),
        host_key
    );
    let mut cmd = ssh_command(again.port, &nina.login(), &pw, "ssh");
    cmd.arg("true");
    assert!(output(cmd, None, LIMIT).await.success());

    // A used single-use key, and a made-up one, enrol nothing: the gateway stops, saying why.
    for (what, bad_key) in [
        ("a used key", key.clone()),
        ("a made-up key", format!("ccpk_{}", random_alnum(43))),
    ] {
        let fresh = dir.path().join(random_alnum(6));
        let (status, logs) = GatewayProcess::run_to_exit(&url, &bad_key, "rogue", &fresh).await;
        assert!(!status.success(), "{what}: {logs}");
        assert!(logs.contains("refused the enrolment"), "{what}: {logs}");
        assert!(!fresh.join("credential").exists(), "{what}");
    }

    // The key of the gateway is in the running host; removing the gateway takes it out.
    let container = node.host_container(&nina.host.short_id);
    let keys_file = format!("/etc/ssh/authorized_keys/{}", "nina");
    let public = std::process::Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(dir.path().join("good").join(CLIENT_KEY_FILE))
        .output()
        .unwrap();
    let public = String::from_utf8(public.stdout).unwrap();
    let material = public
        .split_whitespace()
        .nth(1)
        .expect("the gateway's public key");
    let before = docker::exec_root(&container, &["cat", &keys_file]).await;
    assert!(before.stdout.contains(material), "{before:?}");
    let r = node.admin.delete(&format!("/v1/admin/gateways/{name}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    eventually(
        LIMIT,
        "the removed gateway's key to leave the running host",
        || {
            let container = container.clone();
            let keys_file = keys_file.clone();
            async move {
                let now = docker::exec_root(&container, &["cat", &keys_file]).await;
                // The file goes when no gateway is left (none runs embedded here).
                (now.code != Some(0) || now.stdout.trim().is_empty()).then_some(())
            }
        },
    )
    .await;
    // Its credential stops working at once: the gateway can log nobody in any more.
    let mut cmd = ssh_command(again.port, &nina.login(), &pw, "ssh");
    cmd.arg("true");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(out.code, Some(255), "{out:?}");
    let r = node.admin.get("/v1/admin/gateways").await;
    let body = r.expect(200);
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["name"] != name.as_str()),
        "{body}"
    );
}
