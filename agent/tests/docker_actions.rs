//! Drives the host actions against the real Docker engine: create → sshd answers → isolation checks
//! → stop → start → rebuild keeps /home (and wipe empties it) → rotate password → reconciler repairs
//! (crashed host, restarted egress container, orphans) → delete leaves nothing.
//!
//! Runs only as root with the Docker socket, `nft`/`nsenter` and the image
//! `cloud-cli-proxy/host:latest` (`images/build.sh`); otherwise it says why and passes. Everything it
//! creates carries its own node name, and a guard removes all of that on every exit. Traffic goes only
//! to the containers and the network this test creates (the metadata address is tried from inside the
//! host, where the namespace firewall drops it before it leaves).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agent::docker::Docker;
use agent::hosts::{Hosts, Names, Progress, Settings};
use agent::secrets::Store;
use agent::{firewall, reconcile};
use wire::{ContainerState, DesiredHost, HostSpec};

const IMAGE: &str = "cloud-cli-proxy/host:latest";
const SOCKET: &str = "/var/run/docker.sock";
const GATEWAY_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGrxf/Uir/ZK7zlM8oXDg0kmuXAtsK6L4FyQFSr+2ZpL itest-gateway";
/// `openssl passwd -6 -salt itestsalt1 first-password`
const FIRST_HASH: &str =
    "$6$itestsalt1$4qgAhoZNtP7nYdOjspFMxNWHUHj5VpR1MerOvN.6l9oisFTaAmtI6E463eUVo/pY6fiswAzOiG7lbR7n/zngQ0";
/// `openssl passwd -6 -salt itestsalt2 second-password`
const SECOND_HASH: &str =
    "$6$itestsalt2$LdOWRT8VrIt74TEaxCiGFbyItrDiLMqFXdpnLlrNLSfZsTFUG0p.HazrxygRMyj5Je1iXgkTdeJe/coOp8JiX/";

/// Skips the test `name` for `why`, unless `CCP_REQUIRE_DOCKER=1` (set by `tests/run.sh`) makes
/// a missing prerequisite a failure.
fn skip_unless_required(name: &str, why: &str) {
    assert!(
        std::env::var("CCP_REQUIRE_DOCKER").as_deref() != Ok("1"),
        "CCP_REQUIRE_DOCKER=1 but {why}"
    );
    eprintln!("SKIPPED {name}: {why}");
}

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        return Some("not running as root (nsenter into container namespaces needs it)".into());
    }
    if !Path::new(SOCKET).exists() {
        return Some(format!("no Docker socket at {SOCKET}"));
    }
    let image = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .output();
    if !image.is_ok_and(|o| o.status.success()) {
        return Some(format!("image {IMAGE} is missing (run images/build.sh)"));
    }
    for tool in ["nft", "nsenter"] {
        if !Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(format!(
                "{tool} is not installed (apt-get install nftables util-linux)"
            ));
        }
    }
    None
}

/// Removes everything labelled with the test's node name, however the test ends.
struct Cleanup {
    node: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={}={}", wire::labels::NODE, self.node);
        let list = |args: &[&str]| -> Vec<String> {
            Command::new("docker")
                .args(args)
                .args(["--filter", &filter])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let containers = list(&["ps", "-aq"]);
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&containers)
                .output();
        }
        let volumes = list(&["volume", "ls", "-q"]);
        if !volumes.is_empty() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
        let networks = list(&["network", "ls", "-q"]);
        if !networks.is_empty() {
            let _ = Command::new("docker")
                .args(["network", "rm"])
                .args(&networks)
                .output();
        }
    }
}

/// Records the progress it is given and checks it never goes backwards within one action.
#[derive(Default)]
struct Recorder {
    steps: Vec<(u8, String)>,
}

impl Progress for Recorder {
    async fn step(&mut self, percent: u8, stage: &str) -> Result<(), agent::hosts::Interrupt> {
        self.steps.push((percent, stage.to_owned()));
        Ok(())
    }
}

impl Recorder {
    fn take(&mut self) -> Vec<(u8, String)> {
        let steps = std::mem::take(&mut self.steps);
        assert!(
            steps.windows(2).all(|w| w[0].0 <= w[1].0),
            "progress went backwards: {steps:?}"
        );
        assert_eq!(steps.last().map(|s| s.0), Some(100), "{steps:?}");
        steps
    }
}

