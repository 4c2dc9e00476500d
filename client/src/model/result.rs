//! Job results: the one final record per job, in the `jobbox_results` KV bucket.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::error_type::ErrorType;
use crate::model::progress::LogEntry;
use crate::model::status::JobStatus;
use crate::model::usage::Usage;
use crate::wire::{self, WireError};

/// The outcome of a job: the value in the results KV bucket (`jobbox_results`,
/// key = job id). Written once, with KV `create`, so a job has exactly one result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job's id.
    pub job_id: String,
    /// Final status: COMPLETED, FAILED, DEAD_LETTER or CANCELLED.
    pub status: JobStatus,
    /// The handler's output bytes (MessagePack `bin`), if it produced any.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub result: Option<Vec<u8>>,
    /// Error message of the final failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Classified reason of the final failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<ErrorType>,
    /// Whether the last error was retryable (false when retries ran out anyway).
    #[serde(default)]
    pub retryable: bool,
    /// Trap detail or backtrace of a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
    /// When the final attempt started.
    pub start_time: DateTime<Utc>,
    /// When the final attempt finished.
    pub finish_time: DateTime<Utc>,
    /// Attempts made, including the final one.
    #[serde(default)]
    pub attempts: u32,
    /// The worker that ran the final attempt.
    pub worker_id: String,
    /// Digest of the handler that ran the final attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler_digest: Option<String>,
    /// Resource receipt of the final attempt.
    #[serde(default)]
    pub usage: Usage,
    /// Log lines of the final attempt, bounded by the route's log limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogEntry>,
    /// Log lines dropped because a log limit was reached.
    #[serde(default)]
    pub logs_dropped: u64,
}

impl JobResult {
    /// True if the job completed successfully.
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.status == JobStatus::Completed
    }

    /// Parses the output as JSON. A completed job with no output reads as JSON `null`
    /// (so `T = ()` or `Option<_>` works).
    ///
    /// # Errors
    ///
    /// [`WireError::NoResult`] if the job did not complete and has no output;
    /// [`WireError::Json`] if the output is not JSON of type `T`.
    pub fn result_json<T: DeserializeOwned>(&self) -> Result<T, WireError> {
        match &self.result {
            Some(bytes) => wire::from_json(bytes),
            None if self.is_success() => wire::from_json(b"null"),
            None => Err(WireError::NoResult {
                job_id: self.job_id.clone(),
                status: self.status,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: JobStatus, out: Option<&[u8]>) -> JobResult {
        let now = Utc::now();
        JobResult {
            job_id: "j1".into(),
            status,
            result: out.map(<[u8]>::to_vec),
            error: None,
            error_type: None,
            retryable: false,
            traceback: None,
            start_time: now,
            finish_time: now,
            attempts: 1,
            worker_id: "w".into(),
            handler_digest: None,
            usage: Usage::default(),
            logs: Vec::new(),
            logs_dropped: 0,
        }
    }

    #[test]
    fn result_json_cases() {
        let ok = result(JobStatus::Completed, Some(br#"{"n":3}"#));
        let v: serde_json::Value = ok.result_json().expect("json output");
        assert_eq!(v["n"], 3);
        assert!(ok.result_json::<String>().is_err());

        let empty = result(JobStatus::Completed, None);
        empty.result_json::<()>().expect("empty output is null");
        assert_eq!(empty.result_json::<Option<u8>>().expect("null"), None);

        let failed = result(JobStatus::Failed, None);
        let err = failed.result_json::<()>().expect_err("no result");
        assert_eq!(err.to_string(), "job j1 has no result (status FAILED)");
    }
}
