//! `cloud-cli-proxy-ssh-proxy`.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("cloud-cli-proxy-ssh-proxy: {}", ssh_proxy::NOT_YET);
    ExitCode::FAILURE
}
