//! Commands in network namespaces (iproute2's `ip netns`), and the sweep of what crashed runs left
//! behind. Every name this module creates starts with [`PREFIX`] and carries the creating
//! process's id, so a sweep removes only what belongs to processes that no longer exist.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// Prefix of every namespace and root-namespace interface of the fake internet.
pub const PREFIX: &str = "ccpf";

fn describe(program: &str, args: &[&str]) -> String {
    format!("{program} {}", args.join(" "))
}

fn checked(out: Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `program args` in the root namespace; its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let what = describe(program, args);
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{what}`"))?;
    checked(out, &what)
}

/// `ip args…` in the root namespace.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs `program args` in the network namespace `netns`.
pub fn run_in(netns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", netns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// `curl` in `netns` (`None`: the root namespace, i.e. the node), through `proxy` if given
/// (`socks5h://…` or `http://…`). Returns the body; an HTTP error status is an error.
pub fn curl_in(netns: Option<&str>, url: &str, proxy: Option<&str>) -> Result<String> {
    let mut args = vec!["-sS", "--fail", "--max-time", "5", "--noproxy", ""];
    if let Some(proxy) = proxy {
        args.pop();
        args.pop();
        args.extend(["--proxy", proxy]);
    }
    args.push(url);
    match netns {
        Some(ns) => run_in(ns, "curl", &args),
        None => run("curl", &args),
    }
}

/// The HTTP status `curl` gets for `url` in `netns` (`None`: the node).
pub fn http_status_in(netns: Option<&str>, url: &str) -> Result<u16> {
    let args = [
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        url,
    ];
    let out = match netns {
        Some(ns) => run_in(ns, "curl", &args)?,
        None => run("curl", &args)?,
    };
    out.trim()
        .parse()
        .with_context(|| format!("curl printed `{out}` as status"))
}

/// Polls `check` until it is true or `within` has passed.
pub fn wait_for(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether something in `netns` listens on `port` (`udp`: a UDP socket, else TCP).
pub fn listening_in(netns: &str, port: u16, udp: bool) -> bool {
    let proto = if udp { "-Hlun" } else { "-Hltn" };
    run_in(netns, "ss", &[proto, "sport", "=", &format!(":{port}")]).is_ok_and(|out| !out.trim().is_empty())
}

/// The id of the process that created `name` (`ccpf-<pid>-…` or `ccpf<pid>`), if it has one.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Namespaces whose name starts with [`PREFIX`].
pub fn our_namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

/// Root-namespace interfaces whose name starts with [`PREFIX`].
pub fn our_links() -> Vec<String> {
    let json = ip(&["-j", "link", "show"]).unwrap_or_default();
    let links: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap_or_default();
    links
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

/// Kills what runs in `netns` and deletes it.
pub fn delete_namespace(netns: &str) {
    let pids = ip(&["netns", "pids", netns]).unwrap_or_default();
    for pid in pids.split_whitespace() {
        let _ = run("kill", &["-9", pid]);
    }
    let _ = ip(&["netns", "delete", netns]);
}

/// Name of the file holding the creating process's id in each of our temporary directories.
pub const OWNER_FILE: &str = "owner";

/// A temporary directory (`ccpf-…` under the system's) marked as made by this process: a sweep
/// by a later run removes it, and stops what runs from it, once this process is gone.
pub fn owned_tempdir(prefix: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())?;
    Ok(dir)
}

/// Processes whose command line mentions `dir` (the clients and servers started from it).
fn processes_using(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// Our temporary directories whose owner is gone: what runs from them is killed, they are removed.
fn sweep_tempdirs(removed: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry.file_name().to_string_lossy().starts_with("ccpf-") && path.is_dir();
        let owner = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if !ours || owner.is_none_or(alive) {
            continue;
        }
        for pid in processes_using(&path) {
            let _ = run("kill", &["-9", &pid.to_string()]);
            removed.push(format!("process {pid}"));
        }
        let _ = std::fs::remove_dir_all(&path);
        removed.push(format!("dir {}", path.display()));
    }
}

/// Removes what fake internets whose process is gone (a crashed or killed test run) left: their
/// processes, namespaces, root-side interfaces, WireGuard control sockets and temporary directories. Returns what it removed.
pub fn sweep_stale() -> Vec<String> {
    let stale = |name: &String| owner_pid(name).is_none_or(|pid| !alive(pid));
    let mut removed = Vec::new();
    sweep_tempdirs(&mut removed);
    for ns in our_namespaces().into_iter().filter(stale) {
        delete_namespace(&ns);
        removed.push(format!("netns {ns}"));
    }
    // wireguard-go's control sockets (`ccpf<pid>wg.sock`) of killed servers.
    let sockets = std::fs::read_dir("/var/run/wireguard")
        .into_iter()
        .flatten()
        .flatten();
    for socket in sockets {
        let name = socket.file_name().to_string_lossy().into_owned();
        if name.starts_with(PREFIX) && stale(&name) {
            let _ = std::fs::remove_file(socket.path());
            removed.push(format!("socket {name}"));
        }
    }
    for link in our_links().into_iter().filter(stale) {
        // Deleting the interface also removes its address and the route through it.
        let _ = ip(&["link", "delete", &link]);
        removed.push(format!("link {link}"));
    }
    removed
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_pids_come_from_names() {
        assert_eq!(super::owner_pid("ccpf-4711-e2e-rt"), Some(4711));
        assert_eq!(super::owner_pid("ccpf4711"), Some(4711));
        assert_eq!(super::owner_pid("ccpf-x"), None);
        assert_eq!(super::owner_pid("eth0"), None);
    }
}
