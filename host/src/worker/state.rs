//! The job state bucket from the worker's side: claim a job before running it (the
//! point where a cancellation of a pending job wins), and record how it ended.

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::Utc;
use jobbox::{Job, JobState, JobStatus, wire};

use super::Shared;

/// Tries of the compare-and-set loop before giving up on the state (the job still runs).
const CLAIM_ATTEMPTS: usize = 5;

/// Whether a job may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// The job is now RUNNING here, as this attempt (1-based).
    Run(u32),
    /// The state bucket could not be used: run, counting attempts by deliveries.
    RunUntracked,
    /// Someone cancelled the job before it started.
    Cancelled,
}

/// Marks `job` RUNNING on this worker unless it was cancelled. A compare-and-set on
/// the state's revision makes a concurrent cancel either win (job never runs) or
/// come after (the running job is stopped by the cancel broadcast).
pub(super) async fn claim(shared: &Shared, job: &Job) -> Claim {
    let jobs = &shared.client.layout().jobs;
    for _ in 0..CLAIM_ATTEMPTS {
        let entry = match jobs.entry(&job.id).await {
            Ok(entry) => entry.filter(|e| e.operation == kv::Operation::Put),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the job state; running anyway");
                return Claim::RunUntracked;
            }
        };
        let (mut state, revision) = match entry {
            Some(entry) => match wire::decode::<JobState>(&entry.value) {
                Ok(state) => (state, Some(entry.revision)),
                Err(_) => (JobState::new(job), Some(entry.revision)),
            },
            None => (JobState::new(job), None),
        };
        if state.cancel_requested || state.status == JobStatus::Cancelled {
            return Claim::Cancelled;
        }
        let now = Utc::now();
        // Attempts count runs, not deliveries: a delayed job that came back early
        // was delivered without running.
        let attempt = state.attempts.saturating_add(1);
        state.status = JobStatus::Running;
        state.attempts = attempt;
        state.started_at = Some(now);
        state.updated_at = now;
        state.worker_id = Some(shared.config.worker_id.clone());
        let Ok(bytes) = wire::encode(&state) else {
            return Claim::RunUntracked;
        };
        let written = match revision {
            Some(revision) => jobs
                .update(&job.id, Bytes::from(bytes), revision)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => jobs
                .create(&job.id, Bytes::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        if written.is_ok() {
            return Claim::Run(attempt);
        }
    }
    tracing::warn!("job state keeps changing under us; running anyway");
    Claim::RunUntracked
}

/// Whether a cancellation was requested for `job_id` (false when unknown).
pub(super) async fn cancel_requested(shared: &Shared, job_id: &str) -> bool {
    matches!(
        shared.client.job_state(job_id).await,
        Ok(Some(state)) if state.cancel_requested
    )
}

/// Records the job's new status (RETRYING or a final one). Not awaited: the result
/// is the record of truth and the state follows it.
pub(super) async fn record_status(
    shared: &Shared,
    job: &Job,
    status: JobStatus,
    error: Option<&str>,
    started_at: Option<chrono::DateTime<Utc>>,
) {
    let now = Utc::now();
    let mut state = JobState::new(job);
    state.status = status;
    state.attempts = job.attempt;
    state.started_at = started_at;
    state.updated_at = now;
    state.worker_id = Some(shared.config.worker_id.clone());
    state.last_error = error.map(str::to_string);
    if status.is_terminal() {
        state.finished_at = Some(now);
    }
    // Sent, not awaited: the publish is ordered on this connection before anything
    // this worker does next, and the result (already stored) is the record of truth.
    if let Err(e) = shared.client.put_job_state_nowait(&state).await {
        tracing::warn!(error = %e, "failed to record the job state");
    }
}
