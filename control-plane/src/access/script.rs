//! The access script (`access.sh`) as served: a static text with two settings filled in, the
//! server's base URL and, for an entry link, the host's short id. Both pass an allow-list first and
//! are then single-quoted, so nothing a request or the database holds can become shell code.

use crate::hosts;

const TEMPLATE: &str = include_str!("access.sh");
const SETTINGS_MARK: &str = "# @@SETTINGS@@\n";

/// Which flow the script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode<'a> {
    /// `/v1/bootstrap/script`: asks for username and password.
    Bootstrap,
    /// `/entry/{short_id}`: asks for the password of that host's owner.
    Entry { short_id: &'a str },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error(
        "PUBLIC_BASE_URL `{0}` cannot go into the access scripts: use http:// or https:// and only \
         letters, digits and - . _ ~ : / [ ] @ % +"
    )]
    BaseUrl(String),
    #[error("not a short id")]
    ShortId,
}

/// Whether `url` may be embedded: `http(s)://` and then only characters that have no meaning to
/// the shell even unquoted (no quotes, `$`, backticks, `;`, `&`, spaces or control characters).
pub fn check_base_url(url: &str) -> Result<(), ScriptError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~:/[]@%+".contains(c);
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && url.chars().all(allowed) => Ok(()),
        _ => Err(ScriptError::BaseUrl(url.to_owned())),
    }
}

