//! Golden file, shape and `sing-box check` of the rendered proxy configs.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;

/// A runtime config around `outbound`, read the way the agent reads what the control plane sends.
fn proxy(outbound: Value) -> RuntimeConfig {
    let outbound = serde_json::from_value(outbound).expect("a valid outbound");
    RuntimeConfig {
        spec: wire::EgressSpec {
            egress_ip_id: "e1".into(),
            declared_ip: "198.18.6.1".into(),
            dns_server: "198.18.6.53".into(),
            tunnel: wire::Tunnel::Proxy { outbound },
        },
        endpoint_ip: Ipv4Addr::new(198, 18, 6, 1),
        netns_inode: None,
    }
}

/// One outbound per supported type, as the control plane would pass it (secrets are test values).
fn outbounds() -> Vec<Value> {
    vec![
        json!({"type": "socks", "server": "proxy.example.test", "server_port": 1080, "version": "5",
               "username": "u", "password": "socks-secret"}),
        json!({"type": "http", "server": "proxy.example.test", "server_port": 3128,
               "username": "u", "password": "http-secret"}),
        json!({"type": "shadowsocks", "server": "proxy.example.test", "server_port": 8388,
               "method": "2022-blake3-aes-128-gcm", "password": "AAECAwQFBgcICQoLDA0ODw=="}),
        json!({"type": "vmess", "server": "proxy.example.test", "server_port": 10086,
               "uuid": "bf000d23-0752-40b4-affe-68f7707a9661", "security": "auto", "alter_id": 0}),
        json!({"type": "vless", "server": "proxy.example.test", "server_port": 10087,
               "uuid": "bf000d23-0752-40b4-affe-68f7707a9662", "flow": ""}),
        json!({"type": "trojan", "server": "proxy.example.test", "server_port": 443,
               "password": "trojan-secret",
               "tls": {"enabled": true, "server_name": "proxy.example.test", "insecure": true}}),
    ]
}

#[test]
fn shadowsocks_config_matches_golden_file() {
    let rendered = to_json(&render(&proxy(outbounds().remove(2))).unwrap()).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sing-box-shadowsocks.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let expected = std::fs::read(&path).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rendered),
        String::from_utf8_lossy(&expected),
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn outbound_gets_our_tag_server_and_mark() {
    for outbound in outbounds() {
        let kind = outbound["type"].as_str().unwrap().to_owned();
        let value = serde_json::to_value(render(&proxy(outbound)).unwrap()).unwrap();
        let out = &value["outbounds"][0];
        assert_eq!(out["type"], kind.as_str());
        assert_eq!(out["tag"], "egress");
        assert_eq!(out["server"], "198.18.6.1", "{kind}");
        assert_eq!(out["routing_mark"], 204);
        assert_eq!(value["inbounds"][0]["interface_name"], "ccp-tun");
        assert_eq!(value["inbounds"][0]["auto_route"], false);
        assert_eq!(value["dns"]["servers"][0]["detour"], "egress");
        assert_eq!(value["route"]["final"], "egress");
    }
}

#[test]
fn unsupported_or_escaping_outbounds_are_refused() {
    for bad in [
        json!({"type": "direct", "server_port": 1}),
        json!({"server": "x", "server_port": 1}),
        json!({"type": "socks", "server": "x"}),
        json!({"type": "socks", "server": "x", "server_port": 1, "detour": "direct"}),
        json!({"type": "socks", "server": "x", "server_port": 1, "bind_interface": "eth0"}),
        json!({"type": "socks", "server": "x", "server_port": 1, "routing_mark": 0}),
        json!({"type": "socks", "server": "x", "server_port": 1, "netns": "/proc/1/ns/net"}),
    ] {
        let tunnel = json!({"type": "proxy", "outbound": bad});
        assert!(serde_json::from_value::<wire::Tunnel>(tunnel).is_err(), "{bad}");
    }
}

