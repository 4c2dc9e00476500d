//! Job events: what happened to a job, published on `jobbox.events.<queue>.<job_id>.<event>`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::error_type::ErrorType;
use crate::model::job::Job;
use crate::model::progress::JobProgress;
use crate::model::usage::Usage;

use crate::model::spelling::wire_enum;

wire_enum! {
    /// What kind of thing happened; SCREAMING_SNAKE_CASE on the wire (`"RETRY_SCHEDULED"`),
    /// lowercase in subjects ([`JobEventType::as_token`]).
    pub enum JobEventType {
        /// The job was published to its queue.
        Enqueued = "ENQUEUED",
        /// A worker started an attempt.
        Started = "STARTED",
        /// The handler reported progress (see [`JobEvent::progress`]).
        Progress = "PROGRESS",
        /// The job finished successfully.
        Completed = "COMPLETED",
        /// An attempt failed (see `error_type`).
        Failed = "FAILED",
        /// A failed attempt will be retried after `delay_ms`.
        RetryScheduled = "RETRY_SCHEDULED",
        /// Retries exhausted; the job went to the dead-letter stream.
        DeadLettered = "DEAD_LETTERED",
        /// The job was cancelled.
        Cancelled = "CANCELLED",
        /// The job was accepted with a future `scheduled_at`; or, on a schedule's
        /// subject (`jobbox.events._schedules.<id>.scheduled`), a schedule was added or
        /// changed (`details.change`: `added`, `paused`, `resumed`).
        Scheduled = "SCHEDULED",
        /// A schedule fired and enqueued this job (`details.schedule_id`,
        /// `details.tick`).
        ScheduleTriggered = "SCHEDULE_TRIGGERED",
        /// A new handler version was deployed for a job type.
        HandlerDeployed = "HANDLER_DEPLOYED",
        /// A worker swapped to a new handler version for a job type.
        HandlerSwapped = "HANDLER_SWAPPED",
        /// A schedule could not enqueue the job of a due tick (`error_message`); it
        /// tries again after a backoff. On the schedule's subject.
        ScheduleFailed = "SCHEDULE_FAILED",
        /// A schedule was removed. On the schedule's subject.
        ScheduleRemoved = "SCHEDULE_REMOVED",
        /// Every job of a batch ended and none failed (`details.summary`). On the
        /// batch's subject, `jobbox.events._batches.<batch_id>.batch_completed`.
        BatchCompleted = "BATCH_COMPLETED",
        /// Every job of a batch ended and at least one failed, was dead-lettered or
        /// cancelled (`details.summary`). On the batch's subject.
        BatchFailed = "BATCH_FAILED",
    }
}

impl JobEventType {
    /// The lowercase subject token (`"retry_scheduled"`), the last token of
    /// `jobbox.events.<queue>.<job_id>.<event>`. An `Other` spelling gives its lower
    /// case with any character that is not `a-z 0-9 _ -` replaced by `_`.
    #[must_use]
    pub fn as_token(self) -> &'static str {
        match self {
            Self::Enqueued => "enqueued",
            Self::Started => "started",
            Self::Progress => "progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::RetryScheduled => "retry_scheduled",
            Self::DeadLettered => "dead_lettered",
            Self::Cancelled => "cancelled",
            Self::Scheduled => "scheduled",
            Self::ScheduleTriggered => "schedule_triggered",
            Self::HandlerDeployed => "handler_deployed",
            Self::HandlerSwapped => "handler_swapped",
            Self::ScheduleFailed => "schedule_failed",
            Self::ScheduleRemoved => "schedule_removed",
            Self::BatchCompleted => "batch_completed",
            Self::BatchFailed => "batch_failed",
            Self::Other(s) => {
                let token: String = s
                    .chars()
                    .map(|c| match c.to_ascii_lowercase() {
                        c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
                        _ => '_',
                    })
                    .collect();
                if token.is_empty() {
                    "_"
                } else {
                    crate::model::spelling::intern(&token)
                }
            }
        }
    }

    /// The event type whose [`as_token`](Self::as_token) is `token`.
    #[must_use]
    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_token() == token)
    }
}

