//! What running one job produced: its output or a classified failure, plus the receipt.

use jobbox::{ErrorType, LogEntry, Usage};

/// Why a job did not produce output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The class of failure, as recorded in `JobResult.error_type`.
    pub error_type: ErrorType,
    /// A one-line human-readable reason.
    pub message: String,
    /// Whether running the job again may succeed.
    pub retryable: bool,
    /// For traps: the trap code, e.g. `unreachable` or `memory_out_of_bounds`.
    pub trap_code: Option<String>,
    /// Longer detail: the wasm backtrace and the tail of the guest's stderr.
    pub detail: Option<String>,
}

impl Failure {
    /// A failure of `error_type` with `message`; retryable only for guest retries and
    /// host-side problems.
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        Self {
            error_type,
            message: message.into(),
            retryable: false,
            trap_code: None,
            detail: None,
        }
    }

    /// Marks the failure as one a retry may fix.
    #[must_use]
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Attaches the trap code.
    #[must_use]
    pub fn with_trap_code(mut self, code: impl Into<String>) -> Self {
        self.trap_code = Some(code.into());
        self
    }

    /// Attaches detail text.
    #[must_use]
    pub fn with_detail(mut self, detail: Option<String>) -> Self {
        self.detail = detail.filter(|d| !d.is_empty());
        self
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

impl RunOutcome {
    /// The outcome of a job that ended before its handler ran: no output, no usage.
    pub fn failed(failure: Failure) -> Self {
        Self {
            result: Err(failure),
            usage: Usage::default(),
            logs: Vec::new(),
            logs_dropped: 0,
            output_content_type: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }
}

/// Everything one run of a handler produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The handler's output bytes, or why there are none.
    pub result: Result<Vec<u8>, Failure>,
    /// The resource receipt.
    pub usage: Usage,
    /// Log lines the handler wrote, within its limits.
    pub logs: Vec<LogEntry>,
    /// Log lines dropped past the limits.
    pub logs_dropped: u64,
    /// The output's media type, when the handler said it.
    pub output_content_type: Option<String>,
    /// The first bytes of the guest's stdout.
    pub stdout: Vec<u8>,
    /// The first bytes of the guest's stderr.
    pub stderr: Vec<u8>,
}
