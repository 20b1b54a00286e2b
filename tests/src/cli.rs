//! The `cloud-cli-proxy` command-line client run as a user runs it: the real binary, a home
//! directory of its own (where `login` keeps its token), and nothing from the test's environment
//! that would sign it in.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::process::bin_dir;

/// How long one CLI command may run (a `--wait` on a host task is given its own limit).
const RUN_LIMIT: Duration = Duration::from_secs(60);

pub fn cli_bin() -> PathBuf {
    let bin = bin_dir().join("cloud-cli-proxy");
    assert!(
        bin.is_file(),
        "{} does not exist: run `cargo build --workspace --bins` first (or set CCP_BIN_DIR)",
        bin.display()
    );
    bin
}

/// What one run printed, and how it ended.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit status 0 and returns standard output parsed as JSON.
    pub fn json(&self) -> Value {
        self.ok();
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{:?}: stdout is not JSON ({e}):\n{}", self.args, self.stdout))
    }

    /// Asserts exit status 0.
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "{:?} failed:\nstdout: {}\nstderr: {}",
            self.args,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts the exit status and the one error line on stderr (`error: CODE: …`).
    pub fn fails(&self, code: i32, error_code: &str) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{:?}: want exit {code}:\nstdout: {}\nstderr: {}",
            self.args,
            self.stdout,
            self.stderr
        );
        let prefix = format!("error: {error_code}: ");
        assert!(
            self.stderr.lines().any(|l| l.starts_with(&prefix)),
            "{:?}: want `{prefix}…` on stderr, got:\n{}",
            self.args,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "{:?} panicked:\n{}",
            self.args,
            self.stderr
        );
        self
    }
}

/// One user of the CLI: a home directory and the environment their shell would have.
#[derive(Debug)]
pub struct Cli {
    home: TempDir,
    env: Vec<(String, String)>,
}

impl Default for Cli {
    fn default() -> Self {
        Self::new()
    }
}

impl Cli {
    pub fn new() -> Self {
        Self {
            home: tempfile::Builder::new()
                .prefix("ccp-cli-home-")
                .tempdir()
                .expect("home directory"),
            env: Vec::new(),
        }
    }

    /// Adds a variable to every run (e.g. `CLOUD_CLI_PROXY_TOKEN`).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Where `login` keeps the token.
    pub fn credentials(&self) -> PathBuf {
        self.home().join(".config/cloud-cli-proxy/credentials.json")
    }

    /// The command with this user's environment, for running it another way (on a terminal).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("HOME".to_owned(), self.home().display().to_string())];
        env.extend(self.env.iter().cloned());
        env
    }

    /// Runs the CLI with `args`, `stdin` on its standard input (else nothing), within `limit`.
    pub async fn run_with(&self, args: &[&str], stdin: Option<&str>, limit: Duration) -> Run {
        let mut cmd = tokio::process::Command::new(cli_bin());
        cmd.args(args)
            .env_remove("CLOUD_CLI_PROXY_URL")
            .env_remove("CLOUD_CLI_PROXY_TOKEN")
            .env_remove("CLOUD_CLI_PROXY_CA_FILE")
            .env_remove("XDG_CONFIG_HOME")
            .envs(self.env())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("run cloud-cli-proxy");
        if let Some(input) = stdin {
            use tokio::io::AsyncWriteExt as _;
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).await.unwrap();
            drop(pipe);
        }
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("cloud-cli-proxy {args:?} ran past {limit:?}"))
            .expect("wait for cloud-cli-proxy");
        Run {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None, RUN_LIMIT).await
    }

    /// `login URL --username U --password-stdin`.
    pub async fn login(&self, url: &str, username: &str, password: &str) -> Run {
        self.run_with(
            &["login", url, "--username", username, "--password-stdin"],
            Some(&format!("{password}\n")),
            RUN_LIMIT,
        )
        .await
    }
}
