//! Values that parse but are not valid: accounts, SSH keys, WireGuard and proxy egress, hosts, bindings.

use std::process::Command;

use base64::Engine as _;
use cloud_cli_proxy_tests::fixtures::{self, unique};
use cloud_cli_proxy_tests::{Body, Options};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Ctx, Want, Who};

/// A WireGuard egress body with `field` set to `value` (`Null` removes it).
fn wg_with(field: &str, value: Value) -> Value {
    let mut body = fixtures::wireguard_egress(&unique("wg"));
    if value.is_null() {
        body.as_object_mut().unwrap().remove(field);
    } else {
        body[field] = value;
    }
    body
}

fn proxy(config: Value) -> Value {
    json!({"label": unique("px"), "ip_address": "192.0.2.60", "tunnel_type": "proxy", "provider": "manual", "proxy_config": config})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_accounts() {
    let c = Ctx::new(Options::new()).await;
    let users = "/v1/admin/users";
    let user = |name: &str, pw: &str| json!({"username": name, "password": pw});
    for name in [
        "ab",
        &"a".repeat(51),
        "-abc",
        ".abc",
        "has space",
        "bad/slash",
        "semi;colon",
        "",
    ] {
        c.invalid(
            Who::Admin,
            Method::POST,
            users,
            user(name, "long-enough-pw"),
            "username",
        )
        .await;
    }
    for pw in ["short77", &"p".repeat(257), ""] {
        c.invalid(Who::Admin, Method::POST, users, user("pw-user", pw), "password")
            .await;
    }
    for exp in [
        json!("tomorrow"),
        json!("2026-13-01T00:00:00Z"),
        json!("2026-12-31"),
        json!(""),
    ] {
        let body = json!({"username": "exp-user", "password": "long-enough-pw", "expires_at": exp});
        c.invalid(Who::Admin, Method::POST, users, body, "expires_at")
            .await;
    }
    // Usernames are unique regardless of case.
    c.refused(
        Who::Admin,
        Method::POST,
        users,
        Body::Json(user("TENANT", "long-enough-pw")),
        Want::new(409, &["username_taken"], None),
    )
    .await;
    // The limits themselves are accepted.
    for (name, pw) in [
        ("abc".to_owned(), "8chars!!".to_owned()),
        ("a".repeat(50), "p".repeat(256)),
    ] {
        c.admin.post(users, user(&name, &pw)).await.expect(201);
    }

    let path = format!("/v1/admin/users/{}", c.uid);
    for status in ["frozen", "Disabled", ""] {
        c.invalid(
            Who::Admin,
            Method::PATCH,
            &path,
            json!({"status": status}),
            "status",
        )
        .await;
    }
    let expiry = format!("{path}/expiry");
    c.invalid(Who::Admin, Method::PUT, &expiry, json!({}), "expires_at")
        .await;
    c.invalid(
        Who::Admin,
        Method::PUT,
        &expiry,
        json!({"expires_at": "soon"}),
        "expires_at",
    )
    .await;

    let change = "/v1/user/change-password";
    for new in ["short", &"x".repeat(257)] {
        let body = json!({"old_password": "tenant-password", "new_password": new});
        c.invalid(Who::Tenant, Method::POST, change, body, "new_password")
            .await;
    }
    for days in [json!(0), json!(366), json!(-1), json!(1.5)] {
        let body = json!({"name": "n", "expires_in_days": days});
        c.invalid(
            Who::Tenant,
            Method::POST,
            "/v1/auth/api-tokens",
            body,
            "expires_in_days",
        )
        .await;
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ssh_keys() {
    let c = Ctx::new(Options::new()).await;
    let dir = c.dir.path();
    let good = fixtures::ssh_keygen(dir, "good").public_line;
    let material = good.split_whitespace().nth(1).unwrap().to_owned();
    let rsa_path = dir.join("rsa1024");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "1024", "-N", "", "-C", "weak", "-f"])
        .arg(&rsa_path)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen rsa 1024: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let weak_rsa = std::fs::read_to_string(rsa_path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned();
    let private = std::fs::read_to_string(dir.join("good")).unwrap();

    let bad_keys = [
        "not a key".to_owned(),
        String::new(),
        "ssh-ed25519 AAAAnot-base64!!".to_owned(),
        format!("ssh-rsa {material} type-mismatch"),
        format!("ssh-ed25519 {}", &material[..material.len() - 8]),
        weak_rsa,
        private,
        format!("{good}\n{good}"),
    ];
    let admin_path = format!("/v1/admin/users/{}/ssh-keys", c.uid);
    for key in &bad_keys {
        c.invalid(
            Who::Admin,
            Method::POST,
            &admin_path,
            json!({"public_key": key}),
            "public_key",
        )
        .await;
        c.invalid(
            Who::Tenant,
            Method::POST,
            "/v1/user/ssh-keys",
            json!({"public_key": key}),
            "public_key",
        )
        .await;
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_wireguard_egress() {
    let c = Ctx::new(Options::new()).await;
    let path = "/v1/admin/egress-ips";
    let short_key = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let cases: Vec<(&str, Value)> = vec![
        ("wg_public_key", json!("PeerPublicKeyBase64")), // the seed's placeholder
        ("wg_public_key", json!(short_key)),
        ("wg_public_key", Value::Null),
        ("wg_preshared_key", json!("PresharedKeyBase64")),
        ("wg_endpoint", json!("vpn-provider.example.com")),
        ("wg_endpoint", json!("vpn-provider.example.com:99999")),
        ("wg_endpoint", json!("")),
        ("wg_endpoint", Value::Null),
        ("wg_allowed_ips", json!("0.0.0.0/33")),
        ("wg_allowed_ips", json!("everything")),
        ("wg_dns_server", json!("dns.example.com")),
        ("wg_peer_address", json!("10.0.0.300/32")),
        ("ip_address", json!("not-an-ip")),
        ("ip_address", json!("999.1.1.1")),
        ("tunnel_type", json!("ipsec")),
        ("label", json!("")),
        ("label", json!("l".repeat(65))),
        ("dns_server", json!("resolver")),
    ];
    for (field, value) in cases {
        c.invalid(Who::Admin, Method::POST, path, wg_with(field, value), field)
            .await;
    }
    let mut dup = fixtures::seed_wireguard();
    dup["label"] = json!("hk-wg-01");
    c.refused(
        Who::Admin,
        Method::POST,
        path,
        Body::Json(dup),
        Want::new(409, &["label_taken"], None),
    )
    .await;

    let one = format!("{path}/{}", c.wg_id);
    for (field, value) in [
        ("wg_public_key", json!("NewKey")), // the seed's update placeholder
        ("wg_endpoint", json!("no-port")),
        ("label", json!("")),
        ("tunnel_type", json!("ipsec")),
        ("wg_peer_address", json!("nonsense")),
    ] {
        c.invalid(Who::Admin, Method::PUT, &one, json!({ field: value }), field)
            .await;
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_proxy_configs() {
    let c = Ctx::new(Options::new()).await;
    let path = "/v1/admin/egress-ips";
    let uuid = "b831381d-6324-4d53-ad4f-8cda48b30811";
    let cases = [
        // socks
        json!({"type": "socks", "server": "192.0.2.60", "server_port": 70000}),
        json!({"type": "socks", "server": "192.0.2.60", "server_port": 0}),
        json!({"type": "socks", "server": "192.0.2.60", "server_port": 1080, "foo": 1}),
        json!({"type": "socks", "server": "192.0.2.60", "server_port": 1080, "version": "6"}),
        // http
        json!({"type": "http", "server": "192.0.2.60", "server_port": "8080"}),
        json!({"type": "http", "server_port": 8080}),
        json!({"type": "http", "server": "192.0.2.60", "server_port": 8080, "foo": "bar"}),
        // shadowsocks
        json!({"type": "shadowsocks", "server": "192.0.2.60", "server_port": 8388, "method": "rot13", "password": "p"}),
        json!({"type": "shadowsocks", "server": "192.0.2.60", "server_port": 8388, "method": "aes-256-gcm"}),
        json!({"type": "shadowsocks", "server": "192.0.2.60", "server_port": -1, "method": "aes-256-gcm", "password": "p"}),
        // vmess
        json!({"type": "vmess", "server": "192.0.2.60", "server_port": 443, "uuid": "your-uuid"}),
        json!({"type": "vmess", "server": "192.0.2.60", "server_port": 443, "uuid": uuid, "security": "bogus"}),
        json!({"type": "vmess", "server": "192.0.2.60", "server_port": 443, "uuid": uuid, "alter_id": "zero"}),
        // vless
        json!({"type": "vless", "server": "192.0.2.60", "server_port": 443, "uuid": "not-a-uuid"}),
        json!({"type": "vless", "server": "192.0.2.60", "server_port": 443, "uuid": uuid, "flow": "xtls-rprx-bogus"}),
        json!({"type": "vless", "server": "192.0.2.60", "server_port": 443, "uuid": uuid, "bar": true}),
        // trojan
        json!({"type": "trojan", "server": "192.0.2.60", "server_port": 443}),
        json!({"type": "trojan", "server": "192.0.2.60", "server_port": 443, "password": "p", "tls": "yes"}),
        json!({"type": "trojan", "server": "", "server_port": 443, "password": "p"}),
        // no such type; no type
        json!({"type": "ftp", "server": "192.0.2.60", "server_port": 21}),
        json!({"server": "192.0.2.60", "server_port": 1080}),
        // not an outbound at all
        json!("socks5://user:pass@192.0.2.60:1080"),
    ];
    for config in cases {
        c.invalid(Who::Admin, Method::POST, path, proxy(config), "proxy_config.")
            .await;
    }
    // A proxy egress IP without its configuration.
    let mut body = proxy(json!({}));
    body.as_object_mut().unwrap().remove("proxy_config");
    c.invalid(Who::Admin, Method::POST, path, body, "proxy_config")
        .await;

    // Updates are validated the same way, merged or replaced.
    let one = format!("{path}/{}", c.socks_id);
    for config in [
        json!({"server_port": 0}),
        json!({"bogus": 1}),
        json!({"type": "vmess", "server": "192.0.2.61", "server_port": 443}),
    ] {
        c.invalid(
            Who::Admin,
            Method::PUT,
            &one,
            json!({"proxy_config": config}),
            "proxy_config.",
        )
        .await;
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_hosts_and_bindings() {
    let c = Ctx::new(Options::new()).await;
    let hosts = "/v1/admin/hosts";
    let ids = &["invalid_id", "validation_failed"];
    let r = Body::Json(json!({"user_id": "not-a-uuid"}));
    c.refused(
        Who::Admin,
        Method::POST,
        hosts,
        r,
        Want::new(400, ids, Some("user_id")),
    )
    .await;
    let nobody = uuid::Uuid::new_v4().to_string();
    c.refused(
        Who::Admin,
        Method::POST,
        hosts,
        Body::Json(json!({"user_id": nobody})),
        Want::new(404, &["not_found"], None),
    )
    .await;
    for (field, value) in [
        ("memory_mb", json!(-1)),
        ("cpu_millis", json!(-5)),
        ("pids_limit", json!("many")),
    ] {
        let mut body = json!({"user_id": c.uid});
        body[field] = value;
        c.invalid(Who::Admin, Method::POST, hosts, body, field).await;
    }

    let bindings = "/v1/admin/bindings";
    let body = Body::Json(json!({"host_id": "nope", "egress_ip_id": c.wg_id}));
    c.refused(
        Who::Admin,
        Method::POST,
        bindings,
        body,
        Want::new(400, ids, Some("host_id")),
    )
    .await;
    let body = Body::Json(json!({"host_id": c.hid, "egress_ip_id": "nope"}));
    c.refused(
        Who::Admin,
        Method::POST,
        bindings,
        body,
        Want::new(400, ids, Some("egress_ip_id")),
    )
    .await;
    c.invalid(
        Who::Admin,
        Method::POST,
        bindings,
        json!({"egress_ip_id": c.wg_id}),
        "host_id",
    )
    .await;
    c.finish();
}
