//! Why an attempt failed, classified.

use crate::model::spelling::wire_enum;

wire_enum! {
    /// The classified reason an attempt failed; snake_case on the wire (`"out_of_fuel"`).
    pub enum ErrorType {
        /// The handler used up its fuel (instruction budget).
        OutOfFuel = "out_of_fuel",
        /// The handler ran past its wall-clock deadline.
        Timeout = "timeout",
        /// The handler tried to grow memory past its ceiling.
        MemoryLimit = "memory_limit",
        /// The handler overflowed the wasm stack.
        StackOverflow = "stack_overflow",
        /// The handler trapped (unreachable, out-of-bounds access, division by zero, panic, ...).
        Trap = "trap",
        /// The handler returned an error; its `retryable` flag decides whether to retry.
        GuestError = "guest_error",
        /// The handler's output was larger than its output ceiling.
        OutputTooLarge = "output_too_large",
        /// The routed component failed validation or does not export the handler interface.
        InvalidHandler = "invalid_handler",
        /// The handler code could not be fetched or compiled right now.
        HandlerUnavailable = "handler_unavailable",
        /// No route exists for the job's `job_type`. Retryable: the route may be moments
    /// away (a job enqueued just before its handler's deploy).
        UnknownJobType = "unknown_job_type",
        /// The job itself is malformed (fails validation or cannot be decoded).
        BadJob = "bad_job",
        /// The job was cancelled.
        Cancelled = "cancelled",
        /// A job this one depends on ended in a status other than COMPLETED, and the
        /// job's `on_dependency_failure` is `FAIL`.
        DependencyFailed = "dependency_failed",
        /// A host-side error unrelated to the handler (NATS, I/O, a bug in jobbox).
        Internal = "internal",
    }
}

impl ErrorType {
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
                | Self::DependencyFailed
        )
    }
}
