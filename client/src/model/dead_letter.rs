//! Dead letters: jobs that ran out of retries, published on `jobbox.dlq.<queue>`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::error_type::ErrorType;
use crate::model::job::Job;
use crate::model::usage::Usage;

/// A job that failed for good, with its last error and usage; replayable by
/// re-publishing `job` (with `attempt` reset to 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The job as it was enqueued.
    pub job: Job,
    /// Error message of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Classified reason of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<ErrorType>,
    /// Resource receipt of the last attempt.
    #[serde(default)]
    pub usage: Usage,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// When the job was dead-lettered.
    pub failed_at: DateTime<Utc>,
    /// The worker that ran the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}
