//! Job status: the enum and the per-job state record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::job::Job;

use crate::model::spelling::wire_enum;

wire_enum! {
    /// Where a job is in its lifecycle; SCREAMING_SNAKE_CASE on the wire (`"DEAD_LETTER"`).
    pub enum JobStatus {
        /// Enqueued, waiting for a worker.
        Pending = "PENDING",
        /// Waiting for its `scheduled_at` time.
        Scheduled = "SCHEDULED",
        /// A worker is running it.
        Running = "RUNNING",
        /// Finished successfully (terminal).
        Completed = "COMPLETED",
        /// Failed for good without retries left to try (terminal).
        Failed = "FAILED",
        /// Failed; another attempt is scheduled.
        Retrying = "RETRYING",
        /// Retries exhausted; published to the dead-letter stream (terminal).
        DeadLetter = "DEAD_LETTER",
        /// Cancelled before it completed (terminal).
        Cancelled = "CANCELLED",
    }
}

impl JobStatus {
    /// True once nothing more will happen to the job: COMPLETED, FAILED, DEAD_LETTER or
    /// CANCELLED.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::DeadLetter | Self::Cancelled
        )
    }
}

/// The value in the job-state KV bucket (`jobbox_jobs`, key = job id): the current
/// status of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    /// The job's id.
    pub job_id: String,
    /// The job's queue.
    pub queue: String,
    /// The job's type.
    pub job_type: String,
    /// Current status.
    pub status: JobStatus,
    /// Attempts started so far (0 until a worker picks the job up).
    #[serde(default)]
    pub attempts: u32,
    /// When the job was created.
    pub created_at: DateTime<Utc>,
    /// When this record was last written.
    pub updated_at: DateTime<Utc>,
    /// When the job is due, if delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// When the current (or last) attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the job reached a terminal status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Set by `cancel`; a worker checks it before and while running the job.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Error message of the last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Worker running (or that last ran) the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

impl JobState {
    /// The state of a job just enqueued: PENDING, or SCHEDULED if it has a
    /// `scheduled_at` in the future; `updated_at` now.
    #[must_use]
    pub fn new(job: &Job) -> Self {
        let now = Utc::now();
        let status = match job.scheduled_at {
            Some(at) if at > now => JobStatus::Scheduled,
            _ => JobStatus::Pending,
        };
        Self {
            job_id: job.id.clone(),
            queue: job.queue.clone(),
            job_type: job.job_type.clone(),
            status,
            attempts: 0,
            created_at: job.created_at,
            updated_at: now,
            scheduled_at: job.scheduled_at,
            started_at: None,
            finished_at: None,
            cancel_requested: false,
            last_error: None,
            worker_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn terminal_statuses() {
        let terminal: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                JobStatus::Completed,
                JobStatus::Failed,
                JobStatus::DeadLetter,
                JobStatus::Cancelled
            ]
        );
    }

    #[test]
    fn new_state_follows_the_job() {
        let job = Job::new("echo", Vec::new());
        let s = JobState::new(&job);
        assert_eq!(s.status, JobStatus::Pending);
        assert_eq!(s.job_id, job.id);
        assert_eq!(s.attempts, 0);
        let later = job.delay(Duration::from_secs(3600));
        assert_eq!(JobState::new(&later).status, JobStatus::Scheduled);
    }
}
