//! `cloud-cli-proxy-agent`.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("cloud-cli-proxy-agent: {}", agent::NOT_YET);
    ExitCode::FAILURE
}
