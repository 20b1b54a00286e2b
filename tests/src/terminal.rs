//! A command run under a pseudo-terminal, driven like a person at the keyboard: util-linux
//! `script` gives the command a controlling terminal (so it can open `/dev/tty`) and relays what
//! the test writes to it; everything the terminal shows is collected for `expect`.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);

/// A running command on its own terminal. Dropping it kills the command.
pub struct Terminal {
    child: Child,
    input: Option<ChildStdin>,
    screen: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
    /// Where the next `expect` starts looking.
    seen: usize,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal").field("pid", &self.child.id()).finish()
    }
}

impl Terminal {
    /// Runs `bash -c <command_line>` on a new terminal, with `env` added to a clean environment
    /// (`PATH` and `HOME` come from `env` when given there, else from the test's environment).
    pub fn spawn(command_line: &str, env: &[(&str, &str)]) -> Self {
        // Found on the test's PATH: `env` may give the command a PATH without it.
        let script = std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("script"))
                    .find(|p| p.is_file())
            })
            .expect("`script` (util-linux) gives the command a pseudo-terminal: install util-linux");
        let mut cmd = Command::new(script);
        // -q no banner, -f flush at once, -e the command's exit status, -c the command.
        cmd.args(["-qfec", command_line, "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("TERM", "dumb")
            .env("SHELL", "/bin/bash")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .expect("run `script` (util-linux) to get a pseudo-terminal");
        let input = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = screen.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            input,
            screen,
            reader: Some(reader),
            seen: 0,
        }
    }

    /// Everything the terminal has shown so far.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until `text` appears after what earlier `expect`s matched; panics with the screen
    /// when it does not within `limit` or the command ends first.
    pub async fn expect(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen.lock().unwrap().clone();
            let rest = String::from_utf8_lossy(screen.get(self.seen..).unwrap_or_default()).into_owned();
            if let Some(at) = rest.find(text) {
                // Offsets of the lossy text match the bytes: the terminal output here is UTF-8.
                self.seen += at + text.len();
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The reader may still hold the last bytes: give it a moment, then look once more.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                let screen = self.screen();
                assert!(
                    screen.get(self.seen..).is_some_and(|r| r.contains(text)),
                    "the command ended ({status}) before showing {text:?}; the terminal showed:\n{screen}"
                );
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} did not appear within {limit:?}; the terminal showed:\n{}",
                self.screen()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Types `line` and Enter.
    pub fn send_line(&mut self, line: &str) {
        let input = self.input.as_mut().expect("terminal input is closed");
        input
            .write_all(format!("{line}\r").as_bytes())
            .and_then(|()| input.flush())
            .expect("type into the terminal");
    }

    /// Waits for the command to end; returns its exit code and the whole screen.
    pub async fn wait(&mut self, limit: Duration) -> (i32, String) {
        let deadline = Instant::now() + limit;
        let status: ExitStatus = loop {
            if let Some(status) = self.child.try_wait().expect("wait for script") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the command did not end within {limit:?}; the terminal showed:\n{}",
                    self.screen()
                );
            }
            tokio::time::sleep(POLL).await;
        };
        self.input.take();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let code = status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal ({status}):\n{}", self.screen()));
        (code, self.screen())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
