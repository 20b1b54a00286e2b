//! Egress end to end, against the fake internet: for WireGuard and each of the six proxy types, the
//! egress IP is created through the API, its test passes all three checks with the observed IP
//! equal to the declared one, and a host bound to it sees the probe report the egress IP for HTTP
//! and DNS from inside; the host's egress health says so too. Then the failures: a wrong declared IP
//! fails the exit-IP check, a stopped server fails connectivity, and a resolver that asks from the
//! node fails the DNS-leak check. No packet leaves the node for anything but a tunnel endpoint,
//! except where a test asks the node itself.
//!
//! Needs root, Docker with the host image, sing-box, nft, iproute2, and the workspace binaries
//! (`cargo build --workspace --bins`: the control plane, the tunnel runtime and the probe).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

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
