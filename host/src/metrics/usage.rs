//! Resource use over time, as metrics-server keeps it for
//! `metrics.k8s.io`: every `resolution` the sampler reads each running
//! pod's containers (their cumulative CPU time and current memory) and
//! the node's, and keeps the last hour. CPU usage is then the rate
//! between the last two samples (the window `kubectl top` shows), memory
//! the last sample. The autoscaler reads the same figures.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::router::Table;

/// How much history is kept.
const KEPT: Duration = Duration::from_secs(3600);
/// The most samples kept per pod, whatever the resolution.
const MAX_SAMPLES: usize = 721;

#[derive(Debug, Clone)]
pub struct ContainerSample {
    pub name: String,
    pub cpu: Duration,
    pub memory: u64,
}

#[derive(Debug, Clone)]
struct PodSample {
    at: Instant,
    containers: Vec<ContainerSample>,
    /// Requests the router has sent it, and serving now.
    served: u64,
    in_flight: u64,
}

/// A pod's use over the last window.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    /// When the last sample was taken.
    pub timestamp: SystemTime,
    pub window: Duration,
    /// Per container: cores in use over the window, and memory now.
    pub containers: Vec<(String, f64, u64)>,
    /// Requests per second the router sent it over the window.
    pub requests_per_second: f64,
    /// Requests it was serving at the last sample.
    pub in_flight: u64,
}

/// The machine's use over the last window.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUsage {
    pub timestamp: SystemTime,
    pub window: Duration,
    pub cores: f64,
    pub memory: u64,
}

#[derive(Debug, Clone, Copy)]
struct NodeSample {
    at: Instant,
    /// CPU time busy over all cores since boot.
    busy: Duration,
    memory: u64,
}

#[derive(Debug, Default)]
struct History {
    /// By pod uid: a pod deleted and made again under its name starts
    /// afresh.
    pods: HashMap<String, VecDeque<PodSample>>,
    node: VecDeque<NodeSample>,
    /// Requests to each Service (namespace, name), cumulative.
    services: HashMap<(String, String), VecDeque<(Instant, u64)>>,
}

#[derive(Debug)]
pub struct UsageHistory {
    resolution: Duration,
    /// The wall clock of the last sample, paired with its `Instant`.
    clock: Mutex<Option<(Instant, SystemTime)>>,
    history: Mutex<History>,
}

impl UsageHistory {
    pub fn new(resolution: Duration) -> Arc<UsageHistory> {
        Arc::new(UsageHistory {
            resolution: resolution.max(Duration::from_millis(100)),
            clock: Mutex::new(None),
            history: Mutex::default(),
        })
    }

    /// Samples kept per pod: an hour's, at most [`MAX_SAMPLES`] (a short
    /// resolution keeps less than an hour rather than more memory).
    fn kept(&self) -> usize {
        usize::try_from(KEPT.as_millis() / self.resolution.as_millis())
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .min(MAX_SAMPLES)
    }

