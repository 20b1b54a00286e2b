//! The seed's egress IP, host, binding and task examples.

use base64::Engine as _;
use cloud_cli_proxy_tests::fixtures::{self, id, parse_time};
use cloud_cli_proxy_tests::shapes::{self, MASK};
use cloud_cli_proxy_tests::{ControlPlane, Options, assert_error, assert_keys};
use serde_json::{Value, json};

/// Secret fields of a sing-box outbound, masked on every read.
const PROXY_SECRETS: &[&str] = &["password", "uuid"];

/// A read of an egress IP shows what was declared, with every secret masked.
#[track_caller]
fn assert_read_masks_secrets(declared: &Value, read: &Value, raw: &str) {
    assert_keys(read, shapes::EGRESS);
    for k in ["label", "ip_address", "tunnel_type", "provider"] {
        assert_eq!(read[k], declared[k], "{k} of {}", declared["label"]);
    }
    assert_eq!(
        read["observed_ip"],
        Value::Null,
        "no test ran, nothing observed: {read}"
    );
    assert_eq!(read["last_test"], Value::Null, "no test ran: {read}");
    assert!(
        read.get("wg_private_key").is_none_or(|v| v == MASK),
        "the generated private key is never shown: {read}"
    );
    if declared["tunnel_type"] == "wireguard" {
        for k in [
            "wg_endpoint",
            "wg_public_key",
            "wg_allowed_ips",
            "wg_dns_server",
            "wg_peer_address",
        ] {
            assert_eq!(read[k], declared[k], "{k}");
        }
        assert_eq!(
            read["wg_preshared_key"], MASK,
            "preshared key must be masked: {read}"
        );
        assert!(
            !raw.contains(declared["wg_preshared_key"].as_str().unwrap()),
            "preshared key leaked: {raw}"
        );
        let client = read["wg_client_public_key"]
            .as_str()
            .unwrap_or_else(|| panic!("wg_client_public_key: {read}"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(client)
            .expect("client key is base64");
        assert_eq!(bytes.len(), 32, "client public key is 32 bytes");
        return;
    }
    let (want, got) = (&declared["proxy_config"], &read["proxy_config"]);
    for (k, v) in want.as_object().unwrap() {
        if PROXY_SECRETS.contains(&k.as_str()) {
            assert_eq!(got[k], MASK, "proxy_config.{k} must be masked: {read}");
            assert!(
                !raw.contains(&format!("\"{}\"", v.as_str().unwrap())),
                "proxy_config.{k} leaked: {raw}"
            );
        } else {
            assert_eq!(&got[k], v, "proxy_config.{k} of {}", declared["label"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_ips() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let examples = fixtures::seed_egress_examples();

    // Create Egress IP: WireGuard, then each proxy example, then VLESS.
    let mut created = Vec::new();
    for body in &examples {
        let r = admin.post("/v1/admin/egress-ips", body.clone()).await;
        let ip = r.expect(201).clone();
        for k in ["label", "ip_address", "tunnel_type", "provider"] {
            assert_eq!(ip[k], body[k], "{k} of the created {}", body["label"]);
        }
        created.push(ip);
    }
    let dup = admin.post("/v1/admin/egress-ips", examples[1].clone()).await;
    assert_error(&dup, 409, "label_taken");

    // List Egress IPs, and by tunnel type.
    let list = admin.get("/v1/admin/egress-ips").await;
    assert_keys(&list.body, shapes::PAGE);
    assert_eq!(list.total(), 7);
    assert_eq!(admin.count("/v1/admin/egress-ips?tunnel_type=wireguard").await, 1);
    assert_eq!(admin.count("/v1/admin/egress-ips?tunnel_type=proxy").await, 6);
    assert!(
        !list.text.contains("your-password"),
        "a list shows no secret: {}",
        list.text
    );

    // Get Egress IP Details: declared values back, secrets as "********".
    for (body, ip) in examples.iter().zip(&created) {
        let r = admin.get(&format!("/v1/admin/egress-ips/{}", id(ip))).await;
        r.expect(200);
        assert_read_masks_secrets(body, &r.body, &r.text);
        let listed = list.data().iter().find(|e| e["id"] == ip["id"]).expect("listed");
        assert_read_masks_secrets(body, listed, &list.text);
    }

    // Update Egress IP, the seed's body ("NewKey" → a real key): only those two fields change.
    let wg_id = id(&created[0]);
    let before = admin
        .get(&format!("/v1/admin/egress-ips/{wg_id}"))
        .await
        .expect(200)
        .clone();
    let new_key = fixtures::wg_key();
    let r = admin
        .put(
            &format!("/v1/admin/egress-ips/{wg_id}"),
            json!({"wg_endpoint": "new-endpoint:51820", "wg_public_key": new_key}),
        )
        .await;
    assert_eq!(r.expect(200)["wg_endpoint"], "new-endpoint:51820");
    let after = admin
        .get(&format!("/v1/admin/egress-ips/{wg_id}"))
        .await
        .expect(200)
        .clone();
    let mut expected = before.clone();
    expected["wg_endpoint"] = json!("new-endpoint:51820");
    expected["wg_public_key"] = json!(new_key);
    expected["updated_at"] = after["updated_at"].clone();
    assert_eq!(after, expected, "PUT changed more than the fields it sent");
    assert!(parse_time(&after["updated_at"]) >= parse_time(&before["updated_at"]));

    // proxy_config merges field by field while the type stays; a new type replaces it.
    let ss_id = id(&created[1]);
    let r = admin
        .put(
            &format!("/v1/admin/egress-ips/{ss_id}"),
            json!({"proxy_config": {"server_port": 8389}}),
        )
        .await;
    r.expect(200);
    let ss = admin
        .get(&format!("/v1/admin/egress-ips/{ss_id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(ss["proxy_config"]["server_port"], 8389);
    assert_eq!(ss["proxy_config"]["method"], "aes-256-gcm");
    assert_eq!(
        ss["proxy_config"]["password"], MASK,
        "the stored password stays (masked)"
    );
    let socks_id = id(&created[3]);
    let replaced = json!({"type": "http", "server": "192.0.2.51", "server_port": 3128});
    admin
        .put(
            &format!("/v1/admin/egress-ips/{socks_id}"),
            json!({"proxy_config": replaced}),
        )
        .await
        .expect(200);
    let socks = admin
        .get(&format!("/v1/admin/egress-ips/{socks_id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(
        socks["proxy_config"], replaced,
        "a new type replaces the whole proxy_config"
    );

    // Delete Egress IP: 204, then gone.
    let http_id = id(&created[5]);
    let r = admin.delete(&format!("/v1/admin/egress-ips/{http_id}")).await;
    r.expect(204);
    assert_error(
        &admin.get(&format!("/v1/admin/egress-ips/{http_id}")).await,
        404,
        "not_found",
    );
    assert_error(
        &admin.delete(&format!("/v1/admin/egress-ips/{http_id}")).await,
        404,
        "not_found",
    );
    assert_eq!(admin.count("/v1/admin/egress-ips").await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_bindings_and_tasks() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let user = admin.create_user("hostowner", "host-owner-pass").await;
    let uid = id(&user);

    // Create Host, the seed's body with "user-uuid" → the user's id.
    let r = admin.post("/v1/admin/hosts", json!({"user_id": uid})).await;
    let created = r.expect(201).clone();
    assert_keys(&created, shapes::HOST);
    assert_keys(&created["access"], shapes::HOST_ACCESS);
    let hid = id(&created);
    let short = created["short_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .expect("short_id")
        .to_owned();
    let entry_command = created["access"]["entry_command"].as_str().unwrap();
    assert!(
        entry_command.contains(&format!("/entry/{short}")),
        "entry_command: {entry_command}"
    );
    let entry_url = created["access"]["entry_url"].as_str().unwrap();
    assert!(
        entry_url.contains("cp.example.test") && entry_url.ends_with(&format!("/entry/{short}")),
        "{entry_url}"
    );
    assert_eq!(
        (created["user_id"].as_str(), created["username"].as_str()),
        (Some(uid.as_str()), Some("hostowner"))
    );
    assert!(
        shapes::HOST_STATUSES.contains(&created["status"].as_str().unwrap()),
        "{created}"
    );
    assert_eq!(created["egress_ip_id"], Value::Null);
    let create_task = created["task_id"].as_str().expect("task_id").to_owned();
    let ssh_password = created["ssh_password"]
        .as_str()
        .filter(|p| !p.is_empty())
        .expect("ssh_password")
        .to_owned();

    // Optional fields are taken as given.
    let sized = admin
        .post(
            "/v1/admin/hosts",
            json!({"user_id": uid, "name": "dev-box", "memory_mb": 1024, "cpu_millis": 500, "pids_limit": 256}),
        )
        .await
        .expect(201)
        .clone();
    for (k, v) in [
        ("name", json!("dev-box")),
        ("memory_mb", json!(1024)),
        ("cpu_millis", json!(500)),
        ("pids_limit", json!(256)),
    ] {
        assert_eq!(sized[k], v, "{k}");
    }
    assert_ne!(sized["short_id"], created["short_id"]);

    // List Hosts; Get Host Details. Neither shows the SSH password or the creation task.
    let list = admin.get("/v1/admin/hosts").await;
    assert_eq!(list.total(), 2);
    let listed = list
        .data()
        .iter()
        .find(|h| h["id"] == created["id"])
        .expect("host listed")
        .clone();
    assert!(listed.get("ssh_password").is_none() && !list.text.contains(&ssh_password));
    assert_eq!(admin.count(&format!("/v1/admin/hosts?user_id={uid}")).await, 2);
    let other = admin.create_user("nohosts", "no-hosts-pass").await;
    assert_eq!(
        admin
            .count(&format!("/v1/admin/hosts?user_id={}", id(&other)))
            .await,
        0
    );
    let got = admin.get(&format!("/v1/admin/hosts/{hid}")).await;
    assert_eq!(got.expect(200), &listed);
    assert!(!got.text.contains(&ssh_password));
    assert_eq!(got.body["access"], created["access"]);

    // Start / Stop / Rebuild / Rotate SSH Password: 202 with a queued task each.
    let mut task_ids = vec![create_task];
    for action in ["start", "stop", "rebuild"] {
        let r = admin.post(&format!("/v1/admin/hosts/{hid}/{action}"), None).await;
        let task = r.expect(202).clone();
        assert_keys(&task, shapes::TASK);
        assert_eq!(
            (task["kind"].as_str(), task["status"].as_str()),
            (Some(action), Some("queued")),
            "{task}"
        );
        assert_eq!(task["host_id"], created["id"]);
        task_ids.push(id(&task));
    }
    let r = admin
        .post(&format!("/v1/admin/hosts/{hid}/rotate-ssh-password"), None)
        .await;
    r.expect(202);
    assert_eq!(r.body["task"]["kind"], "rotate_ssh_password");
    let rotated = r.str("ssh_password");
    assert!(
        !rotated.is_empty() && rotated != ssh_password,
        "a new SSH password: {rotated}"
    );
    task_ids.push(id(&r.body["task"]));

    // Tasks: newest first, all still queued (no agent runs them).
    task_ids.reverse();
    let kinds = ["rotate_ssh_password", "rebuild", "stop", "start", "create"];
    for path in [
        "/v1/admin/tasks".to_owned(),
        format!("/v1/admin/tasks?host_id={hid}"),
    ] {
        let r = admin.get(&path).await;
        let mine: Vec<&Value> = r
            .data()
            .iter()
            .filter(|t| t["host_id"] == created["id"])
            .collect();
        let ids: Vec<&str> = mine.iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(ids, task_ids, "{path}: tasks newest first: {}", r.text);
        let got: Vec<&str> = mine.iter().map(|t| t["kind"].as_str().unwrap()).collect();
        assert_eq!(got, kinds);
        assert!(mine.iter().all(|t| t["status"] == "queued"), "{}", r.text);
        let times: Vec<_> = r.data().iter().map(|t| parse_time(&t["created_at"])).collect();
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "{path} is not newest first"
        );
    }

    // A queued task can be cancelled, once.
    let start_task = &task_ids[3];
    let r = admin
        .post(&format!("/v1/admin/tasks/{start_task}/cancel"), None)
        .await;
    assert_eq!(
        (r.expect(200)["id"].as_str(), r.body["status"].as_str()),
        (Some(start_task.as_str()), Some("cancelled"))
    );
    let again = admin
        .post(&format!("/v1/admin/tasks/{start_task}/cancel"), None)
        .await;
    assert_error(&again, 409, "task_finished");
    assert_eq!(
        admin
            .get(&format!("/v1/admin/tasks/{start_task}"))
            .await
            .expect(200)["status"],
        "cancelled"
    );
    assert_eq!(
        admin
            .count(&format!("/v1/admin/tasks?host_id={hid}&status=cancelled"))
            .await,
        1
    );

    // Bindings: create, duplicate, unknown ids, egress IP in use, remove.
    let wg = admin.create_egress(fixtures::seed_wireguard()).await;
    let ss = admin
        .create_egress(fixtures::seed_egress_examples()[1].clone())
        .await;
    let r = admin
        .post(
            "/v1/admin/bindings",
            json!({"host_id": hid, "egress_ip_id": id(&wg)}),
        )
        .await;
    let binding = r.expect(201).clone();
    assert_keys(&binding, shapes::BINDING);
    let bid = id(&binding);
    assert_eq!(
        admin.get(&format!("/v1/admin/bindings/{bid}")).await.expect(200),
        &binding
    );
    let listed = admin.get(&format!("/v1/admin/bindings?host_id={hid}")).await;
    assert_eq!((listed.total(), &listed.data()[0]), (1, &binding));
    assert_eq!(
        admin
            .count(&format!("/v1/admin/bindings?egress_ip_id={}", id(&wg)))
            .await,
        1
    );
    assert_eq!(
        admin
            .count(&format!("/v1/admin/bindings?egress_ip_id={}", id(&ss)))
            .await,
        0
    );
    assert_eq!(
        (&binding["host_id"], &binding["egress_ip_id"]),
        (&created["id"], &wg["id"])
    );
    assert_eq!(
        admin.get(&format!("/v1/admin/hosts/{hid}")).await.expect(200)["egress_ip_id"],
        wg["id"]
    );
    for egress in [&wg, &ss] {
        let r = admin
            .post(
                "/v1/admin/bindings",
                json!({"host_id": hid, "egress_ip_id": id(egress)}),
            )
            .await;
        assert_error(&r, 409, "host_already_bound");
    }
    let nobody = uuid::Uuid::new_v4().to_string();
    let r = admin
        .post(
            "/v1/admin/bindings",
            json!({"host_id": nobody, "egress_ip_id": id(&ss)}),
        )
        .await;
    assert_error(&r, 404, "not_found");
    let r = admin
        .post(
            "/v1/admin/bindings",
            json!({"host_id": id(&sized), "egress_ip_id": nobody}),
        )
        .await;
    assert_error(&r, 404, "not_found");
    assert_error(
        &admin.delete(&format!("/v1/admin/egress-ips/{}", id(&wg))).await,
        409,
        "egress_ip_in_use",
    );
    admin
        .get(&format!("/v1/admin/egress-ips/{}", id(&wg)))
        .await
        .expect(200);
    let r = admin
        .delete(&format!("/v1/admin/bindings/{}", id(&binding)))
        .await;
    r.expect(204);
    assert_eq!(
        admin.get(&format!("/v1/admin/hosts/{hid}")).await.expect(200)["egress_ip_id"],
        Value::Null
    );
    assert_error(
        &admin
            .delete(&format!("/v1/admin/bindings/{}", id(&binding)))
            .await,
        404,
        "not_found",
    );
    admin
        .delete(&format!("/v1/admin/egress-ips/{}", id(&wg)))
        .await
        .expect(204);

    // Delete Host: 202 with a delete task; the host is `deleting` and takes no more actions.
    let r = admin.delete(&format!("/v1/admin/hosts/{hid}")).await;
    let task = r.expect(202).clone();
    assert_eq!(
        (task["kind"].as_str(), task["host_id"].as_str()),
        (Some("delete"), Some(hid.as_str()))
    );
    assert_eq!(
        admin.get(&format!("/v1/admin/hosts/{hid}")).await.expect(200)["status"],
        "deleting"
    );
    assert_error(
        &admin.post(&format!("/v1/admin/hosts/{hid}/start"), None).await,
        409,
        "host_deleting",
    );

    // Deleting the user sends its remaining host the same way.
    admin.delete(&format!("/v1/admin/users/{uid}")).await.expect(204);
    let sid = id(&sized);
    assert_eq!(
        admin.get(&format!("/v1/admin/hosts/{sid}")).await.expect(200)["status"],
        "deleting"
    );
    let tasks = admin.get(&format!("/v1/admin/tasks?host_id={sid}")).await;
    assert_eq!(tasks.data()[0]["kind"], "delete", "{}", tasks.text);
    assert_eq!(admin.count("/v1/admin/hosts?status=deleting").await, 2);
    assert_eq!(admin.count("/v1/admin/hosts?status=running").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_defaults_and_masked_secrets_sent_back() {
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;

    // `provider` defaults to `manual`, `wg_allowed_ips` to both default routes; IPv6 exits are fine.
    let mut body = fixtures::wireguard_egress("v6-defaults");
    let obj = body.as_object_mut().unwrap();
    obj.remove("provider");
    obj.remove("wg_allowed_ips");
    obj.remove("wg_preshared_key");
    body["ip_address"] = json!("2001:db8::10");
    let ip = admin.create_egress(body).await;
    let read = admin
        .get(&format!("/v1/admin/egress-ips/{}", id(&ip)))
        .await
        .expect(200)
        .clone();
    assert_eq!(read["provider"], "manual");
    assert_eq!(read["ip_address"], "2001:db8::10");
    let allowed: Vec<String> = read["wg_allowed_ips"]
        .as_str()
        .unwrap()
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    assert_eq!(allowed, ["0.0.0.0/0", "::/0"], "{read}");
    assert_eq!(
        read["wg_preshared_key"],
        Value::Null,
        "no preshared key was given: {read}"
    );

    // A read answer sent back as is: the masks keep the stored secrets and change nothing.
    let wg = admin.create_egress(fixtures::seed_wireguard()).await;
    let wg_path = format!("/v1/admin/egress-ips/{}", id(&wg));
    let before = admin.get(&wg_path).await.expect(200).clone();
    admin
        .put(&wg_path, json!({"wg_preshared_key": MASK}))
        .await
        .expect(200);
    let after = admin.get(&wg_path).await.expect(200).clone();
    assert_eq!(after["wg_preshared_key"], MASK);
    assert_eq!(
        (&after["wg_public_key"], &after["wg_endpoint"]),
        (&before["wg_public_key"], &before["wg_endpoint"])
    );

    let ss = admin
        .create_egress(fixtures::seed_egress_examples()[1].clone())
        .await;
    let ss_path = format!("/v1/admin/egress-ips/{}", id(&ss));
    let read = admin.get(&ss_path).await.expect(200).clone();
    admin
        .put(&ss_path, json!({"proxy_config": read["proxy_config"].clone()}))
        .await
        .expect(200);
    assert_eq!(
        admin.get(&ss_path).await.expect(200)["proxy_config"],
        read["proxy_config"]
    );
}
