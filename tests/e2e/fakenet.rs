//! The fake internet itself, end to end: the node reaches the probe as the node public IP (HTTP and
//! DNS), every tunnel server relays from its declared egress IP (HTTP, and DNS where the protocol
//! carries UDP), the leak counter counts direct packets from the node and ignores the allowed
//! endpoints, the switches cut a server off, and dropping it leaves nothing behind; the fast
//! WireGuard server takes peers while it runs and again after a restart; a container on
//! Docker's bridge goes out as the node; and the egress bodies it hands out are what the API takes.
//!
//! Needs root, iproute2, nft, curl, openssl, sing-box, Docker with the host image, and the probe
//! and control-plane binaries (`cargo build --workspace --bins`; `CCP_BIN_DIR`, `CCP_PROBE_BIN`).
//! All traffic stays in 198.18.0.0/15 and on loopback: only IP literals are used, so no client
//! ever resolves a name through the machine's resolver.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

use cloud_cli_proxy_tests::docker;
use cloud_cli_proxy_tests::fakenet::servers::{TROJAN_SERVER_NAME, WgServer};
use cloud_cli_proxy_tests::fakenet::{
    self, Client, FakeInternet, Kind, LeakCount, Server, WgServerProgram, curl_in, http_status_in, netns,
    whoami,
};
use cloud_cli_proxy_tests::{ControlPlane, Options};

/// An address in the fake internet where nothing lives.
const NOWHERE: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 77);

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "the fake internet needs root (network namespaces, veths, routes, nft): run this test as root"
    );
}

