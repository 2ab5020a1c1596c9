//! Per-request limits: memory through a `ResourceLimiter`, CPU time through
//! epoch callbacks. Both record why they refused, so a failed request is
//! reported as "exceeded its memory limit", not as the bare trap the guest's
//! allocator turns a refused `memory.grow` into.
//!
//! And one per workload: its share of the CPU ([`CpuQuota`]), which pauses
//! guest code rather than failing it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::{ResourceLimiter, UpdateDeadline};

use super::epoch::TICK;
use super::usage::Meter;

/// Linear memory for one instance, summed over all of its memories.
pub(super) struct MemoryBudget {
    limit: u64,
    used: u64,
    /// The total a refused growth asked for.
    pub(super) refused: Option<u64>,
    /// The workload's, which counts what its instances hold.
    meter: Option<Arc<Meter>>,
}

impl MemoryBudget {
    pub(super) fn new(limit: u64, meter: Option<Arc<Meter>>) -> Self {
        if let Some(meter) = &meter {
            meter.instance_created();
        }
        MemoryBudget {
            limit,
            used: 0,
            refused: None,
            meter,
        }
    }

    pub(super) fn limit(&self) -> u64 {
        self.limit
    }
}

impl Drop for MemoryBudget {
    fn drop(&mut self) {
        if let Some(meter) = &self.meter {
            meter.instance_dropped(self.used);
        }
    }
}

/// Tables are bounded generously: they hold references, not data, and the
/// pooling allocator caps them again per slot.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used + (desired - current) as u64;
        if total > self.limit {
            self.refused = Some(total);
            return Ok(false);
        }
        if let Some(meter) = &self.meter {
            meter.memory_grown(total - self.used);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// CPU time one request may use, counted in epoch ticks it was running for.
pub(super) struct CpuBudget {
    limit: Duration,
    ticks_left: u64,
    pub(super) exceeded: bool,
}

impl CpuBudget {
    pub(super) fn new(limit: Duration) -> Self {
        let ticks = limit.as_nanos().div_ceil(TICK.as_nanos()).max(1);
        CpuBudget {
            limit,
            ticks_left: u64::try_from(ticks).unwrap_or(u64::MAX),
            exceeded: false,
        }
    }

    pub(super) fn limit(&self) -> Duration {
        self.limit
    }

    /// Called when the epoch passes the store's deadline while guest code
    /// runs: one more tick of CPU spent. Traps once the budget is gone;
    /// otherwise yields, so a busy guest does not hold the executor thread.
    ///
    /// The yield goes through tokio's `yield_now`, which tokio defers until
    /// its I/O driver has been polled: wasmtime's own yield wakes itself at
    /// once, and a few spinning guests could then keep accepts and reads
    /// waiting for many ticks.
    ///
    /// Time a guest spends waiting in host calls is not charged: the store's
    /// call hook (see `workload.rs`) moves the deadline one tick past "now"
    /// whenever control passes from the host to the guest, so only tick boundaries
    /// crossed while guest code runs reach this callback — an unbiased
    /// estimate of the CPU time it used.
    ///
    /// `pause` is how long the workload's CPU quota wants the guest to wait
    /// and `resumed` where to note when it runs again (see
    /// [`CpuMeter::at_tick`]); the yield then sleeps that long.
    pub(super) fn tick(
        &mut self,
        pause: Option<Duration>,
        resumed: Option<Resumed>,
    ) -> wasmtime::Result<UpdateDeadline> {
        if self.ticks_left == 0 {
            self.exceeded = true;
            return Err(wasmtime::Trap::Interrupt.into());
        }
        self.ticks_left -= 1;
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                match pause {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => tokio::task::yield_now().await,
                }
                if let Some(resumed) = resumed {
                    *resumed.lock().expect("lock") = Some(Instant::now());
                }
            }),
        ))
    }
}

/// The period over which a workload's CPU share is measured, as CFS
/// bandwidth control's default: a workload at its limit runs for its share
/// of each 100 ms and waits out the rest, so it may burst that much at once.
const QUOTA_PERIOD: Duration = Duration::from_millis(100);

/// A workload's share of the CPU (`resources.limits.cpu`), shared by all its
/// requests: a token bucket refilled at `millicores / 1000` seconds of CPU
/// per second and holding at most one period's worth. Guest code that
/// overdraws it is paused (at its next epoch tick, or before it starts)
/// until the debt is repaid, which is what the kernel's CFS quota does to a
/// container's cgroup; it does not fail.
pub struct CpuQuota {
    millicores: u64,
    state: Mutex<Bucket>,
}

struct Bucket {
    /// CPU time in hand, in nanoseconds; negative while in debt.
    tokens: i128,
    refilled: Instant,
}

impl CpuQuota {
    pub fn new(millicores: u64) -> Arc<Self> {
        let millicores = millicores.max(1);
        let quota = CpuQuota {
            millicores,
            state: Mutex::new(Bucket {
                tokens: 0,
                refilled: Instant::now(),
            }),
        };
        quota.state.lock().expect("lock").tokens = quota.burst();
        Arc::new(quota)
    }

