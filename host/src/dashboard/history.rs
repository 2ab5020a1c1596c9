//! The last hour of each service's traffic and each pod's use, for the
//! dashboard's charts, kept in memory: a sample every [`EVERY`], in a ring
//! of [`KEPT`] per series, so no Prometheus is needed to see a chart and
//! the memory it takes is bounded (at most [`SERIES`] series; those that
//! stopped longest ago go first).
//!
//! A service's requests are counted as they pass the router
//! ([`ServiceTotals`]); each sample is the difference since the last one:
//! requests and 5xx responses per second, and the median and 99th
//! percentile latency interpolated within the duration buckets, as
//! Prometheus's `histogram_quantile` does.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::router::Table;
use crate::router::{DURATION_BUCKETS, HttpMetrics, ServiceTotals};

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(5);
/// Samples kept per series: an hour's.
const KEPT: usize = 720;
/// Series kept at most (services and pods together).
const SERIES: usize = 2000;

/// One service's traffic over time, as the charts take it.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ServiceSeries {
    /// Seconds since the epoch.
    pub t: Vec<u64>,
    pub rate: Vec<f64>,
    pub errors: Vec<f64>,
    /// Milliseconds; none while there were no requests.
    pub p50: Vec<Option<f64>>,
    pub p99: Vec<Option<f64>>,
}

/// One pod's use over time.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PodSeries {
    pub t: Vec<u64>,
    /// Cores.
    pub cpu: Vec<f64>,
    /// Bytes.
    pub memory: Vec<u64>,
}

#[derive(Clone, Copy)]
struct ServicePoint {
    t: u64,
    rate: f64,
    errors: f64,
    p50: Option<f64>,
    p99: Option<f64>,
}

#[derive(Clone, Copy)]
struct PodPoint {
    t: u64,
    cpu: f64,
    memory: u64,
}

/// A service's totals at the last sample.
struct Counted {
    requests: u64,
    errors: u64,
    buckets: Vec<u64>,
}

#[derive(Default)]
struct Rings {
    services: HashMap<String, (Counted, VecDeque<ServicePoint>)>,
    /// CPU seconds used at the last sample, and the samples.
    pods: HashMap<String, (Duration, VecDeque<PodPoint>)>,
}

/// The dashboard's memory of the last hour.
#[derive(Default)]
pub struct History {
    rings: parking_lot::Mutex<Rings>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn push<T>(ring: &mut VecDeque<T>, point: T) {
    if ring.len() == KEPT {
        ring.pop_front();
    }
    ring.push_back(point);
}

impl History {
    /// Takes samples every [`EVERY`] until `stop`.
    pub async fn keep(
        self: Arc<Self>,
        http: Arc<HttpMetrics>,
        table: Arc<Table>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.sample(&http, &table, EVERY.as_secs_f64());
        }
    }

    /// One sample of every service and pod, `seconds` after the last.
    pub fn sample(&self, http: &HttpMetrics, table: &Table, seconds: f64) {
        let t = now();
        let mut rings = self.rings.lock();
        for ((namespace, service), totals) in http.totals() {
            let counted = counted(&totals);
            let key = format!("{namespace}/{service}");
            // A service's totals start at zero when its route is made,
            // after the history began: its first point counts from there.
            let (last, ring) = rings.services.entry(key).or_insert_with(|| {
                let zero = Counted {
                    requests: 0,
                    errors: 0,
                    buckets: vec![0; counted.buckets.len()],
                };
                (zero, VecDeque::new())
            });
            push(ring, point(t, last, &counted, seconds));
            *last = counted;
        }
        for pod in table.pods() {
            let (cpu, memory) = pod
                .containers()
                .iter()
                .map(|c| c.workload.usage())
                .fold((Duration::ZERO, 0u64), |(cpu, memory), u| {
                    (cpu + u.cpu, memory + u.memory)
                });
            let key = format!("{}/{}", pod.namespace, pod.name);
            let (last, ring) = rings
                .pods
                .entry(key)
                .or_insert_with(|| (cpu, VecDeque::new()));
            // A restart starts its containers' CPU time again.
            let used = cpu.saturating_sub(*last).as_secs_f64();
            *last = cpu;
            push(
                ring,
                PodPoint {
                    t,
                    cpu: used / seconds,
                    memory,
                },
            );
        }
        bound(&mut rings);
    }

