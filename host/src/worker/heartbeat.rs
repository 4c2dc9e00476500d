//! Worker heartbeats in the workers bucket, whose TTL makes a dead worker's entry
//! expire.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use jobbox::{WorkerState, WorkerStatus, wire};
use tokio_util::sync::CancellationToken;

use super::Shared;

/// How often a worker renews its heartbeat: a third of the bucket's TTL, so one lost
/// heartbeat never makes a live worker look dead.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// The worker's status as of now.
pub(super) fn status(
    shared: &Shared,
    state: WorkerState,
    started_at: DateTime<Utc>,
) -> WorkerStatus {
    let current_jobs = shared.running.ids();
    let state = match state {
        WorkerState::Idle | WorkerState::Busy if current_jobs.is_empty() => WorkerState::Idle,
        WorkerState::Idle | WorkerState::Busy => WorkerState::Busy,
        other => other,
    };
    WorkerStatus {
        worker_id: shared.config.worker_id.clone(),
        state,
        queues: shared.config.queues.clone(),
        current_jobs,
        handlers: shared.routes.digests(),
        started_at,
        heartbeat_at: Utc::now(),
        jobs_done: shared.counters.done.load(Ordering::Relaxed),
        jobs_failed: shared.counters.failed.load(Ordering::Relaxed),
        hostname: std::env::var("HOSTNAME").ok(),
        concurrency: shared.config.concurrency,
        last_error: last_load_failure(shared),
    }
}

/// The handler versions this worker failed to load, as one line for `jobbox workers`.
fn last_load_failure(shared: &Shared) -> Option<String> {
    let failures = shared.routes.load_failures();
    if failures.is_empty() {
        return None;
    }
    let lines: Vec<String> = failures
        .iter()
        .map(|(job_type, failure)| {
            format!(
                "{job_type} {}: {}",
                failure.digest,
                failure.error_type.as_str()
            )
        })
        .collect();
    Some(format!("failed to load {}", lines.join("; ")))
}

/// Writes one heartbeat.
pub(super) async fn beat(shared: &Shared, state: WorkerState, started_at: DateTime<Utc>) {
    let status = status(shared, state, started_at);
    let Ok(bytes) = wire::encode(&status) else {
        return;
    };
    if let Err(e) = shared
        .client
        .layout()
        .workers
        .put(&shared.config.worker_id, Bytes::from(bytes))
        .await
    {
        tracing::warn!(error = %e, "failed to write the heartbeat");
    }
}

/// Least time between two heartbeats written because the worker went from idle to
/// busy or back: `jobbox workers` is current within this, at one write per second
/// at most however often a lightly loaded worker changes.
pub const STATE_CHANGE_DEBOUNCE: Duration = Duration::from_secs(1);

/// Renews the heartbeat every [`HEARTBEAT_INTERVAL`], and soon after the worker goes
/// from idle to busy or back, until `stop`.
pub(super) async fn heartbeat_loop(
    shared: Arc<Shared>,
    started_at: DateTime<Utc>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut last_beat = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
            () = shared.running.idle_or_busy() => {
                let next = last_beat + STATE_CHANGE_DEBOUNCE;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(next) => {}
                }
                ticker.reset();
            }
        }
        beat(&shared, WorkerState::Idle, started_at).await;
        last_beat = tokio::time::Instant::now();
    }
}
