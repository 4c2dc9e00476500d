//! Per-queue counters.

use serde::{Deserialize, Serialize};

/// Job counts for one queue, as reported by `jobbox stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// The queue name.
    pub queue: String,
    /// Jobs waiting to run (including scheduled and retrying jobs).
    #[serde(default)]
    pub pending: u64,
    /// Jobs running now.
    #[serde(default)]
    pub running: u64,
    /// Jobs completed successfully.
    #[serde(default)]
    pub completed: u64,
    /// Jobs that failed for good.
    #[serde(default)]
    pub failed: u64,
    /// Jobs in the dead-letter stream.
    #[serde(default)]
    pub dead_letter: u64,
}

impl QueueStats {
    /// Zeroed counters for `queue`.
    #[must_use]
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            ..Self::default()
        }
    }
}
