//! `ssh`: a single-use secret from `POST /v1/{admin,user}/hosts/{id}/ssh-session`, then OpenSSH's
//! `ssh` through the gateway in place of this process. The secret reaches `ssh` through its
//! SSH_ASKPASS helper, which is this program called back with the secret in its environment, so
//! it is never on a command line (`ps`) nor in a file.

use std::io::{IsTerminal as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Ctx;
use crate::args::SshArgs;
use crate::error::{Error, Result, exit};
use crate::output;

use super::tasks;

/// Set for the askpass call: the secret to answer with.
const SECRET_VAR: &str = "CLOUD_CLI_PROXY_SSH_SECRET";
/// Set for the askpass call, so that a secret left in someone's environment never turns an
/// ordinary run of the program into one that prints it.
const ASKPASS_VAR: &str = "CLOUD_CLI_PROXY_ASKPASS";
/// How long a host that is being created may take to come up before `ssh` gives up.
const COME_UP: Duration = Duration::from_secs(600);

/// When called back by `ssh` as its askpass helper: prints the secret and says how to exit.
pub fn askpass() -> Option<ExitCode> {
    if std::env::var_os(ASKPASS_VAR).is_none_or(|v| v != "1") {
        return None;
    }
    let secret = std::env::var(SECRET_VAR).ok()?;
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{secret}").and_then(|()| out.flush());
    Some(if written.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn ssh(ctx: &Ctx, args: SshArgs) -> Result<()> {
    let api = &ctx.api;
    let mut host = match &args.host {
        Some(wanted) => super::host(api, wanted)?,
        None => only_host(&super::visible_hosts(api)?)?,
    };
    let id = host["id"].as_str().unwrap_or_default().to_owned();
    host = running(ctx, &id, host)?;
    let session = api.post(&api.scoped(&format!("/hosts/{id}/ssh-session"))?, None)?;
    if ctx.out.json {
        // For scripts that run their own client: the session as the API gave it.
        return ctx.out.json(&session);
    }
    let text = |k: &str| session[k].as_str().unwrap_or_default().to_owned();
    let (ssh_host, user, secret) = (text("ssh_host"), text("ssh_user"), text("secret"));
    let port = session["ssh_port"].as_u64().unwrap_or(2222);
    if secret.is_empty() || user.is_empty() || ssh_host.is_empty() {
        return Err(Error::local(
            "bad_response",
            "the SSH session answer is incomplete",
        ));
    }
    let exe = std::env::current_exe().map_err(|e| Error::local("io", format!("own path: {e}")))?;
    let mut cmd = std::process::Command::new("ssh");
    cmd.arg("-p")
        .arg(port.to_string())
        .arg("-l")
        .arg(&user)
        .args(["-o", "PubkeyAuthentication=no"])
        .args(["-o", "PreferredAuthentications=password"])
        .args(["-o", "NumberOfPasswordPrompts=1"])
        .args(["-o", "StrictHostKeyChecking=accept-new"]);
    if args.command.is_empty() && std::io::stdin().is_terminal() {
        cmd.arg("-t");
    }
    cmd.arg(&ssh_host);
    if !args.command.is_empty() {
        cmd.arg("--").args(&args.command);
    }
    cmd.env("SSH_ASKPASS", exe)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env(ASKPASS_VAR, "1")
        .env(SECRET_VAR, &secret);
    if args.command.is_empty() {
        output::note(&format!(
            "connecting to {} ({}) as {user}…",
            output::cell(&host["short_id"]),
            output::cell(&host["name"])
        ));
    }
    let e = cmd.exec();
    Err(if e.kind() == std::io::ErrorKind::NotFound {
        Error::local(
            "no_ssh",
            "OpenSSH's `ssh` is not installed (Debian: apt-get install openssh-client)",
        )
    } else {
        Error::local("ssh", format!("cannot run ssh: {e}"))
    })
}

/// The caller's host when there is exactly one.
fn only_host(hosts: &[Value]) -> Result<Value> {
    match hosts {
        [one] => Ok(one.clone()),
        [] => Err(Error::new(
            exit::NOT_FOUND,
            "no_host",
            "there is no host to connect to",
        )),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|h| format!("{} ({})", output::cell(&h["short_id"]), output::cell(&h["name"])))
                .collect();
            Err(Error::usage(format!(
                "{} hosts: name one of {}",
                many.len(),
                names.join(", ")
            )))
        }
    }
}

/// The host once it runs: a stopped (or failed) host is started, with its progress shown; one
/// that is being created or started is waited for.
fn running(ctx: &Ctx, id: &str, mut host: Value) -> Result<Value> {
    let api = &ctx.api;
    let deadline = Instant::now() + COME_UP;
    loop {
        match host["status"].as_str().unwrap_or_default() {
            "running" => return Ok(host),
            "stopped" | "error" => {
                output::note("starting the host…");
                let task = api.post(&api.scoped(&format!("/hosts/{id}/start"))?, None)?;
                tasks::succeeded(&tasks::follow(api, &task)?)?;
            }
            "deleting" => {
                return Err(Error::new(
                    exit::INVALID,
                    "host_deleting",
                    "the host is being deleted",
                ));
            }
            other => {
                if Instant::now() > deadline {
                    return Err(Error::new(
                        exit::UNAVAILABLE,
                        "timeout",
                        format!("the host is still {other}"),
                    ));
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        }
        host = api.get(&api.scoped(&format!("/hosts/{id}"))?, &[])?;
    }
}