    /// One period's share, the most that can be saved up.
    fn burst(&self) -> i128 {
        QUOTA_PERIOD.as_nanos() as i128 * self.millicores as i128 / 1000
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.refilled).as_nanos() as i128;
        bucket.tokens =
            (bucket.tokens + elapsed * self.millicores as i128 / 1000).min(self.burst());
        bucket.refilled = now;
    }

    /// Records `used` CPU time; returns how long to pause to repay any debt.
    pub(super) fn charge(&self, used: Duration) -> Option<Duration> {
        let now = Instant::now();
        let mut bucket = self.state.lock().expect("lock");
        self.refill(&mut bucket, now);
        bucket.tokens -= used.as_nanos() as i128;
        self.debt(&bucket)
    }

    /// How long a request about to run must wait for the debt to be repaid.
    pub(super) fn pause(&self) -> Option<Duration> {
        self.charge(Duration::ZERO)
    }

    fn debt(&self, bucket: &Bucket) -> Option<Duration> {
        (bucket.tokens < 0).then(|| {
            let nanos = (-bucket.tokens) * 1000 / self.millicores as i128;
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        })
    }
}

/// One request's side of its workload's [`CpuQuota`]: times the guest's
/// stretches of running (from the store's call hook) and charges them to
/// the quota in batches, so requests do not all take its lock on every
/// host call.
pub(super) struct CpuMeter {
    quota: Arc<CpuQuota>,
    /// When guest code last got control, while it has it.
    running_since: Option<Instant>,
    /// When a yield at a tick gave it back control: the time before, spent
    /// waiting for the pause or a worker thread, is not the guest's.
    resumed: Resumed,
    unbilled: Duration,
}

/// Where a yield notes the moment the guest runs again.
pub(super) type Resumed = Arc<Mutex<Option<Instant>>>;

/// Unbilled time that is charged at once rather than at the next tick.
const BILL_AT: Duration = Duration::from_millis(1);

impl CpuMeter {
    pub(super) fn new(quota: Arc<CpuQuota>) -> Self {
        CpuMeter {
            quota,
            running_since: None,
            resumed: Arc::default(),
            unbilled: Duration::ZERO,
        }
    }

    /// Guest code got control (a call into it, or a host call returned;
    /// wasmtime also calls the hooks around a yield at a tick, and then
    /// the hook, not the yield's note, says when the guest resumed).
    pub(super) fn resumed(&mut self) {
        self.resumed.lock().expect("lock").take();
        self.running_since = Some(Instant::now());
    }

    /// Since when guest code has run, if it does.
    fn running(&mut self) -> Option<Instant> {
        let noted = self.resumed.lock().expect("lock").take();
        self.running_since.take().or(noted)
    }

    /// Guest code gave control back (it returned, or called the host).
    pub(super) fn stopped(&mut self) {
        if let Some(since) = self.running() {
            self.unbilled += Instant::now().saturating_duration_since(since);
            if self.unbilled >= BILL_AT {
                self.bill();
            }
        }
    }

    fn bill(&mut self) -> Option<Duration> {
        self.quota.charge(std::mem::take(&mut self.unbilled))
    }

    /// At an epoch tick while guest code runs: bills what it has run so
    /// far; returns how long it must pause if that overdrew the quota, and
    /// where the yield is to note when the guest runs again (no hook says).
    pub(super) fn at_tick(&mut self) -> (Option<Duration>, Resumed) {
        if let Some(since) = self.running() {
            self.unbilled += Instant::now().saturating_duration_since(since);
        }
        (self.bill(), self.resumed.clone())
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        self.stopped();
        if !self.unbilled.is_zero() {
            self.bill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_budget_counts_all_memories() {
        let meter = Arc::new(Meter::default());
        let mut m = MemoryBudget::new(100, Some(meter.clone()));
        assert!(m.memory_growing(0, 60, None).unwrap());
        assert!(m.memory_growing(0, 40, None).unwrap());
        assert!(!m.memory_growing(40, 41, None).unwrap());
        assert_eq!(m.refused, Some(101));
        let usage = meter.usage();
        assert_eq!((usage.memory, usage.instances), (100, Some(1)));
        drop(m);
        let usage = meter.usage();
        assert_eq!((usage.memory, usage.instances), (0, Some(0)));
    }

    #[test]
    fn cpu_budget_runs_out() {
        let mut cpu = CpuBudget::new(TICK * 2);
        assert!(cpu.tick(None, None).is_ok());
        assert!(cpu.tick(None, None).is_ok());
        assert!(cpu.tick(None, None).is_err());
        assert!(cpu.exceeded);
    }

    #[test]
    fn a_quota_lends_one_period_then_asks_for_the_debt_to_be_repaid() {
        // 250 millicores: 25 ms of CPU per 100 ms period.
        let quota = CpuQuota::new(250);
        assert_eq!(quota.charge(Duration::from_millis(20)), None);
        // 10 ms over: repaid at a quarter of real time, 40 ms.
        let pause = quota.charge(Duration::from_millis(15)).expect("in debt");
        assert!(
            pause > Duration::from_millis(35) && pause <= Duration::from_millis(40),
            "{pause:?}"
        );
        std::thread::sleep(pause);
        assert_eq!(quota.pause(), None);
    }
}
