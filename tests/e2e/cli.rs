//! The `cloud-cli-proxy` command-line client, the real binary against the real control plane:
//! sign-in (password on standard input, the second factor, the stored token's file modes, the
//! environment's overrides), every command group as the operator and as a tenant with `--json`
//! parsed back, refusals with the API's code and message and their exit statuses; and on a real
//! Docker node, a host created with `--wait` showing its progress on a terminal until it runs, then
//! `ssh HOST -- COMMAND` through the gateway with a single-use secret.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use cloud_cli_proxy_tests::access::reachable_env;
use cloud_cli_proxy_tests::cli::Cli;
use cloud_cli_proxy_tests::fixtures::{id, ssh_keygen, wg_key};
use cloud_cli_proxy_tests::hosts::CREATE_LIMIT;
use cloud_cli_proxy_tests::terminal::Terminal;
use cloud_cli_proxy_tests::{ControlPlane, Node, Options, eventually, totp};
use serde_json::{Value, json};

/// Exit statuses docs/cli.md promises.
const USAGE: i32 = 2;
const UNAUTHORIZED: i32 = 3;
const FORBIDDEN: i32 = 4;
const NOT_FOUND: i32 = 5;
const INVALID: i32 = 6;
const UNAVAILABLE: i32 = 7;

/// The secret in the environment of the running `ssh` that logs in as `login`, once there is
/// one; checks on the way that no process's command line holds it.
fn ssh_process(login: &str) -> Option<String> {
    let mut secret = None;
    let mut cmdlines = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().map(String::as_str) == Some("ssh") && args.iter().any(|a| a == login) {
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            secret = environ
                .split(|b| *b == 0)
                .filter_map(|v| v.strip_prefix(b"CLOUD_CLI_PROXY_SSH_SECRET="))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .next();
        }
        cmdlines.push(args.join(" "));
    }
    let secret = secret.filter(|s| !s.is_empty())?;
    for line in cmdlines {
        assert!(!line.contains(&secret), "a command line holds the secret: {line}");
    }
    Some(secret)
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no `{k}` in {v}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_every_command_group() {
    let cp = ControlPlane::start(Options::new()).await;
    let url = cp.base_url();
    let admin_api = cp.admin().await;
    let op = Cli::new();

    // Not signed in yet: exit 3 with a hint, never a panic.
    op.run(&["hosts", "list"])
        .await
        .fails(UNAUTHORIZED, "not_signed_in");
    // A wrong password: the API's refusal.
    op.login(&url, "admin", "not-the-password")
        .await
        .fails(UNAUTHORIZED, "unauthorized");
    let r = op.login(&url, "admin", &cp.options().admin_password).await;
    r.ok();
    assert!(r.stdout.contains("signed in"), "{}", r.stdout);
    assert!(!r.stdout.contains(&cp.options().admin_password));
    let creds = op.credentials();
    assert_eq!(mode(&creds), 0o600, "the token file is the owner's only");
    assert_eq!(mode(creds.parent().unwrap()), 0o700);
    let me = op.run(&["--json", "whoami"]).await.json();
    assert_eq!(
        (me["username"].as_str(), me["role"].as_str()),
        (Some("admin"), Some("admin"))
    );

    // Users.
    let alice = op
        .run_with(
            &["--json", "users", "create", "alice", "--password-stdin"],
            Some("alice-password-1\n"),
            Duration::from_secs(60),
        )
        .await
        .json();
    let alice_id = id(&alice);
    assert_eq!(alice["username"], "alice");
    let list = op.run(&["--json", "users", "list", "-q", "ali"]).await.json();
    assert_eq!(list["total_records"], 1, "{list}");
    assert_eq!(list["data"][0]["id"], alice_id.as_str());
    assert_eq!(
        op.run(&["--json", "users", "show", "alice"]).await.json()["id"],
        alice_id.as_str()
    );
    assert_eq!(
        op.run(&["--json", "users", "disable", "alice"]).await.json()["status"],
        "disabled"
    );
    assert_eq!(
        op.run(&["--json", "users", "enable", &alice_id]).await.json()["status"],
        "active"
    );
    let expiry = op
        .run(&[
            "--json",
            "users",
            "expiry",
            "alice",
            "--at",
            "2099-01-01T00:00:00Z",
        ])
        .await
        .json();
    assert!(
        expiry["expires_at"].as_str().unwrap().starts_with("2099-01-01"),
        "{expiry}"
    );
    assert_eq!(
        op.run(&["--json", "users", "expiry", "alice", "--never"])
            .await
            .json()["expires_at"],
        Value::Null
    );
    let rotated = op
        .run(&["--json", "users", "rotate-password", "alice"])
        .await
        .json();
    let alice_password = s(&rotated, "password");
    // The table shows the same account to a person.
    let table = op.run(&["users", "list"]).await;
    table.ok();
    assert!(
        table.stdout.contains("alice") && table.stdout.contains("USERNAME"),
        "{}",
        table.stdout
    );
    // Bad input: the API's code, message and field, exit 6.
    let r = op
        .run_with(
            &["users", "create", "x", "--password-stdin"],
            Some("short\n"),
            Duration::from_secs(60),
        )
        .await;
    r.fails(INVALID, "validation_failed");
    let r = op.run(&["users", "show", "nobody-here"]).await;
    r.fails(NOT_FOUND, "not_found");

    // SSH keys of a user.
    let dir = tempfile::tempdir().unwrap();
    let pair = ssh_keygen(dir.path(), "alice");
    let pub_file = dir.path().join("alice.pub");
    std::fs::write(&pub_file, &pair.public_line).unwrap();
    let key = op
        .run(&[
            "--json",
            "ssh-keys",
            "add",
            pub_file.to_str().unwrap(),
            "--user",
            "alice",
            "--name",
            "laptop",
        ])
        .await
        .json();
    assert_eq!(key["name"], "laptop");
    let generated = op
        .run(&[
            "--json", "ssh-keys", "generate", "--user", "alice", "--name", "gen",
        ])
        .await
        .json();
    assert!(s(&generated, "private_key").contains("OPENSSH PRIVATE KEY"));
    let keys = op
        .run(&["--json", "ssh-keys", "list", "--user", "alice"])
        .await
        .json();
    assert_eq!(keys["total_records"], 2, "{keys}");
    op.run(&["--json", "ssh-keys", "delete", &id(&generated), "--user", "alice"])
        .await
        .ok();
    op.run(&["ssh-keys", "add", pub_file.to_str().unwrap(), "--user", "alice"])
        .await
        .fails(INVALID, "ssh_key_exists");
    op.run(&["ssh-keys", "list"]).await.fails(2, "usage");

    // Egress IPs: data only; nothing dials the addresses (no agent runs here).
    let wg_pub = wg_key();
    let egress = op
        .run(&[
            "--json",
            "egress-ips",
            "create",
            "--label",
            "cli-wg",
            "--ip-address",
            "203.0.113.10",
            "--tunnel-type",
            "wireguard",
            "--wg-endpoint",
            "vpn-provider.example.com:51820",
            "--wg-public-key",
            &wg_pub,
            "--wg-peer-address",
            "10.0.0.2/32",
        ])
        .await
        .json();
    let egress_id = id(&egress);
    assert_eq!(egress["tunnel_type"], "wireguard");
    let proxy = op
        .run(&[
            "--json",
            "egress-ips",
            "create",
            "--label",
            "cli-socks",
            "--ip-address",
            "203.0.113.11",
            "--tunnel-type",
            "proxy",
            "--proxy-config",
            r#"{"type":"socks","server":"proxy.example.com","server_port":1080}"#,
        ])
        .await
        .json();
    assert_eq!(proxy["proxy_config"]["type"], "socks");
    let listed = op
        .run(&["--json", "egress-ips", "list", "--tunnel-type", "proxy"])
        .await
        .json();
    assert_eq!(listed["total_records"], 1, "{listed}");
    assert_eq!(
        op.run(&["--json", "egress-ips", "show", "cli-wg"]).await.json()["id"],
        egress_id.as_str()
    );
    let updated = op
        .run(&["--json", "egress-ips", "update", "cli-wg", "--provider", "acme"])
        .await
        .json();
    assert_eq!(updated["provider"], "acme");
    let rotated = op
        .run(&["--json", "egress-ips", "rotate-wg-key", "cli-wg"])
        .await
        .json();
    assert_ne!(rotated["wg_client_public_key"], egress["wg_client_public_key"]);
    op.run(&[
        "egress-ips",
        "create",
        "--label",
        "cli-wg",
        "--ip-address",
        "203.0.113.12",
        "--tunnel-type",
        "wireguard",
        "--wg-endpoint",
        "vpn-provider.example.com:51820",
        "--wg-public-key",
        &wg_pub,
        "--wg-peer-address",
        "10.0.0.3/32",
    ])
    .await
    .fails(INVALID, "label_taken");
    // No agent takes the test: the API's 503.
    op.run(&["egress-ips", "test", "cli-wg"])
        .await
        .fails(UNAVAILABLE, "no_agent");
    op.run(&["--json", "egress-ips", "delete", "cli-socks"])
        .await
        .ok();

    // Hosts (no agent: their tasks stay queued, so --no-wait).
    let host = op
        .run(&[
            "--json",
            "hosts",
            "create",
            "--user",
            "alice",
            "--name",
            "dev",
            "--no-wait",
        ])
        .await
        .json();
    let host_id = id(&host);
    let short = s(&host, "short_id");
    assert!(
        host["ssh_password"].as_str().is_some_and(|p| p.len() >= 16),
        "{host}"
    );
    let create_task = s(&host, "task_id");
    let hosts = op
        .run(&["--json", "hosts", "list", "--user", "alice"])
        .await
        .json();
    assert_eq!(hosts["total_records"], 1, "{hosts}");
    assert_eq!(
        op.run(&["--json", "hosts", "show", &short]).await.json()["id"],
        host_id.as_str()
    );
    assert_eq!(
        op.run(&["--json", "hosts", "show", "dev"]).await.json()["id"],
        host_id.as_str()
    );
    assert_eq!(
        op.run(&["--json", "hosts", "show", &host_id[..6]]).await.json()["id"],
        host_id.as_str()
    );
    op.run(&["hosts", "show", "zzzzzzzz"])
        .await
        .fails(NOT_FOUND, "not_found");
    let r = op
        .run(&[
            "hosts",
            "create",
            "--user",
            "alice",
            "--memory-mb",
            "1",
            "--no-wait",
        ])
        .await;
    r.fails(INVALID, "validation_failed");
    assert!(
        r.stderr.contains("memory_mb must be 256 to 65536"),
        "{}",
        r.stderr
    );
    let link = op.run(&["--json", "hosts", "entry-link", "dev"]).await.json();
    assert_eq!(link["open"], true, "{link}");
    let closed = op
        .run(&["--json", "hosts", "entry-link", "dev", "--disable"])
        .await
        .json();
    assert_eq!(
        (closed["enabled"].as_bool(), closed["open"].as_bool()),
        (Some(false), Some(false))
    );
    let rotated_link = op
        .run(&["--json", "hosts", "entry-link", "dev", "--rotate", "--enable"])
        .await
        .json();
    assert_ne!(rotated_link["entry_id"], link["entry_id"]);
    assert_eq!(rotated_link["open"], true, "{rotated_link}");
    op.run(&[
        "hosts",
        "entry-link",
        "dev",
        "--expires-at",
        "2000-01-01T00:00:00Z",
    ])
    .await
    .fails(INVALID, "validation_failed");
    let stop = op
        .run(&["--json", "hosts", "stop", &short, "--no-wait"])
        .await
        .json();
    assert_eq!(
        (stop["kind"].as_str(), stop["status"].as_str()),
        (Some("stop"), Some("queued"))
    );
    let rotate = op
        .run(&["--json", "hosts", "rotate-password", &short, "--no-wait"])
        .await
        .json();
    assert_eq!(rotate["task"]["kind"], "rotate_ssh_password");

    // Bindings.
    let binding = op
        .run(&[
            "--json",
            "bindings",
            "create",
            "--host",
            &short,
            "--egress-ip",
            "cli-wg",
        ])
        .await
        .json();
    let binding_id = id(&binding);
    assert_eq!(binding["host_id"], host_id.as_str());
    let bindings = op
        .run(&["--json", "bindings", "list", "--egress-ip", "cli-wg"])
        .await
        .json();
    assert_eq!(bindings["total_records"], 1, "{bindings}");
    assert_eq!(
        op.run(&["--json", "bindings", "show", &binding_id]).await.json()["id"],
        binding_id.as_str()
    );
    let rekeyed = op
        .run(&["--json", "bindings", "rotate-wg-key", &binding_id])
        .await
        .json();
    assert_ne!(rekeyed["wg_public_key"], binding["wg_public_key"]);
    op.run(&["bindings", "create", "--host", &short, "--egress-ip", &egress_id])
        .await
        .fails(INVALID, "host_already_bound");
    op.run(&["--json", "bindings", "delete", &binding_id]).await.ok();

    // Traffic and quotas.
    let series = op
        .run(&["--json", "hosts", "traffic", &short, "--bucket", "day"])
        .await
        .json();
    assert_eq!(series["bucket"], "day", "{series}");
    assert_eq!(series["buckets"].as_array().unwrap().len(), 30, "{series}");
    let table = op.run(&["hosts", "traffic", &short]).await.ok().stdout.clone();
    assert!(
        table.contains("received") && table.contains("RECEIVED"),
        "{table}"
    );
    let quota = op
        .run(&[
            "--json",
            "quotas",
            "create",
            "--host",
            &short,
            "--limit",
            "100GiB",
            "--period",
            "weekly",
            "--action",
            "cut_egress",
        ])
        .await
        .json();
    assert_eq!(quota["limit_bytes"], 100_i64 << 30, "{quota}");
    assert_eq!(
        (quota["period"].as_str(), quota["exceeded"].as_bool()),
        (Some("weekly"), Some(false))
    );
    let quota_id = s(&quota, "id");
    let quotas = op
        .run(&["--json", "quotas", "list", "--host", &short])
        .await
        .json();
    assert_eq!(quotas["total_records"], 1, "{quotas}");
    assert_eq!(
        op.run(&["--json", "quotas", "show", &quota_id]).await.json()["id"],
        quota["id"]
    );
    let listed = op.run(&["quotas", "list"]).await.ok().stdout.clone();
    assert!(listed.contains("100.0 GiB"), "{listed}");
    op.run(&["quotas", "create", "--host", &short, "--limit", "ten"])
        .await
        .fails(USAGE, "usage");
    op.run(&[
        "quotas", "create", "--host", &short, "--limit", "1GiB", "--period", "yearly",
    ])
    .await
    .fails(INVALID, "validation_failed");

    // Tasks.
    let tasks = op
        .run(&["--json", "tasks", "list", "--host", &short])
        .await
        .json();
    assert_eq!(tasks["total_records"], 3, "create, stop, rotate: {tasks}");
    assert_eq!(
        op.run(&["--json", "tasks", "show", &create_task]).await.json()["kind"],
        "create"
    );
    let cancelled = op
        .run(&["--json", "tasks", "cancel", &s(&stop, "id")])
        .await
        .json();
    assert_eq!(cancelled["status"], "cancelled");
    op.run(&["tasks", "cancel", &s(&stop, "id")])
        .await
        .fails(INVALID, "task_finished");

    // Events, with the API's filters.
    let events = op
        .run(&[
            "--json",
            "events",
            "list",
            "--type",
            "host.",
            "--host",
            &short,
            "--page-size",
            "100",
        ])
        .await
        .json();
    let kinds: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"host.create_requested"), "{kinds:?}");
    assert!(kinds.iter().all(|k| k.starts_with("host.")), "{kinds:?}");
    let since = op
        .run(&[
            "--json",
            "events",
            "list",
            "--user",
            "alice",
            "--since",
            "2000-01-01T00:00:00Z",
        ])
        .await
        .json();
    assert!(since["total_records"].as_i64().unwrap() > 0, "{since}");
    op.run(&["events", "list", "--since", "yesterday"])
        .await
        .fails(INVALID, "invalid_query");

    // API tokens, nodes, gateways, counts.
    let token = op
        .run(&[
            "--json",
            "api-tokens",
            "create",
            "ci",
            "--expires-in-days",
            "7",
            "--scope",
            "read",
        ])
        .await
        .json();
    let secret = s(&token, "token");
    assert!(secret.starts_with("ccp_"), "{token}");
    let tokens = op.run(&["--json", "api-tokens", "list"]).await.json();
    assert_eq!(tokens["total_records"], 1);
    assert!(
        !tokens.to_string().contains(&secret),
        "a list never shows the secret"
    );
    assert!(op.run(&["--json", "nodes", "list"]).await.json()["data"].is_array());
    assert!(op.run(&["--json", "gateways", "list"]).await.json()["data"].is_array());
    assert!(op.run(&["--json", "stats"]).await.json()["users"]["total"].as_i64() >= Some(1));

    // The environment overrides the stored sign-in: a read-only token from another home.
    let ci = Cli::new()
        .with_env("CLOUD_CLI_PROXY_URL", &url)
        .with_env("CLOUD_CLI_PROXY_TOKEN", &secret);
    assert_eq!(
        ci.run(&["--json", "hosts", "list"]).await.json()["total_records"],
        1
    );
    let r = ci.run(&["hosts", "stop", &short, "--no-wait"]).await;
    r.fails(FORBIDDEN, "insufficient_scope");
    assert!(!ci.credentials().exists());
    op.run(&["--json", "api-tokens", "delete", &id(&token)])
        .await
        .ok();
    ci.run(&["hosts", "list"])
        .await
        .fails(UNAUTHORIZED, "unauthorized");

    // A tenant: its own hosts and keys through /v1/user/…; the operator's groups are refused.
    let tenant = Cli::new();
    tenant.login(&url, "alice", &alice_password).await.ok();
    assert_eq!(tenant.run(&["--json", "whoami"]).await.json()["role"], "user");
    let own = tenant.run(&["--json", "hosts", "list"]).await.json();
    assert_eq!(own["total_records"], 1);
    assert_eq!(
        tenant.run(&["--json", "hosts", "show", "dev"]).await.json()["id"],
        host_id.as_str()
    );
    assert_eq!(
        tenant.run(&["--json", "ssh-keys", "list"]).await.json()["total_records"],
        1
    );
    assert_eq!(
        tenant
            .run(&["--json", "tasks", "show", &create_task])
            .await
            .json()["id"],
        create_task.as_str()
    );
    tenant
        .run(&["hosts", "list", "--status", "running"])
        .await
        .fails(2, "usage");
    tenant.run(&["users", "list"]).await.fails(FORBIDDEN, "forbidden");
    let mine = tenant.run(&["--json", "quotas", "list"]).await.json();
    assert_eq!(
        mine.as_array().unwrap().len(),
        1,
        "the quota on the tenant's host: {mine}"
    );
    assert_eq!(
        tenant.run(&["--json", "hosts", "traffic", "dev"]).await.json()["bucket"],
        "hour"
    );
    tenant
        .run(&["quotas", "delete", &quota_id])
        .await
        .fails(FORBIDDEN, "forbidden");
    op.run(&["--json", "quotas", "delete", &quota_id]).await.ok();
    tenant
        .run(&["hosts", "stop", "dev", "--no-wait"])
        .await
        .fails(FORBIDDEN, "forbidden");
    tenant
        .run(&["events", "list"])
        .await
        .fails(FORBIDDEN, "forbidden");
    let rebuild = tenant
        .run(&["--json", "hosts", "rebuild", "dev", "--no-wait"])
        .await
        .json();
    assert_eq!(rebuild["kind"], "rebuild");

    // A tenant changes their password: the stored sign-in is renewed, the old password is dead.
    tenant
        .run_with(
            &["--json", "password", "--password-stdin"],
            Some(&format!("{alice_password}\nalice-password-2\n")),
            Duration::from_secs(60),
        )
        .await
        .ok();
    assert_eq!(
        tenant.run(&["--json", "whoami"]).await.json()["username"],
        "alice"
    );
    Cli::new()
        .login(&url, "alice", &alice_password)
        .await
        .fails(UNAUTHORIZED, "unauthorized");
    let alice_password = "alice-password-2".to_owned();

    // The second factor: asked for, then given (a recovery code, as a script would).
    let alice_api = admin_api.anonymous().login_as("alice", &alice_password).await;
    let started = alice_api
        .post("/v1/auth/totp", json!({"password": alice_password}))
        .await;
    let secret_b32 = s(started.expect(201), "secret");
    let confirmed = alice_api
        .post(
            "/v1/auth/totp/confirm",
            json!({"code": totp::code_now(&secret_b32)}),
        )
        .await;
    let recovery = confirmed.expect(200)["recovery_codes"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let second = Cli::new();
    let r = second.login(&url, "alice", &alice_password).await;
    r.fails(UNAUTHORIZED, "totp_required");
    assert!(r.stderr.contains("--totp"), "{}", r.stderr);
    second
        .run_with(
            &[
                "login",
                &url,
                "-u",
                "alice",
                "--password-stdin",
                "--totp",
                &recovery,
            ],
            Some(&format!("{alice_password}\n")),
            Duration::from_secs(60),
        )
        .await
        .ok();
    assert_eq!(
        second.run(&["--json", "whoami"]).await.json()["totp_enabled"],
        true
    );

    // Signing out forgets the token; usage errors are clap's exit 2; completions are scripts.
    op.run(&["--json", "logout"]).await.ok();
    assert!(!op.credentials().exists());
    op.run(&["whoami"]).await.fails(UNAUTHORIZED, "not_signed_in");
    let r = op.run(&["hosts", "frobnicate"]).await;
    assert_eq!(r.code, Some(2), "{r:?}");
    for shell in ["bash", "zsh", "fish"] {
        let r = op.run(&["completion", shell]).await;
        r.ok();
        assert!(r.stdout.contains("egress-ips"), "{shell}: {}", r.stdout);
    }
    // An unreachable control plane: exit 7.
    let gone = Cli::new()
        .with_env("CLOUD_CLI_PROXY_URL", "http://127.0.0.1:9")
        .with_env("CLOUD_CLI_PROXY_TOKEN", "ccp_nothing");
    gone.run(&["hosts", "list"])
        .await
        .fails(UNAVAILABLE, "unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_created_with_wait_and_ssh_through_the_gateway() {
    let (env, base, _ssh_port) = reachable_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = Node::embedded(&env).await;
    let op = Cli::new();
    op.login(&base, "admin", &node.cp.options().admin_password)
        .await
        .ok();
    let bob_password = "bob-password-1";
    op.run_with(
        &["users", "create", "bob", "--password-stdin"],
        Some(&format!("{bob_password}\n")),
        Duration::from_secs(60),
    )
    .await
    .ok();

    // On a terminal, as a person runs it: the progress bar, then the host, running.
    let cli = cloud_cli_proxy_tests::cli::cli_bin();
    let env = op.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // A terminal that redraws (the harness's is `dumb`, where indicatif shows no bar).
    env.push(("TERM", "xterm"));
    let mut term = Terminal::spawn(
        &format!(
            "stty cols 120 rows 40; {} hosts create --user bob --name box",
            cli.display()
        ),
        &env,
    );
    term.expect("%", Duration::from_secs(60)).await;
    let (code, screen) = term.wait(CREATE_LIMIT).await;
    assert_eq!(code, 0, "the terminal showed:\n{screen}\n{}", node.diagnostics());
    assert!(screen.contains("create ["), "a progress bar: {screen}");
    assert!(screen.contains("SSH password (shown only now)"), "{screen}");
    let host = op.run(&["--json", "hosts", "show", "box"]).await.json();
    assert_eq!(host["status"], "running", "{host}");
    let short = s(&host, "short_id");

    // The operator runs a command in bob's host.
    let r = op
        .run_with(
            &["ssh", &short, "--", "echo", "MARKER-$((6*7))"],
            None,
            Duration::from_secs(120),
        )
        .await;
    r.ok();
    assert!(r.stdout.contains("MARKER-42"), "{r:?}");

    // While `ssh` runs, the secret is in its environment (for the askpass call back), and in no
    // process's command line.
    let login = format!("bob+{short}");
    let args = ["ssh", &short, "--", "sleep", "3"];
    let running = op.run_with(&args, None, Duration::from_secs(120));
    let seen = eventually(Duration::from_secs(60), "ssh running", || async {
        ssh_process(&login)
    });
    let (r, secret) = tokio::join!(running, seen);
    r.ok();
    assert_eq!(secret.len(), 40, "the askpass secret: {secret:?}");

    // Bob stops his host through the operator (no tenant stop route), then `ssh` with no host
    // named (he has one) starts it again and runs the command.
    let stopped = op
        .run_with(&["--json", "hosts", "stop", "box"], None, CREATE_LIMIT)
        .await
        .json();
    assert_eq!(stopped["status"], "succeeded", "{stopped}");
    let bob = Cli::new();
    bob.login(&base, "bob", bob_password).await.ok();
    let r = bob
        .run_with(&["ssh", "--", "cat", "/etc/hostname"], None, CREATE_LIMIT)
        .await;
    r.ok();
    assert!(r.stderr.contains("starting the host"), "{r:?}");
    assert!(
        r.stderr.contains("start [") && r.stderr.contains("start succeeded"),
        "progress lines off a terminal: {r:?}"
    );
    assert!(!r.stdout.trim().is_empty(), "{r:?}");

    // What was recorded: who asked for each secret, and logins marked as the CLI's.
    let events = node
        .admin
        .get(&format!(
            "/v1/admin/events?host_id={}&page_size=200",
            s(&host, "id")
        ))
        .await;
    let events = events.expect(200)["data"].as_array().unwrap().clone();
    let issued: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "host.ssh_session_issued")
        .collect();
    let actors: Vec<&str> = issued.iter().map(|e| e["actor_name"].as_str().unwrap()).collect();
    assert_eq!(actors, ["bob", "admin", "admin"], "newest first: {issued:?}");
    let logins: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "ssh.login_succeeded" && e["details"]["via"] == "cli")
        .collect();
    assert_eq!(logins.len(), 3, "{events:?}");
    assert_eq!(logins[2]["details"]["opened_by"], "admin");
    assert_eq!(logins[0]["details"]["opened_by"], "bob");
    // A session's secret is single-use and never logged.
    let session = bob.run(&["--json", "ssh"]).await.json();
    let secret = s(&session, "secret");
    assert_eq!(secret.len(), 40);
    assert_eq!(session["ssh_user"], format!("bob+{short}").as_str());
    assert!(!node.cp.logs().contains(&secret));

    // Deleting waits until the container, volumes and files are gone.
    let deleted = op
        .run_with(&["--json", "hosts", "delete", "box"], None, CREATE_LIMIT)
        .await
        .json();
    assert_eq!(deleted["status"], "succeeded", "{deleted}");
    op.run(&["hosts", "show", &short])
        .await
        .fails(NOT_FOUND, "not_found");
}
