//! What a tenant can reach from inside a host, as root: not other hosts, not the control plane or
//! anything else listening on the node, not the metadata address, no IPv6 route out; and it cannot
//! change the firewall or the routes. Positive controls show each probe can succeed where it should
//! (the node reaches host B's sshd; the node reaches the control plane and the test's listener on the
//! gateway address; the probe connects to the host's own loopback sshd).
//!
//! Traffic goes only to the test's containers, the gateway of the hosts network its agent created,
//! and, for the metadata check, 169.254.169.254 — sent only after the namespace's ruleset, read from
//! the node, shows that address dropped, so the probe cannot leave the namespace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloud_cli_proxy_tests::docker::{self, Out, exec_root, run_program};
use cloud_cli_proxy_tests::hosts::ssh_banner;
use cloud_cli_proxy_tests::{Node, Problems, eventually};

/// Exit status of `timeout` when the command ran over: the SYN was dropped.
const TIMED_OUT: i32 = 124;

/// `bash` inside the container (as root) opens a TCP connection to `ip:port`, giving up after 4 s.
async fn probe(container: &str, ip: &str, port: u16) -> Out {
    exec_root(
        container,
        &[
            "timeout",
            "4",
            "bash",
            "-c",
            "exec 3<>/dev/tcp/$0/$1",
            ip,
            &port.to_string(),
        ],
    )
    .await
}

#[track_caller]
fn assert_unreachable(out: &Out, what: &str) {
    eprintln!("{what}: exit {:?} {}", out.code, out.both().trim());
    assert!(
        !out.success(),
        "{what} is reachable from inside the host: {}",
        out.both()
    );
    // 124: dropped; 1: refused or unreachable. Anything else means the probe itself broke.
    assert!(
        matches!(out.code, Some(1) | Some(TIMED_OUT)),
        "{what}: the probe failed for another reason (exit {:?}): {}",
        out.code,
        out.both()
    );
}

/// The pid of a container's first process on the node.
async fn pid_of(container: &str) -> i64 {
    let v = docker::inspect_container(container)
        .await
        .unwrap_or_else(|| panic!("no container {container}"));
    v["State"]["Pid"]
        .as_i64()
        .filter(|p| *p > 0)
        .expect("a running container")
}

/// `nft list table inet ccp` in the network namespace of `pid`, run by the node.
async fn ruleset(pid: i64) -> String {
    let netns = format!("--net=/proc/{pid}/ns/net");
    let out = run_program(
        "nsenter",
        &[&netns, "nft", "list", "table", "inet", "ccp"],
        Duration::from_secs(30),
    )
    .await;
    assert!(out.success(), "reading the host's ruleset failed: {}", out.both());
    out.stdout
}

/// The text of one chain of a listed table.
fn chain<'a>(listed: &'a str, name: &str) -> &'a str {
    let start = listed
        .find(&format!("chain {name} {{"))
        .unwrap_or_else(|| panic!("no chain {name} in:\n{listed}"));
    let rest = &listed[start..];
    &rest[..rest.find("\n\t}").unwrap_or(rest.len())]
}

/// Whether an output chain drops new traffic to 169.254.0.0/16: a policy-drop chain with a rule
/// whose destination set holds that range and whose verdict is `drop`.
fn drops_metadata(output: &str) -> bool {
    let Some(at) = output.find("169.254.0.0/16") else {
        return false;
    };
    let rule = &output[at..];
    let verdict = rule
        .find('}')
        .map(|end| rule[end + 1..].lines().next().unwrap_or("").trim());
    output.contains("policy drop;") && verdict == Some("drop")
}

/// Copies the node's `nft` and the libraries it loads into the container, so that the tenant's
/// attempt to change the firewall is a real netlink request (the image has no nft of its own).
/// Returns the command prefix that runs it inside.
async fn install_nft(container: &str) -> Vec<String> {
    let ldd = run_program("ldd", &["/usr/sbin/nft"], Duration::from_secs(30)).await;
    assert!(ldd.success(), "ldd /usr/sbin/nft: {}", ldd.both());
    let staging = tempfile::tempdir().unwrap();
    let mut loader = None;
    for line in ldd.stdout.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let path = PathBuf::from(path);
        let name = path.file_name().unwrap().to_owned();
        if name.to_string_lossy().starts_with("ld-linux") {
            loader = Some(name.to_string_lossy().into_owned());
        }
        // fs::copy follows symlinks: the soname becomes a regular file.
        std::fs::copy(&path, staging.path().join(&name)).unwrap();
    }
    std::fs::copy("/usr/sbin/nft", staging.path().join("nft")).unwrap();
    let loader = loader.expect("the dynamic loader in ldd's output");
    let src = format!("{}/.", staging.path().display());
    docker::docker_ok(&["cp", &src, &format!("{container}:/tmp/ccp-nft")]).await;
    vec![
        format!("/tmp/ccp-nft/{loader}"),
        "--library-path".into(),
        "/tmp/ccp-nft".into(),
        "/tmp/ccp-nft/nft".into(),
    ]
}

async fn exec_with(container: &str, prefix: &[String], args: &[&str]) -> Out {
    let mut all: Vec<&str> = prefix.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    exec_root(container, &all).await
}

