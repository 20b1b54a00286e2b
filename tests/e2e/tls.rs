//! The control plane serving HTTPS itself (`TLS_CERT_FILE`, `TLS_KEY_FILE`) with a CA and server
//! certificates made at test time: the API, HSTS and `Secure` cookies over HTTPS, plain HTTP and
//! untrusted clients refused, a standalone gateway trusting the CA through `CONTROL_PLANE_CA_FILE`,
//! the certificate reloaded on SIGHUP under an open connection, and `curl … | bash` of the
//! bootstrap script over HTTPS ending in a shell in a real host.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_cli_proxy_tests::access::{free_port, pipe_to_bash};
use cloud_cli_proxy_tests::gateway::GatewayProcess;
use cloud_cli_proxy_tests::tls::{Connection, TestCa};
use cloud_cli_proxy_tests::{ControlPlane, Node, Options, eventually};
use serde_json::json;

const PROMPT: Duration = Duration::from_secs(30);
/// The start-up warning about plain HTTP beyond loopback.
const PLAIN_WARNING: &str = "serving plain HTTP beyond loopback";

/// A CA and a server certificate it signed, in a temporary directory.
struct Pki {
    ca: TestCa,
    cert: PathBuf,
    key: PathBuf,
    /// The server certificate (DER).
    issued: Vec<u8>,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path());
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        let issued = ca.issue(&cert, &key);
        Self {
            ca,
            cert,
            key,
            issued,
            dir,
        }
    }

    /// Options serving HTTPS with this certificate, dialled trusting this CA.
    fn options(&self, opts: Options) -> Options {
        Options {
            tls_ca_file: Some(self.ca.file.clone()),
            ..opts
        }
        .env("TLS_CERT_FILE", self.cert.display())
        .env("TLS_KEY_FILE", self.key.display())
    }
}

fn curl(args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut cmd = std::process::Command::new("curl");
    cmd.env_remove("CURL_CA_BUNDLE")
        .env_remove("SSL_CERT_FILE")
        .args(["-sS", "--max-time", "20", "--noproxy", "*"])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run curl")
}

