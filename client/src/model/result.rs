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
    /// The output's media type (e.g. `application/json`, `application/msgpack`):
    /// what the handler said, else the job's content type. Left out by workers before
    /// it existed: read it as the job's content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
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
    /// The W3C trace id (32 lowercase hex digits) of the job's trace, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl JobResult {
    /// A COMPLETED result with the handler's `output`. Times are now; set the rest
    /// with the `with_*` methods.
    #[must_use]
    pub fn completed(job_id: impl Into<String>, output: impl Into<Vec<u8>>) -> Self {
        Self::new(job_id.into(), JobStatus::Completed).with_output(output)
    }

    /// A FAILED result: the final attempt failed with `error_type` and `message`.
    /// Use [`with_status`](Self::with_status) for DEAD_LETTER.
    #[must_use]
    pub fn failed(
        job_id: impl Into<String>,
        error_type: ErrorType,
        message: impl Into<String>,
    ) -> Self {
        let mut r = Self::new(job_id.into(), JobStatus::Failed);
        r.error_type = Some(error_type);
        r.error = Some(message.into());
        r
    }

    /// A CANCELLED result (error type `cancelled`) with the reason in `message`.
    #[must_use]
    pub fn cancelled(job_id: impl Into<String>, message: impl Into<String>) -> Self {
        let mut r = Self::failed(job_id, ErrorType::Cancelled, message);
        r.status = JobStatus::Cancelled;
        r
    }

    fn new(job_id: String, status: JobStatus) -> Self {
        let now = Utc::now();
        Self {
            job_id,
            status,
            result: None,
            content_type: None,
            error: None,
            error_type: None,
            retryable: false,
            traceback: None,
            start_time: now,
            finish_time: now,
            attempts: 0,
            worker_id: String::new(),
            handler_digest: None,
            usage: Usage::default(),
            logs: Vec::new(),
            logs_dropped: 0,
            trace_id: None,
        }
    }

    /// Sets the status (e.g. DEAD_LETTER for a failure whose retries ran out).
    #[must_use]
    pub fn with_status(mut self, status: JobStatus) -> Self {
        self.status = status;
        self
    }

    /// Sets the output bytes.
    #[must_use]
    pub fn with_output(mut self, output: impl Into<Vec<u8>>) -> Self {
        self.result = Some(output.into());
        self
    }

    /// Sets the output's media type.
    #[must_use]
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets whether the last error was retryable.
    #[must_use]
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Sets the trap detail or backtrace.
    #[must_use]
    pub fn with_traceback(mut self, traceback: impl Into<String>) -> Self {
        self.traceback = Some(traceback.into());
        self
    }

    /// Sets when the final attempt started and finished.
    #[must_use]
    pub fn with_times(mut self, start: DateTime<Utc>, finish: DateTime<Utc>) -> Self {
        self.start_time = start;
        self.finish_time = finish;
        self
    }

    /// Sets the number of attempts made, including the final one.
    #[must_use]
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Sets the worker that ran the final attempt.
    #[must_use]
    pub fn with_worker(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = worker_id.into();
        self
    }

    /// Sets the digest of the handler that ran the final attempt (`None` keeps it unset).
    #[must_use]
    pub fn with_handler_digest(mut self, digest: Option<&str>) -> Self {
        self.handler_digest = digest.map(str::to_string);
        self
    }

    /// Sets the resource receipt.
    #[must_use]
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// Sets the kept log lines and the count of dropped ones.
    #[must_use]
    pub fn with_logs(mut self, logs: Vec<LogEntry>, dropped: u64) -> Self {
        self.logs = logs;
        self.logs_dropped = dropped;
        self
    }

    /// Sets the trace id (`None` keeps it unset).
    #[must_use]
    pub fn with_trace_id(mut self, trace_id: Option<&str>) -> Self {
        self.trace_id = trace_id.map(str::to_string);
        self
    }

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
        let mut r = JobResult::completed("j1", Vec::new())
            .with_status(status)
            .with_attempts(1)
            .with_worker("w");
        r.result = out.map(<[u8]>::to_vec);
        r
    }

    #[test]
    fn constructors_set_status_and_error() {
        let ok = JobResult::completed("j", b"1".to_vec());
        assert!(ok.is_success());
        assert_eq!(ok.result.as_deref(), Some(&b"1"[..]));
        assert_eq!((ok.error.as_ref(), ok.error_type), (None, None));

        let failed = JobResult::failed("j", ErrorType::Trap, "boom")
            .with_status(JobStatus::DeadLetter)
            .with_retryable(true);
        assert_eq!(failed.status, JobStatus::DeadLetter);
        assert_eq!(failed.error_type, Some(ErrorType::Trap));
        assert_eq!(failed.error.as_deref(), Some("boom"));
        assert!(failed.retryable && failed.result.is_none());

        let cancelled = JobResult::cancelled("j", "stop");
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert_eq!(cancelled.error_type, Some(ErrorType::Cancelled));
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
