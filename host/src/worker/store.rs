//! Writing a job's records: classifying why a write failed, and making a record fit.
//!
//! Callers branch on [`WriteError`], never on error strings: a write that can never
//! succeed (too large) is made to fit or made final, a conflict is the fence working,
//! and everything else (store full, NATS away) is waited out with a growing backoff.

use std::error::Error as StdError;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use jobbox::{ErrorType, JobResult, JobStatus};

/// Why a write to JetStream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// The key already has a value (a KV `create` lost the fence).
    Conflict,
    /// The record is larger than the server accepts: the same write fails every time.
    TooLarge,
    /// The JetStream store is full: writes fail until space returns.
    StoreFull,
    /// Anything else (timeout, disconnection, leader change): may pass if retried.
    Transient,
}

impl WriteError {
    /// Classifies an error from a publish, a KV `create` or a KV `put` by walking its
    /// source chain to the publish error and the JetStream error code.
    pub fn classify(error: &(dyn StdError + 'static)) -> Self {
        let mut current: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(e) = current {
            if let Some(create) = e.downcast_ref::<async_nats::jetstream::kv::CreateError>()
                && create.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists
            {
                return Self::Conflict;
            }
            if let Some(publish) = e.downcast_ref::<PublishError>() {
                match publish.kind() {
                    PublishErrorKind::MaxPayloadExceeded => return Self::TooLarge,
                    PublishErrorKind::WrongLastSequence => return Self::Conflict,
                    _ => {}
                }
            }
            if let Some(api) = e.downcast_ref::<async_nats::jetstream::Error>() {
                return Self::from_code(api.error_code());
            }
            current = e.source();
        }
        Self::Transient
    }

    /// The class of a JetStream API error code.
    pub fn from_code(code: ErrorCode) -> Self {
        match code {
            ErrorCode::INSUFFICIENT_RESOURCES | ErrorCode::STORAGE_RESOURCES_EXCEEDED => {
                Self::StoreFull
            }
            ErrorCode::STREAM_WRONG_LAST_SEQUENCE => Self::Conflict,
            ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => Self::TooLarge,
            _ => Self::Transient,
        }
    }

    /// What an operator reads in the log.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Conflict => "the key already has a value",
            Self::TooLarge => "the record is larger than a NATS message may be",
            Self::StoreFull => "the JetStream store is full",
            Self::Transient => "NATS did not store it (unreachable or busy)",
        }
    }
}

/// Longest error message kept in a result, event or dead letter, in bytes.
///
/// Why: a guest's error string is tenant-controlled and may be up to the 1 MiB
/// host-call cap; 4 KiB is a screenful, as a log line is, and keeps every record that
/// carries it far below a NATS message.
pub const MAX_ERROR_BYTES: usize = 4 * 1024;

/// Longest trap detail (backtrace, stderr tail) kept in a result, in bytes.
pub const MAX_TRACEBACK_BYTES: usize = 16 * 1024;

/// The largest encoded record the worker writes: a NATS message with room for the
/// headers and the subject.
pub const MAX_RECORD_BYTES: usize = jobbox::NATS_MAX_PAYLOAD - 16 * 1024;

/// Cuts `text` to at most `max` bytes at a character boundary, marking the cut.
pub fn cap_text(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    const MARK: &str = "… (truncated)";
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
}

/// How far [`shrink`] has cut a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Shrunk {
    /// Logs dropped, error and traceback cut.
    Trimmed,
    /// The output dropped too: the result is a final failure that says why.
    Final,
}

/// Makes `result` smaller for a retry of a write refused as too large, one step at a
/// time; `None` when nothing more can go.
pub(crate) fn shrink(result: &mut JobResult, done: Option<Shrunk>) -> Option<Shrunk> {
    match done {
        None => {
            result.logs_dropped = result.logs_dropped.saturating_add(result.logs.len() as u64);
            result.logs.clear();
            if let Some(error) = &mut result.error {
                cap_text(error, MAX_ERROR_BYTES);
            }
            if let Some(traceback) = &mut result.traceback {
                cap_text(traceback, 1024);
            }
            Some(Shrunk::Trimmed)
        }
        Some(Shrunk::Trimmed) => {
            let size = result.result.as_ref().map_or(0, Vec::len);
            result.result = None;
            result.status = JobStatus::Failed;
            result.error_type = Some(ErrorType::OutputTooLarge);
            result.error = Some(format!(
                "the job's result ({size} bytes of output) is larger than a NATS message may be"
            ));
            result.retryable = false;
            result.traceback = None;
            Some(Shrunk::Final)
        }
        Some(Shrunk::Final) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(output: usize, error: usize) -> JobResult {
        let now = chrono::Utc::now();
        let line = jobbox::LogEntry {
            timestamp: now,
            level: jobbox::LogLevel::Info,
            message: "l".into(),
        };
        let mut r = JobResult::completed("j", vec![b'x'; output])
            .with_traceback("t".repeat(100_000))
            .with_logs(vec![line; 3], 1);
        r.error = Some("é".repeat(error / 2));
        r
    }

    #[test]
    fn capping_keeps_characters_whole() {
        let mut text = "é".repeat(10_000);
        cap_text(&mut text, MAX_ERROR_BYTES);
        assert!(text.len() <= MAX_ERROR_BYTES);
        assert!(text.ends_with("(truncated)"));
        let mut short = "ok".to_string();
        cap_text(&mut short, 10);
        assert_eq!(short, "ok");
    }

    #[test]
    fn shrinking_goes_step_by_step_to_a_final_failure() {
        let mut r = result(900_000, 1_000_000);
        assert_eq!(shrink(&mut r, None), Some(Shrunk::Trimmed));
        assert!(r.logs.is_empty());
        assert_eq!(r.logs_dropped, 4);
        assert!(r.error.as_ref().expect("error").len() <= MAX_ERROR_BYTES);
        assert!(r.result.is_some(), "the output stays while it may fit");
        assert_eq!(shrink(&mut r, Some(Shrunk::Trimmed)), Some(Shrunk::Final));
        assert_eq!(r.status, JobStatus::Failed);
        assert_eq!(r.error_type, Some(ErrorType::OutputTooLarge));
        assert!(r.result.is_none());
        assert!(jobbox::encode(&r).expect("encodes").len() < 4096);
        assert_eq!(shrink(&mut r, Some(Shrunk::Final)), None);
    }

    #[test]
    fn codes_classify() {
        assert_eq!(
            WriteError::from_code(ErrorCode::INSUFFICIENT_RESOURCES),
            WriteError::StoreFull
        );
        assert_eq!(
            WriteError::from_code(ErrorCode::STREAM_WRONG_LAST_SEQUENCE),
            WriteError::Conflict
        );
        assert_eq!(
            WriteError::from_code(ErrorCode::STREAM_NOT_FOUND),
            WriteError::Transient
        );
        let too_large = PublishError::new(PublishErrorKind::MaxPayloadExceeded);
        assert_eq!(WriteError::classify(&too_large), WriteError::TooLarge);
        let timed_out = PublishError::new(PublishErrorKind::TimedOut);
        assert_eq!(WriteError::classify(&timed_out), WriteError::Transient);
    }
}
