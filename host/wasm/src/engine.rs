//! Engine settings: one engine per runtime, shared by every workload on it.
//!
//! Instances come from the pooling allocator (instantiation is a slot reuse,
//! not an mmap), and epoch interruption is on so CPU time can be bounded.
//! Compiled code is kept on disk by berth ([`super::cache`]).

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Instance slots in the pool: the most requests the host runs at once.
pub(super) const POOL_SLOTS: u32 = 1000;

/// Builds the engine, with the pooling allocator when `pooled`. Falls back
/// to on-demand allocation (with a warning) where the host will not
/// reserve the pool's address space, e.g. under a tight `ulimit -v`.
pub(super) fn new_engine(pooled: bool) -> wasmtime::Result<Engine> {
    let mut config = base_config();
    if !pooled {
        return Engine::new(&config);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config()));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            tracing::warn!("pooling allocator unavailable ({e}); allocating instances on demand");
            Engine::new(&base_config())
        }
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config
}

fn pool_config() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_SLOTS)
        // A component built from Rust instantiates a few core modules (the
        // program plus adapter shims), each with its own tables.
        .total_core_instances(POOL_SLOTS * 4)
        .total_memories(POOL_SLOTS * 2)
        .total_tables(POOL_SLOTS * 4)
        .total_stacks(POOL_SLOTS)
        // Per-workload memory limits are enforced by each store's limiter;
        // the pool only needs room for the largest a wasm32 memory can be.
        .max_memory_size(4 << 30)
        // A reused slot is reset in place rather than with madvise (which
        // costs a page fault per touched page on the next request). With
        // PAGEMAP_SCAN (Linux ≥ 6.7) only the pages the last request dirtied
        // are restored, roughly tripling hello-world throughput on this kind
        // of host (BENCHMARKS.md); without it the first MiB is memset, which
        // still measured faster than madvise.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(1 << 16)
        .pagemap_scan(Enabled::Auto);
    pool
}
