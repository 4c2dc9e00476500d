//! The one place that calls the worker's imports.
//!
//! On `wasm32` these are the WIT `host` imports. Elsewhere (unit tests and doctests run
//! natively) the generated imports would panic, so log lines and progress reports are
//! written to stderr instead: handlers can be tested with `cargo test` like any crate.

use crate::log::Level;

/// Longest string the SDK passes to the host in one call; longer log lines and
/// progress texts are cut (at a character boundary) before they cross.
///
/// Why: the worker keeps only the first few KiB of a log line anyway, and bounds the
/// bytes a single host call may make it copy (about 1 MiB): a handler that logs a
/// huge string must lose the tail of the line, not fail the job.
const MAX_HOST_STRING_BYTES: usize = 64 * 1024;

/// `s`, cut to at most [`MAX_HOST_STRING_BYTES`] without splitting a character.
fn bounded(s: &str) -> &str {
    if s.len() <= MAX_HOST_STRING_BYTES {
        return s;
    }
    let mut end = MAX_HOST_STRING_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn log(level: Level, message: &str) {
    use crate::bindings::jobbox::handler::host::{self, LogLevel};
    let level = match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    };
    host::log(level, bounded(message));
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn log(level: Level, message: &str) {
    eprintln!("[{level}] {}", bounded(message));
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn report_progress(percent: u8, step: &str, message: &str) {
    use crate::bindings::jobbox::handler::host::{self, Progress};
    let non_empty = |s: &str| (!s.is_empty()).then(|| bounded(s).to_owned());
    host::report_progress(&Progress {
        percent: percent.min(100),
        step: non_empty(step),
        message: non_empty(message),
    });
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn report_progress(percent: u8, step: &str, message: &str) {
    eprintln!(
        "[progress] {}% {} {}",
        percent.min(100),
        bounded(step),
        bounded(message)
    );
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn set_output_content_type(content_type: &str) {
    crate::bindings::jobbox::handler::host::set_output_content_type(bounded(content_type));
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn set_output_content_type(content_type: &str) {
    eprintln!("[output content type] {}", bounded(content_type));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_cut_at_a_char_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(MAX_HOST_STRING_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_HOST_STRING_BYTES);
        assert!(cut.len() > MAX_HOST_STRING_BYTES - 4);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
