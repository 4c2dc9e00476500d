//! The one place that calls the worker's imports.
//!
//! On `wasm32` these are the WIT `host` imports. Elsewhere (unit tests and doctests run
//! natively) the generated imports would panic, so log lines and progress reports are
//! written to stderr instead: handlers can be tested with `cargo test` like any crate.

use crate::log::Level;

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
    host::log(level, message);
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn log(level: Level, message: &str) {
    eprintln!("[{level}] {message}");
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn report_progress(percent: u8, step: &str, message: &str) {
    use crate::bindings::jobbox::handler::host::{self, Progress};
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    host::report_progress(&Progress {
        percent: percent.min(100),
        step: non_empty(step),
        message: non_empty(message),
    });
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn report_progress(percent: u8, step: &str, message: &str) {
    eprintln!("[progress] {}% {step} {message}", percent.min(100));
}
