//! Worker heartbeats: the value in the `jobbox_workers` KV bucket.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::spelling::wire_enum;

wire_enum! {
    /// What a worker is doing; SCREAMING_SNAKE_CASE on the wire (`"IDLE"`).
    pub enum WorkerState {
        /// Connecting, creating consumers, loading handlers.
        Starting = "STARTING",
        /// Running, no job in flight.
        Idle = "IDLE",
        /// Running at least one job.
        Busy = "BUSY",
        /// Draining: finishing jobs in flight, taking no new ones.
        Stopping = "STOPPING",
    }
}

/// A worker's heartbeat (`jobbox_workers`, key = worker id; the key expires when the
/// worker stops beating).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The worker's id.
    pub worker_id: String,
    /// What it is doing.
    pub state: WorkerState,
    /// Queues it consumes.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Ids of the jobs it is running.
    #[serde(default)]
    pub current_jobs: Vec<String>,
    /// Handlers loaded: job type → digest.
    #[serde(default)]
    pub handlers: BTreeMap<String, String>,
    /// When the worker started.
    pub started_at: DateTime<Utc>,
    /// When this heartbeat was written.
    pub heartbeat_at: DateTime<Utc>,
    /// Jobs completed since start.
    #[serde(default)]
    pub jobs_done: u64,
    /// Jobs failed since start.
    #[serde(default)]
    pub jobs_failed: u64,
    /// Host name of the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Jobs it runs at once at most.
    #[serde(default)]
    pub concurrency: u32,
    /// The last host-side error it hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
