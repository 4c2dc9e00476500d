//! What the dashboard's JSON API returns: the records as the page shows them, with
//! bytes turned into bounded text.

use chrono::{DateTime, Utc};
use jobbox::{
    BatchCounts, BatchJob, BatchStatus, CallbackKind, DeadLetter, ErrorType, JobResult, JobStatus,
    LogEntry, Usage,
};
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

/// A batch as the page lists it: the record without its callback templates (their
/// payloads are tenant bytes), with its progress and callback job ids.
#[derive(Debug, Serialize)]
pub struct BatchView {
    pub batch_id: String,
    pub batch_name: String,
    pub status: BatchStatus,
    pub jobs: u64,
    pub counts: BatchCounts,
    pub progress: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub active: bool,
    pub cancel_requested: bool,
    pub abandoned: bool,
    pub callbacks: Vec<CallbackView>,
}

/// One callback a batch names.
#[derive(Debug, Serialize)]
pub struct CallbackView {
    pub kind: &'static str,
    pub job_id: String,
    pub job_type: String,
    pub queue: String,
}

impl From<BatchJob> for BatchView {
    fn from(batch: BatchJob) -> Self {
        let callbacks = CallbackKind::ALL
            .into_iter()
            .filter_map(|kind| {
                batch.callback(kind).map(|job| CallbackView {
                    kind: kind.as_str(),
                    job_id: jobbox::callback_job_id(&batch.batch_id, kind),
                    job_type: job.job_type.clone(),
                    queue: job.queue.clone(),
                })
            })
            .collect();
        Self {
            progress: batch.progress(),
            callbacks,
            batch_id: batch.batch_id,
            batch_name: batch.batch_name,
            status: batch.status,
            jobs: batch.jobs,
            counts: batch.counts,
            created_at: batch.created_at,
            updated_at: batch.updated_at,
            active: batch.active,
            cancel_requested: batch.cancel_requested,
            abandoned: batch.abandoned,
        }
    }
}

/// One job of a batch page: its id and, once it ended, its status.
#[derive(Debug, Serialize)]
pub struct BatchMemberView {
    pub job_id: String,
    pub status: Option<JobStatus>,
    pub error: Option<String>,
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
