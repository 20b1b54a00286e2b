//! The client side of an egress test, run inside the namespace under test (through its tunnel): it
//! observes, the agent judges. Each observation has its own bound and never panics; a failure is an
//! error in the check, not of the run.
//!
//! - connectivity: `GET` the connectivity URL, pass on 204 or 200;
//! - exit IP: `GET` the IP URL, the body (trimmed) is the address the outside saw;
//! - DNS: an `A` query for a fresh name under the probe's DNS name, sent to the egress DNS server;
//!   the answer is the address of the resolver that asked the probe's authoritative server.
//!
//! Probe URLs are plain HTTP (the agent's HTTP client carries no TLS).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use wire::CheckResult;

use probe::dns;

/// Where the three checks go.
pub use wire::ProbeTargets as Targets;

pub use wire::checks::{CONNECTIVITY, DNS_LEAK, EXIT_IP};

/// Runs the three observations concurrently, each bounded by `each`. `passed` is set for
/// connectivity only; the exit IP and DNS checks are judged by [`judge`].
pub async fn observe(targets: &Targets, dns_server: Ipv4Addr, each: Duration) -> Vec<CheckResult> {
    let client = reqwest::Client::builder()
        .timeout(each)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build();
    let client = match client {
        Ok(c) => c,
        Err(e) => return CheckResult::all_failed(&format!("HTTP client: {e}")),
    };
    let (connectivity, exit_ip, dns) = tokio::join!(
        connectivity(&client, &targets.connectivity_url),
        exit_ip(&client, &targets.ip_url),
        resolver(dns_server, &targets.dns_name, each),
    );
    vec![connectivity, exit_ip, dns]
}

fn millis(since: Instant) -> Option<u64> {
    Some(u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX))
}

async fn connectivity(client: &reqwest::Client, url: &str) -> CheckResult {
    let started = Instant::now();
    match client.get(url).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let passed = matches!(status, 200 | 204);
            CheckResult {
                name: CONNECTIVITY.to_owned(),
                passed,
                latency_ms: millis(started),
                observed: Some(status.to_string()),
                error: (!passed).then(|| format!("{url} answered {status}, expected 204 or 200")),
            }
        }
        Err(e) => CheckResult::failed(CONNECTIVITY, millis(started), describe(url, &e)),
    }
}

async fn exit_ip(client: &reqwest::Client, url: &str) -> CheckResult {
    let started = Instant::now();
    let response = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => return CheckResult::failed(EXIT_IP, millis(started), describe(url, &e)),
    };
    let status = response.status();
    let body = match response.text().await {
        Ok(b) => b,
        Err(e) => return CheckResult::failed(EXIT_IP, millis(started), describe(url, &e)),
    };
    let latency_ms = millis(started);
    if !status.is_success() {
        return CheckResult::failed(EXIT_IP, latency_ms, format!("{url} answered {}", status.as_u16()));
    }
    match body.trim().parse::<std::net::IpAddr>() {
        Ok(ip) => CheckResult {
            name: EXIT_IP.to_owned(),
            passed: false,
            latency_ms,
            observed: Some(ip.to_canonical().to_string()),
            error: None,
        },
        Err(_) => CheckResult::failed(
            EXIT_IP,
            latency_ms,
            format!("{url} did not answer with an IP address"),
        ),
    }
}

fn describe(url: &str, e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    // The source chain says why (refused, unreachable), without the URL again.
    let mut why = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        why = s.to_string();
        source = s.source();
    }
    if why.is_empty() {
        format!("GET {url} {what}")
    } else {
        format!("GET {url} {what}: {why}")
    }
}

