//! The `jobbox:handler/host` imports: log lines, progress reports and the output's
//! content type.
//!
//! They only record into the job's store and never fail the guest: past its limits a
//! guest's lines are counted and dropped, progress reports are rate limited, and a
//! content type that is not one is ignored with a warning in the job's log.

use std::time::Instant;

use chrono::Utc;
use jobbox::{JobProgress, LogEntry, LogLevel};

use super::bindings::{GuestLogLevel, GuestProgress, Host};
use super::limits::{MAX_LOG_LINE_BYTES, PROGRESS_INTERVAL};
use super::state::JobState;

impl Host for JobState {
    fn log(&mut self, level: GuestLogLevel, message: String) {
        let log = &mut self.log;
        let message = truncate_line(message);
        let full = log.entries.len() as u64 >= self.limits.log_lines
            || log.bytes + message.len() as u64 > self.limits.log_bytes;
        if full {
            log.dropped += 1;
            return;
        }
        log.bytes += message.len() as u64;
        log.entries.push(LogEntry {
            timestamp: Utc::now(),
            level: log_level(level),
            message,
        });
    }

    fn report_progress(&mut self, progress: GuestProgress) {
        self.progress.pending = Some(JobProgress {
            percent: progress.percent.min(100),
            step: progress.step.map(truncate_line),
            message: progress.message.map(truncate_line),
        });
        self.flush_progress(false);
    }

    fn set_output_content_type(&mut self, content_type: String) {
        if jobbox::is_valid_content_type(&content_type) {
            self.output_content_type = Some(content_type);
        } else {
            let shown: String = content_type.chars().take(64).collect();
            self.log(
                GuestLogLevel::Warn,
                format!(
                    "set-output-content-type ignored: {shown:?} ({} bytes) is not a media type",
                    content_type.len()
                ),
            );
        }
    }
}

impl JobState {
    /// Publishes the pending progress report if the rate limit allows, or always when
    /// `force` is set (at the end of a job).
    pub(super) fn flush_progress(&mut self, force: bool) {
        let sink = &mut self.progress;
        let due = sink
            .last_sent
            .is_none_or(|sent| sent.elapsed() >= PROGRESS_INTERVAL);
        if !(force || due) {
            return;
        }
        if let Some(progress) = sink.pending.take() {
            sink.sender.send_replace(Some(progress));
            sink.last_sent = Some(Instant::now());
        }
    }
}

fn log_level(level: GuestLogLevel) -> LogLevel {
    match level {
        GuestLogLevel::Trace => LogLevel::Trace,
        GuestLogLevel::Debug => LogLevel::Debug,
        GuestLogLevel::Info => LogLevel::Info,
        GuestLogLevel::Warn => LogLevel::Warn,
        GuestLogLevel::Error => LogLevel::Error,
    }
}

/// Cuts `line` to at most [`MAX_LOG_LINE_BYTES`] on a character boundary.
fn truncate_line(line: String) -> String {
    cut_to(line, MAX_LOG_LINE_BYTES)
}

/// `text` cut to at most `max` bytes (on a character boundary), marked with "…".
pub(super) fn cut_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let line = "é".repeat(MAX_LOG_LINE_BYTES);
        let cut = truncate_line(line);
        assert!(cut.len() <= MAX_LOG_LINE_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn short_lines_are_kept() {
        assert_eq!(truncate_line("hello".into()), "hello");
    }
}