    pub fn service(&self, key: &str) -> Option<ServiceSeries> {
        let rings = self.rings.lock();
        let (_, ring) = rings.services.get(key)?;
        let mut series = ServiceSeries::default();
        for p in ring {
            series.t.push(p.t);
            series.rate.push(p.rate);
            series.errors.push(p.errors);
            series.p50.push(p.p50);
            series.p99.push(p.p99);
        }
        Some(series)
    }

    pub fn pod(&self, key: &str) -> Option<PodSeries> {
        let rings = self.rings.lock();
        let (_, ring) = rings.pods.get(key)?;
        let mut series = PodSeries::default();
        for p in ring {
            series.t.push(p.t);
            series.cpu.push(p.cpu);
            series.memory.push(p.memory);
        }
        Some(series)
    }
}

fn counted(totals: &ServiceTotals) -> Counted {
    use std::sync::atomic::Ordering::Relaxed;
    Counted {
        requests: totals.requests.load(Relaxed),
        errors: totals.errors.load(Relaxed),
        buckets: totals.buckets.iter().map(|b| b.load(Relaxed)).collect(),
    }
}

fn point(t: u64, last: &Counted, now: &Counted, seconds: f64) -> ServicePoint {
    let requests = now.requests.saturating_sub(last.requests);
    let errors = now.errors.saturating_sub(last.errors);
    let buckets: Vec<u64> = now
        .buckets
        .iter()
        .zip(&last.buckets)
        .map(|(n, l)| n.saturating_sub(*l))
        .collect();
    ServicePoint {
        t,
        rate: requests as f64 / seconds,
        errors: errors as f64 / seconds,
        p50: quantile(0.5, &buckets).map(|s| s * 1000.0),
        p99: quantile(0.99, &buckets).map(|s| s * 1000.0),
    }
}

/// The `q` quantile of observations counted in [`DURATION_BUCKETS`]
/// (and one bucket past them), in seconds: linear within its bucket, the
/// last bound for what fell past it.
fn quantile(q: f64, buckets: &[u64]) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &count) in buckets.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let Some(&upper) = DURATION_BUCKETS.get(i) else {
                return DURATION_BUCKETS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { DURATION_BUCKETS[i - 1] };
            let within = (rank - below as f64) / count as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += count;
    }
    DURATION_BUCKETS.last().copied()
}

/// Drops the series that stopped longest ago while there are too many.
fn bound(rings: &mut Rings) {
    let over = (rings.services.len() + rings.pods.len()).saturating_sub(SERIES);
    if over == 0 {
        return;
    }
    let mut last: Vec<(u64, bool, String)> = rings
        .services
        .iter()
        .map(|(k, (_, r))| (r.back().map_or(0, |p| p.t), true, k.clone()))
        .chain(
            rings
                .pods
                .iter()
                .map(|(k, (_, r))| (r.back().map_or(0, |p| p.t), false, k.clone())),
        )
        .collect();
    last.sort();
    for (_, service, key) in last.into_iter().take(over) {
        if service {
            rings.services.remove(&key);
        } else {
            rings.pods.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut buckets = vec![0u64; DURATION_BUCKETS.len() + 1];
        // 100 requests between 1 and 2.5 ms.
        buckets[4] = 100;
        let p50 = quantile(0.5, &buckets).unwrap();
        assert!((p50 - 0.00175).abs() < 1e-9, "{p50}");
        assert_eq!(quantile(0.5, &vec![0; buckets.len()]), None);
        // Past the last bound: the last bound.
        let mut slow = vec![0u64; DURATION_BUCKETS.len() + 1];
        slow[DURATION_BUCKETS.len()] = 3;
        assert_eq!(quantile(0.99, &slow), Some(10.0));
    }

    #[test]
    fn a_service_s_points_are_rates_since_the_last_sample() {
        let mut registry = prometheus_client::registry::Registry::default();
        let http = HttpMetrics::register(&mut registry);
        let route = http.route("shop", "api");
        let history = History::default();
        let table = Table::default();
        // Counted from the route's start: the first sample has them.
        route.end(route.begin(&http::Method::GET), http::StatusCode::OK);
        history.sample(&http, &table, 5.0);
        for status in [200, 200, 503, 200] {
            route.end(
                route.begin(&http::Method::GET),
                http::StatusCode::from_u16(status).unwrap(),
            );
        }
        history.sample(&http, &table, 2.0);
        let series = history.service("shop/api").unwrap();
        assert_eq!(series.rate, [0.2, 2.0]);
        assert_eq!(series.errors, [0.0, 0.5]);
        assert!(series.p50[1].is_some());
    }
}
