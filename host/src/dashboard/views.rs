//! What the dashboard's JSON API returns: the records as the page shows them, with
//! bytes turned into bounded text.

use chrono::{DateTime, Utc};
use jobbox::{DeadLetter, ErrorType, JobResult, JobStatus, LogEntry, Usage};
use serde::Serialize;

/// Most bytes of a payload or output shown as text; the rest is cut.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// `bytes` as UTF-8 text (invalid sequences replaced), cut to [`MAX_TEXT_BYTES`].
pub fn text_of(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_TEXT_BYTES)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > MAX_TEXT_BYTES {
        text.push_str(" …(cut)");
    }
    text
}

/// A job's result as the page shows it.
#[derive(Debug, Serialize)]
pub struct ResultView {
    pub status: JobStatus,
    pub output: Option<String>,
    pub error: Option<String>,
    pub error_type: Option<ErrorType>,
    pub traceback: Option<String>,
    pub start_time: DateTime<Utc>,
    pub finish_time: DateTime<Utc>,
    pub attempts: u32,
    pub worker_id: String,
    pub handler_digest: Option<String>,
    pub usage: Usage,
    pub logs: Vec<LogEntry>,
    pub logs_dropped: u64,
}

impl From<JobResult> for ResultView {
    fn from(result: JobResult) -> Self {
        Self {
            status: result.status,
            output: result.result.as_deref().map(text_of),
            error: result.error,
            error_type: result.error_type,
            traceback: result.traceback,
            start_time: result.start_time,
            finish_time: result.finish_time,
            attempts: result.attempts,
            worker_id: result.worker_id,
            handler_digest: result.handler_digest,
            usage: result.usage,
            logs: result.logs,
            logs_dropped: result.logs_dropped,
        }
    }
}

/// A dead letter as the page lists it.
#[derive(Debug, Serialize)]
pub struct DeadLetterView {
    pub sequence: u64,
    pub job_id: String,
    pub queue: String,
    pub job_type: String,
    pub payload: String,
    pub error: Option<String>,
    pub error_type: Option<ErrorType>,
    pub attempts: u32,
    pub failed_at: DateTime<Utc>,
    pub worker_id: Option<String>,
}

impl DeadLetterView {
    pub fn new(sequence: u64, letter: DeadLetter) -> Self {
        Self {
            sequence,
            payload: text_of(&letter.job.payload),
            job_id: letter.job.id,
            queue: letter.job.queue,
            job_type: letter.job.job_type,
            error: letter.error,
            error_type: letter.error_type,
            attempts: letter.attempts,
            failed_at: letter.failed_at,
            worker_id: letter.worker_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_lossy_and_bounded() {
        assert_eq!(text_of(b"a\xffb"), "a\u{fffd}b");
        let long = vec![b'x'; MAX_TEXT_BYTES + 10];
        assert!(text_of(&long).ends_with("…(cut)"));
        assert!(text_of(&long).len() < MAX_TEXT_BYTES + 16);
    }
}
