//! Schedules: jobs enqueued on a cron expression or an interval (`jobbox_schedules`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::job::Job;

use crate::model::spelling::wire_enum;

wire_enum! {
    /// Whether a schedule fires; SCREAMING_SNAKE_CASE on the wire (`"ACTIVE"`).
    #[derive(Default)]
    pub enum ScheduleStatus {
        /// Fires when due (the default).
        #[default]
        Active = "ACTIVE",
        /// Does not fire until resumed.
        Paused = "PAUSED",
    }
}

/// A recurring job: the value in `jobbox_schedules` (key = schedule id). Exactly one of
/// `cron` and `interval_seconds` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The schedule's id (a KV key: letters, digits, `_`, `-`).
    pub id: String,
    /// Template of the job to enqueue; each firing gets a fresh id and `created_at`.
    pub job: Job,
    /// Cron expression (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Fire every this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    /// Firings left; `None` repeats forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
    /// When it fires next.
    pub next_run_at: DateTime<Utc>,
    /// Active or paused.
    #[serde(default)]
    pub status: ScheduleStatus,
    /// When it last enqueued a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_enqueued_at: Option<DateTime<Utc>>,
    /// Consecutive failures to enqueue.
    #[serde(default)]
    pub failure_count: u32,
}
