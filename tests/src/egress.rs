//! Egress through the API against the fake internet: a control plane with its embedded agent whose
//! probe targets, egress DNS default and node public address are the fake internet's; egress IPs
//! made from its servers; tests, bindings, host restarts and what a host sees from inside.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, UdpSocket};

use crate::docker;
use crate::fakenet::{FakeInternet, Kind};
use crate::fixtures::{id, random_alnum};
use crate::node::{AgentMode, Node};

/// The tunnel address bound hosts get at the fake WireGuard server (egress tests use the egress
/// IP's own key pair and address).
pub const HOST_PEER_ADDRESS: &str = "198.19.77.3/32";

/// A host restart (stop, then start) may take this long.
pub const RESTART_LIMIT: Duration = Duration::from_secs(120);
/// An egress test answers within 30 s; the HTTP call gets a little more.
pub const TEST_LIMIT: Duration = Duration::from_secs(40);

/// A node whose egress tests and health checks go to the fake internet.
#[derive(Debug)]
pub struct Egress {
    pub node: Node,
}

impl Egress {
    pub async fn start(net: &FakeInternet) -> Self {
        Self::start_with(net, &[]).await
    }

    /// Like [`Egress::start`], with more environment for the control plane and its agent.
    pub async fn start_with(net: &FakeInternet, extra: &[(&str, &str)]) -> Self {
        Self::start_mode(net, AgentMode::Embedded, extra).await
    }

    /// Like [`Egress::start_with`], with the agent run as `mode` says.
    pub async fn start_mode(net: &FakeInternet, mode: AgentMode, extra: &[(&str, &str)]) -> Self {
        let (connectivity, ip, dns) = net.probe_urls();
        let probe = net.probe_ip().to_string();
        let public = net.node_public_ip().to_string();
        let mut env = vec![
            ("EGRESS_PROBE_CONNECTIVITY_URL", connectivity.as_str()),
            ("EGRESS_PROBE_IP_URL", ip.as_str()),
            ("EGRESS_PROBE_DNS_NAME", dns.as_str()),
            ("EGRESS_DNS_SERVER", probe.as_str()),
            // Known, so the agent never asks the probe from the node (that would be a leak).
            ("NODE_PUBLIC_IPS", public.as_str()),
        ];
        env.extend_from_slice(extra);
        let node = Node::start(mode, &env).await;
        Self { node }
    }

    /// Creates the egress IP of `kind`'s server; a WireGuard one also becomes a peer of its server.
    pub async fn create(&self, net: &mut FakeInternet, kind: Kind, label: &str) -> String {
        let body = net.egress_body(kind, label);
        self.create_body(net, kind, body).await
    }

    pub async fn create_body(&self, net: &mut FakeInternet, kind: Kind, body: Value) -> String {
        let r = self.node.admin.post("/v1/admin/egress-ips", body).await;
        let created = r.expect(201).clone();
        if kind == Kind::Wireguard {
            let key = created["wg_client_public_key"]
                .as_str()
                .expect("wg_client_public_key");
            let address = created["wg_peer_address"].as_str().expect("wg_peer_address");
            net.add_wireguard_peer(key, address).expect("WireGuard peer");
        }
        id(&created)
    }

    pub async fn delete(&self, ip_id: &str) {
        self.node
            .admin
            .delete(&format!("/v1/admin/egress-ips/{ip_id}"))
            .await
            .expect(204);
    }

    /// `POST /v1/admin/egress-ips/{id}/test`, expecting an answer (200) within the bound.
    pub async fn test(&self, ip_id: &str) -> Value {
        let path = format!("/v1/admin/egress-ips/{ip_id}/test");
        let call = self.node.admin.post(&path, None);
        let r = tokio::time::timeout(TEST_LIMIT, call)
            .await
            .unwrap_or_else(|_| panic!("the egress test took longer than {TEST_LIMIT:?}"));
        if r.status != 200 {
            panic!(
                "egress test answered {}: {}\n{}",
                r.status,
                r.text,
                self.node.diagnostics()
            );
        }
        r.body
    }

    /// Binds the host. To a WireGuard egress IP the host brings its own key pair: its public key
    /// becomes a peer of the fake server, at its own tunnel address.
    pub async fn bind(&self, net: &mut FakeInternet, kind: Kind, host_id: &str, ip_id: &str) -> Value {
        self.bind_at(net, kind, host_id, ip_id, HOST_PEER_ADDRESS).await
    }

    /// [`Egress::bind`] with the host's WireGuard tunnel address `peer_address` (a /32 in
    /// 198.19.77.0/24 other than .1 and .2), so that several hosts share one WireGuard server.
    pub async fn bind_at(
        &self,
        net: &mut FakeInternet,
        kind: Kind,
        host_id: &str,
        ip_id: &str,
        peer_address: &str,
    ) -> Value {
        let mut body = json!({ "host_id": host_id, "egress_ip_id": ip_id });
        if kind == Kind::Wireguard {
            body["wg_peer_address"] = peer_address.into();
        }
        let r = self.node.admin.post("/v1/admin/bindings", body).await;
        let binding = r.expect(201).clone();
        if kind == Kind::Wireguard {
            let key = binding["wg_public_key"]
                .as_str()
                .expect("the host's wg_public_key");
            assert_eq!(binding["wg_peer_address"], peer_address);
            net.add_wireguard_peer(key, peer_address)
                .expect("WireGuard peer for the host");
        } else {
            assert_eq!(binding["wg_public_key"], Value::Null, "{binding}");
        }
        binding
    }

