//! Per-queue counters (completed, failed, dead_letter, cancelled) added up locally
//! and flushed to the stats stream in batches: one `Nats-Incr` per counter per
//! [`FLUSH_INTERVAL`], not one write per job.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use jobbox::{Client, JobStatus};
use tokio_util::sync::CancellationToken;

/// How often counts are flushed. A worker killed with SIGKILL loses at most this
/// much of its counts (results and events, the record of truth, are not affected).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// Counts not yet flushed, by (queue, counter).
#[derive(Debug, Default)]
pub(crate) struct QueueCounters {
    pending: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl QueueCounters {
    /// Counts one job of `queue` that ended in `status`.
    pub fn add(&self, queue: &str, status: JobStatus) {
        let counter = counter_of(status);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        *pending.entry((queue.to_string(), counter)).or_default() += 1;
    }

    /// Sends every pending count.
    pub async fn flush(&self, client: &Client) {
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for ((queue, counter), n) in pending {
            if let Err(e) = client.count(&queue, counter, n).await {
                tracing::warn!(%queue, counter, n, error = %e, "failed to flush a counter");
            }
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`] until `stop`, then once more.
    pub async fn flush_loop(&self, client: Client, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => self.flush(&client).await,
            }
        }
        self.flush(&client).await;
    }
}

/// The counter a final status adds to.
pub(crate) fn counter_of(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Completed => "completed",
        JobStatus::DeadLetter => "dead_letter",
        JobStatus::Cancelled => "cancelled",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_final_status_has_a_counter() {
        for status in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(jobbox::COUNTERS.contains(&counter_of(status)), "{status}");
        }
    }

    #[test]
    fn counts_add_up_per_queue() {
        let counters = QueueCounters::default();
        counters.add("a", JobStatus::Completed);
        counters.add("a", JobStatus::Completed);
        counters.add("b", JobStatus::Failed);
        let pending = counters.pending.lock().expect("lock");
        assert_eq!(pending.get(&("a".to_string(), "completed")), Some(&2));
        assert_eq!(pending.get(&("b".to_string(), "failed")), Some(&1));
    }
}
