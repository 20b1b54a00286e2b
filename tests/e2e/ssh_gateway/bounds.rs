//! Connections that never log in: hundreds of idle or half-open sockets from one source neither keep
//! a real client out nor stay open past the login grace time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cloud_cli_proxy_tests::Node;
use cloud_cli_proxy_tests::gateway::{Login, output};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;

const LIMIT: Duration = Duration::from_secs(60);
const GRACE_SECS: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_sockets_neither_keep_logins_out_nor_stay_open() {
    let grace = GRACE_SECS.to_string();
    let node = Node::embedded(&[("SSH_LOGIN_GRACE_SECS", &grace)]).await;
    let tara = node.tenant("tara").await;
    let gateway = SocketAddr::from(([127, 0, 0, 1], node.cp.ssh_port()));

    // 300 sockets from another loopback address: half send nothing, half half a version line.
    let mut idle = Vec::new();
    for i in 0..300 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut stream = socket.connect(gateway).await.unwrap();
        if i % 2 == 0 {
            let _ = stream.write_all(b"SSH-2.0-slow").await;
        }
        idle.push(stream);
    }
    let opened = Instant::now();

    let mut cmd = node.gateway_ssh(&tara.login(), &Login::Password(tara.password.clone()));
    cmd.arg("echo in");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(out.stdout.trim(), "in", "{out:?}");

    // Each idle socket is closed by the gateway: past the per-source cap at once, the rest at the
    // deadline.
    let limit = Duration::from_secs(GRACE_SECS + 15);
    for stream in &mut idle {
        let mut buf = [0u8; 512];
        loop {
            let left = limit.saturating_sub(opened.elapsed());
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => panic!(
                    "an idle socket was still open {:?} after connecting",
                    opened.elapsed()
                ),
            }
        }
    }
}
