//! What a job's `Store` holds: WASI context, resource accounting and what the guest
//! reported through the host imports.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use jobbox::{HandlerLimits, JobProgress, LogEntry};
use tokio::sync::watch;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use super::limits::{
    MAX_CORE_INSTANCES_PER_JOB, MAX_MEMORIES_PER_JOB, MAX_TABLE_ELEMENTS, MAX_TABLES_PER_JOB,
};
use super::output::CappedOutput;
use super::scratch::fs::ScratchFsView;
use super::scratch::{GUEST_SCRATCH_DIR, ScratchQuota};

/// Why the epoch callback stopped a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The job's wall-clock deadline passed.
    Deadline,
    /// Someone asked for the job to be cancelled.
    Cancelled,
}

/// A request to stop one running job, shared between the worker and the job's store.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Asks the job to stop; it ends within one epoch tick.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The error a store raises when a guest asks for more memory than its limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: the guest asked for {desired} bytes, the limit is {limit}")]
pub struct MemoryLimitExceeded {
    /// Bytes of linear memory the guest would have had in total.
    pub desired: u64,
    /// The job's memory limit in bytes.
    pub limit: u64,
}

/// Linear-memory and table accounting for one job, and its route's ceilings on the
/// component's shape (instances, memories, tables), each capped by the engine's.
#[derive(Debug)]
pub struct JobLimiter {
    memory_limit: u64,
    memory_total: u64,
    /// Most linear memory the job had at any point, in bytes.
    pub peak_memory: u64,
    instances: usize,
    memories: usize,
    tables: usize,
    table_elements: usize,
}

impl JobLimiter {
    /// The limiter for a job under `limits`: a route's ceiling above the engine's
    /// bound (which a deploy refuses, but an old route may carry) is lowered to it.
    fn new(limits: &HandlerLimits) -> Self {
        let capped =
            |route: u64, engine: usize| usize::try_from(route).map_or(engine, |r| r.min(engine));
        Self {
            memory_limit: limits.memory_bytes,
            memory_total: 0,
            peak_memory: 0,
            instances: capped(limits.instances.into(), MAX_CORE_INSTANCES_PER_JOB),
            memories: capped(limits.memories.into(), MAX_MEMORIES_PER_JOB),
            tables: capped(limits.tables.into(), MAX_TABLES_PER_JOB),
            table_elements: capped(limits.table_elements, MAX_TABLE_ELEMENTS),
        }
    }
}

impl wasmtime::ResourceLimiter for JobLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grown = self.memory_total + (desired.saturating_sub(current)) as u64;
        if grown > self.memory_limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired: grown,
                limit: self.memory_limit,
            }));
        }
        self.memory_total = grown;
        self.peak_memory = self.peak_memory.max(grown);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

/// Log lines a job wrote, bounded by its limits.
#[derive(Debug, Default)]
pub struct JobLog {
    /// Lines kept, in order.
    pub entries: Vec<LogEntry>,
    /// Bytes of message text kept.
    pub bytes: u64,
    /// Lines dropped because a limit was reached.
    pub dropped: u64,
}

/// Progress reporting for one job: the latest report, published to whoever watches.
#[derive(Debug)]
pub struct ProgressSink {
    pub(super) sender: watch::Sender<Option<JobProgress>>,
    pub(super) last_sent: Option<Instant>,
    pub(super) pending: Option<JobProgress>,
}

/// Everything a job's `Store` carries.
pub struct JobState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: JobLimiter,
    pub(super) limits: HandlerLimits,
    pub(super) log: JobLog,
    pub(super) progress: ProgressSink,
    /// The output's media type, when the guest said it (`set-output-content-type`).
    pub(super) output_content_type: Option<String>,
    pub(super) stdout: CappedOutput,
    pub(super) stderr: CappedOutput,
    pub(super) deadline: Instant,
    pub(super) cancel: CancelFlag,
    pub(super) interrupted: Option<Interruption>,
    /// The job's scratch allowance (zero, and unused, without a scratch directory).
    pub(super) scratch: Arc<ScratchQuota>,
}

/// A job's scratch directory as its state sees it: where it is on the host, and the
/// allowance.
pub(super) struct ScratchGrant<'a> {
    pub host_dir: &'a Path,
    pub quota: Arc<ScratchQuota>,
}

impl JobState {
    /// A fresh state with no network, environment or arguments, stdout/stderr
    /// captured into capped buffers, and no filesystem but the job's scratch
    /// directory if it has one (preopened as [`GUEST_SCRATCH_DIR`], with `TMPDIR`
    /// pointing at it). If the scratch directory cannot be opened, the state has none
    /// and the error is returned beside it.
    pub(super) fn new(
        limits: HandlerLimits,
        deadline: Instant,
        cancel: CancelFlag,
        progress: watch::Sender<Option<JobProgress>>,
        stdio_capture: usize,
        scratch: Option<ScratchGrant<'_>>,
    ) -> (Self, Option<anyhow::Error>) {
        let stdout = CappedOutput::new(stdio_capture);
        let stderr = CappedOutput::new(stdio_capture);
        // The builder's defaults deny filesystem, sockets and name lookup; nothing
        // below grants any of them but the scratch directory.
        let mut builder = WasiCtx::builder();
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let mut scratch_error = None;
        let mut quota = Arc::new(ScratchQuota::new(0, 0));
        if let Some(grant) = scratch {
            // Filesystem calls run on the job's own thread, not on a blocking pool:
            // no call of the job's can still be creating a file after its store is
            // dropped and its directory removed. (Stream writes still finish on a
            // blocking thread, into files already open.)
            builder
                .allow_blocking_current_thread(true)
                .env("TMPDIR", GUEST_SCRATCH_DIR);
            match builder.preopened_dir(grant.host_dir, GUEST_SCRATCH_DIR, FsPerms::ReadWrite) {
                Ok(_) => quota = grant.quota,
                Err(e) => {
                    scratch_error = Some(anyhow::Error::from(e).context(format!(
                        "failed to open the scratch directory {}",
                        grant.host_dir.display()
                    )));
                }
            }
        }
        let wasi = builder.build();
        let state = Self {
            wasi,
            table: ResourceTable::new(),
            limiter: JobLimiter::new(&limits),
            limits,
            log: JobLog::default(),
            progress: ProgressSink {
                sender: progress,
                last_sent: None,
                pending: None,
            },
            output_content_type: None,
            stdout,
            stderr,
            deadline,
            cancel,
            interrupted: None,
            scratch: quota,
        };
        (state, scratch_error)
    }

    /// The guest's filesystem: wasmtime-wasi's, charged to the job's quota.
    pub(super) fn scratch_fs(&mut self) -> ScratchFsView<'_> {
        ScratchFsView {
            fs: WasiFilesystemCtxView {
                ctx: self.wasi.filesystem(),
                table: &mut self.table,
            },
            quota: &self.scratch,
        }
    }

    /// Decides, on an epoch tick, whether the job may go on.
    pub(super) fn check_interrupt(&mut self) -> Option<Interruption> {
        if self.cancel.is_cancelled() {
            self.interrupted = Some(Interruption::Cancelled);
        } else if Instant::now() >= self.deadline {
            self.interrupted = Some(Interruption::Deadline);
        }
        self.flush_progress(false);
        self.interrupted
    }
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
