//! Per-request limits: memory through a `ResourceLimiter`, CPU time through
//! epoch callbacks. Both record why they refused, so a failed request is
//! reported as "exceeded its memory limit", not as the bare trap the guest's
//! allocator turns a refused `memory.grow` into.

use std::time::Duration;
use wasmtime::{ResourceLimiter, UpdateDeadline};

use super::epoch::TICK;

/// Linear memory for one instance, summed over all of its memories.
pub(super) struct MemoryBudget {
    limit: u64,
    used: u64,
    /// The total a refused growth asked for.
    pub(super) refused: Option<u64>,
}

impl MemoryBudget {
    pub(super) fn new(limit: u64) -> Self {
        MemoryBudget {
            limit,
            used: 0,
            refused: None,
        }
    }

    pub(super) fn limit(&self) -> u64 {
        self.limit
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
    pub(super) fn tick(&mut self) -> wasmtime::Result<UpdateDeadline> {
        if self.ticks_left == 0 {
            self.exceeded = true;
            return Err(wasmtime::Trap::Interrupt.into());
        }
        self.ticks_left -= 1;
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_budget_counts_all_memories() {
        let mut m = MemoryBudget::new(100);
        assert!(m.memory_growing(0, 60, None).unwrap());
        assert!(m.memory_growing(0, 40, None).unwrap());
        assert!(!m.memory_growing(40, 41, None).unwrap());
        assert_eq!(m.refused, Some(101));
    }

    #[test]
    fn cpu_budget_runs_out() {
        let mut cpu = CpuBudget::new(TICK * 2);
        assert!(cpu.tick().is_ok());
        assert!(cpu.tick().is_ok());
        assert!(cpu.tick().is_err());
        assert!(cpu.exceeded);
    }
}
