//! The gateway's Prometheus metrics (docs/metrics.md): connections and sessions open, login
//! results, bytes relayed and the time to reach a host's sshd. One set per process: a control plane
//! that embeds the gateway shows them on its own `/metrics`; a standalone gateway serves them on
//! `METRICS_ADDR`.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    /// `password` or `publickey`.
    method: &'static str,
    /// `accepted`, `denied`, `rate_limited` or `error` (the control plane could not be asked).
    result: &'static str,
}

impl AuthLabels {
    fn of(publickey: bool, result: AuthResult) -> Self {
        Self {
            method: if publickey { "publickey" } else { "password" },
            result: match result {
                AuthResult::Accepted => "accepted",
                AuthResult::Denied => "denied",
                AuthResult::RateLimited => "rate_limited",
                AuthResult::Error => "error",
            },
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    /// `to_host` (from the client) or `to_client` (from the host).
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    /// `ok` or `error`.
    result: &'static str,
}

/// A login's outcome, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthResult {
    Accepted,
    Denied,
    RateLimited,
    Error,
}

/// The gateway's metrics.
pub struct Metrics {
    connections: Gauge,
    sessions: Gauge,
    auth: Family<AuthLabels, Counter>,
    bytes_to_host: Counter,
    bytes_to_client: Counter,
    bytes: Family<DirectionLabel, Counter>,
    connect: Family<ResultLabel, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Connecting to a host's sshd (TCP, SSH handshake, key login): 5 ms to about 20 s.
fn connect_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

impl Metrics {
    fn new() -> Self {
        let bytes: Family<DirectionLabel, Counter> = Family::default();
        // Handles kept apart so that relaying a packet costs one atomic add, not a map lookup.
        let bytes_to_host = bytes
            .get_or_create(&DirectionLabel { direction: "to_host" })
            .clone();
        let bytes_to_client = bytes
            .get_or_create(&DirectionLabel {
                direction: "to_client",
            })
            .clone();
        let m = Self {
            connections: Gauge::default(),
            sessions: Gauge::default(),
            auth: Family::default(),
            bytes_to_host,
            bytes_to_client,
            bytes,
            connect: Family::new_with_constructor(connect_histogram),
        };
        // Every outcome at zero from the start: a refusal rate has something to divide by.
        for publickey in [false, true] {
            for result in [
                AuthResult::Accepted,
                AuthResult::Denied,
                AuthResult::RateLimited,
                AuthResult::Error,
            ] {
                let _ = m.auth.get_or_create(&AuthLabels::of(publickey, result));
            }
        }
        m
    }

    /// Adds the gateway's series to `registry`, under `gateway_`.
    pub fn register(&self, registry: &mut Registry) {
        let gateway = registry.sub_registry_with_prefix("gateway");
        gateway.register(
            "connections",
            "Client connections open, logged in or not",
            self.connections.clone(),
        );
        gateway.register(
            "sessions",
            "Connections logged in and relaying to a host's sshd",
            self.sessions.clone(),
        );
        gateway.register(
            "auth_attempts",
            "Login attempts decided (a public key merely offered is not counted), by method and result",
            self.auth.clone(),
        );
        gateway.register_with_unit(
            "relayed",
            "Bytes relayed between clients and hosts, by direction",
            Unit::Bytes,
            self.bytes.clone(),
        );
        gateway.register_with_unit(
            "upstream_connect_duration",
            "Time to reach and log in to a host's sshd, by result",
            Unit::Seconds,
            self.connect.clone(),
        );
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.dec();
    }

    pub(crate) fn session_started(&self) {
        self.sessions.inc();
    }

    pub(crate) fn session_ended(&self) {
        self.sessions.dec();
    }

    pub(crate) fn auth(&self, publickey: bool, result: AuthResult) {
        self.auth.get_or_create(&AuthLabels::of(publickey, result)).inc();
    }

    pub(crate) fn relayed_to_host(&self, n: usize) {
        self.bytes_to_host.inc_by(n as u64);
    }

    pub(crate) fn relayed_to_client(&self, n: usize) {
        self.bytes_to_client.inc_by(n as u64);
    }

    pub(crate) fn upstream_connect(&self, ok: bool, elapsed: Duration) {
        self.connect
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "error" },
            })
            .observe(elapsed.as_secs_f64());
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's gateway metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_named_under_the_gateway() {
        let m = Metrics::new();
        let mut registry = Registry::with_prefix("ccp");
        m.register(&mut registry);
        m.connection_opened();
        m.session_started();
        m.auth(true, AuthResult::Accepted);
        m.relayed_to_host(10);
        m.relayed_to_client(32);
        m.upstream_connect(true, Duration::from_millis(40));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for line in [
            "ccp_gateway_connections 1",
            "ccp_gateway_sessions 1",
            r#"ccp_gateway_auth_attempts_total{method="publickey",result="accepted"} 1"#,
            r#"ccp_gateway_relayed_bytes_total{direction="to_host"} 10"#,
            r#"ccp_gateway_relayed_bytes_total{direction="to_client"} 32"#,
            r#"ccp_gateway_upstream_connect_duration_seconds_count{result="ok"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