#[test]
fn a_wireguard_spec_is_not_rendered_as_sing_box() {
    let mut cfg = proxy(outbounds().remove(0));
    cfg.spec.tunnel = wire::Tunnel::Wireguard(wire::WireguardSpec {
        endpoint: "198.18.6.1:51820".into(),
        peer_public_key: "k".into(),
        preshared_key: None,
        private_key: "k".into(),
        allowed_ips: vec!["0.0.0.0/0".into()],
        address: "10.0.0.2/32".into(),
    });
    assert!(render(&cfg).is_err());
}

#[test]
fn debug_of_rendered_config_hides_credentials() {
    for outbound in outbounds() {
        let shown = format!("{:?}", render(&proxy(outbound)).unwrap());
        assert!(!shown.contains("secret") && !shown.contains("AAECAw"), "{shown}");
    }
}

/// The sing-box binary the checks run: `CCP_SING_BOX` or `sing-box` on PATH. `None` (skip) when it
/// is missing, unless `CCP_REQUIRE_SING_BOX=1`.
fn sing_box() -> Option<PathBuf> {
    let bin = PathBuf::from(std::env::var_os("CCP_SING_BOX").unwrap_or_else(|| "sing-box".into()));
    let found = Command::new(&bin)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(bin);
    }
    assert!(
        std::env::var("CCP_REQUIRE_SING_BOX").as_deref() != Ok("1"),
        "CCP_REQUIRE_SING_BOX=1 but {} cannot be run",
        bin.display()
    );
    eprintln!("skipping sing-box check: {} not found", bin.display());
    None
}

#[test]
fn rendered_configs_pass_sing_box_check() {
    let Some(bin) = sing_box() else { return };
    let dir = tempfile::tempdir().unwrap();
    for outbound in outbounds() {
        let kind = outbound["type"].as_str().unwrap().to_owned();
        let file = dir.path().join(format!("{kind}.json"));
        std::fs::write(&file, to_json(&render(&proxy(outbound)).unwrap()).unwrap()).unwrap();
        if let Err(e) = check(&bin, &file) {
            panic!("sing-box check refused the {kind} config: {e}");
        }
    }
}

#[test]
fn trojan_with_a_pinned_self_signed_certificate_passes_check() {
    let Some(bin) = sing_box() else { return };
    let out = Command::new(&bin)
        .args(["generate", "tls-keypair", "proxy.example.test"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let cert_start = text.find("-----BEGIN CERTIFICATE-----").unwrap();
    let cert_end = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let cert = &text[cert_start..cert_end];
    let outbound = json!({"type": "trojan", "server": "proxy.example.test", "server_port": 443,
        "password": "trojan-secret",
        "tls": {"enabled": true, "server_name": "proxy.example.test", "certificate": cert}});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trojan-pinned.json");
    std::fs::write(&file, to_json(&render(&proxy(outbound)).unwrap()).unwrap()).unwrap();
    check(&bin, &file).unwrap();
}

#[test]
fn the_firewall_knows_where_the_kernel_stack_listens() {
    // sing-box listens on the tun's own address and rewrites connections to come from the next one,
    // which must still be in the tun's network (not its broadcast address).
    let (addr, prefix) = TUN_ADDRESS.split_once('/').unwrap();
    let server: Ipv4Addr = addr.parse().unwrap();
    let prefix: u32 = prefix.parse().unwrap();
    assert_eq!(KERNEL_STACK.server, server);
    assert_eq!(u32::from(KERNEL_STACK.client), u32::from(server) + 1);
    let host_bits = (1u32 << (32 - prefix)) - 1;
    assert_ne!(
        u32::from(KERNEL_STACK.client) & host_bits,
        host_bits,
        "the broadcast address"
    );
    assert!(
        matches!(TUN_STACK, "system" | "mixed"),
        "KERNEL_STACK is only needed for them"
    );
}
