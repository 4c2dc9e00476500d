//! Cancellation of running jobs: the worker watches the cancellations bucket and
//! stops a job that runs here within one epoch tick of its request being stored.
//!
//! A job that has not started needs nothing from the worker: `cancel` writes its
//! CANCELLED result, which fences it like any result. Nothing here costs anything
//! per job.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// Cancelled job ids remembered, so that a job whose cancellation arrived just
/// before it was registered as running is still stopped.
///
/// Why: only the few milliseconds between a job's admission and its start need
/// covering; 65,536 ids (a few MiB at most) cover far more than that at any rate of
/// cancellations.
const REMEMBERED: usize = 65_536;

/// The ids of recently cancelled jobs, oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct RecentCancels {
    ids: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl RecentCancels {
    /// Remembers `job_id`.
    pub fn insert(&self, job_id: &str) {
        let mut guard = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        let (set, order) = &mut *guard;
        if set.insert(job_id.to_string()) {
            order.push_back(job_id.to_string());
            if order.len() > REMEMBERED
                && let Some(oldest) = order.pop_front()
            {
                set.remove(&oldest);
            }
        }
    }

    /// Whether `job_id` was cancelled recently.
    pub fn contains(&self, job_id: &str) -> bool {
        let guard = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        guard.0.contains(job_id)
    }
}

/// Pause before watching again after the watch failed.
const REWATCH_DELAY: Duration = Duration::from_secs(1);

/// Stops running jobs whose cancellation is stored, until `stop`.
pub(super) async fn watch_cancellations(shared: Arc<Shared>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let mut watch = match shared.client.layout().cancels.watch_all().await {
            Ok(watch) => watch,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch cancellations; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(REWATCH_DELAY) => continue,
                }
            }
        };
        loop {
            let entry = tokio::select! {
                () = stop.cancelled() => return,
                entry = watch.next() => entry,
            };
            match entry {
                Some(Ok(entry)) if entry.operation == Operation::Put => {
                    shared.cancelled.insert(&entry.key);
                    if shared.running.cancel(&entry.key) {
                        tracing::info!(job_id = %entry.key, "cancelling a running job");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the cancellations watch failed; watching again");
                    break;
                }
                None => break,
            }
        }
    }
}
