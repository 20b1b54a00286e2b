//! Questions asked on the terminal (`/dev/tty`, so standard input stays free for
//! `--password-stdin`), and the first line of standard input.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use crate::error::{Error, Result};

/// Whether there is a terminal to ask on.
pub fn has_tty() -> bool {
    std::fs::File::open("/dev/tty").is_ok() && std::io::stderr().is_terminal()
}

fn no_tty(what: &str) -> Error {
    Error::usage(format!("no terminal to ask for the {what} on: {}", hint(what)))
}

fn hint(what: &str) -> &'static str {
    match what {
        "password" => "use --password-stdin",
        "username" => "pass --username",
        "URL" => "pass it, or set CLOUD_CLI_PROXY_URL",
        _ => "pass it as a flag",
    }
}

/// Asks for a line of text (echoed).
pub fn line(prompt: &str, what: &str) -> Result<String> {
    if !has_tty() {
        return Err(no_tty(what));
    }
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let mut writer = &tty;
    write!(writer, "{prompt}")?;
    writer.flush()?;
    let mut answer = String::new();
    std::io::BufReader::new(&tty).read_line(&mut answer)?;
    let answer = answer.trim().to_owned();
    if answer.is_empty() {
        return Err(Error::usage(format!("no {what} given")));
    }
    Ok(answer)
}

/// Asks for a secret without echoing it.
pub fn secret(prompt: &str, what: &str) -> Result<String> {
    if !has_tty() {
        return Err(no_tty(what));
    }
    let answer = rpassword::prompt_password(prompt)?;
    if answer.is_empty() {
        return Err(Error::usage(format!("no {what} given")));
    }
    Ok(answer)
}

/// The first line of standard input, without its line ending (`--password-stdin`).
pub fn stdin_line(what: &str) -> Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        return Err(Error::usage(format!("standard input held no {what}")));
    }
    Ok(line)
}
