//! The worker's one wasmtime `Engine` and `Linker`, and the epoch ticker that drives
//! wall-clock deadlines.

use anyhow::Context as _;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};

use super::bindings::HandlerWorld;
use super::limits::{
    ASYNC_STACK_BYTES, EPOCH_TICK, MAX_CORE_INSTANCES_PER_JOB, MAX_MEMORIES_PER_JOB,
    MAX_TABLE_ELEMENTS, MAX_TABLES_PER_JOB, MAX_WASM_STACK_BYTES,
};
use super::scratch::fs::ScratchFs;
use super::state::JobState;

/// How an engine is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Jobs that may run at the same time; sizes the instance pool.
    pub concurrency: u32,
    /// The largest memory limit any job may have, in bytes; sizes each memory slot.
    pub max_memory_bytes: u64,
    /// Use the pooling allocator (pre-reserved instance slots). Off, every instance
    /// is allocated on demand, which suits one-off runs.
    pub pooling: bool,
}

impl EngineConfig {
    /// Pool slots kept beyond `concurrency`, so a job that is still being torn down
    /// never makes the next one wait for a slot.
    pub const SPARE_SLOTS: u32 = 2;
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            max_memory_bytes: jobbox::HandlerLimits::default().memory_bytes,
            pooling: true,
        }
    }
}

/// Builds the engine every job of a worker runs in.
pub fn build_engine(config: EngineConfig) -> anyhow::Result<Engine> {
    let mut wasm = Config::new();
    wasm.consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK_BYTES)
        .async_stack_size(ASYNC_STACK_BYTES)
        .cranelift_opt_level(OptLevel::Speed)
        // Proposals a handler does not need stay off: each is attack surface.
        // (Threads and component-model async are compiled out: their features are off.)
        .wasm_gc(false)
        .wasm_stack_switching(false);
    if config.pooling {
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(config)?));
    }
    Engine::new(&wasm)
        .map_err(anyhow::Error::from)
        .context("failed to build the wasmtime engine")
}

fn pooling_config(config: EngineConfig) -> anyhow::Result<PoolingAllocationConfig> {
    let slots = config.concurrency.max(1) + EngineConfig::SPARE_SLOTS;
    let max_memory = usize::try_from(config.max_memory_bytes)
        .context("memory ceiling does not fit this platform's address space")?;
    let per_job = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * per_job(MAX_CORE_INSTANCES_PER_JOB))
        .total_memories(slots * per_job(MAX_MEMORIES_PER_JOB))
        .total_tables(slots * per_job(MAX_TABLES_PER_JOB))
        .total_stacks(slots)
        .max_core_instances_per_component(per_job(MAX_CORE_INSTANCES_PER_JOB))
        .max_memories_per_component(per_job(MAX_MEMORIES_PER_JOB))
        .max_tables_per_component(per_job(MAX_TABLES_PER_JOB))
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_memory_size(max_memory);
    keep_slots_resident(&mut pool);
    Ok(pool)
}

/// Bytes of a memory slot's touched pages reset in place (by `memset`, or by copying
/// the initial image back) when a job ends, instead of being handed back to the
/// kernel with `madvise` and faulted in again by the next job.
///
/// 512 KiB holds what a small handler touches per job (the echo handler needs less
/// than 128 KiB) and bounds the memory each idle slot keeps: at most
/// `(concurrency + SPARE_SLOTS) × 512 KiB` stays resident. Pages past it are
/// released as before.
const MEMORY_KEEP_RESIDENT_BYTES: usize = 512 * 1024;

/// Bytes of each table reset in place when a job ends: 64 KiB is 8,192 entries,
/// more than a Rust handler's function table uses.
const TABLE_KEEP_RESIDENT_BYTES: usize = 64 * 1024;

/// Resets pool slots in place when the kernel can say which pages a job touched.
///
/// With Linux's `PAGEMAP_SCAN` (6.7+) only the pages a job made resident are reset,
/// so a slot's next job takes no page faults. Without it wasmtime would `memset` the
/// whole low prefix of every slot, which costs more than it saves: the slot is then
/// left to `madvise` as before.
fn keep_slots_resident(pool: &mut PoolingAllocationConfig) {
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT_BYTES)
            .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES);
    }
}

/// Builds the linker: WASI p2 (no preopens but a job's scratch directory, no
/// network, no environment; see [`JobState::new`]), with `wasi:filesystem/types`
/// replaced by the quota-charging [`ScratchFs`], and the `jobbox:handler/host`
/// imports. Nothing else.
pub fn build_linker(engine: &Engine) -> anyhow::Result<Linker<JobState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("failed to add WASI to the linker")?;
    // The same interface again, ours this time: it replaces wasmtime-wasi's.
    linker.allow_shadowing(true);
    wasmtime_wasi::p2::bindings::filesystem::types::add_to_linker::<_, ScratchFs>(
        &mut linker,
        JobState::scratch_fs,
    )
    .map_err(anyhow::Error::from)
    .context("failed to add the scratch filesystem to the linker")?;
    linker.allow_shadowing(false);
    HandlerWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
        .map_err(anyhow::Error::from)
        .context("failed to add the jobbox host imports to the linker")?;
    Ok(linker)
}

/// Starts the thread that advances `engine`'s epoch every [`EPOCH_TICK`].
///
/// The thread holds only a weak reference and ends once the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine) -> anyhow::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("jobbox-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("failed to start the epoch ticker thread")?;
    Ok(())
}
