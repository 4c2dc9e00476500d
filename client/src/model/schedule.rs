//! Schedules: jobs enqueued on a cron expression or an interval (`jobbox_schedules`).
//!
//! The record is what every worker reads to decide whether a tick is due, and what the
//! one that fires it advances with a compare-and-set (see `docs/architecture.md`).
//! The logic that computes ticks and plans a fire lives in [`crate::schedules`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::job::Job;

use crate::model::spelling::wire_enum;

/// How many past fires a schedule keeps in [`Schedule::recent_fires`].
///
/// Why: enough for `jobbox schedule show` to show a pattern (and a failing streak),
/// small enough that the record stays a few KiB beside its job template.
pub const RECENT_FIRES: usize = 10;

/// The catch-up bound a schedule gets when it asks for catching up without one.
pub const DEFAULT_CATCH_UP_LIMIT: u32 = 10;

/// The largest catch-up bound: missed ticks enqueued in one go at most.
///
/// Why: a fleet that was down for a day with a 1 s schedule must not flood its queue
/// with 86,400 jobs; 1,000 is one enqueue pipeline's worth.
pub const MAX_CATCH_UP_LIMIT: u32 = 1_000;

wire_enum! {
    /// Whether a schedule fires; SCREAMING_SNAKE_CASE on the wire (`"ACTIVE"`).
    #[derive(Default)]
    pub enum ScheduleStatus {
        /// Fires when due (the default).
        #[default]
        Active = "ACTIVE",
        /// Does not fire until resumed.
        Paused = "PAUSED",
        /// Fired its last repeat (or its cron has no future tick); fires no more.
        Finished = "FINISHED",
    }
}

wire_enum! {
    /// What a schedule does with ticks that passed while nothing could fire them
    /// (every worker down, the server down); SCREAMING_SNAKE_CASE on the wire.
    #[derive(Default)]
    pub enum MissedPolicy {
        /// Enqueue one job for the oldest missed tick, then continue on the grid
        /// (the default).
        #[default]
        Skip = "SKIP",
        /// Enqueue one job per missed tick, oldest first, at most
        /// [`Schedule::catch_up_limit`], then continue on the grid.
        CatchUp = "CATCH_UP",
    }
}

/// One fire of a schedule, as kept in [`Schedule::recent_fires`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleFire {
    /// The tick this fire was for (for `trigger`: the time it was asked for).
    pub tick: DateTime<Utc>,
    /// The job it enqueued.
    pub job_id: String,
    /// When it was enqueued.
    pub fired_at: DateTime<Utc>,
    /// The worker that fired it (none for `trigger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// True for a fire asked for by `trigger` rather than due on the grid.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
}

fn default_catch_up_limit() -> u32 {
    DEFAULT_CATCH_UP_LIMIT
}

fn is_default_catch_up_limit(limit: &u32) -> bool {
    *limit == DEFAULT_CATCH_UP_LIMIT
}

/// A recurring job: the value in `jobbox_schedules` (key = schedule id). Exactly one of
/// `cron` and `interval_seconds` is set. Built by [`crate::ScheduleSpec::build`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The schedule's id (a KV key: letters, digits, `_`, `-`; see
    /// [`crate::MAX_SCHEDULE_ID_LEN`]).
    pub id: String,
    /// Template of the job to enqueue; each fire gets the id
    /// `<schedule id>-<tick as Unix seconds>` and a fresh `created_at`.
    pub job: Job,
    /// Cron expression (5 fields, or 6 with seconds first), evaluated in `tz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA time zone of `cron` (e.g. `Europe/Berlin`); none = UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// Fire every this many seconds, on a grid of multiples of it since the Unix epoch
    /// (so `60` fires at the top of every UTC minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    /// Fires left; `None` repeats forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
    /// The next tick due: fired by the first worker that finds it passed.
    pub next_run_at: DateTime<Utc>,
    /// Active, paused or finished.
    #[serde(default)]
    pub status: ScheduleStatus,
    /// When it last enqueued a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_enqueued_at: Option<DateTime<Utc>>,
    /// Failures to enqueue (each failed attempt counts); reset by a successful fire.
    #[serde(default)]
    pub failure_count: u32,
    /// What happens to ticks missed while nothing could fire them.
    #[serde(default)]
    pub missed: MissedPolicy,
    /// Under [`MissedPolicy::CatchUp`]: missed ticks enqueued at most.
    #[serde(
        default = "default_catch_up_limit",
        skip_serializing_if = "is_default_catch_up_limit"
    )]
    pub catch_up_limit: u32,
    /// Jobs this schedule has enqueued in all.
    #[serde(default)]
    pub fired: u64,
    /// The last fires, oldest first (at most [`RECENT_FIRES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_fires: Vec<ScheduleFire>,
    /// Why the last enqueue failed, while `failure_count` > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// After a failed enqueue: no worker tries again before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// When the schedule was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// When it was last changed by a command (add, pause, resume), not by a fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl Schedule {
    /// Records fires: appends them to [`Schedule::recent_fires`] (keeping the last
    /// [`RECENT_FIRES`]), counts them and clears the failure streak.
    pub fn record_fires(&mut self, fires: impl IntoIterator<Item = ScheduleFire>) {
        for fire in fires {
            self.last_enqueued_at = Some(
                self.last_enqueued_at
                    .map_or(fire.fired_at, |at| at.max(fire.fired_at)),
            );
            self.fired += 1;
            self.recent_fires.push(fire);
        }
        let excess = self.recent_fires.len().saturating_sub(RECENT_FIRES);
        self.recent_fires.drain(..excess);
        self.failure_count = 0;
        self.last_error = None;
        self.retry_at = None;
    }

    /// Records a failed enqueue: counts it, keeps `error` and sets the next try
    /// `backoff` after `now`.
    pub fn record_failure(
        &mut self,
        error: impl Into<String>,
        now: DateTime<Utc>,
        backoff: chrono::TimeDelta,
    ) {
        self.failure_count = self.failure_count.saturating_add(1);
        self.last_error = Some(error.into());
        self.retry_at = Some(now + backoff);
    }

    /// When a worker should look at this schedule next: its next tick, or the retry
    /// time after a failure if that is later; `None` unless active.
    #[must_use]
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        if self.status != ScheduleStatus::Active {
            return None;
        }
        Some(
            self.retry_at
                .map_or(self.next_run_at, |retry| retry.max(self.next_run_at)),
        )
    }
}
