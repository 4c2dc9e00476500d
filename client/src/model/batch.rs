//! Batches: many jobs enqueued together and followed as one (`jobbox_batches`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::job::{Job, MAX_NAME_LEN};
use crate::model::spelling::wire_enum;
use crate::model::status::JobStatus;

/// Longest batch id, in bytes.
///
/// Why: the batch's job ids are `<batch_id>-<n>` and its callbacks
/// `<batch_id>-on_complete`; both must stay valid names ([`MAX_NAME_LEN`], 128).
pub const MAX_BATCH_ID_LEN: usize = MAX_NAME_LEN - 24;

/// Most jobs in one batch.
///
/// Why: the worker that sees the batch end reads one result per job to make the
/// counts exact, and a tracker keeps one byte per job in memory; a million keeps both
/// bounded (seconds, a megabyte).
pub const MAX_BATCH_JOBS: usize = 1_000_000;

/// How long a batch may stay ENQUEUING without its enqueuer showing progress before
/// a worker gives up on it: its jobs that have no result are recorded CANCELLED, and
/// the batch ends (abandoned, so [`BatchJob::abandoned`]).
///
/// Why: a client that dies halfway through a batch leaves jobs out; retried with the
/// same id within this time, the enqueue completes the batch (an enqueuer touches the
/// record at least every [`ENQUEUE_LEASE_REFRESH`]), and past it nobody is coming
/// back, so the batch must still end and fire its `on_complete`.
pub const ENQUEUE_ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// How often a long batch enqueue touches its record to show it is still going.
pub const ENQUEUE_LEASE_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

wire_enum! {
    /// Where a batch is; SCREAMING_SNAKE_CASE on the wire.
    pub enum BatchStatus {
        /// The record is written; its jobs are being published.
        Enqueuing = "ENQUEUING",
        /// Every job is published; some have not ended.
        Running = "RUNNING",
        /// Every job ended COMPLETED.
        Completed = "COMPLETED",
        /// Every job ended, at least one FAILED or DEAD_LETTER.
        Failed = "FAILED",
        /// The batch was cancelled; every job ended.
        Cancelled = "CANCELLED",
    }
}

impl BatchStatus {
    /// True once the batch has ended (its callbacks are enqueued).
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Jobs of a batch by final status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCounts {
    /// Ended COMPLETED.
    #[serde(default)]
    pub completed: u64,
    /// Ended FAILED.
    #[serde(default)]
    pub failed: u64,
    /// Ended DEAD_LETTER.
    #[serde(default)]
    pub dead_letter: u64,
    /// Ended CANCELLED.
    #[serde(default)]
    pub cancelled: u64,
}

impl BatchCounts {
    /// Jobs that ended, whatever their status.
    #[must_use]
    pub fn ended(&self) -> u64 {
        self.completed + self.failed + self.dead_letter + self.cancelled
    }

    /// Counts one job that ended in `status` (other statuses are not final: ignored).
    pub fn add(&mut self, status: JobStatus) {
        match status {
            JobStatus::Completed => self.completed += 1,
            JobStatus::Failed => self.failed += 1,
            JobStatus::DeadLetter => self.dead_letter += 1,
            JobStatus::Cancelled => self.cancelled += 1,
            _ => {}
        }
    }

    /// True when some job failed or was dead-lettered.
    #[must_use]
    pub fn any_failed(&self) -> bool {
        self.failed + self.dead_letter > 0
    }
}

/// Which callback of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackKind {
    /// Every job COMPLETED.
    OnSuccess,
    /// Some job FAILED or was dead-lettered.
    OnFailure,
    /// Always, once the batch ended (also when it was cancelled).
    OnComplete,
}

impl CallbackKind {
    /// Every kind.
    pub const ALL: [CallbackKind; 3] = [Self::OnSuccess, Self::OnFailure, Self::OnComplete];

    /// The suffix of the callback's job id, `<batch_id>-<suffix>`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnSuccess => "on_success",
            Self::OnFailure => "on_failure",
            Self::OnComplete => "on_complete",
        }
    }
}

