//! Schedules: jobs enqueued on a cron expression or an interval (`jobbox_schedules`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::job::Job;

/// Whether a schedule fires; SCREAMING_SNAKE_CASE on the wire (`"ACTIVE"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScheduleStatus {
    /// Fires when due (the default).
    #[default]
    Active,
    /// Does not fire until resumed.
    Paused,
}

impl ScheduleStatus {
    /// The wire name (`"PAUSED"`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Paused => "PAUSED",
        }
    }
}

impl fmt::Display for ScheduleStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
