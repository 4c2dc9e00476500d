//! What a handler reports while it runs: progress and log lines.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

/// Severity of a [`LogEntry`]; lowercase on the wire (`"info"`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal information (the default).
    #[default]
    Info,
    /// Something unexpected that the handler recovered from.
    Warn,
    /// An error.
    Error,
}

impl LogLevel {
    /// Every level, lowest first.
    pub const ALL: [Self; 5] = [
        Self::Trace,
        Self::Debug,
        Self::Info,
        Self::Warn,
        Self::Error,
    ];

    /// The wire name (`"warn"`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