/// A batch: the value in `jobbox_batches` (key = batch id).
///
/// The jobs are not listed: the batch's job `n` (from 0) has id `<batch_id>-<n>`, so
/// the record stays small whatever the batch size and any reader can derive every id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BatchJob {
    /// The batch id, a valid name of at most [`MAX_BATCH_ID_LEN`] bytes.
    pub batch_id: String,
    /// A label for people (free text, at most `MAX_FIELD_LEN` bytes).
    pub batch_name: String,
    /// Where the batch is.
    pub status: BatchStatus,
    /// How many jobs the batch has.
    pub jobs: u64,
    /// Jobs ended so far, by status. Exact once the batch is final; while it runs, a
    /// lower bound refreshed by the workers a few times a second.
    #[serde(default)]
    pub counts: BatchCounts,
    /// When the batch was created.
    #[serde(deserialize_with = "super::timestamp::utc")]
    pub created_at: DateTime<Utc>,
    /// When the record last changed.
    #[serde(deserialize_with = "super::timestamp::utc")]
    pub updated_at: DateTime<Utc>,
    /// False once the batch has ended.
    pub active: bool,
    /// Set by `jobbox batch cancel`: the batch's jobs are being cancelled.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Set by a worker when the batch's enqueue stopped short for longer than
    /// [`ENQUEUE_ABANDONED_AFTER`]: the jobs it never stored are recorded CANCELLED
    /// (with `cancel_requested`, so the stored ones that have not started are too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
    /// Enqueued (payload = the batch summary) when every job COMPLETED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<Job>,
    /// Enqueued when some job FAILED or was dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Job>,
    /// Enqueued always, once the batch ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_complete: Option<Job>,
}

impl BatchJob {
    /// A new, active batch of `jobs` jobs, being enqueued.
    #[must_use]
    pub fn new(batch_id: impl Into<String>, batch_name: impl Into<String>, jobs: u64) -> Self {
        let now = Utc::now();
        Self {
            batch_id: batch_id.into(),
            batch_name: batch_name.into(),
            status: BatchStatus::Enqueuing,
            jobs,
            counts: BatchCounts::default(),
            created_at: now,
            updated_at: now,
            active: true,
            cancel_requested: false,
            abandoned: false,
            on_success: None,
            on_failure: None,
            on_complete: None,
        }
    }

    /// Ended jobs as a share of all, `0.0..=1.0` (1.0 for an empty batch).
    #[must_use]
    pub fn progress(&self) -> f64 {
        if self.jobs == 0 {
            return 1.0;
        }
        #[allow(clippy::cast_precision_loss)] // a share for people, not a count
        let share = self.counts.ended() as f64 / self.jobs as f64;
        share.min(1.0)
    }

    /// True if the batch is still ENQUEUING and its enqueuer has not touched it for
    /// longer than [`ENQUEUE_ABANDONED_AFTER`] at `now`.
    #[must_use]
    pub fn enqueue_abandoned(&self, now: DateTime<Utc>) -> bool {
        self.status == BatchStatus::Enqueuing
            && !self.abandoned
            && (now - self.updated_at)
                .to_std()
                .is_ok_and(|idle| idle > ENQUEUE_ABANDONED_AFTER)
    }

    /// The callback template of `kind`, if the batch names one.
    #[must_use]
    pub fn callback(&self, kind: CallbackKind) -> Option<&Job> {
        match kind {
            CallbackKind::OnSuccess => self.on_success.as_ref(),
            CallbackKind::OnFailure => self.on_failure.as_ref(),
            CallbackKind::OnComplete => self.on_complete.as_ref(),
        }
    }

    /// The callbacks an ended batch with `counts` fires: `on_complete` always,
    /// `on_failure` when a job failed or was dead-lettered, `on_success` when every job
    /// completed (never for a cancelled batch).
    #[must_use]
    pub fn callbacks_due(&self, counts: &BatchCounts) -> Vec<CallbackKind> {
        let mut due = Vec::new();
        if counts.completed == self.jobs && !self.cancel_requested {
            due.push(CallbackKind::OnSuccess);
        }
        if counts.any_failed() {
            due.push(CallbackKind::OnFailure);
        }
        due.push(CallbackKind::OnComplete);
        due.retain(|kind| self.callback(*kind).is_some());
        due
    }

    /// The final status of a batch whose jobs ended with `counts`.
    #[must_use]
    pub fn final_status(&self, counts: &BatchCounts) -> BatchStatus {
        if self.cancel_requested {
            BatchStatus::Cancelled
        } else if counts.completed == self.jobs {
            BatchStatus::Completed
        } else {
            BatchStatus::Failed
        }
    }

