//! The leak suite: a host bound to a WireGuard egress, and one bound to a shadowsocks egress, try
//! every way out but the tunnel, and the fake internet's router counts the packets that leave the
//! node for anything but the tunnel endpoint. Zero in every case:
//!
//! - DNS to an outside resolver over UDP 53, TCP 53 and TCP 853 (the first two are answered through
//!   the tunnel: the probe sees the egress IP ask), ICMP, IPv6, the link-local metadata address;
//! - a raw socket (refused: the host has no NET_RAW), `/etc/resolv.conf` rewritten by root;
//! - `kill -9` of the tunnel process: egress is back within 5 s and an SSH session open across it
//!   carries on; the tunnel interface set down; the egress server made unreachable.
//!
//! Needs root, Docker with the host image, sing-box, nft, iproute2, sshpass, and the workspace
//! binaries (`cargo build --workspace --bins`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cloud_cli_proxy_tests::docker::{self, exec_root};
use cloud_cli_proxy_tests::egress::{Egress, whoami_in_host};
use cloud_cli_proxy_tests::fakenet::{FakeInternet, Kind};
use cloud_cli_proxy_tests::hosts::{NewHost, linux_user, ssh};

/// An address in the fake internet where nothing lives: the "outside resolver".
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 99);

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// The acceptance bound: egress back this soon after the tunnel process is killed.
const RESTORE_LIMIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wireguard_leaks_nothing() {
    leak_suite(Kind::Wireguard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadowsocks_leaks_nothing() {
    leak_suite(Kind::Shadowsocks).await;
}

struct Bound<'a> {
    eg: &'a Egress,
    host: NewHost,
    container: String,
    egress_container: String,
    probe_ip: Ipv4Addr,
    whoami_name: String,
}

/// Asserts that not a packet left the node but to the tunnel endpoint since the last reset.
fn no_leaks(net: &FakeInternet, case: &str) {
    eprintln!(
        "{:>8.1?} {case}: checking the leak counters",
        START.get_or_init(Instant::now).elapsed()
    );
    let leaks = net.leaks().unwrap();
    assert_eq!(
        leaks.total(),
        0,
        "{case}: packets left the node outside the tunnel: {leaks:?}"
    );
    net.reset_leaks().unwrap();
}

impl Bound<'_> {
    async fn sh(&self, script: &str) -> docker::Out {
        exec_root(&self.container, &["bash", "-c", script]).await
    }

    async fn probe_204(&self) -> bool {
        let url = format!("http://{}/generate_204", self.probe_ip);
        let out = exec_root(
            &self.container,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "1",
                &url,
            ],
        )
        .await;
        out.stdout.trim() == "204"
    }

    /// Waits until the host reaches the probe again; how long that took.
    async fn egress_back(&self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.probe_204().await {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn tunnel_status(&self) -> serde_json::Value {
        let path = self.eg.node.host_files(&self.host.id).join("egress/status.json");
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&raw).unwrap()
    }

    async fn whoami(&self, options: &[&str]) -> String {
        whoami_in_host(&self.container, &self.whoami_name, options).await
    }
}

