//! Prometheus metrics of the control plane (docs/metrics.md): requests by route, sign-ins, finished
//! tasks, and, read from the database at each scrape, hosts, tasks, nodes, gateways, egress health
//! and the connection pool. The embedded agent and SSH gateway add theirs to the same registry.
//!
//! Every label value comes from a closed set: enums of this crate, route templates (never a raw
//! path), status codes. Nothing a client or tenant types ends up in a label.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use wire::TaskKind;

use crate::auth::policy::{Decision, Way};
use crate::db::hosts::HostStatus;
use crate::db::tasks::{Task, TaskStatus};
use crate::db::{self, UtcTime};

/// The `Content-Type` of the exposition: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The route label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelValue)]
#[expect(
    clippy::upper_case_acronyms,
    reason = "the label values are the methods as HTTP spells them"
)]
enum Method {
    GET,
    HEAD,
    POST,
    PUT,
    PATCH,
    DELETE,
    OPTIONS,
    OTHER,
}

impl From<&axum::http::Method> for Method {
    fn from(m: &axum::http::Method) -> Self {
        use axum::http::Method as M;
        match *m {
            M::GET => Self::GET,
            M::HEAD => Self::HEAD,
            M::POST => Self::POST,
            M::PUT => Self::PUT,
            M::PATCH => Self::PATCH,
            M::DELETE => Self::DELETE,
            M::OPTIONS => Self::OPTIONS,
            _ => Self::OTHER,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: Method,
    /// The route template (`/v1/admin/hosts/{host_id}`), or [`UNMATCHED_ROUTE`].
    route: String,
    /// The status code, 100-999.
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: Method,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignInLabels {
    way: &'static str,
    /// `granted`, or the refusal's name (`wrong_password`, `rate_limited`, …).
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    kind: &'static str,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabel {
    health: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets of requests: 5 ms to about 20 s.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// Duration buckets of host tasks: 0.5 s to about 17 minutes.
fn task_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.5, 2.0, 12))
}

/// The control plane's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RouteLabels>,
    sign_ins: Family<SignInLabels, Counter>,
    tasks_finished: Family<TaskLabels, Counter>,
    task_duration: HistogramFamily<TaskLabels>,
    hosts: Family<StatusLabel, Gauge>,
    tasks: Family<TaskLabels, Gauge>,
    nodes: Family<StateLabel, Gauge>,
    gateways: Family<StateLabel, Gauge>,
    egress_hosts: Family<HealthLabel, Gauge>,
    pool: Family<StateLabel, Gauge>,
    pool_max: Gauge,
    scrape_errors: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Which parts run in this process besides the control plane.
#[derive(Debug, Clone, Copy, Default)]
pub struct Embedded {
    pub agent: bool,
    pub gateway: bool,
}

impl Metrics {
    pub fn new(embedded: Embedded) -> Self {
        let mut registry = Registry::with_prefix("ccp");
        let m = Self {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(request_histogram),
            sign_ins: Family::default(),
            tasks_finished: Family::default(),
            task_duration: Family::new_with_constructor(task_histogram),
            hosts: Family::default(),
            tasks: Family::default(),
            nodes: Family::default(),
            gateways: Family::default(),
            egress_hosts: Family::default(),
            pool: Family::default(),
            pool_max: Gauge::default(),
            scrape_errors: Counter::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status code",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its response's head, by method and route template",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        registry.register(
            "sign_ins",
            "Sign-in attempts decided, by way in and result (granted or the refusal)",
            m.sign_ins.clone(),
        );
        registry.register(
            "tasks_finished",
            "Host tasks this replica saw finish, by kind and final state",
            m.tasks_finished.clone(),
        );
        registry.register_with_unit(
            "task_duration",
            "Run time of finished host tasks, from start to finish, by kind and final state",
            Unit::Seconds,
            m.task_duration.clone(),
        );
        registry.register("hosts", "Hosts by status", m.hosts.clone());
        registry.register(
            "tasks",
            "Host tasks queued or running, by kind and state",
            m.tasks.clone(),
        );
        registry.register(
            "nodes",
            "Node agents not revoked, by state (live: heard from within three heartbeats)",
            m.nodes.clone(),
        );
        registry.register(
            "gateways",
            "SSH gateways known, by state (live: heard from within three heartbeats)",
            m.gateways.clone(),
        );
        registry.register(
            "egress_hosts",
            "Running hosts bound to an egress IP, by their last egress health (unknown: no report yet)",
            m.egress_hosts.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database connections of this replica's pool, by state (idle or in_use)",
            m.pool.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "Most connections this replica's pool may open",
            m.pool_max.clone(),
        );
        registry.register(
            "metrics_scrape_errors",
            "Scrapes whose database reads failed (the series read from the database kept their last values)",
            m.scrape_errors.clone(),
        );
        if embedded.agent {
            agent::metrics::get().register(&mut registry);
        }
        if embedded.gateway {
            ssh_proxy::metrics::get().register(&mut registry);
        }
        Self { registry, ..m }
    }

    /// Counts a sign-in decision.
    pub fn sign_in(&self, way: Way, decision: Decision) {
        let result = match decision {
            Decision::Grant => "granted",
            Decision::Refuse(r) => r.as_str(),
        };
        self.sign_ins
            .get_or_create(&SignInLabels {
                way: way.as_str(),
                result,
            })
            .inc();
    }

    /// Counts a task that reached its final state here, and how long it ran.
    pub fn task_finished(&self, task: &Task) {
        let Some(state) = final_state(task.status) else {
            return;
        };
        let labels = TaskLabels {
            kind: task.kind.as_str(),
            state,
        };
        self.tasks_finished.get_or_create(&labels).inc();
        if let (Some(started), Some(finished)) = (task.started_at, task.finished_at) {
            let secs = (finished.0 - started.0).num_milliseconds().max(0) as f64 / 1000.0;
            self.task_duration.get_or_create(&labels).observe(secs);
        }
    }

    fn request(&self, method: &axum::http::Method, route: &str, status: u16, elapsed: Duration) {
        let method = Method::from(method);
        self.requests
            .get_or_create(&RequestLabels {
                method: method.clone(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                method,
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Reads the gauges kept in the database, then renders everything.
    pub async fn render(&self, db: &db::Pool) -> String {
        if let Err(e) = self.refresh(db).await {
            tracing::warn!(error = %e, "metrics: a database read failed");
            self.scrape_errors.inc();
        }
        self.encode()
    }

    /// Renders the registry as it is.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("metrics: encoding failed");
        }
        out
    }

    async fn refresh(&self, db: &db::Pool) -> Result<(), sqlx::Error> {
        let pool = db.connections();
        self.pool
            .get_or_create(&StateLabel { state: "idle" })
            .set(i64::from(pool.idle));
        self.pool
            .get_or_create(&StateLabel { state: "in_use" })
            .set(i64::from(pool.open.saturating_sub(pool.idle)));
        self.pool_max.set(i64::from(pool.max));

        let mut hosts: Vec<(HostStatus, i64)> = HostStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for (status, n) in db::hosts::count_by_status(db).await? {
            if let Some(slot) = hosts.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = n;
            }
        }
        for (status, n) in hosts {
            self.hosts
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .set(n);
        }

        let active = db::tasks::active_by_kind(db).await?;
        for kind in TaskKind::ALL {
            for (status, state) in [(TaskStatus::Queued, "queued"), (TaskStatus::Running, "running")] {
                let n = active
                    .iter()
                    .filter(|(k, s, _)| k == kind.as_str() && *s == status)
                    .map(|(_, _, n)| *n)
                    .sum();
                self.tasks
                    .get_or_create(&TaskLabels {
                        kind: kind.as_str(),
                        state,
                    })
                    .set(n);
            }
        }

        let now = UtcTime::now();
        let (nodes, live) = db::nodes::seen_counts(db, crate::api::dashboard::agents_live_since(now)).await?;
        self.set_seen(&self.nodes, nodes, live);
        let since = UtcTime::from(now.0 - chrono::Duration::seconds(crate::api::nodes::GATEWAY_SILENCE_SECS));
        let (gateways, live) = db::gateways::seen_counts(db, since).await?;
        self.set_seen(&self.gateways, gateways, live);

        let mut health = [("healthy", 0), ("unhealthy", 0), ("unknown", 0)];
        for report in db::hosts::bound_egress_health(db).await? {
            let slot = match report
                .as_deref()
                .and_then(|r| serde_json::from_str::<wire::EgressHealth>(r).ok())
            {
                Some(h) if h.healthy => 0,
                Some(_) => 1,
                None => 2,
            };
            health[slot].1 += 1;
        }
        for (label, n) in health {
            self.egress_hosts
                .get_or_create(&HealthLabel { health: label })
                .set(n);
        }
        Ok(())
    }

    fn set_seen(&self, family: &Family<StateLabel, Gauge>, total: i64, live: i64) {
        family.get_or_create(&StateLabel { state: "live" }).set(live);
        family
            .get_or_create(&StateLabel { state: "silent" })
            .set(total.saturating_sub(live));
    }
}

fn final_state(status: TaskStatus) -> Option<&'static str> {
    match status {
        TaskStatus::Succeeded => Some("succeeded"),
        TaskStatus::Failed => Some("failed"),
        TaskStatus::Cancelled => Some("cancelled"),
        TaskStatus::Queued | TaskStatus::Running => None,
    }
}

/// Middleware counting every request by its route template and status, and timing it to its
/// response head (a stream or a WebSocket counts until it starts).
pub async fn track(State(metrics): State<std::sync::Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    metrics.request(&method, &route, response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_labelled_by_template_and_code() {
        let m = Metrics::new(Embedded::default());
        let get = axum::http::Method::GET;
        m.request(&get, "/v1/admin/hosts/{host_id}", 200, Duration::from_millis(3));
        m.request(&get, "/v1/admin/hosts/{host_id}", 200, Duration::from_millis(30));
        m.request(
            &axum::http::Method::from_bytes(b"BREW").unwrap(),
            UNMATCHED_ROUTE,
            404,
            Duration::ZERO,
        );
        let text = m.encode();
        assert!(
            text.contains(
                r#"ccp_http_requests_total{method="GET",route="/v1/admin/hosts/{host_id}",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"ccp_http_requests_total{method="OTHER",route="unmatched",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ccp_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/admin/hosts/{host_id}"} 1"#)
                || text.contains(r#"ccp_http_request_duration_seconds_bucket{method="GET",route="/v1/admin/hosts/{host_id}",le="0.005"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn sign_ins_and_tasks() {
        use crate::auth::policy::Refusal;
        let m = Metrics::new(Embedded::default());
        m.sign_in(Way::Api, Decision::Grant);
        m.sign_in(Way::SshKey, Decision::Refuse(Refusal::UnknownKey));
        let now = UtcTime::now();
        let task = Task {
            id: "t".into(),
            host_id: "h".into(),
            kind: TaskKind::Create,
            status: TaskStatus::Succeeded,
            progress: 100,
            stage: String::new(),
            attempts: 1,
            max_attempts: 3,
            error: None,
            requested_by: None,
            cancel_requested: false,
            created_at: now,
            updated_at: now,
            started_at: Some(UtcTime::from(now.0 - chrono::Duration::seconds(3))),
            finished_at: Some(now),
            node_id: None,
            params: serde_json::json!({}),
            lease: None,
        };
        m.task_finished(&task);
        m.task_finished(&Task {
            status: TaskStatus::Running,
            ..task
        });
        let text = m.encode();
        assert!(
            text.contains(r#"ccp_sign_ins_total{way="api",result="granted"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ccp_sign_ins_total{way="ssh_key",result="unknown_key"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ccp_tasks_finished_total{kind="create",state="succeeded"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ccp_task_duration_seconds_sum{kind="create",state="succeeded"} 3"#),
            "{text}"
        );
        assert!(!text.contains(r#"state="running"} 1"#), "{text}");
    }
}