    /// Samples every running pod of `table` and the node, every
    /// resolution, until `stop`. Reading a Linux container's use reads its
    /// cgroup files, so each round runs on a blocking thread.
    pub async fn run(
        self: Arc<Self>,
        table: Arc<Table>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.resolution);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (history, table) = (self.clone(), table.clone());
            let _ = tokio::task::spawn_blocking(move || history.sample(&table)).await;
        }
    }

    /// Takes one sample of every running pod and of the node.
    pub fn sample(&self, table: &Table) {
        let at = Instant::now();
        let mut pods: Vec<(String, PodSample)> = Vec::new();
        for pod in table.pods() {
            let containers = pod
                .containers()
                .iter()
                .map(|c| {
                    let usage = c.workload.usage();
                    ContainerSample {
                        name: c.name.clone(),
                        cpu: usage.cpu,
                        memory: usage.memory,
                    }
                })
                .collect();
            pods.push((
                pod.uid.clone(),
                PodSample {
                    at,
                    containers,
                    served: pod.served(),
                    in_flight: pod.in_flight() as u64,
                },
            ));
        }
        let services: Vec<((String, String), u64)> = table
            .routes()
            .iter()
            .map(|r| ((r.key.namespace.clone(), r.key.name.clone()), r.served()))
            .collect();
        let node = node_sample(at);
        let kept = self.kept();
        let mut history = self.history.lock();
        let running: std::collections::HashSet<&str> =
            pods.iter().map(|(uid, _)| uid.as_str()).collect();
        history.pods.retain(|uid, _| running.contains(uid.as_str()));
        for (uid, sample) in pods {
            push_bounded(history.pods.entry(uid).or_default(), sample, kept);
        }
        if let Some(node) = node {
            push_bounded(&mut history.node, node, kept);
        }
        let present: std::collections::HashSet<&(String, String)> =
            services.iter().map(|(key, _)| key).collect();
        history.services.retain(|key, _| present.contains(key));
        for (key, served) in services {
            push_bounded(history.services.entry(key).or_default(), (at, served), kept);
        }
        drop(history);
        *self.clock.lock() = Some((at, SystemTime::now()));
    }

    fn wall(&self, at: Instant) -> SystemTime {
        match *self.clock.lock() {
            Some((mono, wall)) => wall
                .checked_sub(mono.saturating_duration_since(at))
                .unwrap_or(wall),
            None => SystemTime::now(),
        }
    }

    /// The use of the pod with `uid` over the last window; `None` until
    /// it has two samples.
    pub fn pod(&self, uid: &str) -> Option<PodUsage> {
        let history = self.history.lock();
        let (last, before) = last_two(history.pods.get(uid)?)?;
        let window = last.at.saturating_duration_since(before.at);
        let containers = last
            .containers
            .iter()
            .map(|c| {
                let earlier = before
                    .containers
                    .iter()
                    .find(|b| b.name == c.name)
                    .map_or(Duration::ZERO, |b| b.cpu);
                (c.name.clone(), rate(c.cpu, earlier, window), c.memory)
            })
            .collect();
        let at = last.at;
        let requests_per_second = counter_rate(last.served, before.served, window);
        let in_flight = last.in_flight;
        drop(history);
        Some(PodUsage {
            timestamp: self.wall(at),
            window,
            containers,
            requests_per_second,
            in_flight,
        })
    }

    /// Requests per second to Service `name` in `namespace` over the last
    /// window; `None` until it has two samples.
    pub fn service_rate(&self, namespace: &str, name: &str) -> Option<f64> {
        let history = self.history.lock();
        let samples = history
            .services
            .get(&(namespace.to_owned(), name.to_owned()))?;
        let ((at, last), (then, before)) = last_two(samples)?;
        Some(counter_rate(
            *last,
            *before,
            at.saturating_duration_since(*then),
        ))
    }

    /// The machine's use over the last window.
    pub fn node(&self) -> Option<NodeUsage> {
        let history = self.history.lock();
        let (last, before) = last_two(&history.node)?;
        let window = last.at.saturating_duration_since(before.at);
        let usage = (rate(last.busy, before.busy, window), last.memory, last.at);
        drop(history);
        Some(NodeUsage {
            timestamp: self.wall(usage.2),
            window,
            cores: usage.0,
            memory: usage.1,
        })
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, kept: usize) {
    queue.push_back(item);
    while queue.len() > kept {
        queue.pop_front();
    }
}

fn last_two<T>(queue: &VecDeque<T>) -> Option<(&T, &T)> {
    let n = queue.len();
    (n >= 2).then(|| (&queue[n - 1], &queue[n - 2]))
}

/// Cores used between two readings of a cumulative CPU counter. A counter
/// that went back (the container restarted) counts from zero.
fn rate(now: Duration, before: Duration, window: Duration) -> f64 {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    counter_rate(nanos(now), nanos(before), window) / 1e9
}

/// Events per second between two readings of a counter (one that went
/// back counts from zero).
fn counter_rate(now: u64, before: u64, window: Duration) -> f64 {
    if window.is_zero() {
        return 0.0;
    }
    let n = if now >= before { now - before } else { now };
    n as f64 / window.as_secs_f64()
}

/// The machine: CPU time busy (all but idle and I/O wait) and memory in
/// use (total less what the kernel says is available).
fn node_sample(at: Instant) -> Option<NodeSample> {
    use procfs::{Current as _, CurrentSI as _};
    let stat = procfs::KernelStats::current().ok()?;
    let t = &stat.total;
    let ticks = t.user
        + t.nice
        + t.system
        + t.irq.unwrap_or(0)
        + t.softirq.unwrap_or(0)
        + t.steal.unwrap_or(0);
    let busy = Duration::from_secs_f64(ticks as f64 / procfs::ticks_per_second() as f64);
    let memory = procfs::Meminfo::current().ok()?;
    let used = memory
        .mem_total
        .saturating_sub(memory.mem_available.unwrap_or(memory.mem_free));
    Some(NodeSample {
        at,
        busy,
        memory: used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_cores_over_the_window_and_survives_a_reset() {
        let s = Duration::from_secs;
        assert_eq!(rate(s(15), s(5), s(10)), 1.0);
        assert_eq!(
            rate(Duration::from_millis(2500), Duration::ZERO, s(10)),
            0.25
        );
        // Restarted: the counter began again.
        assert_eq!(rate(s(2), s(50), s(10)), 0.2);
        assert_eq!(rate(s(2), s(1), Duration::ZERO), 0.0);
    }

    #[test]
    fn the_node_is_sampled_and_history_is_bounded() {
        assert_eq!(
            UsageHistory::new(Duration::from_millis(100)).kept(),
            MAX_SAMPLES
        );
        let history = UsageHistory::new(Duration::from_secs(1800));
        assert_eq!(history.kept(), 3);
        let table = Table::default();
        for _ in 0..5 {
            history.sample(&table);
        }
        assert_eq!(history.history.lock().node.len(), 3);
        let node = history.node().expect("two samples");
        assert!(node.memory > 0);
        assert!(node.cores >= 0.0);
    }
}
