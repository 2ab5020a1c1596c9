//! Requests through the router, per Service: a counter by method and
//! status class and a duration histogram, shaped as ingress-nginx's and
//! Traefik's (`…_requests_total`, `…_request_duration_seconds`).
//!
//! Each route holds a [`RouteMetrics`] with its counters resolved up
//! front (lazily, per method and class), so a request costs two atomic
//! adds and a histogram observation, not a hash of its labels. Label
//! values are bounded: the namespace and service (objects someone made),
//! a method from a fixed list (others are `OTHER`), a status class.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Methods counted by name; any other is `OTHER`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];
const OTHER: usize = METHODS.len();
/// Status classes, `1xx` to `5xx`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Latency buckets from 100 µs (a wasm hello through the router) to 10 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    namespace: String,
    service: String,
    method: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    namespace: String,
    service: String,
}

type Durations = Family<ServiceLabels, Histogram, fn() -> Histogram>;

/// The families every route's requests are counted in.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
    /// The same requests per service, in counters berth reads itself (for
    /// the dashboard's history): prometheus-client's are write-only.
    totals: parking_lot::Mutex<HashMap<(String, String), Arc<ServiceTotals>>>,
}

/// One service's requests since berth started: how many, how many failed
/// (5xx), and how long they took, in [`BUCKETS`] (and one past the last).
#[derive(Debug, Default)]
pub struct ServiceTotals {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub buckets: [AtomicU64; BUCKETS.len() + 1],
}

impl ServiceTotals {
    fn count(&self, seconds: f64, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// The upper bounds of [`ServiceTotals::buckets`], in seconds (the last
/// bucket has none).
pub const DURATION_BUCKETS: &[f64] = &BUCKETS;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Arc<HttpMetrics> {
        let metrics = HttpMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(histogram),
            totals: Default::default(),
        };
        registry.register(
            "berth_service_requests",
            "Requests to a Service (from the ingress, a node port or a guest), by method and \
             status class",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "berth_service_request_duration",
            "Time from a request reaching the router to its response headers",
            Unit::Seconds,
            metrics.durations.clone(),
        );
        Arc::new(metrics)
    }

    /// The counters of one service's requests.
    pub fn route(self: &Arc<Self>, namespace: &str, service: &str) -> RouteMetrics {
        let labels = ServiceLabels {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
        };
        let totals = self
            .totals
            .lock()
            .entry((namespace.to_owned(), service.to_owned()))
            .or_default()
            .clone();
        let route = RouteMetrics {
            duration: self.durations.get_or_create_owned(&labels),
            totals,
            labels,
            families: self.clone(),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
        };
        // The common series exist from the start at zero: a counter whose
        // first sample already holds the burst that made it is invisible
        // to `rate()` and `increase()`.
        for method in [0, 2] {
            for class in [1, 3, 4] {
                route.counter(method, class);
            }
        }
        route
    }

    /// Every service's totals, by (namespace, service).
    pub fn totals(&self) -> Vec<((String, String), Arc<ServiceTotals>)> {
        self.totals
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// One service's request counters, resolved.
#[derive(Debug)]
pub struct RouteMetrics {
    families: Arc<HttpMetrics>,
    labels: ServiceLabels,
    requests: [[OnceLock<Counter>; CLASSES.len()]; METHODS.len() + 1],
    duration: Histogram,
    totals: Arc<ServiceTotals>,
}

/// A request being timed: [`RouteMetrics::end`] counts it.
#[derive(Debug)]
pub struct Timing {
    method: usize,
    started: Instant,
}

impl RouteMetrics {
    pub fn begin(&self, method: &Method) -> Timing {
        Timing {
            method: METHODS
                .iter()
                .position(|m| *m == method.as_str())
                .unwrap_or(OTHER),
            started: Instant::now(),
        }
    }

    /// Counts a request that got its response headers with `status`.
    pub fn end(&self, timing: Timing, status: StatusCode) {
        let seconds = timing.started.elapsed().as_secs_f64();
        self.duration.observe(seconds);
        let class = usize::from(status.as_u16() / 100).clamp(1, CLASSES.len()) - 1;
        self.counter(timing.method, class).inc();
        self.totals.count(seconds, status.is_server_error());
    }

    fn counter(&self, method: usize, class: usize) -> &Counter {
        self.requests[method][class].get_or_init(|| {
            self.families.requests.get_or_create_owned(&RequestLabels {
                namespace: self.labels.namespace.clone(),
                service: self.labels.service.clone(),
                method: METHODS.get(method).copied().unwrap_or("OTHER"),
                code: CLASSES[class],
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_service_method_and_class() {
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        let route = metrics.route("shop", "api");
        for status in [StatusCode::OK, StatusCode::CREATED, StatusCode::NOT_FOUND] {
            route.end(route.begin(&Method::GET), status);
        }
        route.end(
            route.begin(&Method::from_bytes(b"PURGE").unwrap()),
            StatusCode::BAD_GATEWAY,
        );
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"berth_service_requests_total{namespace="shop",service="api",method="GET",code="2xx"} 2"#,
            r#"berth_service_requests_total{namespace="shop",service="api",method="GET",code="4xx"} 1"#,
            r#"berth_service_requests_total{namespace="shop",service="api",method="OTHER",code="5xx"} 1"#,
            r#"berth_service_request_duration_seconds_count{namespace="shop",service="api"} 4"#,
            // Made up front at zero, so the first burst is a rate.
            r#"berth_service_requests_total{namespace="shop",service="api",method="POST",code="5xx"} 0"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