/// `s` as one single-quoted shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script for `mode`, talking to the API at `base_url`.
pub fn render(base_url: &str, mode: Mode<'_>) -> Result<String, ScriptError> {
    check_base_url(base_url)?;
    let short_id = match mode {
        Mode::Bootstrap => "",
        Mode::Entry { short_id } if hosts::is_short_id(short_id) => short_id,
        Mode::Entry { .. } => return Err(ScriptError::ShortId),
    };
    let settings = format!(
        "CCP_URL={}\nCCP_SHORT_ID={}\n",
        shell_quote(base_url.trim_end_matches('/')),
        shell_quote(short_id)
    );
    Ok(TEMPLATE.replacen(SETTINGS_MARK, &settings, 1))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use super::*;

    const HOSTILE: &[&str] = &[
        "http://x/'; touch /tmp/ccp-pwned; '",
        "http://x/$(touch /tmp/ccp-pwned)",
        "http://x/`touch /tmp/ccp-pwned`",
        "http://x/\ntouch /tmp/ccp-pwned",
        "http://x/;touch /tmp/ccp-pwned",
        "http://x/&&touch /tmp/ccp-pwned",
        "http://x/ -o /etc/passwd",
        "http://x/\"$HOME\"",
        "http://x/\\",
        "javascript:alert(1)",
        "http://",
        "http:///etc",
        "-Kfile",
        "",
    ];

    fn run_bash(args: &[&str], stdin: &str) -> std::process::Output {
        let mut child = Command::new("bash")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write");
        child.wait_with_output().expect("bash output")
    }

    #[test]
    fn the_settings_line_is_filled_once() {
        assert_eq!(TEMPLATE.matches(SETTINGS_MARK).count(), 1);
        let s = render(
            "http://cp.example.test:8080/",
            Mode::Entry { short_id: "abcdefgh" },
        )
        .unwrap();
        assert!(s.starts_with("#!/usr/bin/env bash\n"));
        assert!(s.contains("\nCCP_URL='http://cp.example.test:8080'\nCCP_SHORT_ID='abcdefgh'\n"));
        assert!(!s.contains("@@SETTINGS@@"));
        let b = render("https://[::1]:8443", Mode::Bootstrap).unwrap();
        assert!(b.contains("\nCCP_URL='https://[::1]:8443'\nCCP_SHORT_ID=''\n"));
    }

    #[test]
    fn hostile_values_are_refused() {
        for url in HOSTILE {
            assert!(check_base_url(url).is_err(), "accepted {url:?}");
            assert!(render(url, Mode::Bootstrap).is_err(), "rendered {url:?}");
        }
        for short in ["abcdefg0", "'$(id)'", "abcdefgh\n", "ABCDEFGH", "", "abcdefghj"] {
            assert_eq!(
                render("http://ok", Mode::Entry { short_id: short }),
                Err(ScriptError::ShortId),
                "{short:?}"
            );
        }
    }

    #[test]
    fn quoting_survives_bash() {
        for value in HOSTILE
            .iter()
            .chain(&["it's", "''", "a\\'b", "$((1+1))", "\u{1b}[31m"])
        {
            let script = format!("x={}\nprintf '%s' \"$x\"", shell_quote(value));
            let out = run_bash(&["-s"], &script);
            assert!(
                out.status.success(),
                "{value:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout), *value);
        }
    }

    #[test]
    fn scripts_pass_bash_n_and_shellcheck() {
        let dir = tempfile::tempdir().expect("temp dir");
        let scripts = [
            render("http://cp.example.test:8080", Mode::Bootstrap).unwrap(),
            render("https://example.org/ccp", Mode::Entry { short_id: "k7m2p9qr" }).unwrap(),
        ];
        for (i, script) in scripts.iter().enumerate() {
            let path = dir.path().join(format!("access-{i}.sh"));
            std::fs::write(&path, script).expect("write script");
            let path = path.to_str().expect("utf-8 path");
            let out = Command::new("bash").args(["-n", path]).output().expect("bash -n");
            assert!(
                out.status.success(),
                "bash -n: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // shellcheck is part of the test toolchain (tests/run.sh installs it).
            let out = Command::new("shellcheck")
                .args(["--severity=style", path])
                .output()
                .expect("shellcheck (apt-get install shellcheck)");
            assert!(
                out.status.success(),
                "shellcheck:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }

    /// The script's own JSON helpers, run by bash on hostile input.
    fn helpers() -> String {
        let functions = |name: &str| {
            let start = TEMPLATE.find(&format!("\n{name}() {{")).expect("function");
            let end = TEMPLATE[start..].find("\n}\n").expect("function end") + start + 3;
            TEMPLATE[start..end].to_owned()
        };
        format!(
            "set -euo pipefail\n{}{}",
            functions("json_string"),
            functions("json_field")
        )
    }

    #[test]
    fn json_bodies_are_escaped_correctly() {
        for value in [
            "plain",
            "qu\"ote",
            "back\\slash",
            "new\nline\ttab\u{1}",
            "ünï ☃",
            "}{\",:",
        ] {
            let script = format!(
                "{}\nIFS= read -r -d '' v || true\njson_string \"$v\"\n",
                helpers()
            );
            let out = run_bash(&["-c", &script], value);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let parsed: String = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{value:?} → {}: {e}", String::from_utf8_lossy(&out.stdout)));
            assert_eq!(parsed, value);
        }
    }

    #[test]
    fn json_fields_are_read_without_jq() {
        let body = serde_json::json!({
            "task_id": "6c1f0b9e-2f4b-4a57-9d7e-1b2c3d4e5f60",
            "stage": "said \"status\":\"succeeded\" \\ then \u{1b}[2J",
            "status": "running",
            "progress": 45,
            "password": null,
        })
        .to_string();
        let script = format!(
            "{}\nIFS= read -r -d '' b || true\nfor k in task_id stage status progress password missing; do \
             printf '%s=[%s]\\n' \"$k\" \"$(json_field \"$b\" \"$k\")\"; done\n",
            helpers()
        );
        let out = run_bash(&["-c", &script], &body);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "task_id=[6c1f0b9e-2f4b-4a57-9d7e-1b2c3d4e5f60]\n\
             stage=[said \"status\":\"succeeded\" \\ then ?[2J]\n\
             status=[running]\nprogress=[45]\npassword=[]\nmissing=[]\n"
        );
    }
}
