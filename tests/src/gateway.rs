//! The real OpenSSH client against the SSH gateway: password logins through `sshpass -e` (the
//! password in the environment, never on a command line), key logins with a key file or an agent,
//! and tenants with a known password and a running host to log in to.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use crate::docker::Out;
use crate::hosts::{CREATE_LIMIT, NewHost};
use crate::node::Node;

/// How the client proves who it is.
#[derive(Debug, Clone)]
pub enum Login {
    Password(String),
    /// A private key file, and nothing else.
    KeyFile(PathBuf),
    /// The keys of the agent at this socket, and nothing else.
    Agent(PathBuf),
}

/// A tenant with a known password and a running host.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub username: String,
    pub password: String,
    pub host: NewHost,
}

impl Tenant {
    /// `username+shortid`, the login that names this host.
    pub fn login(&self) -> String {
        format!("{}+{}", self.username, self.host.short_id)
    }
}

impl Node {
    /// A tenant with a known password and a host of theirs, created and running.
    pub async fn tenant(&self, username: &str) -> Tenant {
        let password = format!("pw-{}", crate::fixtures::random_alnum(16));
        let user = self
            .admin
            .post(
                "/v1/admin/users",
                json!({ "username": username, "password": password }),
            )
            .await;
        let user_id = crate::fixtures::id(user.expect(201));
        let host = self.create_host(&user_id).await;
        self.task_succeeded(&host.task_id, CREATE_LIMIT, "create").await;
        Tenant {
            username: username.to_owned(),
            password,
            host,
        }
    }

    /// An `ssh` command to the gateway as `login`, ready for more arguments (options, then the
    /// command to run).
    pub fn gateway_ssh(&self, login: &str, how: &Login) -> tokio::process::Command {
        ssh_command(self.cp.ssh_port(), login, how, "ssh")
    }
}

/// Options every client run uses: no config files, no host-key prompts, short time-outs.
fn common_options(program: &str, port: u16) -> Vec<String> {
    let port_flag = if program == "ssh" { "-p" } else { "-P" };
    let mut args: Vec<String> = ["-F", "/dev/null", port_flag]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(port.to_string());
    for opt in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "ConnectTimeout=15",
        "ServerAliveInterval=10",
        "LogLevel=ERROR",
    ] {
        args.push("-o".to_owned());
        args.push(opt.to_owned());
    }
    args
}

fn auth_options(how: &Login) -> Vec<String> {
    let mut args = Vec::new();
    let mut opt = |o: &str| {
        args.push("-o".to_owned());
        args.push(o.to_owned());
    };
    match how {
        Login::Password(_) => {
            opt("PubkeyAuthentication=no");
            opt("PreferredAuthentications=password");
            opt("NumberOfPasswordPrompts=1");
        }
        Login::KeyFile(path) => {
            opt("PasswordAuthentication=no");
            opt("PreferredAuthentications=publickey");
            opt("IdentitiesOnly=yes");
            opt("IdentityAgent=none");
            args.push("-i".to_owned());
            args.push(path.display().to_string());
        }
        Login::Agent(_) => {
            opt("PasswordAuthentication=no");
            opt("PreferredAuthentications=publickey");
        }
    }
    args
}

/// `program` (`ssh`, `scp` or `sftp`) with the common and authentication options. For `ssh` the
/// destination is appended (as `login@127.0.0.1`); `scp` and `sftp` callers add their operands.
pub fn ssh_command(port: u16, login: &str, how: &Login, program: &str) -> tokio::process::Command {
    build_command(port, login, how, program, None)
}

/// `ssh` to the gateway as `login` from the loopback address `from` (any of 127.0.0.0/8), so a test
/// can log in as several clients.
pub fn ssh_from(port: u16, login: &str, how: &Login, from: std::net::IpAddr) -> tokio::process::Command {
    build_command(port, login, how, "ssh", Some(from))
}

