//! Running one job: a fresh store, the call, the receipt.
//!
//! [`Sandbox::run`] is three stages under one hard deadline: [`Sandbox::prepare`]
//! plus [`JobRun::instantiate`] (a fresh store and instance from the handler's
//! `*Pre`), [`JobRun::call`] (the guest's `handle`), and [`JobRun::finish`] (the
//! receipt, then teardown: the store is dropped and its pool slot reset). The stages
//! are public so that the criterion bench can time each one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobbox::{ErrorType, HandlerLimits, Job, JobProgress, Usage};
use tokio::sync::watch;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::{GuestJobRef, HandlerError, HandlerWorld};
use super::classify::classify;
use super::limits::{HOST_CALL_GRACE, HOSTCALL_BYTES, STDIO_CAPTURE_BYTES};
use super::outcome::{Failure, RunOutcome};
use super::scratch::{JobScratch, ScratchQuota};
use super::state::{CancelFlag, Interruption, JobState, ScratchGrant};
use super::{Handler, Sandbox};

/// How the worker talks to a running job: cancel it, watch its progress.
#[derive(Debug, Clone)]
pub struct JobControl {
    /// Set to stop the job within one epoch tick.
    pub cancel: CancelFlag,
    /// Receives the handler's progress reports (rate limited).
    pub progress: watch::Sender<Option<JobProgress>>,
}

impl Default for JobControl {
    fn default() -> Self {
        Self {
            cancel: CancelFlag::default(),
            progress: watch::channel(None).0,
        }
    }
}

/// What the guest's `handle` returned, or why it did not return.
type Called = wasmtime::Result<Result<Vec<u8>, HandlerError>>;

/// One job's fresh store, between the stages of [`Sandbox::run`].
///
/// Never reused: [`JobRun::finish`] consumes it.
pub struct JobRun {
    store: Store<JobState>,
    /// The job's scratch directory, removed when the run is dropped: declared after
    /// `store`, so the store (and every file the guest had open) goes first.
    scratch: Option<JobScratch>,
    /// Why the run cannot start, found while preparing it.
    failed: Option<Failure>,
    started: Instant,
    timeout: Duration,
    limits: HandlerLimits,
    instance: Option<HandlerWorld>,
    called: Option<Called>,
}

impl std::fmt::Debug for JobRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRun")
            .field("started", &self.started)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Runs `job` on `handler` in a fresh store under `limits`.
    ///
    /// Never panics and never fails: every way a job can end is in the returned
    /// outcome. The deadline starts now, not when the job was fetched.
    pub async fn run(
        &self,
        handler: &Handler,
        job: &Job,
        limits: HandlerLimits,
        control: JobControl,
    ) -> RunOutcome {
        let mut run = self.prepare(limits, control);
        let hard_deadline = run.started + run.timeout + HOST_CALL_GRACE;
        let stages = async {
            if run.instantiate(handler).await {
                run.call(job).await;
            }
        };
        // Dropping the stages mid-way leaves `called` empty: `finish` reports the
        // call as abandoned at its deadline.
        let _ = tokio::time::timeout_at(hard_deadline.into(), stages).await;
        run.finish()
    }

    /// A fresh store for one job under `limits`: fuel, memory and table limits,
    /// the epoch deadline and WASI with nothing granted but a fresh scratch
    /// directory if the limits ask for one. The job's clock starts now.
    pub fn prepare(&self, limits: HandlerLimits, control: JobControl) -> JobRun {
        let started = Instant::now();
        let timeout = Duration::from_millis(limits.timeout_ms);
        let deadline = started + timeout;
        let (mut scratch, mut failed) = match self.grant_scratch(&limits) {
            Ok(granted) => (granted, None),
            Err(failure) => (None, Some(failure)),
        };
        let granted = scratch.as_ref().map(|(dir, quota)| ScratchGrant {
            host_dir: dir.path(),
            quota: Arc::clone(quota),
        });
        let (state, scratch_error) = JobState::new(
            limits,
            deadline,
            control.cancel,
            control.progress,
            STDIO_CAPTURE_BYTES,
            granted,
        );
        if let Some(error) = scratch_error {
            scratch = None;
            failed = Some(Failure::new(ErrorType::Internal, format!("{error:#}")).retryable(true));
        }
        let mut store = Store::new(self.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_hostcall_fuel(HOSTCALL_BYTES);
        // Fuel cannot fail to be set: consume_fuel is always on in this engine.
        let _ = store.set_fuel(limits.fuel);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            Ok(match ctx.data_mut().check_interrupt() {
                Some(_) => UpdateDeadline::Interrupt,
                None => UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())),
            })
        });
        JobRun {
            store,
            scratch: scratch.map(|(dir, _)| dir),
            failed,
            started,
            timeout,
            limits,
            instance: None,
            called: None,
        }
    }
}

