//! What a workload uses, counted as it runs: the CPU time of its guest
//! calls, its live instances and their linear memory, and the instances
//! that ran out of it. These are what
//! `kubectl top`, the autoscaler and `/metrics` read.
//!
//! CPU is the time each poll of a guest call takes, so it counts
//! instantiation and host calls made for the guest (what a container's
//! cgroup would be charged) and not the time the guest waits or is paused
//! by its CPU share (a poll never blocks). It is the monotonic clock, read
//! through the vDSO: the thread's own CPU clock would not count the time
//! the thread is preempted, but reading it is a system call that takes
//! the run queue's lock, which cost the router 2–3% of its CPU (perf).
//! Two reads per poll; a hello request is one poll.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_runtime::Usage;

#[derive(Debug, Default)]
pub(crate) struct Meter {
    cpu_nanos: AtomicU64,
    memory: AtomicU64,
    instances: AtomicU64,
    oom_kills: AtomicU64,
}

impl Meter {
    pub(crate) fn usage(&self) -> Usage {
        Usage {
            cpu: Duration::from_nanos(self.cpu_nanos.load(Ordering::Relaxed)),
            memory: self.memory.load(Ordering::Relaxed),
            instances: Some(self.instances.load(Ordering::Relaxed)),
            oom_kills: self.oom_kills.load(Ordering::Relaxed),
        }
    }

    /// An instance failed for asking more memory than its limit.
    pub(crate) fn out_of_memory(&self) {
        self.oom_kills.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn instance_created(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }

    /// An instance went, with the linear memory it had grown to.
    pub(crate) fn instance_dropped(&self, memory: u64) {
        self.instances.fetch_sub(1, Ordering::Relaxed);
        self.memory.fetch_sub(memory, Ordering::Relaxed);
    }

    pub(crate) fn memory_grown(&self, bytes: u64) {
        self.memory.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Runs `call`, charging the CPU time of each of its polls.
    pub(crate) async fn metered<F: Future>(&self, call: F) -> F::Output {
        let mut call = pin!(call);
        std::future::poll_fn(|cx| {
            let before = std::time::Instant::now();
            let polled = call.as_mut().poll(cx);
            let spent = u64::try_from(before.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.cpu_nanos.fetch_add(spent, Ordering::Relaxed);
            polled
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_call_is_charged_its_cpu_time_and_a_waiting_one_is_not() {
        let meter = Meter::default();
        meter
            .metered(async {
                let start = std::time::Instant::now();
                while start.elapsed() < Duration::from_millis(30) {
                    std::hint::black_box(());
                }
            })
            .await;
        let busy = meter.usage().cpu;
        assert!(busy >= Duration::from_millis(25), "{busy:?}");
        meter
            .metered(tokio::time::sleep(Duration::from_millis(50)))
            .await;
        let waited = meter.usage().cpu - busy;
        assert!(waited < Duration::from_millis(10), "{waited:?}");
    }
}