async fn leak_suite(kind: Kind) {
    let mut net = FakeInternet::build(&format!("leaks-{}", kind.name())).expect("fake internet");
    let eg = Egress::start(&net).await;
    let host = eg.node.running_host("alice").await;
    let ip = eg.create(&mut net, kind, &format!("{}-leaks", kind.name())).await;
    let declared = net.server(kind).ip;
    net.allow_endpoint(declared).unwrap();
    eg.bind(&mut net, kind, &host.id, &ip).await;
    eg.restart(&host.id).await;
    let b = Bound {
        container: eg.node.host_container(&host.short_id),
        egress_container: eg.node.egress_container(&host.short_id),
        probe_ip: net.probe_ip(),
        whoami_name: net.probe_urls().2,
        eg: &eg,
        host,
    };
    assert!(
        b.egress_back(Duration::from_secs(20)).await.is_some(),
        "egress never came up"
    );
    // TCP through the tunnel can work a moment before its DNS path does (sing-box's UDP relay);
    // the leak checks start once the agent's own check, DNS included, passed with the tunnel up.
    eg.health(&b.host.id, true, declared).await;
    net.reset_leaks().unwrap();

    // DNS to an outside resolver: answered anyway, through the tunnel (the probe sees the egress).
    let udp = b.whoami(&[&format!("@{OUTSIDE}")]).await;
    assert_eq!(
        udp,
        declared.to_string(),
        "UDP 53 to an outside resolver goes through the tunnel"
    );
    no_leaks(&net, "DNS over UDP to an outside resolver");
    let tcp = b.whoami(&["+tcp", &format!("@{OUTSIDE}")]).await;
    assert_eq!(
        tcp,
        declared.to_string(),
        "TCP 53 to an outside resolver goes through the tunnel"
    );
    no_leaks(&net, "DNS over TCP to an outside resolver");
    b.sh(&format!(
        "timeout 4 bash -c 'echo > /dev/tcp/{OUTSIDE}/853' || true"
    ))
    .await;
    no_leaks(&net, "DNS over TLS (TCP 853) to an outside resolver");

    // ICMP and IPv6.
    b.sh(&format!("ping -c 2 -W 1 {OUTSIDE} || true")).await;
    no_leaks(&net, "ICMP echo");
    let v6 = b
        .sh("curl -6 -sS --max-time 3 'http://[fd18::1]/' ; ping -6 -c 1 -W 1 fd18::1")
        .await;
    assert!(!v6.success(), "IPv6 must go nowhere: {}", v6.both());
    no_leaks(&net, "IPv6");

    // Link-local (cloud metadata).
    let meta = b
        .sh("curl -sS --max-time 3 http://169.254.169.254/latest/meta-data/")
        .await;
    assert!(
        !meta.success(),
        "the metadata address must be unreachable: {}",
        meta.both()
    );
    no_leaks(&net, "link-local metadata");

    // A raw socket, as root in the host: refused (no NET_RAW).
    let raw = b
        .sh("perl -e 'use Socket; socket(my $s, PF_INET, SOCK_RAW, 1) or die \"raw: $!\\n\"; print \"opened\\n\"'")
        .await;
    assert!(
        !raw.success() && raw.both().contains("not permitted"),
        "raw sockets must be refused: {}",
        raw.both()
    );
    no_leaks(&net, "raw socket");

    // /etc/resolv.conf rewritten by root: the resolver named there is still reached through the
    // tunnel (every DNS query goes to the egress resolver).
    let saved = b.sh("cat /etc/resolv.conf").await.stdout;
    b.sh(&format!("echo 'nameserver {OUTSIDE}' > /etc/resolv.conf"))
        .await;
    let edited = b.whoami(&[]).await;
    assert_eq!(
        edited,
        declared.to_string(),
        "an edited resolv.conf still resolves through the tunnel"
    );
    no_leaks(&net, "/etc/resolv.conf edited by root");
    b.sh(&format!(
        "printf '%s' '{}' > /etc/resolv.conf",
        saved.replace('\'', "")
    ))
    .await;

    // kill -9 of the tunnel process, with an SSH session open across it.
    let before = b.tunnel_status();
    let pid = before["pid"].as_u64().expect("the tunnel process's pid");
    let user = linux_user("alice");
    let host_ip = eg.node.host_ip(&b.host.short_id).await;
    let password = b.host.ssh_password.clone();
    let session = tokio::spawn(async move {
        ssh(
            &user,
            host_ip,
            &password,
            "for i in $(seq 1 16); do echo tick $i; sleep 0.5; done",
        )
        .await
    });
    // The kill comes once the session's loop runs in the host, so the session is open across it
    // (`tic[k]`: the pattern does not match pgrep's own shell).
    cloud_cli_proxy_tests::api::eventually(Duration::from_secs(30), "the SSH session's loop", || async {
        b.sh("pgrep -f 'echo tic[k]' >/dev/null")
            .await
            .success()
            .then_some(())
    })
    .await;
    let kill = exec_root(&b.egress_container, &["kill", "-9", &pid.to_string()]).await;
    assert!(kill.success(), "kill -9 {pid}: {}", kill.both());
    let back = b
        .egress_back(Duration::from_secs(15))
        .await
        .expect("egress never came back after kill -9");
    eprintln!(
        "{kind:?}: egress back {} ms after kill -9 of the tunnel process",
        back.as_millis()
    );
    if back > RESTORE_LIMIT {
        let logs = docker::run_program(
            "docker",
            &["logs", "--timestamps", "--tail", "40", &b.egress_container],
            Duration::from_secs(10),
        )
        .await;
        panic!(
            "egress back after {back:?}, more than {RESTORE_LIMIT:?}; tunnel runtime:\n{}\nstatus: {}",
            logs.both(),
            b.tunnel_status()
        );
    }
    let after = b.tunnel_status();
    assert_ne!(after["pid"], before["pid"], "a new tunnel process: {after}");
    assert!(
        after["restarts"].as_u64() > before["restarts"].as_u64(),
        "{after}"
    );
    let session = session.await.unwrap();
    assert!(
        session.success(),
        "the SSH session died with the tunnel: {}",
        session.both()
    );
    assert_eq!(
        session.stdout.lines().filter(|l| l.starts_with("tick")).count(),
        16,
        "{}",
        session.stdout
    );
    no_leaks(&net, "kill -9 of the tunnel process");

    // The tunnel interface set down (from the egress container: the host cannot).
    let down = exec_root(&b.container, &["ip", "link", "set", "ccp-tun", "down"]).await;
    assert!(
        !down.success(),
        "the host must not manage its links: {}",
        down.both()
    );
    let down = exec_root(&b.egress_container, &["ip", "link", "set", "ccp-tun", "down"]).await;
    assert!(down.success(), "ip link set ccp-tun down: {}", down.both());
    for _ in 0..3 {
        b.probe_204().await;
    }
    no_leaks(&net, "tunnel interface down");
    // Nobody sets it up again: the runtime does, and the routes come back with it.
    let healed = b.egress_back(Duration::from_secs(10)).await;
    assert!(
        healed.is_some(),
        "egress did not come back after the tunnel interface went down"
    );
    eprintln!(
        "{kind:?}: egress back {} ms after the tunnel interface went down",
        healed.unwrap().as_millis()
    );
    no_leaks(&net, "tunnel interface set up again");
    net.reset_leaks().unwrap();

    // The egress server unreachable: nothing gets out, nothing leaks; back once it is.
    net.set_reachable(kind, false).unwrap();
    for _ in 0..3 {
        assert!(!b.probe_204().await, "egress with the server cut off");
    }
    no_leaks(&net, "egress server unreachable");
    net.set_reachable(kind, true).unwrap();
    assert!(
        b.egress_back(Duration::from_secs(60)).await.is_some(),
        "egress did not come back with the server"
    );
    no_leaks(&net, "egress server back");
}
