//! Secrets at rest: tunnel keys, proxy passwords and VNC secrets are never in the SQLite file in
//! clear; a backup restored into a fresh directory (with the key backup.sh keeps beside it) hands the
//! same secrets to an agent; `rotate-secrets-key` moves every secret to a new key, after which the
//! old key opens nothing; plain rows an older version left are sealed at start; and a key file that
//! others may read, or of the wrong length, stops the start with one line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cloud_cli_proxy_tests::fixtures::{self, id};
use cloud_cli_proxy_tests::process::control_plane_bin;
use cloud_cli_proxy_tests::{Api, ControlPlane, Options};
use serde_json::{Value, json};

/// What the test put in, or learnt from the agent link, that must never be stored in clear.
#[derive(Debug, Default, Clone, PartialEq)]
struct Secrets {
    wg_preshared_key: String,
    /// The WireGuard host's own private key (its binding's).
    binding_private_key: String,
    socks_password: String,
    shadowsocks_password: String,
    /// A started TOTP enrolment's secret.
    totp_secret: String,
    /// VNC secret of each host, by host id.
    vnc: Vec<(String, String)>,
}

impl Secrets {
    fn all(&self) -> Vec<&str> {
        let mut v = vec![
            self.wg_preshared_key.as_str(),
            self.binding_private_key.as_str(),
            self.socks_password.as_str(),
            self.shadowsocks_password.as_str(),
        ];
        if !self.totp_secret.is_empty() {
            v.push(self.totp_secret.as_str());
        }
        v.extend(self.vnc.iter().map(|(_, s)| s.as_str()));
        v
    }
}

struct Setup {
    wg_host: String,
    proxy_host: String,
    wg_egress: String,
    wg_client_public_key: String,
    put_in: Secrets,
}

fn options() -> Options {
    Options::new()
}

/// A WireGuard egress IP with a preshared key, a socks proxy and a shadowsocks proxy with passwords,
/// and two hosts: one bound to the WireGuard egress, one to the socks proxy.
async fn populate(admin: &Api) -> Setup {
    let psk = fixtures::wg_key();
    let mut wg = fixtures::wireguard_egress("wg-sealed");
    wg["wg_preshared_key"] = json!(psk);
    wg["ip_address"] = json!("198.18.40.10");
    wg["wg_endpoint"] = json!("198.18.40.10:51820");
    let wg = admin.create_egress(wg).await;
    let socks_password = format!("socks-{}", fixtures::random_alnum(24));
    let socks = admin
        .create_egress(json!({
            "label": "socks-sealed", "ip_address": "198.18.40.20", "tunnel_type": "proxy",
            "proxy_config": {"type": "socks", "server": "198.18.40.20", "server_port": 1080,
                             "username": "user", "password": socks_password},
        }))
        .await;
    let ss_password = format!("ss-{}", fixtures::random_alnum(24));
    admin
        .create_egress(json!({
            "label": "ss-sealed", "ip_address": "198.18.40.30", "tunnel_type": "proxy",
            "proxy_config": {"type": "shadowsocks", "server": "198.18.40.30", "server_port": 8388,
                             "method": "aes-256-gcm", "password": ss_password},
        }))
        .await;
    let user = admin.create_user("sealed", "sealed-password").await;
    let enrolment = cp_login(admin, "sealed", "sealed-password")
        .await
        .post("/v1/auth/totp", json!({"password": "sealed-password"}))
        .await;
    let totp_secret = enrolment.str("secret");
    let wg_host = id(&admin.create_host(&id(&user)).await);
    let proxy_host = id(&admin.create_host(&id(&user)).await);
    for (host, egress) in [(&wg_host, id(&wg)), (&proxy_host, id(&socks))] {
        admin
            .post(
                "/v1/admin/bindings",
                json!({"host_id": host, "egress_ip_id": egress}),
            )
            .await
            .expect(201);
    }
    Setup {
        wg_host,
        proxy_host,
        wg_egress: id(&wg),
        wg_client_public_key: wg["wg_client_public_key"].as_str().unwrap().to_owned(),
        put_in: Secrets {
            wg_preshared_key: psk,
            socks_password,
            shadowsocks_password: ss_password,
            totp_secret,
            ..Secrets::default()
        },
    }
}

/// A client of the same server signed in as `username`.
async fn cp_login(admin: &Api, username: &str, password: &str) -> Api {
    admin.anonymous().login_as(username, password).await
}

