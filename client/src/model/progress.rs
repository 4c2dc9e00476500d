//! What a handler reports while it runs: progress and log lines.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::spelling::wire_enum;

/// A progress report from a running handler, published as a PROGRESS event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    /// Percent done, 0..=100 (the host clamps larger values to 100).
    pub percent: u8,
    /// Name of the current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Free-form message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

wire_enum! {
    /// Severity of a [`LogEntry`]; lowercase on the wire (`"info"`).
    #[derive(Default, PartialOrd, Ord)]
    pub enum LogLevel {
        /// Very detailed tracing.
        Trace = "trace",
        /// Debugging detail.
        Debug = "debug",
        /// Normal information (the default).
        #[default]
        Info = "info",
        /// Something unexpected that the handler recovered from.
        Warn = "warn",
        /// An error.
        Error = "error",
    }
}

/// One log line written by a handler; kept (bounded) with the [`crate::JobResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When the line was written.
    pub timestamp: DateTime<Utc>,
    /// Severity.
    #[serde(default)]
    pub level: LogLevel,
    /// The text.
    pub message: String,
}

impl LogEntry {
    /// A log line stamped now.
    #[must_use]
    pub fn new(level: LogLevel, message: impl Into<String>) -> Self {
        Self {
            timestamp: Utc::now(),
            level,
            message: message.into(),
        }
    }
}