async fn resolver(dns_server: Ipv4Addr, name: &str, each: Duration) -> CheckResult {
    let started = Instant::now();
    // A fresh name each time, so no resolver on the way answers from its cache.
    let id: u16 = rand::random();
    let qname = format!("t{:016x}.{}", rand::random::<u64>(), name.trim_end_matches('.'));
    let server = SocketAddr::from((dns_server, 53));
    let exchange = async {
        let socket = UdpSocket::bind(("0.0.0.0", 0)).await?;
        socket.connect(server).await?;
        let query = dns::query(id, &qname, dns::types::A);
        let mut buf = [0u8; 1500];
        // Resend every second: UDP through a tunnel that is still settling may lose the first one.
        loop {
            socket.send(&query).await?;
            match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    if let Some(ip) = dns::first_a(&buf[..n], id) {
                        return Ok::<_, std::io::Error>(ip);
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {}
            }
        }
    };
    match tokio::time::timeout(each, exchange).await {
        Ok(Ok(ip)) => CheckResult {
            name: DNS_LEAK.to_owned(),
            passed: false,
            latency_ms: millis(started),
            observed: Some(ip.to_string()),
            error: None,
        },
        Ok(Err(e)) => CheckResult::failed(DNS_LEAK, millis(started), format!("DNS query to {server}: {e}")),
        Err(_) => CheckResult::failed(
            DNS_LEAK,
            millis(started),
            format!("no answer for {name} from {server} within {} s", each.as_secs()),
        ),
    }
}

/// Judges the observations: the exit IP must equal the declared address (a mismatch fails, and is
/// reported, never taken over); the resolver that reached the probe must not be the node (one of
/// `node_ips`, its public addresses as far as the agent knows them).
pub fn judge(mut checks: Vec<CheckResult>, declared_ip: &str, node_ips: &[Ipv4Addr]) -> Vec<CheckResult> {
    for check in &mut checks {
        let Some(observed) = check.observed.clone() else {
            continue;
        };
        match check.name.as_str() {
            EXIT_IP => {
                let same = match (
                    observed.parse::<std::net::IpAddr>(),
                    declared_ip.parse::<std::net::IpAddr>(),
                ) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => observed == declared_ip,
                };
                check.passed = same;
                if !same {
                    check.error = Some(format!(
                        "the exit IP is {observed}, not the declared {declared_ip}"
                    ));
                }
            }
            DNS_LEAK => {
                let leaked = node_ips.iter().any(|node| observed == node.to_string());
                check.passed = !leaked;
                if leaked {
                    check.error = Some(format!(
                        "DNS leaks: the probe was asked by {observed}, the node's own address"
                    ));
                }
            }
            _ => {}
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str, observed: &str) -> CheckResult {
        CheckResult {
            name: name.to_owned(),
            passed: false,
            latency_ms: Some(3),
            observed: Some(observed.to_owned()),
            error: None,
        }
    }

    #[test]
    fn exit_ip_must_equal_the_declared_one() {
        let judged = judge(vec![seen(EXIT_IP, "198.18.5.5")], "198.18.5.5", &[]);
        assert!(judged[0].passed);
        let judged = judge(vec![seen(EXIT_IP, "198.18.5.6")], "198.18.5.5", &[]);
        assert!(!judged[0].passed);
        assert!(judged[0].error.as_deref().unwrap().contains("198.18.5.6"));
        assert_eq!(judged[0].observed.as_deref(), Some("198.18.5.6"));
    }

    #[test]
    fn dns_through_the_node_is_a_leak() {
        let node = &[Ipv4Addr::new(198, 18, 0, 10)];
        assert!(judge(vec![seen(DNS_LEAK, "198.18.5.5")], "198.18.5.5", node)[0].passed);
        assert!(!judge(vec![seen(DNS_LEAK, "198.18.0.10")], "198.18.5.5", node)[0].passed);
        // No answer at all stays a failure, whatever the node.
        let mut none = seen(DNS_LEAK, "x");
        none.observed = None;
        none.error = Some("no answer".into());
        assert!(!judge(vec![none], "198.18.5.5", node)[0].passed);
    }

    #[tokio::test]
    async fn observe_reports_errors_per_check_without_hanging() {
        // Nothing listens on these loopback ports: every check fails quickly with its own error.
        let targets = Targets {
            connectivity_url: "http://127.0.0.1:9/generate_204".into(),
            ip_url: "http://127.0.0.1:9/ip".into(),
            dns_name: "whoami.probe.test".into(),
        };
        let checks = observe(&targets, Ipv4Addr::LOCALHOST, Duration::from_secs(2)).await;
        assert_eq!(checks.len(), 3);
        assert!(
            checks.iter().all(|c| !c.passed && c.error.is_some()),
            "{checks:?}"
        );
    }
}