fn build_command(
    port: u16,
    login: &str,
    how: &Login,
    program: &str,
    from: Option<std::net::IpAddr>,
) -> tokio::process::Command {
    let mut cmd = match how {
        Login::Password(password) => {
            let mut c = tokio::process::Command::new("sshpass");
            c.env("SSHPASS", password).arg("-e").arg(program);
            c
        }
        _ => tokio::process::Command::new(program),
    };
    cmd.env_remove("SSH_AUTH_SOCK");
    if let Login::Agent(sock) = how {
        cmd.env("SSH_AUTH_SOCK", sock);
    }
    cmd.args(common_options(program, port)).args(auth_options(how));
    if let Some(from) = from {
        cmd.arg("-b").arg(from.to_string());
    }
    if program == "ssh" {
        cmd.arg(format!("{login}@127.0.0.1"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `cmd`, feeding `stdin` if given, and collects its output; panics if it runs past `limit`.
pub async fn output(mut cmd: tokio::process::Command, stdin: Option<&[u8]>, limit: Duration) -> Out {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let shown = format!("{:?}", cmd.as_std());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
            let _ = pipe.shutdown().await;
        });
    }
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{shown}: still running after {limit:?}"))
        .expect("wait for the client");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The program and arguments of `cmd`, as text.
pub fn argv(cmd: &tokio::process::Command) -> Vec<String> {
    let std = cmd.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// `args` as one shell command line, each argument single-quoted.
pub fn shell_line(args: &[String]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    quoted.join(" ")
}

/// A `sshpass -e ssh -tt …` command line (password from `SSHPASS`) that logs in to the gateway
/// with a terminal, running `remote` if given, for a terminal program (`script`, tmux) to run.
pub fn terminal_login(node: &Node, tenant: &Tenant, remote: Option<&str>) -> String {
    let mut line = argv(&node.gateway_ssh(&tenant.login(), &Login::Password(tenant.password.clone())));
    // sshpass -e ssh -tt …
    line.insert(3, "-tt".into());
    line.extend(remote.map(str::to_owned));
    shell_line(&line)
}

/// A standalone `cloud-cli-proxy-ssh-proxy` process (the control plane's own gateway turned off).
/// Dropping it kills the process.
pub struct GatewayProcess {
    child: std::process::Child,
    logs: crate::process::Logs,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl std::fmt::Debug for GatewayProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayProcess")
            .field("port", &self.port)
            .finish()
    }
}

impl GatewayProcess {
    /// The gateway command: enrolling with `enrolment_key` under `name` unless `state_dir` holds a
    /// credential already, with further variables `env` (`CONTROL_PLANE_CA_FILE`, …).
    fn command(
        control_plane_url: &str,
        enrolment_key: &str,
        name: &str,
        state_dir: &Path,
        env: &[(&str, &str)],
    ) -> std::process::Command {
        let bin = crate::process::bin_dir().join("cloud-cli-proxy-ssh-proxy");
        assert!(
            bin.is_file(),
            "{} does not exist: run `cargo build --workspace --bins`",
            bin.display()
        );
        let mut cmd = std::process::Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CONTROL_PLANE_URL", control_plane_url)
            .env("ENROLMENT_KEY", enrolment_key)
            .env("SSH_PROXY_STATE_DIR", state_dir)
            .env("SSH_PROXY_ADDR", "127.0.0.1:0")
            .env("GATEWAY_NAME", name)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs a gateway that is expected to stop on its own (a refused enrolment) within 30 s;
    /// answers its exit status and output.
    pub async fn run_to_exit(
        control_plane_url: &str,
        enrolment_key: &str,
        name: &str,
        state_dir: &Path,
    ) -> (std::process::ExitStatus, String) {
        let mut cmd = Self::command(control_plane_url, enrolment_key, name, state_dir, &[]);
        let child = cmd.spawn().expect("spawn the ssh gateway");
        let waited = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || child.wait_with_output()),
        )
        .await
        .expect("the gateway to stop within 30 s")
        .expect("join")
        .expect("wait for the gateway");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&waited.stdout),
            String::from_utf8_lossy(&waited.stderr)
        );
        (waited.status, text)
    }

    /// Starts a gateway named `name` for the control plane at `control_plane_url`, enrolling with
    /// `enrolment_key` unless `state_dir` already holds its credential (and keys); waits until it
    /// listens and, when `registered`, until it is registered.
    pub async fn start(
        control_plane_url: &str,
        enrolment_key: &str,
        name: &str,
        state_dir: &Path,
        registered: bool,
    ) -> Self {
        Self::start_with(control_plane_url, enrolment_key, name, state_dir, registered, &[]).await
    }

    /// [`GatewayProcess::start`] with further variables (`CONTROL_PLANE_CA_FILE`, …).
    pub async fn start_with(
        control_plane_url: &str,
        enrolment_key: &str,
        name: &str,
        state_dir: &Path,
        registered: bool,
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Self::command(control_plane_url, enrolment_key, name, state_dir, env)
            .spawn()
            .expect("spawn the ssh gateway");
        let logs = crate::process::Logs::default();
        logs.drain(child.stdout.take().expect("stdout"));
        logs.drain(child.stderr.take().expect("stderr"));
        let port = crate::eventually(Duration::from_secs(30), "the gateway to listen", || {
            let text = logs.text();
            async move { listening_port(&text) }
        })
        .await;
        if registered {
            crate::eventually(Duration::from_secs(30), "the gateway to register", || {
                let text = logs.text();
                async move { text.contains("registered with the control plane").then_some(()) }
            })
            .await;
        }
        Self { child, logs, port }
    }

    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// `kill -9`, and reaped: the gateway stops without a word to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port in the gateway's `ssh gateway listening` JSON log line.
fn listening_port(logs: &str) -> Option<u16> {
    logs.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v.get("message")?.as_str()? != "ssh gateway listening" {
            return None;
        }
        let addr: std::net::SocketAddr = v.get("addr")?.as_str()?.parse().ok()?;
        Some(addr.port())
    })
}
