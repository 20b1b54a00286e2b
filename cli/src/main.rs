//! `cloud-cli-proxy`: the command-line client of the control plane's API, for operators and
//! tenants. Tables for people, the API's JSON for scripts (`--json`), progress bars fed by task
//! event streams, and `ssh` through the gateway with a single-use secret.

mod args;
mod client;
mod commands;
mod config;
mod error;
mod output;
mod prompt;

use std::process::ExitCode;

use clap::Parser as _;

use crate::args::{Cli, Command};
use crate::client::{Api, Role};
use crate::error::{Error, Result};
use crate::output::Output;

/// What every command gets: the API (signed in or not) and how to print.
pub struct Ctx {
    pub api: Api,
    pub out: Output,
}

fn main() -> ExitCode {
    // Called back by `ssh` as its SSH_ASKPASS helper: hand over the secret and nothing else.
    if let Some(code) = commands::ssh::askpass() {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and exit 0; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(error::exit::USAGE));
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.code == "broken_pipe" => e.exit_code(),
        Err(mut e) => {
            if e.code == "unauthorized" {
                // An expired or revoked token, or a changed server secret: the way out is the same.
                e.message.push_str(" (sign in again: cloud-cli-proxy login)");
            }
            output::note(&format!("error: {e}"));
            e.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let out = Output { json: cli.json };
    match cli.command {
        Command::Login(args) => return commands::account::login(&cli.url, cli.ca_file.as_deref(), out, args),
        Command::Logout => return commands::account::logout(out),
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "cloud-cli-proxy", &mut buf);
            return output::write_out(&String::from_utf8_lossy(&buf));
        }
        _ => {}
    }
    let ctx = Ctx {
        api: connect(cli.url.as_deref(), cli.ca_file.as_deref())?,
        out,
    };
    match cli.command {
        Command::Login(_) | Command::Logout | Command::Completion { .. } => Ok(()),
        Command::Whoami => commands::account::whoami(&ctx),
        Command::Password { password_stdin } => commands::account::password(&ctx, password_stdin),
        Command::ApiTokens(cmd) => commands::account::api_tokens(&ctx, cmd),
        Command::Users(cmd) => commands::users::users(&ctx, cmd),
        Command::SshKeys(cmd) => commands::users::ssh_keys(&ctx, cmd),
        Command::EgressIps(cmd) => commands::egress::egress_ips(&ctx, cmd),
        Command::Bindings(cmd) => commands::egress::bindings(&ctx, cmd),
        Command::Quotas(cmd) => commands::traffic::quotas(&ctx, cmd),
        Command::Hosts(cmd) => commands::hosts::hosts(&ctx, cmd),
        Command::Tasks(cmd) => commands::tasks::tasks(&ctx, cmd),
        Command::Events(cmd) => commands::audit::events(&ctx, cmd),
        Command::Recordings(cmd) => commands::audit::recordings(&ctx, cmd),
        Command::Nodes(cmd) => commands::audit::nodes(&ctx, cmd),
        Command::Gateways(cmd) => commands::audit::gateways(&ctx, cmd),
        Command::Stats => commands::audit::stats(&ctx),
        Command::Ssh(args) => commands::ssh::ssh(&ctx, args),
    }
}

/// The API to talk to: the URL from the flag or `CLOUD_CLI_PROXY_URL`, else the stored one; the
/// token from `CLOUD_CLI_PROXY_TOKEN`, else the stored one when it belongs to that URL.
fn connect(url: Option<&str>, ca_file: Option<&std::path::Path>) -> Result<Api> {
    let stored = config::load()?;
    let env_token = std::env::var("CLOUD_CLI_PROXY_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    let url = match (url, &stored) {
        (Some(u), _) => client::normalize_url(u)?,
        (None, Some(c)) => c.url.clone(),
        (None, None) => {
            return Err(if env_token.is_some() {
                Error::usage("CLOUD_CLI_PROXY_TOKEN is set but no URL: set CLOUD_CLI_PROXY_URL or pass --url")
            } else {
                Error::not_signed_in()
            });
        }
    };
    let (token, role) = match (env_token, stored) {
        (Some(t), _) => (Some(t.trim().to_owned()), None),
        (None, Some(c)) if c.url == url => (Some(c.token), Role::parse(&c.role)),
        (None, _) => (None, None),
    };
    Api::new(&url, token, role, ca_file)
}
