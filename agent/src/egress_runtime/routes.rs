//! Policy routing of the host namespace, installed with iproute2's `ip` (the image ships it).
//!
//! - rule 99: `lookup main suppress_prefixlength 0`: connected routes (the hosts bridge) still work,
//!   so replies to inbound SSH/VNC from the node go back out the uplink; main's default route is
//!   suppressed;
//! - rule 100: `not fwmark 0xcc lookup 2022`: every other unmarked packet uses the tunnel table;
//! - table 2022: the tunnel route(s) via `ccp-tun`, and an `unreachable default` with the highest
//!   metric. The kernel drops routes of a device that disappears, so while the tunnel process is
//!   down only the unreachable route is left: packets fail with "network unreachable" instead of
//!   falling through to the next rule (an empty table would let the lookup continue to `main`).
//!
//! The tunnel's own sockets carry mark 0xcc and therefore use `main` (default via the uplink).
//! The command lists are built by pure functions, so they are tested without a namespace.

use std::process::Command;

use super::{Error, FWMARK, TABLE};
use crate::firewall::Ipv4Cidr;

/// Metric of the unreachable fallback: loses to any tunnel route.
const FALLBACK_METRIC: u32 = u32::MAX;

/// The rule commands (`ip ...` arguments) missing from `listed` (`ip -4 rule show` output).
pub fn missing_rules(listed: &str) -> Vec<Vec<String>> {
    let has = |prio: &str, needle: &str| {
        listed
            .lines()
            .any(|l| l.trim_start().starts_with(prio) && l.contains(needle))
    };
    let mut out = Vec::new();
    if !has("99:", "suppress_prefixlength 0") {
        out.push(args(
            "-4 rule add priority 99 lookup main suppress_prefixlength 0",
        ));
    }
    if !has("100:", &format!("lookup {TABLE}")) {
        out.push(args(&format!(
            "-4 rule add priority 100 not fwmark {FWMARK:#x} lookup {TABLE}"
        )));
    }
    out
}

/// The fallback that keeps table 2022 failing closed when the tunnel device is gone.
pub fn fallback_route() -> Vec<String> {
    args(&format!(
        "-4 route replace unreachable default metric {FALLBACK_METRIC} table {TABLE}"
    ))
}

/// Routes of `cidrs` via the tunnel device in table 2022.
pub fn tunnel_routes(device: &str, cidrs: &[Ipv4Cidr]) -> Vec<Vec<String>> {
    cidrs
        .iter()
        .map(|c| {
            let dst = if c.prefix() == 0 {
                "default".to_owned()
            } else {
                format!("{}/{}", c.addr(), c.prefix())
            };
            args(&format!("-4 route replace {dst} dev {device} table {TABLE}"))
        })
        .collect()
}

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

/// Installs the two rules (when missing) and the unreachable fallback; safe to repeat.
pub fn install_policy() -> Result<(), Error> {
    let listed = ip(&["-4".into(), "rule".into(), "show".into()])?;
    for cmd in missing_rules(&listed) {
        ip(&cmd)?;
    }
    ip(&fallback_route())?;
    // IPv6 never leaves a host namespace (the firewall drops it); the same shape here makes that
    // hold without the firewall too. Kernels without IPv6 refuse these: nothing to protect then.
    for v6 in [
        format!("-6 rule add priority 100 not fwmark {FWMARK:#x} lookup {TABLE}"),
        format!("-6 route replace unreachable default table {TABLE}"),
    ] {
        let _ = ip(&args(&v6));
    }
    Ok(())
}

/// Points `cidrs` at `device` in the tunnel table (after each start of the tunnel process: the
/// kernel removed the previous routes with the previous device).
pub fn install_tunnel(device: &str, cidrs: &[Ipv4Cidr]) -> Result<(), Error> {
    for cmd in tunnel_routes(device, cidrs) {
        ip(&cmd)?;
    }
    Ok(())
}

/// Whether `device` exists and is administratively up (`IFF_UP` in sysfs flags).
pub fn link_up(device: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{device}/flags"))
        .ok()
        .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|flags| flags & 0x1 != 0)
}

/// Whether `device` exists at all.
pub fn link_exists(device: &str) -> bool {
    std::path::Path::new(&format!("/sys/class/net/{device}")).exists()
}

/// Sets `device` administratively up (`ip link set dev DEVICE up`).
pub fn set_link_up(device: &str) -> Result<(), Error> {
    ip(&["link", "set", "dev", device, "up"].map(str::to_owned)).map(drop)
}

fn ip(argv: &[String]) -> Result<String, Error> {
    let what = format!("ip {}", argv.join(" "));
    let out = Command::new("ip")
        .args(argv)
        .output()
        .map_err(Error::io(what.clone()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            what,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_added_only_when_missing() {
        let empty =
            "0:\tfrom all lookup local\n32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n";
        let cmds = missing_rules(empty);
        assert_eq!(
            cmds.iter().map(|c| c.join(" ")).collect::<Vec<_>>(),
            [
                "-4 rule add priority 99 lookup main suppress_prefixlength 0",
                "-4 rule add priority 100 not fwmark 0xcc lookup 2022",
            ]
        );
        let full = "0:\tfrom all lookup local\n99:\tfrom all lookup main suppress_prefixlength 0\n\
                    100:\tnot from all fwmark 0xcc lookup 2022\n32766:\tfrom all lookup main\n";
        assert!(missing_rules(full).is_empty());
    }

    #[test]
    fn allowed_ips_become_table_routes_and_fallback_loses() {
        let cidrs: Vec<Ipv4Cidr> = vec!["0.0.0.0/0".parse().unwrap(), "198.18.7.0/24".parse().unwrap()];
        let cmds: Vec<String> = tunnel_routes("ccp-tun", &cidrs)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            cmds,
            [
                "-4 route replace default dev ccp-tun table 2022",
                "-4 route replace 198.18.7.0/24 dev ccp-tun table 2022",
            ]
        );
        assert_eq!(
            fallback_route().join(" "),
            "-4 route replace unreachable default metric 4294967295 table 2022"
        );
    }
}
