//! Egress end to end, against the fake internet: for WireGuard and each of the six proxy types, the
//! egress IP is created through the API, its test passes all three checks with the observed IP
//! equal to the declared one, and a host bound to it sees the probe report the egress IP for HTTP
//! and DNS from inside; the host's egress health says so too. Then the failures: a wrong declared IP
//! fails the exit-IP check, a stopped server fails connectivity, and a resolver that asks from the
//! node fails the DNS-leak check. The tests' namespaces: tests of different egresses at once each
//! come out at their own server; a warm namespace serves the next test, is made anew when destroyed
//! underneath, and is neither left behind by an agent that crashed (its successor sweeps it) nor
//! by one that stopped. No packet leaves the node for anything but a tunnel endpoint, except where
//! a test asks the node itself.
//!
//! Needs root, Docker with the host image, sing-box, nft, iproute2, and the workspace binaries
//! (`cargo build --workspace --bins`: the control plane, the tunnel runtime and the probe).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use cloud_cli_proxy_tests::docker;
use cloud_cli_proxy_tests::egress::{self, Egress};
use cloud_cli_proxy_tests::fakenet::{self, FakeInternet, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tunnel_kind_tests_green_and_carries_a_bound_host() {
    let mut net = FakeInternet::build("egress").expect("fake internet");
    let eg = Egress::start(&net).await;
    let host = eg.node.running_host("alice").await;
    let container = eg.node.host_container(&host.short_id);

    for kind in Kind::ALL {
        let ip = eg.create(&mut net, kind, &format!("{}-ok", kind.name())).await;
        let declared = net.server(kind).ip;
        net.allow_endpoint(declared).unwrap();
        net.reset_leaks().unwrap();

        let test = eg.test(&ip).await;
        egress::assert_checks(
            &test,
            &[("connectivity", true), ("exit_ip", true), ("dns_leak", true)],
        );
        assert_eq!(test["observed_ip"], declared.to_string(), "{kind:?}: {test:#}");
        assert_eq!(test["declared_ip"], declared.to_string());
        eprintln!(
            "{kind:?}: egress test passed in {} ms (checks: {})",
            test["duration_ms"],
            test["checks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| format!("{} {} ms", c["name"].as_str().unwrap_or("?"), c["latency_ms"]))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let stored = eg.node.admin.get(&format!("/v1/admin/egress-ips/{ip}")).await;
        assert_eq!(stored.expect(200)["observed_ip"], declared.to_string());
        assert_eq!(
            stored.body["ip_address"],
            declared.to_string(),
            "declared IP unchanged"
        );

        // Bound, then restarted: the documented way a binding takes effect.
        eg.bind(&mut net, kind, &host.id, &ip).await;
        eg.restart(&host.id).await;
        let seen = egress::curl_in_host(&container, &net.probe_urls().1).await;
        assert_eq!(seen, declared.to_string(), "{kind:?}: HTTP from inside the host");
        let resolver = egress::whoami_in_host(&container, &net.probe_urls().2, &[]).await;
        assert_eq!(
            resolver,
            declared.to_string(),
            "{kind:?}: DNS from inside the host"
        );
        let health = eg.health(&host.id, true, declared).await;
        assert_eq!(health["tunnel"], "up", "{kind:?}: {health:#}");

        let leaks = net.leaks().unwrap();
        assert_eq!(leaks.total(), 0, "{kind:?}: packets left the node: {leaks:?}");
        // Unbound and restarted before its endpoint stops being allowed: the old tunnel's last
        // packets (its connections closing) go to its own server.
        eg.unbind(&host.id).await;
        eg.restart(&host.id).await;
        net.disallow_endpoint(declared).unwrap();
        if kind == Kind::Wireguard {
            // Its peer address is the one every WireGuard body offers: free it for the next test.
            eg.delete(&ip).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ip_broken_server_and_leaking_dns_each_fail_their_check() {
    let mut net = FakeInternet::build("egress-fail").expect("fake internet");
    let eg = Egress::start(&net).await;

    // A declared IP that is not where the tunnel comes out.
    let mut body = net.egress_body(Kind::Shadowsocks, "ss-wrong-ip");
    body["ip_address"] = "198.18.1.99".into();
    let wrong = eg.create_body(&mut net, Kind::Shadowsocks, body).await;
    let test = eg.test(&wrong).await;
    egress::assert_checks(
        &test,
        &[("connectivity", true), ("exit_ip", false), ("dns_leak", true)],
    );
    assert_eq!(test["observed_ip"], net.server(Kind::Shadowsocks).ip.to_string());
    let stored = eg.node.admin.get(&format!("/v1/admin/egress-ips/{wrong}")).await;
    assert_eq!(
        stored.expect(200)["ip_address"],
        "198.18.1.99",
        "never auto-corrected"
    );

    // A server that is down: no connectivity (and no exit IP), within the bound.
    let vmess = eg.create(&mut net, Kind::Vmess, "vmess-down").await;
    net.stop_server(Kind::Vmess);
    let test = eg.test(&vmess).await;
    egress::assert_checks(&test, &[("connectivity", false), ("exit_ip", false)]);
    assert!(test["duration_ms"].as_u64().unwrap() <= 30_000, "{test:#}");
    net.start_server(Kind::Vmess).unwrap();

    // A resolver on the node: queries go through the tunnel to it, and it asks the probe from the
    // node's own address. The check sees the node and fails.
    let forwarder = egress::DnsForwarder::start(fakenet::NODE_SIDE, net.probe_ip()).await;
    let mut body = net.egress_body(Kind::Socks, "socks-node-dns");
    body["dns_server"] = forwarder.ip().to_string().into();
    let leaky = eg.create_body(&mut net, Kind::Socks, body).await;
    let test = eg.test(&leaky).await;
    egress::assert_checks(
        &test,
        &[("connectivity", true), ("exit_ip", true), ("dns_leak", false)],
    );
    let dns = egress::check(&test, "dns_leak");
    assert_eq!(dns["observed"], net.node_public_ip().to_string(), "{test:#}");

    // A host bound to it: its egress health finds the same leak, and says so in an event.
    let host = eg.node.running_host("bob").await;
    eg.bind(&mut net, Kind::Socks, &host.id, &leaky).await;
    eg.restart(&host.id).await;
    let socks = net.server(Kind::Socks).ip;
    let health = eg.health(&host.id, false, socks).await;
    let failed: Vec<&str> = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(failed, ["dns_leak"], "{health:#}");
    let events = eg
        .node
        .admin
        .get(&format!(
            "/v1/admin/events?type=host.egress_health_changed&host_id={}",
            host.id
        ))
        .await;
    assert!(
        events.expect(200).to_string().contains("dns_leak"),
        "an event names the failed check: {}",
        events.text
    );
    drop(forwarder);
}

/// The test passed all three checks and came out at `kind`'s server.
fn passes(net: &FakeInternet, test: &serde_json::Value, kind: Kind) {
    egress::assert_checks(
        test,
        &[("connectivity", true), ("exit_ip", true), ("dns_leak", true)],
    );
    assert_eq!(
        test["observed_ip"],
        net.server(kind).ip.to_string(),
        "{kind:?}: {test:#}"
    );
}

/// The node's egress test namespaces (their owner containers, in any state).
async fn test_namespaces(node: &str) -> Vec<String> {
    docker::containers(&[
        format!("{}={node}", docker::NODE),
        format!("{}=egress-test", docker::ROLE),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_namespaces_are_kept_warm_apart_and_never_orphaned() {
    let mut net = FakeInternet::build("egress-warm").expect("fake internet");
    let mut eg = Egress::start(&net).await;
    let kinds = [Kind::Socks, Kind::Shadowsocks, Kind::Wireguard];
    let mut ips = Vec::new();
    for kind in kinds {
        ips.push(eg.create(&mut net, kind, &format!("{}-warm", kind.name())).await);
        net.allow_endpoint(net.server(kind).ip).unwrap();
    }
    net.reset_leaks().unwrap();

    // Three egresses tested at once: each comes out at its own server, so none saw another's tunnel.
    for _ in 0..2 {
        let (a, b, c) = tokio::join!(eg.test(&ips[0]), eg.test(&ips[1]), eg.test(&ips[2]));
        for (test, kind) in [(a, kinds[0]), (b, kinds[1]), (c, kinds[2])] {
            passes(&net, &test, kind);
        }
    }
    // One after another, kinds changing: each test finds the namespace as the last one left it.
    for (ip, kind) in ips.iter().zip(kinds).chain(ips.iter().zip(kinds).rev()) {
        passes(&net, &eg.test(ip).await, kind);
    }
    let warm = test_namespaces(&eg.node.name).await;
    assert!(!warm.is_empty(), "a namespace is kept warm after a test");
    let again = eg.test(&ips[1]).await;
    passes(&net, &again, kinds[1]);
    let reused = test_namespaces(&eg.node.name).await;
    assert!(
        reused.iter().any(|n| warm.contains(n)),
        "the next test ran in a warm namespace: before {warm:?}, after {reused:?}"
    );

    // Destroyed underneath: the next test makes a new namespace and passes.
    for name in &reused {
        // The agent may be removing one itself (more than it keeps warm): either way it goes.
        docker::docker(&["rm", "-f", name]).await;
    }
    passes(&net, &eg.test(&ips[0]).await, kinds[0]);
    let remade = test_namespaces(&eg.node.name).await;
    assert!(
        !remade.is_empty() && remade.iter().all(|n| !reused.contains(n)),
        "a new namespace: before {reused:?}, after {remade:?}"
    );
    // Its server cut off, a WireGuard egress fails without a handshake, and a proxy's server
    // cannot be connected to; the namespace is fine for the next test.
    net.set_reachable(Kind::Wireguard, false).unwrap();
    net.set_reachable(Kind::Socks, false).unwrap();
    let (wg, socks) = tokio::join!(eg.test(&ips[2]), eg.test(&ips[0]));
    egress::assert_checks(&wg, &[("connectivity", false), ("exit_ip", false)]);
    assert!(
        egress::check(&wg, "connectivity")["error"]
            .as_str()
            .unwrap()
            .contains("handshake"),
        "{wg:#}"
    );
    egress::assert_checks(&socks, &[("connectivity", false), ("exit_ip", false)]);
    assert!(
        egress::check(&socks, "connectivity")["error"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{socks:#}"
    );
    net.set_reachable(Kind::Wireguard, true).unwrap();
    net.set_reachable(Kind::Socks, true).unwrap();
    passes(&net, &eg.test(&ips[2]).await, kinds[2]);
    let leaks = net.leaks().unwrap();
    assert_eq!(leaks.total(), 0, "packets left the node: {leaks:?}");

    // The agent crashes (with the control plane it runs in): its warm namespace is left behind,
    // idle and closed, until the agent that comes back sweeps it away.
    let left = test_namespaces(&eg.node.name).await;
    assert!(!left.is_empty());
    eg.node.cp.kill().await;
    let port = eg.node.cp.addr().port();
    let opts = eg
        .node
        .cp
        .options()
        .clone()
        .env("CONTROL_PLANE_ADDR", format!("127.0.0.1:{port}"));
    eg.node.cp.restart(opts).await;
    eg.node.admin = eg.node.cp.admin().await;
    eg.node.wait_agent_connected().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let now = test_namespaces(&eg.node.name).await;
        if now.iter().all(|n| !left.contains(n)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the crashed agent's namespaces are still there: {now:?}\n{}",
            eg.node.diagnostics()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    passes(&net, &eg.test(&ips[1]).await, kinds[1]);
    // A graceful stop takes the warm namespaces with it.
    assert!(!test_namespaces(&eg.node.name).await.is_empty());
    let status = eg.node.cp.stop().await;
    assert!(status.success(), "{status}");
    let after = test_namespaces(&eg.node.name).await;
    assert!(after.is_empty(), "left after a graceful stop: {after:?}");
}