#[tokio::test]
async fn https_api_with_hsts_secure_cookies_and_no_plain_http() {
    let pki = Pki::new();
    let entry_port = free_port();
    let opts = pki
        .options(Options::new())
        .env("ENTRY_ADDR", format!("127.0.0.1:{entry_port}"))
        // Every interface: HTTPS there is nothing to warn about.
        .env("CONTROL_PLANE_ADDR", "0.0.0.0:0");
    let cp = ControlPlane::start(opts).await;
    assert!(cp.base_url().starts_with("https://"), "{}", cp.base_url());
    assert!(!cp.logs().contains(PLAIN_WARNING), "{}", cp.logs());

    let admin = cp.admin().await;
    let health = admin.get("/healthz").await;
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(
        health.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let user = admin
        .post(
            "/v1/admin/users",
            json!({"username": "alice", "password": "alice-Passw0rd-long-enough"}),
        )
        .await;
    assert_eq!(user.status, 201, "{}", user.text);

    // Browser sign-in: the session cookie is `Secure` (and so takes the `__Host-` name).
    let session = cp
        .api()
        .post(
            "/v1/auth/session",
            json!({"username": "alice", "password": "alice-Passw0rd-long-enough"}),
        )
        .await;
    assert_eq!(session.status, 200, "{}", session.text);
    let cookie = session.header("set-cookie").unwrap_or_default().to_owned();
    assert!(cookie.starts_with("__Host-"), "{cookie}");
    assert!(cookie.ends_with("; Secure"), "{cookie}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .get(format!("http://{}/healthz", cp.addr()))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // curl verifies the certificate: refused without the CA, served with it.
    let url = format!("{}/healthz", cp.base_url());
    let untrusted = curl(&["-f", &url], &[]);
    assert_eq!(untrusted.status.code(), Some(60), "{untrusted:?}");
    let trusted = curl(&["-f", &url], &[("CURL_CA_BUNDLE", &pki.ca.file)]);
    assert!(trusted.status.success(), "{trusted:?}");

    // The entry listener speaks HTTPS with the same certificate, and only HTTPS.
    let entry = format!("https://localhost:{entry_port}/v1/bootstrap/script");
    let script = curl(&["-f", &entry], &[("CURL_CA_BUNDLE", &pki.ca.file)]);
    assert!(script.status.success(), "{script:?}");
    assert!(String::from_utf8_lossy(&script.stdout).contains("CCP_URL="));
    let plain_entry = format!("http://127.0.0.1:{entry_port}/v1/bootstrap/script");
    assert!(!curl(&["-f", &plain_entry], &[]).status.success());

    // A gateway of its own verifies the control plane with CONTROL_PLANE_CA_FILE.
    let state = tempfile::tempdir().unwrap();
    let ca = pki.ca.file.display().to_string();
    let gateway_key = cloud_cli_proxy_tests::enrolment::key(&admin, "gateway", 1).await;
    let gateway = GatewayProcess::start_with(
        &cp.base_url(),
        &gateway_key,
        "tls-gateway",
        state.path(),
        true,
        &[("CONTROL_PLANE_CA_FILE", &ca)],
    )
    .await;
    drop(gateway);
    drop(pki.dir);
}

#[tokio::test]
async fn plain_http_beyond_loopback_warns_once_and_sends_no_hsts_nor_secure_cookie() {
    let cp = ControlPlane::start(Options::new().env("CONTROL_PLANE_ADDR", "0.0.0.0:0")).await;
    let warnings = cp
        .logs()
        .lines()
        .filter(|l| l.contains(PLAIN_WARNING) && l.contains("WARN"))
        .count();
    assert_eq!(warnings, 1, "{}", cp.logs());
    let admin = cp.admin().await;
    let health = admin.get("/healthz").await;
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(health.header("strict-transport-security"), None);
    let session = cp
        .api()
        .post(
            "/v1/auth/session",
            json!({"username": "admin", "password": cp.options().admin_password}),
        )
        .await;
    assert_eq!(session.status, 200, "{}", session.text);
    let cookie = session.header("set-cookie").unwrap_or_default();
    assert!(!cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn one_tls_file_alone_is_a_one_line_config_error() {
    for (set, missing) in [
        ("TLS_CERT_FILE", "TLS_KEY_FILE"),
        ("TLS_KEY_FILE", "TLS_CERT_FILE"),
    ] {
        let opts = Options::new().env(set, "/nonexistent.pem");
        let (status, logs) = ControlPlane::start_failing(opts).await;
        assert_eq!(status.code(), Some(2), "{logs}");
        let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{logs}");
        assert!(lines[0].contains(set) && lines[0].contains(missing), "{logs}");
    }
}

/// Waits for a log line of the running process with this message.
async fn logged(cp: &ControlPlane, message: &str, after: usize) {
    eventually(Duration::from_secs(20), message, || {
        let logs = cp.logs();
        let found = logs
            .get(after..)
            .is_some_and(|l| l.contains(&format!("\"message\":\"{message}")));
        async move { found.then_some(()) }
    })
    .await;
}

fn hangup(cp: &ControlPlane) {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &cp.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let pki = Pki::new();
    let cp = ControlPlane::start(pki.options(Options::new())).await;
    let ca = pki.ca.pem();
    let mut open = Connection::open(cp.addr(), &ca).await;
    assert_eq!(open.certificate(), pki.issued);
    assert_eq!(open.get("/healthz").await.0, 200);

    // A broken key: logged, and the old certificate stays.
    std::fs::write(&pki.key, "not a key\n").unwrap();
    let mark = cp.logs().len();
    hangup(&cp);
    logged(&cp, "TLS certificate not reloaded", mark).await;
    assert_eq!(Connection::open(cp.addr(), &ca).await.certificate(), pki.issued);

    // A new pair: new handshakes get it, the open connection carries on.
    let next = pki.ca.issue(&pki.cert, &pki.key);
    assert_ne!(next, pki.issued);
    let mark = cp.logs().len();
    hangup(&cp);
    logged(&cp, "TLS certificate reloaded", mark).await;
    assert_eq!(Connection::open(cp.addr(), &ca).await.certificate(), next);
    let (status, head) = open.get("/healthz").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(open.certificate(), pki.issued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_script_over_https_opens_a_shell_in_the_host() {
    let pki = Pki::new();
    let port = free_port();
    let base = format!("https://localhost:{port}");
    let ssh_port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let ssh_addr = format!("127.0.0.1:{ssh_port}");
    let env = [
        ("CONTROL_PLANE_ADDR", listen.as_str()),
        ("PUBLIC_BASE_URL", base.as_str()),
        ("SSH_PROXY_ADDR", ssh_addr.as_str()),
    ];
    let mut node = Node::embedded_with(pki.options(Options::new()), &env).await;
    let host = node.running_host("alice").await;
    let password = node
        .admin
        .post(&format!("/v1/admin/users/{}/rotate-password", host.user_id), None)
        .await
        .expect(200)["password"]
        .as_str()
        .unwrap()
        .to_owned();

    // The script the server hands out talks to the https:// base.
    let script = node.cp.api().get("/v1/bootstrap/script").await;
    assert!(
        script.text.contains(&format!("CCP_URL='{base}'")),
        "{}",
        script.text
    );

    let home = tempfile::tempdir().unwrap();
    let ca = pki.ca.file.display().to_string();
    let env = [
        ("HOME", home.path().to_str().unwrap()),
        // The usual way to hand curl a private CA; the script's own curl calls inherit it.
        ("CURL_CA_BUNDLE", ca.as_str()),
    ];
    let mut term = pipe_to_bash(&format!("{base}/v1/bootstrap/script"), &env);
    term.expect("Username: ", PROMPT).await;
    term.send_line("alice");
    term.expect("Password: ", PROMPT).await;
    term.send_line(&password);
    term.expect("connecting to ", PROMPT).await;
    term.expect("alice@", Duration::from_secs(60)).await;
    term.send_line("printf 'in-%s\\n' \"$(cat /etc/hostname)\"-$((6*7))");
    let container = node.host_container(&host.short_id);
    let hostname = cloud_cli_proxy_tests::docker::exec_root(&container, &["cat", "/etc/hostname"]).await;
    term.expect(&format!("in-{}-42", hostname.stdout.trim()), PROMPT)
        .await;
    term.send_line("exit");
    let (code, screen) = term.wait(PROMPT).await;
    assert_eq!(code, 0, "the terminal showed:\n{screen}\n{}", node.diagnostics());

    // Both listeners and the agent's and gateway's loopback one wind down on SIGTERM.
    let status = node.cp.stop().await;
    assert!(
        status.success(),
        "graceful stop: {status}\n{}",
        node.diagnostics()
    );
}
