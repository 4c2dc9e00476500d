//! Log lines a handler appends to its job's log.
//!
//! The worker keeps a job's log, bounded, with its result. Lines past the job's log
//! limit (set by the operator) are dropped and counted, long lines are cut (the SDK
//! itself never sends more than 64 KiB in one line), and logging never fails a job.
//!
//! Use the functions here for plain strings, or the format-style macros at the crate
//! root ([`trace!`](crate::trace), [`debug!`](crate::debug), [`info!`](crate::info),
//! [`warn!`](crate::warn), [`error!`](crate::error)):
//!
//! ```
//! use jobbox_guest::log;
//!
//! log::info("starting");
//! jobbox_guest::warn!("skipped {} empty lines", 3);
//! ```
//!
//! Prefer these over `println!`: stdout and stderr are captured by the worker too, but
//! with a small cap and without levels.

use std::fmt;

/// How important a log line is (the WIT `log-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing output.
    Trace,
    /// Diagnostic detail for handler authors.
    Debug,
    /// Normal progress information.
    Info,
    /// Something unexpected that the handler recovered from.
    Warn,
    /// Something failed.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        })
    }
}

/// Appends `message` to the job's log at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    crate::host::log(level, message.as_ref());
}

/// Appends `message` to the job's log at [`Level::Trace`].
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Appends `message` to the job's log at [`Level::Debug`].
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Appends `message` to the job's log at [`Level::Info`].
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Appends `message` to the job's log at [`Level::Warn`].
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Appends `message` to the job's log at [`Level::Error`].
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}

/// What the logging macros call: formats only when the arguments are not a plain
/// string literal.
#[doc(hidden)]
pub fn __log_fmt(level: Level, args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(literal) => crate::host::log(level, literal),
        None => crate::host::log(level, &fmt::format(args)),
    }
}

/// Appends a `format!`-style line to the job's log at a given [`Level`].
///
/// ```
/// use jobbox_guest::log::Level;
///
/// let n = 3;
/// jobbox_guest::log!(Level::Info, "{n} chunks");
/// ```
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log::__log_fmt($level, ::core::format_args!($($arg)+))
    };
}

/// Appends a `format!`-style line to the job's log at [`Level::Trace`](crate::log::Level::Trace).
///
/// ```
/// jobbox_guest::trace!("state = {:?}", (1, 2));
/// ```
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::log::__log_fmt($crate::log::Level::Trace, ::core::format_args!($($arg)+))
    };
}

/// Appends a `format!`-style line to the job's log at [`Level::Debug`](crate::log::Level::Debug).
///
/// ```
/// jobbox_guest::debug!("{} bytes in", 42);
/// ```
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log::__log_fmt($crate::log::Level::Debug, ::core::format_args!($($arg)+))
    };
}

/// Appends a `format!`-style line to the job's log at [`Level::Info`](crate::log::Level::Info).
///
/// ```
/// let words = 12;
/// jobbox_guest::info!("counted {words} words");
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log::__log_fmt($crate::log::Level::Info, ::core::format_args!($($arg)+))
    };
}

/// Appends a `format!`-style line to the job's log at [`Level::Warn`](crate::log::Level::Warn).
///
/// ```
/// jobbox_guest::warn!("skipped {} empty lines", 3);
/// ```
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log::__log_fmt($crate::log::Level::Warn, ::core::format_args!($($arg)+))
    };
}

/// Appends a `format!`-style line to the job's log at [`Level::Error`](crate::log::Level::Error).
///
/// ```
/// jobbox_guest::error!("upstream said {}", 503);
/// ```
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log::__log_fmt($crate::log::Level::Error, ::core::format_args!($($arg)+))
    };
}