    pub async fn unbind(&self, host_id: &str) {
        let list = self
            .node
            .admin
            .get(&format!("/v1/admin/bindings?host_id={host_id}"))
            .await;
        for b in list.data().clone() {
            self.node
                .admin
                .delete(&format!("/v1/admin/bindings/{}", id(&b)))
                .await
                .expect(204);
        }
    }

    /// Stop, then start: how a binding change reaches a running host.
    pub async fn restart(&self, host_id: &str) {
        let stop = self.node.host_action(host_id, "stop").await;
        self.node.task_succeeded(&stop, RESTART_LIMIT, "stop").await;
        let start = self.node.host_action(host_id, "start").await;
        self.node.task_succeeded(&start, RESTART_LIMIT, "start").await;
    }

    /// Waits until the host's egress health says `healthy` with exit IP `exit_ip` and the tunnel up;
    /// returns it.
    pub async fn health(&self, host_id: &str, healthy: bool, exit_ip: Ipv4Addr) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let host = self.node.host(host_id).await;
            let health = host["egress_health"].clone();
            // A check that ran while the tunnel was still coming up may already pass; the one
            // after its state settles says `up`.
            if health["healthy"] == healthy
                && health["exit_ip"] == exit_ip.to_string()
                && health["tunnel"] == "up"
            {
                return health;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "egress health never became healthy={healthy} via {exit_ip} with the tunnel up: {health:#}\n{}",
                self.node.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The check called `name` of a test result.
pub fn check<'a>(test: &'a Value, name: &str) -> &'a Value {
    test["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no `{name}` check in {test:#}"))
}

/// Asserts each named check passed or failed as given, and that a failure says why.
pub fn assert_checks(test: &Value, expected: &[(&str, bool)]) {
    for (name, passed) in expected {
        let c = check(test, name);
        assert_eq!(c["passed"], *passed, "check {name}: {test:#}");
        assert_eq!(c["status"], if *passed { "pass" } else { "fail" }, "{test:#}");
        if !passed {
            assert!(
                c["error"].as_str().is_some_and(|e| !e.is_empty()),
                "a failed {name} says why: {test:#}"
            );
        }
    }
    let all = expected.iter().all(|(_, p)| *p) && expected.len() == 3;
    if all {
        assert_eq!(test["passed"], true, "{test:#}");
    } else {
        assert_eq!(test["passed"], false, "{test:#}");
    }
}

/// `curl URL` inside the host container (as its user would): the body, trimmed.
pub async fn curl_in_host(container: &str, url: &str) -> String {
    let out = docker::exec_root(container, &["curl", "-sS", "--max-time", "10", url]).await;
    assert!(out.success(), "curl {url} in {container}: {}", out.both());
    out.stdout.trim().to_owned()
}

/// Resolves a fresh name under the probe's whoami name inside the host with `dig` (through its
/// resolv.conf, or as `options` say: `@server`, `+tcp`): the address of the resolver that asked the
/// probe.
pub async fn whoami_in_host(container: &str, name: &str, options: &[&str]) -> String {
    let fresh = format!("t{}.{name}", random_alnum(10).to_lowercase());
    let mut argv = vec!["dig", "+short", "+time=5", "+tries=2"];
    argv.extend_from_slice(options);
    argv.extend([fresh.as_str(), "A"]);
    let out = docker::exec_root(container, &argv).await;
    assert!(out.success(), "dig {fresh} in {container}: {}", out.both());
    out.stdout.lines().last().unwrap_or("").trim().to_owned()
}

/// A DNS forwarder on the node, at `ip:53` (UDP and TCP), that asks `upstream:53` over UDP from
/// the node itself: a resolver whose queries leave from the node's address.
#[derive(Debug)]
pub struct DnsForwarder {
    ip: Ipv4Addr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DnsForwarder {
    pub async fn start(ip: Ipv4Addr, upstream: Ipv4Addr) -> Self {
        let upstream = SocketAddr::from((upstream, 53));
        let udp = UdpSocket::bind((ip, 53)).await.expect("forwarder UDP socket");
        let tcp = TcpListener::bind((ip, 53)).await.expect("forwarder TCP socket");
        let udp_task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    return;
                };
                if let Some(answer) = ask(upstream, &buf[..n]).await {
                    let _ = udp.send_to(&answer, from).await;
                }
            }
        });
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = tcp.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut len = [0u8; 2];
                    while stream.read_exact(&mut len).await.is_ok() {
                        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if stream.read_exact(&mut query).await.is_err() {
                            return;
                        }
                        let Some(answer) = ask(upstream, &query).await else {
                            return;
                        };
                        let mut framed = u16::try_from(answer.len()).unwrap_or(0).to_be_bytes().to_vec();
                        framed.extend_from_slice(&answer);
                        if stream.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            ip,
            tasks: vec![udp_task, tcp_task],
        }
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

impl Drop for DnsForwarder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn ask(upstream: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("0.0.0.0:0").await.ok()?;
    socket.send_to(query, upstream).await.ok()?;
    let mut buf = vec![0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}
