//! Who gets in through the gateway: wrong passwords and unknown keys are refused and recorded,
//! repeated failures lock the account for a while, a stopped host answers with a message instead
//! of a hang, and every session is recorded with its bytes and duration.

use std::time::Duration;

use cloud_cli_proxy_tests::gateway::{Login, output, ssh_from};
use cloud_cli_proxy_tests::{Node, eventually};
use cloud_cli_proxy_tests::{docker, fixtures};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

/// Events of `kind` about `host_id`, newest first.
async fn events(node: &Node, kind: &str, host_or_user: (&str, &str)) -> Vec<Value> {
    let (filter, id) = host_or_user;
    let r = node
        .admin
        .get(&format!(
            "/v1/admin/events?type={kind}&{filter}={id}&page_size=100"
        ))
        .await;
    r.expect(200)
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

async fn has_event(node: &Node, kind: &str, by: (&str, &str), want: impl Fn(&Value) -> bool) -> Value {
    let want = &want;
    eventually(Duration::from_secs(10), &format!("event {kind}"), || async move {
        events(node, kind, by).await.into_iter().find(|e| want(e))
    })
    .await
}

fn reason(e: &Value) -> &str {
    e["details"]["reason"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_are_recorded_and_limited() {
    let node = Node::embedded(&[("LOGIN_MAX_FAILURES_PER_ACCOUNT", "3")]).await;
    let ida = node.tenant("ida").await;
    let user = ("user_id", ida.host.user_id.as_str());

    let mut cmd = node.gateway_ssh(&ida.login(), &Login::Password("not-the-password".into()));
    cmd.arg("true");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(out.code, Some(255), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    has_event(&node, "ssh.login_failed", user, |e| reason(e) == "wrong_password").await;

    // A key the account does not have: refused at the offer, and recorded.
    let dir = tempfile::tempdir().unwrap();
    let stranger = fixtures::ssh_keygen(dir.path(), "id_stranger").private_path;
    let mut cmd = node.gateway_ssh(&ida.login(), &Login::KeyFile(stranger));
    cmd.arg("true");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(out.code, Some(255), "{out:?}");
    has_event(&node, "ssh.login_failed", user, |e| reason(e) == "unknown_key").await;

    // A short id that is not this user's.
    let mut cmd = node.gateway_ssh("ida+zzzzzzzz", &Login::Password(ida.password.clone()));
    cmd.arg("true");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(out.code, Some(255), "{out:?}");
    has_event(&node, "ssh.login_failed", user, |e| reason(e) == "no_such_host").await;

    // Two more wrong passwords reach the limit of 3: now even the right one is refused.
    for _ in 0..2 {
        let mut cmd = node.gateway_ssh(&ida.login(), &Login::Password("wrong-again".into()));
        cmd.arg("true");
        assert_eq!(output(cmd, None, LIMIT).await.code, Some(255));
    }
    let mut cmd = node.gateway_ssh(&ida.login(), &Login::Password(ida.password.clone()));
    cmd.arg("echo in");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(out.code, Some(255), "the limit did not hold: {out:?}");
    let limited = node
        .admin
        .get("/v1/admin/events?type=ssh.login_failed&page_size=100")
        .await;
    let limited = limited.expect(200)["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        limited.iter().any(|e| reason(e) == "rate_limited"),
        "no rate_limited event: {limited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strangers_cannot_lock_the_owner_out_of_ssh() {
    let node = Node::embedded(&[]).await;
    let erin = node.tenant("erin").await;
    let port = node.cp.ssh_port();
    let from = |c: u8| std::net::IpAddr::from([127, 0, 5, c]);
    let login = |c: u8, password: &str| {
        let mut cmd = ssh_from(
            port,
            &erin.login(),
            &Login::Password(password.to_owned()),
            from(c),
        );
        cmd.arg("echo in");
        cmd
    };
    // The owner logs in from .2 once: a client the account knows from then on.
    let out = output(login(2, &erin.password), None, LIMIT).await;
    assert_eq!(out.stdout.trim(), "in", "{out:?}");
    // 30 wrong passwords from 30 other addresses: the account-wide limit (20) stops the guessing.
    for c in 10..40 {
        assert_eq!(
            output(login(c, "a-wrong-guess"), None, LIMIT).await.code,
            Some(255)
        );
    }
    let user = ("user_id", erin.host.user_id.as_str());
    has_event(&node, "ssh.login_failed", user, |e| reason(e) == "rate_limited").await;
    // A guessing address, and a new one, are held even with the right password…
    for c in [10, 99] {
        let out = output(login(c, &erin.password), None, LIMIT).await;
        assert_eq!(out.code, Some(255), "from .{c}: {out:?}");
    }
    // …the owner's own client is not.
    let out = output(login(2, &erin.password), None, LIMIT).await;
    assert_eq!(out.stdout.trim(), "in", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_reaches_only_the_host_with_the_pinned_key() {
    let node = Node::embedded(&[]).await;
    let fay = node.tenant("fay").await;
    let pw = Login::Password(fay.password.clone());
    let login = || {
        let mut cmd = node.gateway_ssh(&fay.login(), &pw);
        cmd.arg("echo in");
        cmd
    };
    let out = output(login(), None, LIMIT).await;
    assert_eq!(out.stdout.trim(), "in", "{out:?}");
    // The key the agent made is in the host, and kept in the agent's files (never in the image).
    let container = node.host_container(&fay.host.short_id);
    let served = docker::exec_root(
        &container,
        &[
            "ssh-keygen",
            "-y",
            "-f",
            "/etc/ssh/host-keys/ssh_host_ed25519_key",
        ],
    )
    .await;
    let kept =
        std::fs::read_to_string(node.host_files(&fay.host.id).join("ssh_host_ed25519_key.pub")).unwrap();
    let fields = |line: &str| line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(fields(&served.stdout), fields(&kept), "{served:?}");

    // Root in the host (the tenant) gives sshd another key: whatever answers at the host's
    // address is no longer the pinned host, and the gateway does not log in there.
    let swap = "rm -f /etc/ssh/host-keys/ssh_host_ed25519_key* && \
        ssh-keygen -q -t ed25519 -N '' -C '' -f /etc/ssh/host-keys/ssh_host_ed25519_key && \
        pkill -HUP -x sshd";
    let r = docker::exec_root(&container, &["bash", "-c", swap]).await;
    assert!(r.success(), "{r:?}");
    let user = ("user_id", fay.host.user_id.as_str());
    let refused = eventually(LIMIT, "the gateway refuses the changed host key", || async {
        let out = output(login(), None, LIMIT).await;
        (!out.stdout.contains("in")).then_some(out)
    })
    .await;
    assert_ne!(refused.code, Some(0), "{refused:?}");
    has_event(&node, "ssh.session_failed", user, |e| {
        e["details"]["error"]
            .as_str()
            .is_some_and(|m| m.contains("host key"))
    })
    .await;

    // A rebuild puts the pinned key back (the agent keeps it), and logins work again.
    let task = node.host_action(&fay.host.id, "rebuild").await;
    node.task_succeeded(&task, Duration::from_secs(180), "rebuild")
        .await;
    let out = output(login(), None, LIMIT).await;
    assert_eq!(out.stdout.trim(), "in", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_sessions_and_stopped_hosts() {
    let node = Node::embedded(&[]).await;
    let joan = node.tenant("joan").await;
    let host = ("host_id", joan.host.id.as_str());
    let dir = tempfile::tempdir().unwrap();
    let fixtures::SshKeyPair {
        private_path: key,
        public_line: public,
        ..
    } = fixtures::ssh_keygen(dir.path(), "id_joan");
    node.admin
        .post(
            &format!("/v1/admin/users/{}/ssh-keys", joan.host.user_id),
            json!({ "public_key": public }),
        )
        .await
        .expect(201);

    let mut cmd = node.gateway_ssh(&joan.login(), &Login::KeyFile(key.clone()));
    cmd.arg("head -c 5000 /dev/zero");
    let out = output(cmd, Some(b"ignored"), LIMIT).await;
    assert!(out.success(), "key login: {out:?}");
    assert_eq!(out.stdout.len(), 5000);

    let ok = has_event(&node, "ssh.login_succeeded", host, |e| {
        e["details"]["method"] == "publickey"
    })
    .await;
    let connection = ok["details"]["connection_id"].as_str().unwrap().to_owned();
    has_event(&node, "ssh.session_started", host, |e| {
        e["details"]["connection_id"] == connection.as_str()
    })
    .await;
    let ended = has_event(&node, "ssh.session_ended", host, |e| {
        e["details"]["connection_id"] == connection.as_str()
    })
    .await;
    assert!(ended["details"]["bytes_out"].as_u64().unwrap() >= 5000, "{ended}");
    assert!(ended["details"]["duration_ms"].as_u64().is_some(), "{ended}");

    // A stopped host: the login works, the session says why it cannot go on, at once.
    let task = node.host_action(&joan.host.id, "stop").await;
    node.task_succeeded(&task, LIMIT, "stop").await;
    let started = std::time::Instant::now();
    let mut cmd = node.gateway_ssh(&joan.login(), &Login::KeyFile(key));
    cmd.arg("true");
    let out = output(cmd, None, LIMIT).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("is stopped"), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    has_event(&node, "ssh.session_failed", host, |_| true).await;
}
