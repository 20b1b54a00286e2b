//! The egress probe on loopback: its HTTP answers and its whoami DNS, and the binary's refusal of a
//! bad configuration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::net::Ipv4Addr;
use std::time::Duration;

use clap::Parser as _;
use probe::dns;
use tokio::net::{TcpListener, UdpSocket};

const NAME: &str = "whoami.probe.test";

#[tokio::test]
async fn answers_connectivity_ip_and_whoami() {
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // DNS answers on one port over UDP and TCP: a free UDP port's number may be held over TCP by
    // another test running beside this one, so take the next pair until both are free.
    let mut pair = None;
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            pair = Some((udp, tcp));
            break;
        }
    }
    let (dns_socket, dns_tcp) = pair.expect("a port free over both UDP and TCP");
    let (http_addr, dns_addr) = (http.local_addr().unwrap(), dns_socket.local_addr().unwrap());
    let config = probe::Config::try_parse_from(["probe", "--dns-name", NAME]).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        probe::run(&config, http, dns_socket, dns_tcp, async {
            let _ = stopped.await;
        })
        .await
    });

    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://{http_addr}/generate_204"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = client.get(format!("http://{http_addr}/ip")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "127.0.0.1");

    let asker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 512];
    for (id, name, want) in [
        (0x0101, NAME, Some(Ipv4Addr::LOCALHOST)),
        (
            0x0202,
            "leak-check-7.whoami.probe.test",
            Some(Ipv4Addr::LOCALHOST),
        ),
        (0x0303, "example.org", None),
    ] {
        asker
            .send_to(&dns::query(id, name, dns::types::A), dns_addr)
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), asker.recv_from(&mut buf))
            .await
            .expect("a DNS answer")
            .unwrap();
        assert_eq!(dns::first_a(&buf[..n], id), want, "{name}");
    }

    // The same over TCP: two length-prefixed queries on one connection.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(dns_addr).await.unwrap();
        for id in [0x0404u16, 0x0505] {
            let query = dns::query(id, NAME, dns::types::A);
            let mut framed = u16::try_from(query.len()).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&query);
            tcp.write_all(&framed).await.unwrap();
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len).await.unwrap();
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
            tcp.read_exact(&mut reply).await.unwrap();
            assert_eq!(dns::first_a(&reply, id), Some(Ipv4Addr::LOCALHOST));
        }
    }

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the probe stops")
        .unwrap()
        .unwrap();
}

#[test]
fn the_binary_refuses_a_bad_name() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-cli-proxy-probe"))
        .args([
            "--dns-name",
            "not a name",
            "--http-listen",
            "127.0.0.1:0",
            "--dns-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a DNS name"));
}