    /// The summary handed to callbacks and put in the batch's final event (JSON).
    #[must_use]
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "batch_id": self.batch_id,
            "batch_name": self.batch_name,
            "status": self.status.as_str(),
            "jobs": self.jobs,
            "completed": self.counts.completed,
            "failed": self.counts.failed,
            "dead_letter": self.counts.dead_letter,
            "cancelled": self.counts.cancelled,
            "abandoned": self.abandoned,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

/// True if `s` can be a batch id: a valid name of at most [`MAX_BATCH_ID_LEN`] bytes.
#[must_use]
pub fn is_valid_batch_id(s: &str) -> bool {
    s.len() <= MAX_BATCH_ID_LEN && crate::model::job::is_valid_name(s)
}

/// The id of job `n` (from 0) of batch `batch_id`.
#[must_use]
pub fn batch_job_id(batch_id: &str, n: u64) -> String {
    format!("{batch_id}-{n}")
}

/// The id of the callback `kind` of batch `batch_id`: derived, so that every worker
/// that sees the batch end enqueues the same job, and the jobs stream's `Nats-Msg-Id`
/// and the results fence make it run once.
#[must_use]
pub fn callback_job_id(batch_id: &str, kind: CallbackKind) -> String {
    format!("{batch_id}-{}", kind.as_str())
}

/// The batch id and index of a job id of the form `<batch_id>-<n>`, if it has that
/// form (the batch may not exist).
#[must_use]
pub fn parse_batch_job_id(job_id: &str) -> Option<(&str, u64)> {
    let (batch, n) = job_id.rsplit_once('-')?;
    if batch.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // `-07` is not an id this scheme makes: one spelling per index.
    if n.len() > 1 && n.starts_with('0') {
        return None;
    }
    Some((batch, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip() {
        assert_eq!(batch_job_id("b-1", 17), "b-1-17");
        assert_eq!(parse_batch_job_id("b-1-17"), Some(("b-1", 17)));
        assert_eq!(parse_batch_job_id("b-on_complete"), None);
        assert_eq!(parse_batch_job_id("01JABC"), None);
        assert_eq!(parse_batch_job_id("-3"), None);
        assert_eq!(parse_batch_job_id("b-03"), None);
        assert_eq!(
            callback_job_id("b", CallbackKind::OnComplete),
            "b-on_complete"
        );
    }

    #[test]
    fn only_a_stale_enqueuing_batch_is_abandoned() {
        let mut batch = BatchJob::new("b", "n", 3);
        let idle = chrono::Duration::from_std(ENQUEUE_ABANDONED_AFTER).expect("fits");
        let now = batch.updated_at;
        assert!(!batch.enqueue_abandoned(now));
        assert!(!batch.enqueue_abandoned(now + idle));
        assert!(batch.enqueue_abandoned(now + idle + chrono::Duration::seconds(1)));
        // A clock far behind or far ahead of the record's.
        assert!(!batch.enqueue_abandoned(now - idle * 100));
        assert!(batch.enqueue_abandoned(DateTime::<Utc>::MAX_UTC));
        let later = now + idle * 2;
        batch.status = BatchStatus::Running;
        assert!(!batch.enqueue_abandoned(later));
        batch.status = BatchStatus::Enqueuing;
        batch.abandoned = true;
        assert!(!batch.enqueue_abandoned(later), "abandoned once");
    }

    #[test]
    fn longest_batch_ids_give_valid_job_ids() {
        let id = "x".repeat(MAX_BATCH_ID_LEN);
        assert!(is_valid_batch_id(&id));
        assert!(!is_valid_batch_id(&format!("{id}x")));
        assert!(crate::is_valid_name(&batch_job_id(&id, u64::MAX)));
        assert!(crate::is_valid_name(&callback_job_id(
            &id,
            CallbackKind::OnComplete
        )));
        for bad in ["", "a b", "*", ">", "a.b"] {
            assert!(!is_valid_batch_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn callbacks_follow_the_counts() {
        let mut batch = BatchJob::new("b", "n", 3);
        let job = Job::new("echo", Vec::new());
        batch.on_success = Some(job.clone());
        batch.on_failure = Some(job.clone());
        batch.on_complete = Some(job);
        let ok = BatchCounts {
            completed: 3,
            ..Default::default()
        };
        assert_eq!(
            batch.callbacks_due(&ok),
            [CallbackKind::OnSuccess, CallbackKind::OnComplete]
        );
        assert_eq!(batch.final_status(&ok), BatchStatus::Completed);
        let bad = BatchCounts {
            completed: 2,
            dead_letter: 1,
            ..Default::default()
        };
        assert_eq!(
            batch.callbacks_due(&bad),
            [CallbackKind::OnFailure, CallbackKind::OnComplete]
        );
        assert_eq!(batch.final_status(&bad), BatchStatus::Failed);
        batch.cancel_requested = true;
        let cancelled = BatchCounts {
            completed: 1,
            cancelled: 2,
            ..Default::default()
        };
        assert_eq!(batch.callbacks_due(&cancelled), [CallbackKind::OnComplete]);
        assert_eq!(batch.final_status(&cancelled), BatchStatus::Cancelled);
    }
}