/// The agent link, as a node agent uses it.
struct Agent {
    api: Api,
    node_id: String,
}

impl Agent {
    /// Registers the node `sealed-node`, enrolling it first when `credential` holds none yet (a
    /// restored database keeps the node and its credential).
    async fn register(cp: &ControlPlane, credential: &mut Option<String>) -> Self {
        if credential.is_none() {
            let admin = cp.admin().await;
            let (_, issued) = cloud_cli_proxy_tests::enrolment::agent(&admin, &cp.api(), "sealed-node").await;
            *credential = Some(issued);
        }
        let api = cp
            .api()
            .with_header("x-agent-token", credential.as_deref().unwrap_or_default());
        let r = api
            .post(
                "/v1/agent/register",
                json!({"node_name": "sealed-node", "agent_version": "test", "reach_address": null}),
            )
            .await;
        let node_id = r.expect(200)["node_id"].as_str().unwrap().to_owned();
        Self { api, node_id }
    }

    /// Claims `n` tasks and ends each as succeeded; returns the assignments.
    async fn take(&self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.len() < n {
            let r = self
                .api
                .post(
                    "/v1/agent/claim",
                    json!({"node_id": self.node_id, "wait_secs": 1}),
                )
                .await;
            if r.status == 204 {
                assert!(Instant::now() < deadline, "no task to claim within 30 s");
                continue;
            }
            let a = r.expect(200).clone();
            let host_id = a["host"]["host_id"].as_str().unwrap().to_owned();
            let state = if a["kind"] == "stop" { "stopped" } else { "running" };
            let result = json!({
                "lease": a["lease"], "outcome": {"status": "succeeded"},
                "observed": {"host_id": host_id, "state": state, "address": null},
            });
            let path = format!("/v1/agent/tasks/{}/result", a["task_id"].as_str().unwrap());
            let r = self.api.post(&path, result).await;
            assert!(r.status < 300, "result: {} {}", r.status, r.text);
            out.push(a);
        }
        out
    }
}

/// The secrets as an agent receives them for the two hosts' next tasks.
async fn handed_to_agent(agent: &Agent, setup: &Setup) -> Secrets {
    let mut got = Secrets::default();
    for a in agent.take(2).await {
        let host = &a["host"];
        let host_id = host["host_id"].as_str().unwrap().to_owned();
        got.vnc
            .push((host_id.clone(), host["vnc_secret"].as_str().unwrap().to_owned()));
        let tunnel = &host["egress"]["tunnel"];
        if host_id == setup.wg_host {
            assert_eq!(tunnel["type"], "wireguard", "{a}");
            got.wg_preshared_key = tunnel["preshared_key"].as_str().unwrap_or_default().to_owned();
            got.binding_private_key = tunnel["private_key"].as_str().unwrap_or_default().to_owned();
        } else {
            assert_eq!(host_id, setup.proxy_host);
            assert_eq!(tunnel["type"], "proxy", "{a}");
            got.socks_password = tunnel["outbound"]["password"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
    }
    got.vnc.sort();
    assert!(
        !got.binding_private_key.is_empty() && !got.wg_preshared_key.is_empty(),
        "the agent got no WireGuard secrets: {got:?}"
    );
    got
}

/// Every byte of the database (main file and write-ahead log) and its `.dump`.
fn stored_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(PathBuf::from(p)) {
            bytes.extend(b);
        }
    }
    let dump = Command::new("sqlite3")
        .arg(db)
        .arg(".dump")
        .output()
        .expect("run sqlite3");
    assert!(dump.status.success(), "sqlite3 .dump failed");
    bytes.extend(dump.stdout);
    bytes
}