/// A listener of the test's own on the gateway address, recording who connects.
async fn listen_on(ip: Ipv4Addr) -> (u16, Arc<Mutex<Vec<SocketAddr>>>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    tokio::spawn(async move {
        while let Ok((_stream, peer)) = listener.accept().await {
            seen.lock().unwrap().push(peer);
        }
    });
    (port, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_reaches_nothing_it_must_not() {
    // The control plane on every interface, so that it listens on the gateway address too.
    let node = Node::embedded(&[("CONTROL_PLANE_ADDR", "0.0.0.0:0")]).await;
    assert!(node.cp.addr().ip().is_unspecified(), "{:?}", node.cp.addr());
    let cp_port = node.cp.addr().port();
    let a = node.running_host("anna").await;
    let b = node.running_host("ben").await;
    let host_a = node.host_container(&a.short_id);
    let host_b = node.host_container(&b.short_id);
    let ip_a = node.host_ip(&a.short_id).await;
    let ip_b = node.host_ip(&b.short_id).await;
    let (_subnet, gateway) = docker::network_gateway(&node.network).await;
    let (own_port, own_peers) = listen_on(gateway).await;

    // Positive controls: each path works from where it should.
    assert!(
        ssh_banner(SocketAddr::from((ip_b, 22)), Duration::from_secs(10)).await,
        "the node cannot reach host B's sshd at {ip_b}:22"
    );
    assert!(
        ssh_banner(SocketAddr::from((ip_a, 22)), Duration::from_secs(10)).await,
        "the node cannot reach host A's sshd at {ip_a}:22"
    );
    for port in [cp_port, own_port] {
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((gateway, port)),
        )
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("the node cannot reach {gateway}:{port}: {e}"));
    }
    eventually(
        Duration::from_secs(10),
        "the test's listener to see the node's connection",
        || async { (!own_peers.lock().unwrap().is_empty()).then_some(()) },
    )
    .await;
    let inside = probe(&host_a, "127.0.0.1", 22).await;
    assert!(
        inside.success(),
        "the probe cannot even reach its own sshd: {}",
        inside.both()
    );

    // The metadata address is probed only once the ruleset, read from the node, shows it dropped in
    // this namespace: then the probe cannot leave it.
    let egress_pid = pid_of(&node.egress_container(&a.short_id)).await;
    let rules_before = ruleset(egress_pid).await;
    assert!(
        drops_metadata(chain(&rules_before, "output")),
        "host A's output chain does not drop 169.254.0.0/16; not probing the metadata address:\n{rules_before}"
    );

    // Dropped SYNs take the probe's whole 4 s: all at once.
    let (gw, a_ip, b_ip) = (gateway.to_string(), ip_a.to_string(), ip_b.to_string());
    let (to_b, to_a, to_cp, to_own, to_metadata) = tokio::join!(
        probe(&host_a, &b_ip, 22),
        probe(&host_b, &a_ip, 22),
        probe(&host_a, &gw, cp_port),
        probe(&host_a, &gw, own_port),
        probe(&host_a, "169.254.169.254", 80),
    );
    let problems = Problems::default();
    problems
        .check("host A → host B :22", async {
            assert_unreachable(&to_b, "host B's sshd");
        })
        .await;
    problems
        .check("host B → host A :22", async {
            assert_unreachable(&to_a, "host A's sshd");
        })
        .await;
    problems
        .check("host A → control plane on the gateway", async {
            assert_unreachable(&to_cp, "the control plane on the gateway address");
        })
        .await;
    problems
        .check("host A → a listener on the gateway", async {
            assert_unreachable(&to_own, "a listener on the gateway address");
            let peers = own_peers.lock().unwrap().clone();
            assert!(
                !peers.iter().any(|p| p.ip() == ip_a),
                "the listener accepted a connection from host A: {peers:?}"
            );
        })
        .await;
    problems
        .check("host A → 169.254.169.254:80", async {
            assert_unreachable(&to_metadata, "the metadata address");
        })
        .await;

    // Root in the host cannot change the firewall or the routes.
    let nft = install_nft(&host_a).await;
    problems
        .check("nft flush ruleset", async {
            let version = exec_with(&host_a, &nft, &["--version"]).await;
            assert!(
                version.success(),
                "the copied nft does not run: {}",
                version.both()
            );
            let flush = exec_with(&host_a, &nft, &["flush", "ruleset"]).await;
            eprintln!("nft flush ruleset: exit {:?} {}", flush.code, flush.both().trim());
            assert!(!flush.success(), "`nft flush ruleset` succeeded inside the host");
            assert!(
                flush.both().contains("Operation not permitted"),
                "`nft flush ruleset` should fail for want of permission: {}",
                flush.both()
            );
        })
        .await;
    problems
        .check("ip route add", async {
            let add = exec_root(&host_a, &["ip", "route", "add", "10.99.0.0/24", "dev", "eth0"]).await;
            eprintln!("ip route add: exit {:?} {}", add.code, add.both().trim());
            assert!(!add.success(), "`ip route add` succeeded inside the host");
            assert!(
                add.both().contains("Operation not permitted"),
                "`ip route add` should fail for want of permission: {}",
                add.both()
            );
            let routes = exec_root(&host_a, &["ip", "route"]).await;
            assert!(!routes.stdout.contains("10.99.0.0"), "{}", routes.stdout);
        })
        .await;
    let rules_after = ruleset(egress_pid).await;
    if rules_after != rules_before {
        problems.push(format!(
            "host A's ruleset changed:\nbefore:\n{rules_before}\nafter:\n{rules_after}"
        ));
    }

    // IPv6: no route out, so a connection attempt fails inside the namespace.
    problems
        .check("IPv6", async {
            let routes = exec_root(&host_a, &["ip", "-6", "route", "show", "default"]).await;
            assert!(
                routes.stdout.trim().is_empty(),
                "host A has an IPv6 default route: {}",
                routes.both()
            );
            // The gateway in the IPv4/IPv6 translation prefix: with no route it is never sent.
            let v6 = format!("64:ff9b::{gateway}");
            let out = probe(&host_a, &v6, own_port).await;
            assert_unreachable(&out, &format!("[{v6}]:{own_port}"));
        })
        .await;

    problems.finish();
}
