//! What a katd replica counts, for `GET /metrics` (the Prometheus / OpenMetrics text format).
//!
//! One [`Metrics`] per process, shared by the engine (tasks, leases, containers) and the API
//! (requests). Counters count what *this* replica did since it started: Prometheus sums them over
//! replicas (`sum by (plugin, state) (rate(kat_tasks_ended_total[5m]))`). The one store-wide figure,
//! the queue depth, is read from the store when scraped ([`Metrics::set_queued`]).
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `kat_tasks_started_total` | counter | `plugin` | containers started for tasks on this replica |
//! | `kat_tasks_ended_total` | counter | `plugin`, `state` | tasks this replica ended, by final state |
//! | `kat_task_duration_seconds` | histogram | `plugin` | from start to end of the tasks this replica ran |
//! | `kat_tasks_running` | gauge | | tasks running on this replica now |
//! | `kat_tasks_queued` | gauge | | queued tasks in the store (all replicas), at the scrape |
//! | `kat_lease_expiries_total` | counter | | expired leases this replica recovered (a worker died or stalled) |
//! | `kat_leases_lost_total` | counter | | leases this replica lost while its container ran (container stopped) |
//! | `kat_container_errors_total` | counter | `plugin` | runtime failures: the container could not be created, started or waited for |
//! | `kat_http_requests_total` | counter | `route`, `method`, `status` | API requests, by route pattern |
//! | `kat_http_request_duration_seconds` | histogram | `route` | API request latency |
//!
//! Labels carry plugin ids, route patterns (`/api/v1/objects/{type}/`), methods, status codes and
//! task states: never an organization, an object or a token.
//!
//! ```
//! use std::time::Duration;
//! use kat_core::metrics::Metrics;
//! use kat_core::task::TaskState;
//!
//! let m = Metrics::new();
//! m.task_started("dns");
//! m.task_ended("dns", TaskState::Completed, Duration::from_millis(150));
//! m.request("/api/v1/objects/", "POST", 201, Duration::from_micros(800));
//! let text = m.render();
//! assert!(text.contains(r#"kat_tasks_ended_total{plugin="dns",state="completed"} 1"#));
//! assert!(text.contains(r#"kat_http_requests_total{route="/api/v1/objects/",method="POST",status="201"} 1"#));
//! assert!(text.ends_with("# EOF\n"));
//! ```

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::task::TaskState;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndedLabels {
    plugin: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

fn task_buckets() -> Histogram {
    // 50 ms to ~27 min.
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

fn request_buckets() -> Histogram {
    // 100 µs to ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// A replica's metrics; see the module docs. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    started: Family<PluginLabel, Counter>,
    ended: Family<EndedLabels, Counter>,
    duration: Family<PluginLabel, Histogram, fn() -> Histogram>,
    running: Gauge,
    queued: Gauge,
    lease_expiries: Counter,
    leases_lost: Counter,
    container_errors: Family<PluginLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kat");
        let started = Family::<PluginLabel, Counter>::default();
        let ended = Family::<EndedLabels, Counter>::default();
        let duration = Family::<PluginLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            task_buckets as fn() -> Histogram,
        );
        let running = Gauge::default();
        let queued = Gauge::default();
        let lease_expiries = Counter::default();
        let leases_lost = Counter::default();
        let container_errors = Family::<PluginLabel, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                request_buckets as fn() -> Histogram,
            );
        registry.register(
            "tasks_started",
            "Containers started for tasks on this replica",
            started.clone(),
        );
        registry.register(
            "tasks_ended",
            "Tasks this replica ended, by final state",
            ended.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Seconds from a task's start to its end, on this replica",
            duration.clone(),
        );
        registry.register(
            "tasks_running",
            "Tasks running on this replica",
            running.clone(),
        );
        registry.register(
            "tasks_queued",
            "Queued tasks in the store, all replicas",
            queued.clone(),
        );
        registry.register(
            "lease_expiries",
            "Expired task leases this replica recovered",
            lease_expiries.clone(),
        );
        registry.register(
            "leases_lost",
            "Task leases this replica lost while the task's container ran",
            leases_lost.clone(),
        );
        registry.register(
            "container_errors",
            "Container runtime failures (create, start, wait)",
            container_errors.clone(),
        );
        registry.register(
            "http_requests",
            "API requests by route pattern, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "API request latency by route pattern",
            request_duration.clone(),
        );
        Metrics {
            registry,
            started,
            ended,
            duration,
            running,
            queued,
            lease_expiries,
            leases_lost,
            container_errors,
            requests,
            request_duration,
        }
    }

    /// A task's container is starting on this replica.
    pub fn task_started(&self, plugin: &str) {
        self.started
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .inc();
        self.running.inc();
    }

    /// A task this replica started ended in `state` after `took`.
    pub fn task_ended(&self, plugin: &str, state: TaskState, took: Duration) {
        let label = PluginLabel {
            plugin: plugin.to_string(),
        };
        self.ended
            .get_or_create(&EndedLabels {
                plugin: label.plugin.clone(),
                state: state.as_str().to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        self.running.dec();
    }

    /// This replica recovered `n` expired leases.
    pub fn leases_expired(&self, n: u64) {
        self.lease_expiries.inc_by(n);
    }

    /// This replica lost the lease of a task whose container it ran (the task no longer runs
    /// here; its end is not this replica's to count).
    pub fn lease_lost(&self) {
        self.leases_lost.inc();
        self.running.dec();
    }

    /// The container runtime failed a task's container.
    pub fn container_error(&self, plugin: &str) {
        self.container_errors
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .inc();
    }

    /// An API request to `route` (the pattern, or `unmatched`) answered `status` after `took`.
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The store's count of queued tasks, read when scraped.
    pub fn set_queued(&self, n: u64) {
        self.queued.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Everything, in the OpenMetrics text format ([`CONTENT_TYPE`]), which Prometheus reads.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
