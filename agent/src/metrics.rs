//! The agent's Prometheus metrics (docs/metrics.md): Docker call latency, tunnel restarts and egress
//! checks. One set per process: the control plane that embeds the agent shows them on its own
//! `/metrics`; a standalone agent serves them on `METRICS_ADDR`.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DockerLabels {
    /// The call, as the Docker adapter names it (`container create`, `exec`, …).
    op: &'static str,
    /// `ok`, `error` or `timeout`.
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    /// `health` (the periodic checks of bound hosts) or `test` (an operator's egress test).
    source: &'static str,
    /// `connectivity`, `exit_ip`, `dns_leak`, or `other`.
    check: &'static str,
    /// `passed` or `failed`.
    result: &'static str,
}

/// Where an egress check ran from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckSource {
    Health,
    Test,
}

/// The agent's metrics.
pub struct Metrics {
    docker: Family<DockerLabels, Histogram, fn() -> Histogram>,
    tunnel_restarts: Counter,
    egress_checks: Family<CheckLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Docker calls: 1 ms to about 65 s (image and container calls can take long; all are time-boxed).
fn docker_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's agent metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let m = Self {
            docker: Family::new_with_constructor(docker_histogram),
            tunnel_restarts: Counter::default(),
            egress_checks: Family::default(),
        };
        // Every check at zero from the start: a failure rate has something to divide by.
        for source in ["health", "test"] {
            for check in wire::checks::ALL {
                for result in ["passed", "failed"] {
                    let _ = m.egress_checks.get_or_create(&CheckLabels {
                        source,
                        check,
                        result,
                    });
                }
            }
        }
        m
    }

    /// Adds the agent's series to `registry`, under `agent_`.
    pub fn register(&self, registry: &mut Registry) {
        let agent = registry.sub_registry_with_prefix("agent");
        agent.register_with_unit(
            "docker_operation_duration",
            "Docker Engine API calls by the agent, by operation and result",
            Unit::Seconds,
            self.docker.clone(),
        );
        agent.register(
            "tunnel_restarts",
            "Tunnel processes of this node's hosts started again after dying, as their supervisors report",
            self.tunnel_restarts.clone(),
        );
        agent.register(
            "egress_checks",
            "Egress checks run from inside hosts' namespaces, by source, check and result",
            self.egress_checks.clone(),
        );
    }

    pub(crate) fn docker_call(&self, op: &'static str, result: &'static str, elapsed: std::time::Duration) {
        self.docker
            .get_or_create(&DockerLabels { op, result })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn tunnel_restarted(&self, times: u64) {
        self.tunnel_restarts.inc_by(times);
    }

    pub(crate) fn egress_checks(&self, source: CheckSource, checks: &[wire::CheckResult]) {
        use wire::checks::{CONNECTIVITY, DNS_LEAK, EXIT_IP};
        for c in checks {
            let check = [CONNECTIVITY, EXIT_IP, DNS_LEAK]
                .into_iter()
                .find(|known| *known == c.name)
                .unwrap_or("other");
            self.egress_checks
                .get_or_create(&CheckLabels {
                    source: match source {
                        CheckSource::Health => "health",
                        CheckSource::Test => "test",
                    },
                    check,
                    result: if c.passed { "passed" } else { "failed" },
                })
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_named_under_the_agent() {
        let m = Metrics::new();
        let mut registry = Registry::with_prefix("ccp");
        m.register(&mut registry);
        m.docker_call("container create", "ok", std::time::Duration::from_millis(20));
        m.tunnel_restarted(2);
        m.egress_checks(
            CheckSource::Test,
            &[wire::CheckResult {
                name: wire::checks::EXIT_IP.to_owned(),
                passed: false,
                latency_ms: Some(1),
                observed: None,
                error: None,
            }],
        );
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"ccp_agent_docker_operation_duration_seconds_count{op="container create",result="ok"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("ccp_agent_tunnel_restarts_total 2"), "{text}");
        assert!(
            text.contains(
                r#"ccp_agent_egress_checks_total{source="test",check="exit_ip",result="failed"} 1"#
            ),
            "{text}"
        );
    }
}
