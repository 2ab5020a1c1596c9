//! The control loop's own figures, as client-go's work queues export
//! theirs: what waits in each queue, how long a change waits for the pass
//! that handles it, and how long a pass takes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: &'static str,
}

/// From a millisecond to ten seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug)]
pub struct ControllerMetrics {
    depth: Family<QueueLabel, Gauge>,
    wait: Histogram,
    pass: Histogram,
}

impl ControllerMetrics {
    pub fn register(registry: &mut Registry) -> ControllerMetrics {
        let metrics = ControllerMetrics {
            depth: Family::default(),
            wait: Histogram::new(BUCKETS),
            pass: Histogram::new(BUCKETS),
        };
        registry.register(
            "berth_controller_queue_depth",
            "Objects waiting to be reconciled, and timed wake-ups, after a pass",
            metrics.depth.clone(),
        );
        registry.register_with_unit(
            "berth_controller_queue_wait",
            "Time from a change in the store to the start of the pass that handles it",
            Unit::Seconds,
            metrics.wait.clone(),
        );
        registry.register_with_unit(
            "berth_controller_pass_duration",
            "Time a pass of the controllers, the autoscaler, the kubelet and the router takes",
            Unit::Seconds,
            metrics.pass.clone(),
        );
        metrics
    }

    pub fn queues(&self, depth: &[(&'static str, usize)]) {
        for (queue, n) in depth {
            self.depth
                .get_or_create(&QueueLabel { queue })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    pub fn waited(&self, wait: std::time::Duration) {
        self.wait.observe(wait.as_secs_f64());
    }

    pub fn pass(&self, took: std::time::Duration) {
        self.pass.observe(took.as_secs_f64());
    }
}