async fn exec(hosts: &Hosts, container: &str, script: &str) -> (i64, String) {
    let out = hosts
        .docker()
        .exec(container, &["bash", "-c", script])
        .await
        .unwrap();
    (out.exit_code, out.output)
}

fn labelled(kind: &[&str], node: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(kind)
        .args(["--filter", &format!("label={}={node}", wire::labels::NODE)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

async fn egress_pid(hosts: &Hosts, names: &Names) -> i64 {
    let egress = hosts
        .docker()
        .inspect_container(&names.egress)
        .await
        .unwrap()
        .unwrap();
    egress.state.unwrap().pid.unwrap()
}

async fn assert_firewall(hosts: &Hosts, names: &Names) {
    let listed = firewall::read(egress_pid(hosts, names).await, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(firewall::verify(&listed), "firewall not in place:\n{listed}");
}

async fn address(hosts: &Hosts, spec: &HostSpec) -> Ipv4Addr {
    let observed = hosts.observe(spec).await.unwrap();
    assert_eq!(observed.state, ContainerState::Running, "{observed:?}");
    observed
        .address
        .expect("a running host has an address")
        .parse()
        .unwrap()
}

async fn assert_sshd(ip: Ipv4Addr) {
    assert!(
        agent::hosts::ssh_banner(SocketAddr::from((ip, 22)), Duration::from_secs(5)).await,
        "sshd does not answer on {ip}:22"
    );
}

/// A password login with the real OpenSSH client, where sshpass is installed.
fn ssh_password_login(ip: Ipv4Addr, user: &str, password: &str) -> Option<bool> {
    Command::new("sshpass")
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let status = Command::new("sshpass")
        .args([
            "-p",
            password,
            "ssh",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .args([
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            &format!("{user}@{ip}"),
            "true",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    Some(status.success())
}

fn settings(node: &str) -> Settings {
    Settings {
        node_name: node.to_owned(),
        host_image: IMAGE.into(),
        hosts_network: format!("ccp-hosts-{node}"),
        vnc_port: 6080,
        desktop_idle_secs: 900,
        allow_direct_egress: true,
        ssh_ready_timeout: Duration::from_secs(90),
        command_timeout: Duration::from_secs(20),
        blocked_hosts: vec![],
        dns_servers: agent::node::resolvers(),
        egress_runtime: None,
        sing_box: None,
        tunnel_ready_timeout: Duration::from_secs(20),
        node_public_ips: vec![],
    }
}

fn test_node(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{}-{:x}", std::process::id(), nanos & 0xffff)
}

/// The control plane holds a node to the hosts subnet it reported first; the reconciler removes the
/// network when the node has no host, and the next host makes it again: on that same subnet, or
/// not at all while another network holds it (never on whatever Docker's pools offer then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remade_hosts_network_keeps_its_first_subnet() {
    if let Some(why) = missing_prerequisite() {
        skip_unless_required("a_remade_hosts_network_keeps_its_first_subnet", &why);
        return;
    }
    let node = test_node("in");
    let _cleanup = Cleanup { node: node.clone() };
    let state = tempfile::tempdir().unwrap();
    let docker = Docker::connect(SOCKET, Duration::from_secs(120)).await.unwrap();
    let hosts = Hosts::new(docker, Store::new(state.path(), &node), settings(&node));
    let network = format!("ccp-hosts-{node}");

    let first = hosts.ensure_network().await.unwrap();
    assert_eq!(
        hosts.store().hosts_subnet(),
        Some((first.subnet.clone(), first.gateway.clone()))
    );
    hosts.docker().remove_network(&network).await.unwrap();

    // Another network takes exactly that subnet meanwhile.
    let blocker = format!("ccp-blocker-{node}");
    let created = Command::new("docker")
        .args(["network", "create", "--subnet", &first.subnet, "--label"])
        .arg(format!("{}={node}", wire::labels::NODE))
        .arg(&blocker)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let refused = hosts.ensure_network().await;
    assert!(refused.is_err(), "made on another subnet: {refused:?}");
    assert!(
        !labelled(&["network", "ls", "--format", "{{.Name}}"], &node).contains(&network),
        "the hosts network exists elsewhere"
    );

    let removed = Command::new("docker")
        .args(["network", "rm", &blocker])
        .output()
        .unwrap();
    assert!(removed.status.success(), "{removed:?}");
    let again = hosts.ensure_network().await.unwrap();
    assert_eq!((again.subnet, again.gateway), (first.subnet, first.gateway));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_lifecycle_against_real_docker() {
    if let Some(why) = missing_prerequisite() {
        skip_unless_required("host_lifecycle_against_real_docker", &why);
        return;
    }
    let node = test_node("it");
    let _cleanup = Cleanup { node: node.clone() };
    let state = tempfile::tempdir().unwrap();
    let docker = Docker::connect(SOCKET, Duration::from_secs(120)).await.unwrap();
    let hosts = Hosts::new(docker, Store::new(state.path(), &node), settings(&node));
    let mut spec = HostSpec {
        host_id: format!("{node}-host"),
        short_id: "h1".into(),
        linux_user: "alice".into(),
        memory_mb: 512,
        cpu_millis: 1000,
        pids_limit: 512,
        password_crypt: FIRST_HASH.into(),
        authorized_keys: vec![GATEWAY_KEY.into()],
        vnc_secret: "vnc-pass".into(),
        egress: None,
        egress_cut: false,
    };
    let names = hosts.names(&spec.short_id);
    let mut progress = Recorder::default();

    // --- create: done when sshd answers --------------------------------------------------------
    let t = Instant::now();
    hosts.create(&spec, &mut progress).await.unwrap();
    let create_ms = t.elapsed().as_millis();
    progress.take();
    let ip = address(&hosts, &spec).await;
    assert_sshd(ip).await;
    assert_firewall(&hosts, &names).await;
    // Creating again is a no-op that succeeds.
    hosts.create(&spec, &mut progress).await.unwrap();
    progress.take();

    let inspected = hosts
        .docker()
        .inspect_container(&names.host)
        .await
        .unwrap()
        .unwrap();
    let hc = inspected.host_config.clone().unwrap();
    assert_eq!(hc.privileged, Some(false));
    // Docker resolves `container:<name>` to the egress container's id.
    let egress_id = hosts
        .docker()
        .inspect_container(&names.egress)
        .await
        .unwrap()
        .unwrap()
        .id
        .unwrap();
    assert_eq!(hc.network_mode, Some(format!("container:{egress_id}")));
    let caps = hc.cap_add.clone().unwrap_or_default();
    assert!(
        caps.iter()
            .all(|c| !c.contains("NET_ADMIN") && !c.contains("NET_RAW")),
        "{caps:?}"
    );
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(hc.memory, Some(512 * 1024 * 1024));
    assert_eq!(hc.pids_limit, Some(512));
    assert_eq!(
        hc.log_config
            .and_then(|l| l.config)
            .and_then(|c| c.get("max-size").cloned())
            .as_deref(),
        Some("10m")
    );
    let config_json = serde_json::to_string(&inspected).unwrap();
    for secret in [FIRST_HASH, "vnc-pass"] {
        assert!(!config_json.contains(secret), "a secret shows in docker inspect");
    }
    let (code, hostname) = exec(&hosts, &names.host, "hostname").await;
    assert_eq!((code, hostname.trim()), (0, "h1"));

    // --- isolation, from inside the host as root ----------------------------------------------------
    let bridge = hosts.ensure_network().await.unwrap();
    let gateway: Ipv4Addr = bridge.gateway.parse().unwrap();
    let listener = TcpListener::bind((gateway, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (code, _) = exec(
        &hosts,
        &names.host,
        "timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/22'",
    )
    .await;
    assert_eq!(code, 0, "control: the host reaches its own sshd over loopback");
    let (code, _) = exec(
        &hosts,
        &names.host,
        &format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{gateway}/{port}'"),
    )
    .await;
    assert_ne!(
        code, 0,
        "the host reached a listener on the node's bridge address"
    );
    assert!(
        listener.accept().is_err(),
        "the node's listener saw a connection from the host"
    );
    let (code, _) = exec(
        &hosts,
        &names.host,
        "timeout 3 bash -c 'exec 3<>/dev/tcp/169.254.169.254/80'",
    )
    .await;
    assert_ne!(code, 0, "the host reached the metadata address");
    let (code, out) = exec(&hosts, &names.host, "ip route add blackhole 10.123.0.0/16").await;
    assert_ne!(code, 0, "root changed a route: {out}");
    let (code, out) = exec(&hosts, &names.host, "ip link set lo down").await;
    assert_ne!(code, 0, "root took an interface down: {out}");
    let (code, out) = exec(
        &hosts,
        &names.host,
        "if command -v nft >/dev/null; then nft flush ruleset; else exit 77; fi",
    )
    .await;
    if code == 77 {
        eprintln!("note: no nft in the image; the capability check below stands in for `nft flush ruleset`");
    } else {
        assert_ne!(code, 0, "root flushed the ruleset: {out}");
    }
    let (_, bounding) = exec(&hosts, &names.host, "grep CapBnd /proc/self/status | cut -f2").await;
    let bounding = u64::from_str_radix(bounding.trim(), 16).unwrap();
    assert_eq!(
        bounding & (1 << 12 | 1 << 13),
        0,
        "NET_ADMIN/NET_RAW in the bounding set: {bounding:x}"
    );
    assert_firewall(&hosts, &names).await;

    // --- stop, start ----------------------------------------------------------------------------------
    hosts.stop(&spec, &mut progress).await.unwrap();
    progress.take();
    assert_eq!(hosts.observe(&spec).await.unwrap().state, ContainerState::Stopped);
    let t = Instant::now();
    hosts.start(&spec, &mut progress).await.unwrap();
    let start_ms = t.elapsed().as_millis();
    progress.take();
    let ip = address(&hosts, &spec).await;
    assert_sshd(ip).await;
    assert_firewall(&hosts, &names).await;

    // --- rebuild keeps /home; wipe empties it ---------------------------------------------------------
    let (code, _) = exec(&hosts, &names.host, "echo kept > /home/keep.txt").await;
    assert_eq!(code, 0);
    let t = Instant::now();
    hosts.rebuild(&spec, false, &mut progress).await.unwrap();
    let rebuild_ms = t.elapsed().as_millis();
    progress.take();
    let (code, out) = exec(&hosts, &names.host, "cat /home/keep.txt").await;
    assert_eq!((code, out.trim()), (0, "kept"));
    assert_firewall(&hosts, &names).await;
    hosts.rebuild(&spec, true, &mut progress).await.unwrap();
    progress.take();
    let (code, _) = exec(&hosts, &names.host, "test -e /home/keep.txt").await;
    assert_ne!(code, 0, "wipe left the home's files");
    let ip = address(&hosts, &spec).await;
    assert_sshd(ip).await;

    // --- rotate the password: live in the running host ------------------------------------------------
    spec.password_crypt = SECOND_HASH.into();
    hosts
        .apply_secrets(&spec, &mut progress, "password rotated")
        .await
        .unwrap();
    progress.take();
    let (code, shadow) = exec(&hosts, &names.host, "getent shadow alice | cut -d: -f2").await;
    assert_eq!((code, shadow.trim()), (0, SECOND_HASH));
    match ssh_password_login(ip, "alice", "second-password") {
        Some(ok) => {
            assert!(ok, "ssh with the new password failed");
            assert_eq!(
                ssh_password_login(ip, "alice", "first-password"),
                Some(false),
                "the old password still works"
            );
        }
        None => eprintln!("note: sshpass missing; checked /etc/shadow only"),
    }

    // --- a tenant's script that writes without end: the agent keeps 64 KiB and moves on ---------------
    let (code, _) = exec(
        &hosts,
        &names.host,
        "cp -p /usr/local/sbin/host-apply-secrets /root/apply.keep \
         && printf '#!/bin/sh\nexec yes flood\n' > /usr/local/sbin/host-apply-secrets",
    )
    .await;
    assert_eq!(code, 0);
    let started = Instant::now();
    let err = hosts
        .apply_secrets(&spec, &mut progress, "password rotated")
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the flood was read for {:?}",
        started.elapsed()
    );
    progress.steps.clear();
    match err {
        agent::hosts::Error::ApplySecrets { output, .. } => {
            assert!(
                output.len() <= agent::docker::EXEC_OUTPUT_MAX,
                "{} bytes kept",
                output.len()
            );
            assert!(
                output.starts_with("flood\nflood"),
                "{:?}",
                &output[..output.len().min(40)]
            );
        }
        other => panic!("expected a failed secrets script, got {other}"),
    }
    let direct = hosts.docker().exec(&names.host, &["yes", "flood"]).await.unwrap();
    assert!(direct.truncated);
    assert_eq!(direct.output.len(), agent::docker::EXEC_OUTPUT_MAX);
    // The writers are the tenant's to stop; ending them keeps the rest of the test quiet.
    exec(&hosts, &names.host, "pkill -x yes; true").await;
    let (code, _) = exec(
        &hosts,
        &names.host,
        "mv /root/apply.keep /usr/local/sbin/host-apply-secrets",
    )
    .await;
    assert_eq!(code, 0);

    // --- reconciler: a crashed host comes back after its firewall ---------------------------------------
    let desired = [DesiredHost {
        host_id: spec.host_id.clone(),
        busy: false,
        egress_cut: false,
    }];
    let none = HashSet::new();
    let out = Command::new("docker")
        .args(["stop", "-t", "2", &names.host])
        .output()
        .unwrap();
    assert!(out.status.success());
    reconcile::run_once(&hosts, &desired, &none).await.unwrap();
    let ip = address(&hosts, &spec).await;
    wait_for_sshd(ip).await;
    assert_firewall(&hosts, &names).await;

    // An egress restart (as Docker does on a daemon restart) leaves a fresh namespace: the reconciler
    // puts the rules back and moves the host into it.
    let out = Command::new("docker")
        .args(["restart", "-t", "1", &names.egress])
        .output()
        .unwrap();
    assert!(out.status.success());
    reconcile::run_once(&hosts, &desired, &none).await.unwrap();
    assert_firewall(&hosts, &names).await;
    let ip = address(&hosts, &spec).await;
    wait_for_sshd(ip).await;

    // Orphans (labelled for this node, no longer desired) go; the desired host stays.
    let orphan_labels = agent::docker::labels_for(&node, agent::docker::Role::Home, Some("orphan"));
    hosts
        .docker()
        .ensure_volume(&format!("ccp-{node}-home-orphan"), &orphan_labels)
        .await
        .unwrap();
    let keys = vec![GATEWAY_KEY.to_owned()];
    let orphan_secrets = agent::secrets::HostSecrets {
        password_crypt: FIRST_HASH,
        authorized_keys: &keys,
        vnc_secret: "x",
    };
    hosts.store().write("orphan", &orphan_secrets).unwrap();
    reconcile::run_once(&hosts, &desired, &none).await.unwrap();
    assert!(
        hosts
            .docker()
            .inspect_volume(&format!("ccp-{node}-home-orphan"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(hosts.store().list().unwrap(), [spec.host_id.clone()]);
    assert_eq!(hosts.observe(&spec).await.unwrap().state, ContainerState::Running);

    // --- delete: nothing left -------------------------------------------------------------------------
    hosts.delete(&spec, &mut progress).await.unwrap();
    progress.take();
    assert_eq!(hosts.observe(&spec).await.unwrap().state, ContainerState::Missing);
    hosts.delete(&spec, &mut progress).await.unwrap();
    progress.take();
    assert!(labelled(&["ps", "-aq"], &node).is_empty(), "containers left");
    assert!(
        labelled(&["volume", "ls", "-q"], &node).is_empty(),
        "volumes left"
    );
    assert!(!hosts.store().host_dir(&spec.host_id).exists(), "files left");
    // With no host left on the node, the reconciler also removes the node's network.
    reconcile::run_once(&hosts, &[], &none).await.unwrap();
    assert!(
        labelled(&["network", "ls", "-q"], &node).is_empty(),
        "network left"
    );
    assert!(hosts.store().list().unwrap().is_empty());

    eprintln!("timings: create→sshd {create_ms} ms, start→sshd {start_ms} ms, rebuild→sshd {rebuild_ms} ms");
}

async fn wait_for_sshd(ip: Ipv4Addr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agent::hosts::ssh_banner(SocketAddr::from((ip, 22)), Duration::from_secs(2)).await {
        assert!(Instant::now() < deadline, "sshd did not come back on {ip}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
