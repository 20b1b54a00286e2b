//! Forwarding through the gateway: `-L` to a port inside the host, two `-R` forwards used at the
//! same time, and agent forwarding (`ssh -A`, then `ssh-add -l` inside the host).

use std::process::Stdio;
use std::time::Duration;

use cloud_cli_proxy_tests::Node;
use cloud_cli_proxy_tests::fixtures;
use cloud_cli_proxy_tests::gateway::{Login, output};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_forward_reaches_a_port_in_the_host() {
    let node = Node::embedded(&[]).await;
    let erin = node.tenant("erin").await;
    let port = cloud_cli_proxy_tests::access::free_port();
    let mut cmd = node.gateway_ssh(&erin.login(), &Login::Password(erin.password.clone()));
    cmd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        &format!("127.0.0.1:{port}:127.0.0.1:22"),
    ]);
    let mut ssh = cmd.spawn().expect("spawn ssh -L");
    // The host's own sshd, reached through the tunnel: its banner proves the path.
    let banner = cloud_cli_proxy_tests::eventually(LIMIT, "the -L port to answer", || async move {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.starts_with("SSH-2.0-OpenSSH").then_some(text)
    })
    .await;
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner}");
    let _ = ssh.kill().await;
}

/// Serves one line per connection, in two halves with a pause between, so that two clients are
/// connected at the same time.
async fn slow_server(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(format!("{name}-a ").as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = s.write_all(format!("{name}-b\n").as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_remote_forwards_at_once() {
    let node = Node::embedded(&[]).await;
    let fay = node.tenant("fay").await;
    let (one, two) = (slow_server("one").await, slow_server("two").await);
    let mut cmd = node.gateway_ssh(&fay.login(), &Login::Password(fay.password.clone()));
    cmd.args([
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        &format!("127.0.0.1:40001:127.0.0.1:{one}"),
        "-R",
        &format!("127.0.0.1:40002:127.0.0.1:{two}"),
        "started=$(date +%s%N); \
         (exec 3<>/dev/tcp/127.0.0.1/40001 && cat <&3) & \
         (exec 4<>/dev/tcp/127.0.0.1/40002 && cat <&4) & wait; \
         echo took=$(( ($(date +%s%N) - started) / 1000000 ))",
    ]);
    let out = output(cmd, None, LIMIT).await;
    assert!(out.success(), "{out:?}");
    // The halves interleave when both connections are open at once.
    for part in ["one-a", "one-b", "two-a", "two-b"] {
        assert!(out.stdout.contains(part), "{part} missing: {out:?}");
    }
    // Both servers pause 500 ms: served one after the other it would take a second.
    let took: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("took="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no timing in {out:?}"));
    assert!(
        took < 950,
        "the two forwards were not used concurrently ({took} ms): {out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_forwarding() {
    let node = Node::embedded(&[]).await;
    let gus = node.tenant("gus").await;
    let dir = tempfile::tempdir().unwrap();
    let fixtures::SshKeyPair {
        private_path: key,
        public_line: public,
        ..
    } = fixtures::ssh_keygen(dir.path(), "id_gus");
    let r = node
        .admin
        .post(
            &format!("/v1/admin/users/{}/ssh-keys", gus.host.user_id),
            json!({ "public_key": public }),
        )
        .await;
    r.expect(201);

    let sock = dir.path().join("agent.sock");
    let mut agent = tokio::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ssh-agent");
    let sock_ready = sock.clone();
    cloud_cli_proxy_tests::eventually(Duration::from_secs(10), "ssh-agent socket", || {
        let s = sock_ready.clone();
        async move { s.exists().then_some(()) }
    })
    .await;
    let added = tokio::process::Command::new("ssh-add")
        .env("SSH_AUTH_SOCK", &sock)
        .arg(&key)
        .output()
        .await
        .unwrap();
    assert!(added.status.success(), "ssh-add: {added:?}");

    // Logs in with the agent's key, then lists the agent's keys from inside the host.
    let mut cmd = node.gateway_ssh(&gus.login(), &Login::Agent(sock.clone()));
    cmd.args(["-A", "ssh-add -l"]);
    let out = output(cmd, None, LIMIT).await;
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.contains("id_gus") && out.stdout.contains("ED25519"),
        "{out:?}"
    );
    let _ = agent.kill().await;
}