impl Sandbox {
    /// A fresh scratch directory and its allowance, if `limits` grant one: the
    /// route's size and file count, each capped by this worker's [`ScratchCaps`].
    ///
    /// [`ScratchCaps`]: super::ScratchCaps
    fn grant_scratch(
        &self,
        limits: &HandlerLimits,
    ) -> Result<Option<(JobScratch, Arc<ScratchQuota>)>, Failure> {
        if !limits.has_scratch() {
            return Ok(None);
        }
        let Some(area) = self.scratch() else {
            return Err(Failure::new(
                ErrorType::Internal,
                "the route grants a scratch directory, but this sandbox has no scratch area",
            )
            .retryable(true));
        };
        let caps = area.caps();
        let quota = ScratchQuota::new(
            limits.scratch_bytes.min(caps.max_bytes),
            limits.scratch_files.min(caps.max_files),
        );
        let dir = area.job_dir().map_err(|e| {
            Failure::new(
                ErrorType::Internal,
                format!(
                    "failed to create a scratch directory in {}: {e}",
                    area.worker_dir().display()
                ),
            )
            .retryable(true)
        })?;
        Ok(Some((dir, Arc::new(quota))))
    }
}

impl JobRun {
    /// The job's scratch directory on the host, if it has one.
    pub fn scratch_dir(&self) -> Option<&std::path::Path> {
        self.scratch.as_ref().map(JobScratch::path)
    }

    /// Instantiates `handler` into this run's store. Returns whether it succeeded;
    /// a failure is kept for [`JobRun::finish`] to classify.
    pub async fn instantiate(&mut self, handler: &Handler) -> bool {
        if self.failed.is_some() {
            return false;
        }
        match handler.pre.instantiate_async(&mut self.store).await {
            Ok(instance) => {
                self.instance = Some(instance);
                true
            }
            Err(error) => {
                self.called = Some(Err(error));
                false
            }
        }
    }

    /// Calls the handler's `handle` with `job`, once; does nothing if the run was
    /// not instantiated or was already called.
    pub async fn call(&mut self, job: &Job) {
        if self.called.is_some() {
            return;
        }
        let Some(instance) = self.instance.take() else {
            return;
        };
        let metadata: Vec<(&str, &str)> = job
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let guest_job = guest_job(job, &metadata);
        let called = instance
            .jobbox_handler_handler()
            .call_handle(&mut self.store, guest_job)
            .await;
        self.called = Some(called);
    }

    /// The outcome and receipt of the run; then the store is dropped, which returns
    /// its instance slot to the pool.
    pub fn finish(mut self) -> RunOutcome {
        let wall_time = self.started.elapsed();
        let limits = self.limits;
        let state = self.store.data_mut();
        state.flush_progress(true);
        let (stdout, _) = state.stdout.contents();
        let (stderr, _) = state.stderr.contents();
        let interrupted = state.interrupted;
        let mut usage = Usage {
            fuel_consumed: 0,
            peak_memory_bytes: state.limiter.peak_memory,
            wall_time_us: u64::try_from(wall_time.as_micros()).unwrap_or(u64::MAX),
            output_bytes: 0,
            log_bytes: state.log.bytes,
            peak_scratch_bytes: state.scratch.bytes(),
            scratch_files: state.scratch.files(),
        };
        let logs = std::mem::take(&mut state.log.entries);
        let logs_dropped = state.log.dropped;
        let output_content_type = state.output_content_type.take();
        usage.fuel_consumed = limits
            .fuel
            .saturating_sub(self.store.get_fuel().unwrap_or(0));

        let called = match self.failed.take() {
            Some(failure) => Some(Ok(Err(failure))),
            None => self
                .called
                .take()
                .map(|called| called.map(|r| r.map_err(guest_failure))),
        };
        let result = match called {
            None => Err(abandoned(interrupted)),
            Some(Err(error)) => Err(classify(&error, interrupted, &stderr)),
            Some(Ok(Err(failure))) => Err(failure),
            Some(Ok(Ok(output))) => {
                usage.output_bytes = output.len() as u64;
                if usage.output_bytes > limits.output_bytes {
                    Err(Failure::new(
                        ErrorType::OutputTooLarge,
                        format!(
                            "output is {} bytes, over the {}-byte limit",
                            usage.output_bytes, limits.output_bytes
                        ),
                    ))
                } else {
                    Ok(output)
                }
            }
        };
        RunOutcome {
            result,
            usage,
            logs,
            logs_dropped,
            output_content_type,
            stdout,
            stderr,
        }
    }
}

/// The job as the guest sees it, borrowed from `job`: nothing is copied until the
/// call lowers it into guest memory.
fn guest_job<'a>(job: &'a Job, metadata: &'a [(&'a str, &'a str)]) -> GuestJobRef<'a> {
    GuestJobRef {
        id: &job.id,
        job_type: &job.job_type,
        queue: &job.queue,
        attempt: job.attempt,
        payload: &job.payload,
        content_type: &job.content_type,
        metadata,
    }
}

/// A handler that returned an error of its own.
fn guest_failure(error: HandlerError) -> Failure {
    match error {
        HandlerError::Retry(message) => {
            Failure::new(ErrorType::GuestError, message).retryable(true)
        }
        HandlerError::Reject(message) => Failure::new(ErrorType::GuestError, message),
    }
}

/// The call was dropped because it outlived its deadline inside a host call.
fn abandoned(interrupted: Option<Interruption>) -> Failure {
    match interrupted {
        Some(Interruption::Cancelled) => {
            Failure::new(ErrorType::Cancelled, "the job was cancelled while running")
        }
        _ => Failure::new(
            ErrorType::Timeout,
            "the handler ran past its deadline while blocked in a host call",
        ),
    }
}