/// Retries `f` for up to 10 s (a tunnel's first packet may wait for a handshake).
fn eventually<T>(what: &str, mut f: impl FnMut() -> anyhow::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: {e:#}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// One ICMP echo request to `to` from a raw socket (the machine has no `ping`).
fn send_icmp_echo(to: Ipv4Addr) {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut packet = [8u8, 0, 0, 0, 0x0c, 0xcf, 0, 1, b'c', b'c', b'p', b'f'];
    let sum = packet
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !u16::try_from((folded & 0xffff) + (folded >> 16)).unwrap();
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
    socket
        .send_to(&packet, &SocketAddr::from((to, 0)).into())
        .unwrap();
}

fn send_udp(to: SocketAddr) {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    socket.send_to(b"fakenet leak", to).unwrap();
}

/// Waits until the router has counted at least `want` (the counters lag nothing, but the packets
/// are sent asynchronously by the kernel).
fn leaks_reach(net: &FakeInternet, want: impl Fn(&LeakCount) -> bool) -> LeakCount {
    let mut last = LeakCount::default();
    let seen = netns::wait_for(Duration::from_secs(3), || {
        last = net.leaks().unwrap();
        want(&last)
    });
    assert!(seen, "leak counters stayed at {last:?}");
    last
}

fn node_reaches_the_probe_as_its_public_ip(net: &FakeInternet) {
    let (connectivity, ip_url, _) = net.probe_urls();
    assert_eq!(http_status_in(None, &connectivity).unwrap(), 204);
    let seen = curl_in(None, &ip_url, None).unwrap();
    assert_eq!(seen.trim(), net.node_public_ip().to_string());
    let asker = whoami(SocketAddr::from((net.probe_ip(), 53))).unwrap();
    assert_eq!(
        asker,
        net.node_public_ip(),
        "the probe's DNS saw the node as {asker}"
    );
    // Straight from the node to the probe is exactly what a leak is.
    let count = leaks_reach(net, |c| c.udp53 >= 1 && c.other >= 1);
    assert_eq!(count.tcp53 + count.tcp853 + count.ipv6, 0, "{count:?}");
}

fn leak_counter_counts_by_kind_and_ignores_allowed_endpoints(net: &mut FakeInternet) {
    net.reset_leaks().unwrap();
    send_udp(SocketAddr::from((NOWHERE, 53)));
    send_udp(SocketAddr::from((NOWHERE, 9)));
    // Nothing lives there: the router answers "unreachable" and the connect fails fast.
    let _ =
        std::net::TcpStream::connect_timeout(&SocketAddr::from((NOWHERE, 853)), Duration::from_millis(500));
    let _ =
        std::net::TcpStream::connect_timeout(&SocketAddr::from((NOWHERE, 53)), Duration::from_millis(500));
    send_icmp_echo(NOWHERE);
    let count = leaks_reach(net, |c| {
        c.udp53 == 1 && c.other == 1 && c.tcp853 >= 1 && c.tcp53 >= 1 && c.icmp == 1
    });
    assert_eq!(count.ipv6, 0, "{count:?}");

    // IPv6 from the node at all: a datagram to the router's link-local address. A machine with
    // IPv6 switched off cannot send any, so there is nothing to count.
    let node_if = net.node_interface().to_owned();
    let v6_off = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{node_if}/disable_ipv6"))
        .map_or(true, |v| v.trim() == "1");
    if v6_off {
        eprintln!("fakenet: IPv6 is off on {node_if}; the IPv6 leak counter is not exercised");
    } else {
        let router_ll = link_local(Some(net.router_netns()), "node");
        let scope = if_index(&node_if);
        netns::wait_for(Duration::from_secs(5), || link_local_ready(&node_if));
        let socket = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
        socket
            .send_to(b"v6 leak", SocketAddrV6::new(router_ll, 9, 0, scope))
            .unwrap();
        leaks_reach(net, |c| c.ipv6 == 1);
    }

    net.reset_leaks().unwrap();
    net.allow_endpoint(NOWHERE).unwrap();
    send_udp(SocketAddr::from((NOWHERE, 53)));
    send_udp(SocketAddr::from((NOWHERE, 9)));
    // A positive control sent last: once it is counted, the allowed ones have been seen too.
    net.disallow_endpoint(NOWHERE).unwrap();
    send_udp(SocketAddr::from((NOWHERE, 9)));
    let count = leaks_reach(net, |c| c.other >= 1);
    assert_eq!(
        count,
        LeakCount {
            other: 1,
            ..LeakCount::default()
        }
    );
    net.reset_leaks().unwrap();
}

fn link_local(netns: Option<&str>, dev: &str) -> Ipv6Addr {
    let args = ["-j", "-6", "addr", "show", "dev", dev, "scope", "link"];
    let json = match netns {
        Some(ns) => fakenet::run_in(ns, "ip", &args).unwrap(),
        None => netns::ip(&args).unwrap(),
    };
    let links: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    links[0]["addr_info"][0]["local"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no link-local address on {dev}: {json}"))
}

fn link_local_ready(dev: &str) -> bool {
    let json = netns::ip(&["-j", "-6", "addr", "show", "dev", dev, "scope", "link"]).unwrap();
    json.contains("\"local\"") && !json.contains("tentative")
}

fn if_index(dev: &str) -> u32 {
    let json = netns::ip(&["-j", "link", "show", "dev", dev]).unwrap();
    let links: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    u32::try_from(links[0]["ifindex"].as_u64().unwrap()).unwrap()
}

/// Starts a client for `kind` from its egress body (adding a WireGuard peer for it first).
fn client_for(net: &mut FakeInternet, kind: Kind) -> Client {
    let body = net.egress_body(kind, &format!("fakenet-{}", kind.name()));
    let key = if kind == Kind::Wireguard {
        let (private, public) = fakenet::wg_keypair().unwrap();
        let peer = body["wg_peer_address"].as_str().unwrap().to_owned();
        net.add_wireguard_peer(&public, &peer).unwrap();
        Some(private)
    } else {
        None
    };
    Client::start(&body, key.as_deref()).unwrap_or_else(|e| panic!("{kind:?} client: {e:#}"))
}

fn every_tunnel_exits_at_its_declared_ip(net: &mut FakeInternet) -> Vec<(Kind, Duration)> {
    for kind in Kind::ALL {
        net.allow_endpoint(kind.ip()).unwrap();
    }
    net.reset_leaks().unwrap();
    let (_, ip_url, _) = net.probe_urls();
    let mut times = Vec::new();
    for kind in Kind::ALL {
        let started = Instant::now();
        let client = client_for(net, kind);
        let declared = net.server(kind).ip.to_string();
        let seen = eventually(&format!("{kind:?}: GET /ip through the tunnel"), || {
            curl_in(None, &ip_url, Some(&client.proxy_url()))
        });
        assert_eq!(
            seen.trim(),
            declared,
            "{kind:?}: exit IP; client log: {}",
            client.log()
        );
        // The http proxy carries no UDP; every other kind relays DNS from its own address.
        if kind != Kind::Http {
            let asker = eventually(&format!("{kind:?}: DNS through the tunnel"), || {
                whoami(client.dns_addr())
            });
            assert_eq!(asker.to_string(), declared, "{kind:?}: the resolver saw {asker}");
        }
        times.push((kind, started.elapsed()));
    }
    let count = net.leaks().unwrap();
    assert_eq!(count, LeakCount::default(), "tunnel traffic counted as leaks");
    times
}

fn switches_cut_a_server_off(net: &mut FakeInternet) {
    let (_, ip_url, _) = net.probe_urls();
    let socks = client_for(net, Kind::Socks);
    net.set_reachable(Kind::Socks, false).unwrap();
    assert!(
        curl_in(None, &ip_url, Some(&socks.proxy_url())).is_err(),
        "unreachable socks server answered"
    );
    net.set_reachable(Kind::Socks, true).unwrap();
    eventually("socks again", || curl_in(None, &ip_url, Some(&socks.proxy_url())));

    let http = client_for(net, Kind::Http);
    net.stop_server(Kind::Http);
    assert!(
        curl_in(None, &ip_url, Some(&http.proxy_url())).is_err(),
        "stopped http server answered"
    );
    net.start_server(Kind::Http).unwrap();
    let seen = eventually("http again", || curl_in(None, &ip_url, Some(&http.proxy_url())));
    assert_eq!(seen.trim(), Kind::Http.ip().to_string());
}

/// Leftovers of a crashed run (a namespace and a root interface named for a process that no longer
/// exists) are swept by the next build; a live process's are not.
fn plant_leftovers() -> (String, String) {
    let dead = (900_000..999_999)
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .unwrap();
    let ns = format!("ccpf-{dead}-crashed-rt");
    let link = format!("ccpf{dead}");
    netns::ip(&["netns", "add", &ns]).unwrap();
    netns::ip(&[
        "link", "add", &link, "type", "veth", "peer", "name", "node", "netns", &ns,
    ])
    .unwrap();
    (ns, link)
}

#[test]
fn fake_internet_end_to_end() {
    require_root();
    let (stale_ns, stale_link) = plant_leftovers();
    let started = Instant::now();
    let mut net = FakeInternet::build("e2e").unwrap_or_else(|e| panic!("{e:#}"));
    let built = started.elapsed();
    let pid = std::process::id();
    assert!(
        !netns::our_namespaces().contains(&stale_ns),
        "{stale_ns} not swept"
    );
    assert!(
        !netns::our_links().contains(&stale_link),
        "{stale_link} not swept"
    );

    node_reaches_the_probe_as_its_public_ip(&net);
    leak_counter_counts_by_kind_and_ignores_allowed_endpoints(&mut net);
    let times = every_tunnel_exits_at_its_declared_ip(&mut net);
    switches_cut_a_server_off(&mut net);

    let dropping = Instant::now();
    drop(net);
    let torn_down = dropping.elapsed();
    let ours = |name: &String| netns::owner_pid(name) == Some(pid);
    assert!(
        !netns::our_namespaces().iter().any(ours),
        "namespaces left: {:?}",
        netns::our_namespaces()
    );
    assert!(
        !netns::our_links().iter().any(ours),
        "links left: {:?}",
        netns::our_links()
    );
    let route = netns::ip(&["route", "show", "198.18.0.0/15"]).unwrap();
    assert!(route.trim().is_empty(), "route left: {route}");
    assert_eq!(fakenet::in_use(fakenet::RANGE).unwrap(), Vec::<String>::new());

    eprintln!(
        "fakenet: built in {built:?}, torn down in {torn_down:?}, whole test {:?}",
        started.elapsed()
    );
    for (kind, took) in times {
        eprintln!("fakenet: {kind:?} client up and checked in {took:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// The fake WireGuard server on the agent's own data path (`cloud-cli-proxy-fake-wg`, what the
/// egress bench runs) against sing-box's WireGuard client: a peer gets through at the declared egress
/// IP; a second peer, added while the server runs, at another address, gets through too, and the
/// first still does; after a restart of the server both keys are accepted again; nothing leaks.
#[test]
fn the_batched_wireguard_server_takes_peers_while_it_runs_and_after_a_restart() {
    require_root();
    let mut net =
        FakeInternet::build_with("fastwg", WgServerProgram::Batched).unwrap_or_else(|e| panic!("{e:#}"));
    net.allow_endpoint(Kind::Wireguard.ip()).unwrap();
    net.reset_leaks().unwrap();
    let (_, ip_url, _) = net.probe_urls();
    let declared = Kind::Wireguard.ip().to_string();
    let through = |client: &Client, what: &str| {
        let seen = eventually(what, || curl_in(None, &ip_url, Some(&client.proxy_url())));
        assert_eq!(seen.trim(), declared, "{what}: client log: {}", client.log());
    };
    let peer = |net: &mut FakeInternet, address: &str| {
        let mut body = net.egress_body(Kind::Wireguard, "fakenet-fastwg");
        body["wg_peer_address"] = address.into();
        let (private, public) = fakenet::wg_keypair().unwrap();
        net.add_wireguard_peer(&public, address).unwrap();
        (body, private)
    };
    let start = |(body, key): &(serde_json::Value, String)| {
        Client::start(body, Some(key)).unwrap_or_else(|e| panic!("WireGuard client: {e:#}"))
    };

    let one = peer(&mut net, fakenet::WG_PEER_ADDRESS);
    let first = start(&one);
    through(&first, "the first peer");
    let two = peer(&mut net, "198.19.77.9/32");
    let second = start(&two);
    through(&second, "a peer added while the server runs");
    through(&first, "the first peer beside the second");

    drop((first, second));
    net.stop_server(Kind::Wireguard);
    net.start_server(Kind::Wireguard).unwrap();
    let (first, second) = (start(&one), start(&two));
    through(&first, "the first peer after a restart");
    through(&second, "the second peer after a restart");
    assert_eq!(net.leaks().unwrap(), LeakCount::default());
}

/// A container on Docker's default bridge reaches the fake internet through the node, seen there
/// as the node public IP, and the router counts what it sends as a leak: the path a host without a
/// tunnel would take. Uses the host image for its curl (`CCP_HOST_IMAGE` names a prebuilt one).
#[test]
fn a_container_on_a_docker_bridge_goes_out_as_the_node() {
    require_root();
    let image = docker::host_image();
    let net = FakeInternet::build("docker").unwrap_or_else(|e| panic!("{e:#}"));
    let (connectivity, ip_url, _) = net.probe_urls();
    let curl = |url: &str| {
        let out = std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "bridge",
                "--label",
                "io.cloud-cli-proxy.test=fakenet",
            ])
            .args(["--entrypoint", "curl", &image, "-sS", "--max-time", "5"])
            .args(["-w", "\n%{http_code}", url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {url} in a container: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(&connectivity).trim(), "204");
    let seen = curl(&ip_url);
    assert_eq!(
        seen.lines().next().unwrap_or_default(),
        net.node_public_ip().to_string(),
        "{seen}"
    );
    let count = leaks_reach(&net, |c| c.other >= 2);
    assert_eq!(
        count.udp53 + count.tcp53 + count.tcp853 + count.ipv6,
        0,
        "{count:?}"
    );
}

/// The bodies the fake internet hands out are what `POST /v1/admin/egress-ips` accepts, and a
/// wireguard egress IP shows the client key the fake server must be told about
/// ([`FakeInternet::add_wireguard_peer`] with `wg_client_public_key` and `wg_peer_address`).
/// Needs neither root nor the namespaces: only the rendering is under test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_bodies_are_accepted_by_the_api() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = fakenet::self_signed_certificate(dir.path(), TROJAN_SERVER_NAME).unwrap();
    for kind in Kind::ALL {
        let wg = (kind == Kind::Wireguard).then(|| {
            let (private_key, public_key) = fakenet::wg_keypair().unwrap();
            WgServer {
                private_key,
                public_key,
                preshared_key: fakenet::wg_keypair().unwrap().0,
                address: fakenet::WG_SERVER_ADDRESS.to_owned(),
                peer_address: fakenet::WG_PEER_ADDRESS.to_owned(),
                peers: Vec::new(),
            }
        });
        let mut server = Server::new(kind, "unused".to_owned(), wg);
        server.cert_pem = std::fs::read_to_string(&cert).unwrap();
        let body = server.egress_body(&format!("fakenet-{}", kind.name()), fakenet::PROBE_IP);
        let created = admin.create_egress(body).await;
        assert_eq!(created["ip_address"], kind.ip().to_string(), "{kind:?}");
        if kind == Kind::Wireguard {
            assert_eq!(created["wg_dns_server"], fakenet::PROBE_IP.to_string());
            let client_key = created["wg_client_public_key"].as_str().unwrap_or_default();
            assert_eq!(client_key.len(), 44, "{created:#}");
        } else {
            assert_eq!(created["dns_server"], fakenet::PROBE_IP.to_string());
            assert_eq!(created["proxy_config"]["type"], kind.name());
        }
    }
}