#[track_caller]
fn assert_nowhere_in_clear(db: &Path, secrets: &Secrets) {
    let bytes = stored_bytes(db);
    for s in secrets.all() {
        assert!(s.len() >= 8, "a test secret is too short to look for: {s:?}");
        let found = bytes.windows(s.len()).any(|w| w == s.as_bytes());
        assert!(!found, "secret {s:?} is stored in clear in {}", db.display());
    }
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("run sqlite3");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The key ids in every sealed column, deduplicated.
fn key_ids(db: &Path) -> Vec<String> {
    let sql = "SELECT wg_preshared_key FROM egress_ips UNION SELECT wg_private_key FROM egress_ips \
        UNION SELECT proxy_config FROM egress_ips UNION SELECT wg_private_key FROM bindings \
        UNION SELECT vnc_secret FROM hosts";
    let mut ids: Vec<String> = sqlite(db, sql)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.split('.');
            assert_eq!(parts.next(), Some("ccp1"), "a stored secret is not sealed: {l}");
            parts.next().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/scripts")
        .join(name)
}

/// Runs a deploy script or the binary with a clean environment; returns its last stdout line.
fn run(program: &Path, args: &[&str], env: &[(&str, String)]) -> String {
    let mut cmd = if program.extension().is_some_and(|e| e == "sh") {
        let mut c = Command::new("bash");
        c.arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "CLOUD_CLI_PROXY_ENV_FILE",
            "/nonexistent/cloud-cli-proxy-test.env",
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{} failed with {}:\n{stdout}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().unwrap_or_default().trim().to_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_survive_backup_and_restore_and_move_to_a_new_key() {
    let mut credential: Option<String> = None;
    let cp = ControlPlane::start(options()).await;
    let key_file = cp.db_path().parent().unwrap().join("secrets.key");
    assert_eq!(mode(&key_file), 0o600, "the key file made at first start");
    assert_eq!(std::fs::read(&key_file).unwrap().len(), 32);

    let admin = cp.admin().await;
    let setup = populate(&admin).await;
    let agent = Agent::register(&cp, &mut credential).await;
    let first = handed_to_agent(&agent, &setup).await;
    assert_eq!(first.wg_preshared_key, setup.put_in.wg_preshared_key);
    assert_eq!(first.socks_password, setup.put_in.socks_password);
    let mut everything = first.clone();
    everything.shadowsocks_password = setup.put_in.shadowsocks_password.clone();
    everything.totp_secret = setup.put_in.totp_secret.clone();
    assert_nowhere_in_clear(cp.db_path(), &everything);
    assert_eq!(key_ids(cp.db_path()).len(), 1, "one key seals everything");

    // The API still masks what it opens, and derives the public key from the sealed private one.
    let view = admin
        .get(&format!("/v1/admin/egress-ips/{}", setup.wg_egress))
        .await;
    assert_eq!(view.expect(200)["wg_preshared_key"], "********");
    assert_eq!(view.body["wg_client_public_key"], setup.wg_client_public_key);

    // Backup while running, restore into a fresh directory: the key comes along.
    let backups = tempfile::tempdir().unwrap();
    let backup = run(
        &script("backup.sh"),
        &[],
        &[
            ("BACKUP_DIR", backups.path().display().to_string()),
            ("DATABASE_URL", cp.database_url()),
        ],
    );
    let backup_key = PathBuf::from(backup.replace(".db.gz", ".key"));
    assert_eq!(mode(&backup_key), 0o600);
    drop(cp);
    let fresh = tempfile::tempdir().unwrap();
    let restored_db = fresh.path().join("restored.db");
    run(
        &script("restore.sh"),
        &[&backup],
        &[("DATABASE_URL", format!("sqlite://{}", restored_db.display()))],
    );
    let restored_key = fresh.path().join("secrets.key");
    assert_eq!(mode(&restored_key), 0o600);

    // The same backup restored without its key: the start is refused, and no key is made up.
    let keyless = tempfile::tempdir().unwrap();
    let keyless_backup = keyless.path().join("copy.db.gz");
    std::fs::copy(&backup, &keyless_backup).unwrap();
    let keyless_db = keyless.path().join("restored.db");
    run(
        &script("restore.sh"),
        &[keyless_backup.to_str().unwrap()],
        &[("DATABASE_URL", format!("sqlite://{}", keyless_db.display()))],
    );
    let (status, logs) = ControlPlane::start_failing(options().db(&keyless_db)).await;
    assert!(!status.success());
    assert!(
        logs.contains("does not exist, but the database holds secrets sealed under key"),
        "the refusal says what is missing: {logs}"
    );
    assert!(!keyless.path().join("secrets.key").exists());

    let mut restored = ControlPlane::start(options().db(&restored_db)).await;
    let admin = restored.admin().await;
    for host in [&setup.wg_host, &setup.proxy_host] {
        admin
            .post(&format!("/v1/admin/hosts/{host}/stop"), None)
            .await
            .expect(202);
    }
    let agent = Agent::register(&restored, &mut credential).await;
    assert_eq!(
        handed_to_agent(&agent, &setup).await,
        first,
        "the restored control plane hands out the same secrets"
    );

    // Rotation is refused while a control plane runs with the key.
    let refused = Command::new(control_plane_bin())
        .arg("rotate-secrets-key")
        .env_clear()
        .env("DATABASE_URL", format!("sqlite://{}", restored_db.display()))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("a control plane is running with it: stop it first"),
        "{said}"
    );

    // Rotation, with the control plane stopped.
    restored.stop().await;
    let old_key = std::fs::read(&restored_key).unwrap();
    let old_ids = key_ids(&restored_db);
    let line = run(
        &control_plane_bin(),
        &["rotate-secrets-key"],
        &[("DATABASE_URL", format!("sqlite://{}", restored_db.display()))],
    );
    assert!(line.starts_with("rotated the secrets key"), "{line}");
    let new_key = std::fs::read(&restored_key).unwrap();
    assert_ne!(old_key, new_key);
    assert_eq!(mode(&restored_key), 0o600);
    assert!(!fresh.path().join("secrets.key.new").exists());
    let new_ids = key_ids(&restored_db);
    assert_eq!(new_ids.len(), 1);
    assert_ne!(new_ids, old_ids, "every secret moved to the new key");
    assert_nowhere_in_clear(&restored_db, &everything);

    restored.restart(options()).await;
    let admin = restored.admin().await;
    for host in [&setup.wg_host, &setup.proxy_host] {
        admin
            .post(&format!("/v1/admin/hosts/{host}/start"), None)
            .await
            .expect(202);
    }
    let agent = Agent::register(&restored, &mut credential).await;
    assert_eq!(handed_to_agent(&agent, &setup).await, first, "after rotation");

    // The old key is of no use any more: put back, it opens nothing and the start is refused.
    restored.stop().await;
    std::fs::write(&restored_key, &old_key).unwrap();
    let (status, logs) = ControlPlane::start_failing(options().db(&restored_db)).await;
    assert!(!status.success());
    assert!(
        logs.contains("belongs with another secrets key file"),
        "the refusal says why: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_rows_of_an_older_version_are_sealed_at_start() {
    let mut credential: Option<String> = None;
    let mut cp = ControlPlane::start(options()).await;
    let admin = cp.admin().await;
    let setup = populate(&admin).await;
    cp.stop().await;
    // What a version without sealing stored: the same values in clear.
    let psk = fixtures::wg_key();
    let vnc = format!("vnc-{}", fixtures::random_alnum(12));
    sqlite(
        cp.db_path(),
        &format!(
            "UPDATE egress_ips SET wg_preshared_key = '{psk}' WHERE id = '{}'; \
             UPDATE hosts SET vnc_secret = '{vnc}' WHERE id = '{}';",
            setup.wg_egress, setup.wg_host
        ),
    );
    cp.restart(options()).await;
    let plain = Secrets {
        wg_preshared_key: psk.clone(),
        vnc: vec![(setup.wg_host.clone(), vnc.clone())],
        ..Secrets::default()
    };
    let bytes = stored_bytes(cp.db_path());
    for s in [&psk, &vnc] {
        let in_clear = bytes.windows(s.len()).any(|w| w == s.as_bytes());
        assert!(!in_clear, "{s} is still in clear after the start: {plain:?}");
    }
    assert_eq!(key_ids(cp.db_path()).len(), 1);
    let agent = Agent::register(&cp, &mut credential).await;
    let got = handed_to_agent(&agent, &setup).await;
    assert_eq!(got.wg_preshared_key, psk);
    assert!(got.vnc.contains(&(setup.wg_host.clone(), vnc)), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_others_can_read_or_of_the_wrong_length_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, logs) = ControlPlane::start_failing(options().db(&db)).await;
    assert!(!status.success());
    assert!(logs.contains("chmod 600"), "{logs}");
    assert!(logs.contains(&key.display().to_string()), "{logs}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key, [7u8; 16]).unwrap();
    let (status, logs) = ControlPlane::start_failing(options().db(&db)).await;
    assert!(!status.success());
    assert!(logs.contains("holds 16 bytes, not 32"), "{logs}");

    // SECRETS_KEY_FILE points elsewhere: created there at first start, 0600.
    let elsewhere = dir.path().join("keys/cp.key");
    let cp = ControlPlane::start(options().db(&db).env("SECRETS_KEY_FILE", elsewhere.display())).await;
    assert_eq!(mode(&elsewhere), 0o600);
    drop(cp);
}