/// One thing that happened to a job (or to a handler), as published on the events
/// stream. Built with [`JobEvent::new`] or [`JobEvent::handler`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobEvent {
    /// The job this is about (empty for handler events).
    pub job_id: String,
    /// What happened.
    pub event_type: JobEventType,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// The worker that reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// The job's queue (empty for handler events).
    #[serde(default)]
    pub queue: String,
    /// The job type.
    pub job_type: String,
    /// Human-readable summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Extra key/value detail.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    /// Classified failure reason (FAILED, RETRY_SCHEDULED, DEAD_LETTERED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<ErrorType>,
    /// Failure message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// How long the attempt took, in milliseconds (COMPLETED, FAILED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Subject of the job message this event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_subject: Option<String>,
    /// Stream sequence of the job message this event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_sequence: Option<u64>,
    /// Digest of the handler involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler_digest: Option<String>,
    /// Resource receipt of the attempt (COMPLETED, FAILED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The attempt this event belongs to (from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Delay before the next attempt, in milliseconds (RETRY_SCHEDULED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The handler's progress report (PROGRESS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<JobProgress>,
    /// The W3C trace id (32 lowercase hex digits) of the job's trace, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl JobEvent {
    /// An event about `job`, stamped now, with `job_id`, `queue`, `job_type` and
    /// `attempt` taken from the job.
    #[must_use]
    pub fn new(event_type: JobEventType, job: &Job) -> Self {
        Self {
            job_id: job.id.clone(),
            event_type,
            timestamp: Utc::now(),
            worker_id: None,
            queue: job.queue.clone(),
            job_type: job.job_type.clone(),
            message: None,
            details: BTreeMap::new(),
            error_type: None,
            error_message: None,
            duration_ms: None,
            nats_subject: None,
            nats_sequence: None,
            handler_digest: None,
            usage: None,
            attempt: Some(job.attempt),
            delay_ms: None,
            progress: None,
            trace_id: job.trace_id().map(str::to_string),
        }
    }

    /// An event about a handler rather than a job (HANDLER_DEPLOYED, HANDLER_SWAPPED):
    /// `job_id` and `queue` are empty, `handler_digest` is set.
    #[must_use]
    pub fn handler(
        event_type: JobEventType,
        job_type: impl Into<String>,
        digest: impl Into<String>,
    ) -> Self {
        Self {
            job_id: String::new(),
            event_type,
            timestamp: Utc::now(),
            worker_id: None,
            queue: String::new(),
            job_type: job_type.into(),
            message: None,
            details: BTreeMap::new(),
            error_type: None,
            error_message: None,
            duration_ms: None,
            nats_subject: None,
            nats_sequence: None,
            handler_digest: Some(digest.into()),
            usage: None,
            attempt: None,
            delay_ms: None,
            progress: None,
            trace_id: None,
        }
    }

    /// An event about a schedule rather than a job (SCHEDULED, SCHEDULE_FAILED,
    /// SCHEDULE_REMOVED): `job_id` is empty, `queue` and `job_type` are the template's,
    /// `details.schedule_id` names the schedule.
    #[must_use]
    pub fn schedule(event_type: JobEventType, schedule: &crate::model::Schedule) -> Self {
        let mut event = Self::handler(event_type, schedule.job.job_type.clone(), String::new())
            .with_detail("schedule_id", schedule.id.clone());
        event.handler_digest = None;
        event.queue.clone_from(&schedule.job.queue);
        event
    }

    /// Sets the reporting worker.
    #[must_use]
    pub fn with_worker(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }

    /// Sets the message.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Adds one detail entry.
    #[must_use]
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// Sets the classified error and its message.
    #[must_use]
    pub fn with_error(mut self, error_type: ErrorType, message: impl Into<String>) -> Self {
        self.error_type = Some(error_type);
        self.error_message = Some(message.into());
        self
    }

    /// Sets the attempt's duration (millisecond resolution).
    #[must_use]
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration_ms = Some(millis(duration));
        self
    }

    /// Sets the subject and stream sequence of the job message.
    #[must_use]
    pub fn with_nats(mut self, subject: impl Into<String>, sequence: u64) -> Self {
        self.nats_subject = Some(subject.into());
        self.nats_sequence = Some(sequence);
        self
    }

    /// Sets the handler digest.
    #[must_use]
    pub fn with_handler_digest(mut self, digest: impl Into<String>) -> Self {
        self.handler_digest = Some(digest.into());
        self
    }

    /// Sets the resource receipt.
    #[must_use]
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Sets the attempt number.
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Sets the delay before the next attempt (millisecond resolution).
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(millis(delay));
        self
    }

    /// Sets the progress report.
    #[must_use]
    pub fn with_progress(mut self, progress: JobProgress) -> Self {
        self.progress = Some(progress);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_lowercase_wire_names() {
        for e in JobEventType::ALL {
            assert_eq!(e.as_token(), e.as_str().to_lowercase());
            assert_eq!(JobEventType::from_token(e.as_token()), Some(e));
        }
        assert_eq!(JobEventType::RetryScheduled.as_token(), "retry_scheduled");
        assert_eq!(JobEventType::from_token("RETRY_SCHEDULED"), None);
    }

    #[test]
    fn new_copies_the_job_and_builders_set_fields() {
        let job = Job::new("echo", Vec::new()).queue("q");
        let e = JobEvent::new(JobEventType::RetryScheduled, &job)
            .with_worker("w1")
            .with_message("m")
            .with_detail("k", "v")
            .with_error(ErrorType::Timeout, "too slow")
            .with_duration(Duration::from_micros(2_500))
            .with_nats("jobbox.jobs.q", 42)
            .with_handler_digest("sha256:00")
            .with_usage(Usage::default())
            .with_attempt(2)
            .with_delay(Duration::from_secs(1))
            .with_progress(JobProgress::default());
        assert_eq!(e.job_id, job.id);
        assert_eq!(e.queue, "q");
        assert_eq!(e.job_type, "echo");
        assert_eq!(e.worker_id.as_deref(), Some("w1"));
        assert_eq!(e.error_type, Some(ErrorType::Timeout));
        assert_eq!(e.duration_ms, Some(2));
        assert_eq!(e.nats_sequence, Some(42));
        assert_eq!(e.attempt, Some(2));
        assert_eq!(e.delay_ms, Some(1000));
        assert_eq!(JobEvent::new(JobEventType::Started, &job).attempt, Some(1));
        let h = JobEvent::handler(JobEventType::HandlerSwapped, "echo", "sha256:00");
        assert!(h.job_id.is_empty());
        assert_eq!(h.handler_digest.as_deref(), Some("sha256:00"));
    }
}
