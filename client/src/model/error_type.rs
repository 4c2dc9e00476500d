//! Why an attempt failed, classified.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The classified reason an attempt failed; snake_case on the wire (`"out_of_fuel"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The handler used up its fuel (instruction budget).
    OutOfFuel,
    /// The handler ran past its wall-clock deadline.
    Timeout,
    /// The handler tried to grow memory past its ceiling.
    MemoryLimit,
    /// The handler overflowed the wasm stack.
    StackOverflow,
    /// The handler trapped (unreachable, out-of-bounds access, division by zero, panic, ...).
    Trap,
    /// The handler returned an error; its `retryable` flag decides whether to retry.
    GuestError,
    /// The handler's output was larger than its output ceiling.
    OutputTooLarge,
    /// The routed component failed validation or does not export the handler interface.
    InvalidHandler,
    /// The handler code could not be fetched or compiled right now.
    HandlerUnavailable,
    /// No route exists for the job's `job_type`.
    UnknownJobType,
    /// The job itself is malformed (fails validation or cannot be decoded).
    BadJob,
    /// The job was cancelled.
    Cancelled,
    /// A host-side error unrelated to the handler (NATS, I/O, a bug in jobbox).
    Internal,
}

impl ErrorType {
    /// Every error type, in declaration order.
    pub const ALL: [Self; 13] = [
        Self::OutOfFuel,
        Self::Timeout,
        Self::MemoryLimit,
        Self::StackOverflow,
        Self::Trap,
        Self::GuestError,
        Self::OutputTooLarge,
        Self::InvalidHandler,
        Self::HandlerUnavailable,
        Self::UnknownJobType,
        Self::BadJob,
        Self::Cancelled,
        Self::Internal,
    ];

    /// The wire name (`"out_of_fuel"`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OutOfFuel => "out_of_fuel",
            Self::Timeout => "timeout",
            Self::MemoryLimit => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Trap => "trap",
            Self::GuestError => "guest_error",
            Self::OutputTooLarge => "output_too_large",
            Self::InvalidHandler => "invalid_handler",
            Self::HandlerUnavailable => "handler_unavailable",
            Self::UnknownJobType => "unknown_job_type",
            Self::BadJob => "bad_job",
            Self::Cancelled => "cancelled",
            Self::Internal => "internal",
        }
    }

    /// True if the same job on the same handler would fail the same way again, so
    /// retrying cannot help: out of fuel, memory limit, stack overflow, trap, output too
    /// large, invalid handler, bad job.
    ///
    /// A timeout is not deterministic (it depends on load); `guest_error` is decided by
    /// the handler's own `retryable` flag.
    #[must_use]
    pub const fn is_deterministic(self) -> bool {
        matches!(
            self,
            Self::OutOfFuel
                | Self::MemoryLimit
                | Self::StackOverflow
                | Self::Trap
                | Self::OutputTooLarge
                | Self::InvalidHandler
                | Self::BadJob
        )
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
