//! The gateway as its own process, as when several run behind a load balancer: it enrols with a
//! key the operator made, registers its key with the control plane, hosts created afterwards trust
//! it, and logins through it work. A gateway without a usable key is refused and never serves.
//! Removing the gateway takes its key out of a running host's authorized_keys.
//! Behind a TCP balancer speaking the PROXY protocol, the header names the client. With one of two
//! gateways killed, new logins go through the other.

use std::time::Duration;

use cloud_cli_proxy_tests::fixtures::random_alnum;
use cloud_cli_proxy_tests::gateway::{GatewayProcess, Login, output, ssh_command};
use cloud_cli_proxy_tests::{Node, docker, enrolment, eventually};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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

/// The client address a balancer's PROXY header names (a fake-internet address: only written in
/// the header, never dialled).
const BEHIND_BALANCER: &str = "198.18.40.7";

/// A TCP balancer on loopback sending a PROXY v1 header naming [`BEHIND_BALANCER`] before each
/// connection's bytes. Answers its port.
async fn balancer(gateway_port: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let mut upstream = tokio::net::TcpStream::connect(("127.0.0.1", gateway_port))
                    .await
                    .unwrap();
                let header = format!(
                    "PROXY TCP4 {BEHIND_BALANCER} 127.0.0.1 {} {gateway_port}\r\n",
                    peer.port()
                );
                upstream.write_all(header.as_bytes()).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    port
}

/// Reads what the gateway sends a raw connection until it closes; `None` if it stays open.
async fn first_bytes(mut stream: tokio::net::TcpStream, send: &[u8]) -> Option<Vec<u8>> {
    let _ = stream.write_all(send).await;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got))
        .await
        .ok()
        .map(|_| got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_a_tcp_balancer_the_proxy_header_names_the_client() {
    let node = Node::embedded(&[("EMBEDDED_SSH_PROXY", "false")]).await;
    let url = node.cp.base_url();
    let dir = tempfile::tempdir().unwrap();
    let key = enrolment::key(&node.admin, "gateway", 1).await;
    let gateway = GatewayProcess::start_with(
        &url,
        &key,
        "gw-balanced",
        dir.path(),
        true,
        &[
            ("SSH_PROXY_PROTOCOL", "v1"),
            ("SSH_PROXY_PROTOCOL_TRUSTED", "127.0.0.1/32"),
        ],
    )
    .await;
    let pia = node.tenant("pia").await;
    let front = balancer(gateway.port).await;

    // A real login through the balancer: the audit names the client of the header.
    let mut cmd = ssh_command(front, &pia.login(), &Login::Password(pia.password.clone()), "ssh");
    cmd.arg("echo balanced-$(whoami)");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(
        out.stdout.trim(),
        "balanced-pia",
        "{out:?}\ngateway logs:\n{}",
        gateway.logs()
    );
    // So do the limiter and the audit of a wrong password.
    let mut cmd = ssh_command(
        front,
        &pia.login(),
        &Login::Password("not-the-password".into()),
        "ssh",
    );
    cmd.arg("true");
    assert_eq!(output(cmd, None, LIMIT).await.code, Some(255));
    for kind in ["ssh.login_succeeded", "ssh.login_failed"] {
        let r = node
            .admin
            .get(&format!(
                "/v1/admin/events?type={kind}&user_id={}",
                pia.host.user_id
            ))
            .await;
        let events = r.expect(200)["data"].as_array().unwrap().clone();
        assert!(
            !events.is_empty() && events.iter().all(|e| e["ip"] == BEHIND_BALANCER),
            "{kind}: {events:#?}"
        );
    }

    // Without a header, or from an address not listed as a balancer, the gateway closes the
    // connection without a word of SSH.
    let direct = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port))
        .await
        .unwrap();
    let got = first_bytes(direct, b"SSH-2.0-OpenSSH_9.2\r\n").await;
    assert_eq!(got.as_deref(), Some(&b""[..]), "no header");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let untrusted = socket
        .connect(([127, 0, 0, 1], gateway.port).into())
        .await
        .unwrap();
    let header = format!(
        "PROXY TCP4 {BEHIND_BALANCER} 127.0.0.1 40000 {}\r\n",
        gateway.port
    );
    let got = first_bytes(untrusted, header.as_bytes()).await;
    assert_eq!(got.as_deref(), Some(&b""[..]), "an untrusted sender");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_one_of_two_gateways_killed_new_logins_go_through_the_other() {
    let node = Node::embedded(&[("EMBEDDED_SSH_PROXY", "false")]).await;
    let url = node.cp.base_url();
    let dir = tempfile::tempdir().unwrap();
    let key = enrolment::key(&node.admin, "gateway", 2).await;
    let mut first = GatewayProcess::start(&url, &key, "gw-one", &dir.path().join("one"), true).await;
    let second = GatewayProcess::start(&url, &key, "gw-two", &dir.path().join("two"), true).await;
    let ona = node.tenant("ona").await;
    let pw = Login::Password(ona.password.clone());
    for (gateway, port) in [("first", first.port), ("second", second.port)] {
        let mut cmd = ssh_command(port, &ona.login(), &pw, "ssh");
        cmd.arg("echo via-$(whoami)");
        let out = output(cmd, None, LIMIT).await;
        assert_eq!(out.stdout.trim(), "via-ona", "through the {gateway}: {out:?}");
    }

    // The first dies without a word; a new login through the second still works, and the first's
    // port answers nothing.
    first.kill();
    let mut cmd = ssh_command(second.port, &ona.login(), &pw, "ssh");
    cmd.arg("echo still-$(whoami)");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(
        out.stdout.trim(),
        "still-ona",
        "{out:?}\nsecond gateway:\n{}",
        second.logs()
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", first.port))
            .await
            .is_err(),
        "the killed gateway still listens"
    );
}
