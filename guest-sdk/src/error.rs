//! Why a handler could not finish a job: [`Error`] and its [`ErrorKind`].

use std::fmt;
use std::io;

use crate::bindings::exports::jobbox::handler::handler::HandlerError;

/// What the worker should do with a job whose handler failed.
///
/// This is the WIT `handler-error` variant without its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The job cannot succeed as it is (bad input, a rule it breaks). The worker
    /// records a final failure and does not retry.
    Reject,
    /// A transient problem (an upstream is down, a rate limit was hit). The worker
    /// retries the job later, with backoff, while the job has retries left.
    Retry,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reject => "reject",
            Self::Retry => "retry",
        })
    }
}

/// The error a handler returns: a kind ([`reject`](Error::reject) or
/// [`retry`](Error::retry)) and a message that ends up in the job's result.
///
/// Any [`std::error::Error`] converts into an `Error` with `?`, as a rejection whose
/// message is the error's `Display` output followed by its `source()` chain
/// (`"outer: inner"`). The one exception is [`std::io::Error`] of a transient kind
/// (`Interrupted`, `TimedOut`, `WouldBlock`, `ConnectionRefused`, `ConnectionReset`,
/// `ConnectionAborted`, `NotConnected`, `BrokenPipe`), which converts into a retry.
/// Use [`ResultExt::retryable`] to turn any other failure into a retry.
///
/// Like `anyhow::Error`, this type deliberately does not implement
/// [`std::error::Error`] itself: that is what makes the blanket conversion possible.
///
/// ```
/// use jobbox_guest::{Error, ErrorKind};
///
/// fn parse(s: &str) -> Result<u32, Error> {
///     Ok(s.trim().parse::<u32>()?)
/// }
///
/// let err = parse("twelve").expect_err("not a number");
/// assert_eq!(err.kind(), ErrorKind::Reject);
/// assert_eq!(err.message(), "invalid digit found in string");
/// assert_eq!(Error::retry("upstream down").to_string(), "retry: upstream down");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// A permanent failure: the worker records it and does not retry the job.
    #[must_use]
    pub fn reject(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Reject, message)
    }

    /// A transient failure: the worker retries the job later (with backoff) while
    /// the job has retries left, and records a final failure after the last one.
    #[must_use]
    pub fn retry(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retry, message)
    }

    /// An error of the given kind.
    #[must_use]
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Whether the worker rejects or retries the job.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message recorded with the job's result.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this error asks for a retry.
    #[must_use]
    pub fn is_retry(&self) -> bool {
        self.kind == ErrorKind::Retry
    }

    /// The same error, but asking for a retry.
    #[must_use]
    pub fn into_retry(self) -> Self {
        Self {
            kind: ErrorKind::Retry,
            ..self
        }
    }

    /// The same error, with `context` put in front of the message (`"context: message"`).
    #[must_use]
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self {
            message: format!("{context}: {}", self.message),
            ..self
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl<E> From<E> for Error
where
    E: std::error::Error + 'static,
{
    fn from(error: E) -> Self {
        let kind = match (&error as &dyn std::any::Any).downcast_ref::<io::Error>() {
            Some(io) if is_transient(io.kind()) => ErrorKind::Retry,
            _ => ErrorKind::Reject,
        };
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            // Many errors repeat their source's text in their own; don't print it twice.
            if !message.ends_with(&cause_text) {
                message.push_str(": ");
                message.push_str(&cause_text);
            }
            source = cause.source();
        }
        Self { kind, message }
    }
}

/// I/O failures that may well go away if the job runs again later.
fn is_transient(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::Interrupted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::BrokenPipe
    )
}

impl From<Error> for HandlerError {
    fn from(error: Error) -> Self {
        match error.kind {
            ErrorKind::Reject => Self::Reject(error.message),
            ErrorKind::Retry => Self::Retry(error.message),
        }
    }
}

/// Adds jobbox error handling to any `Result` whose error converts into [`Error`].
///
/// ```
/// use jobbox_guest::{Error, ErrorKind, ResultExt};
///
/// fn fetch() -> Result<String, std::io::Error> {
///     Err(std::io::Error::other("503 from upstream"))
/// }
///
/// fn step() -> Result<String, Error> {
///     fetch().context("fetching prices").retryable()
/// }
///
/// let err = step().expect_err("fetch fails");
/// assert_eq!(err.kind(), ErrorKind::Retry);
/// assert_eq!(err.message(), "fetching prices: 503 from upstream");
/// ```
pub trait ResultExt<T> {
    /// Converts the error into an [`Error`] that asks for a retry.
    ///
    /// # Errors
    ///
    /// The original error, converted, as a retry.
    fn retryable(self) -> Result<T, Error>;

    /// Converts the error into an [`Error`] that rejects the job.
    ///
    /// # Errors
    ///
    /// The original error, converted, as a rejection.
    fn rejecting(self) -> Result<T, Error>;

    /// Converts the error into an [`Error`] of the same kind whose message starts
    /// with `context`.
    ///
    /// # Errors
    ///
    /// The original error, converted, with `context: ` in front of its message.
    fn context(self, context: impl fmt::Display) -> Result<T, Error>;
}

impl<T, E: Into<Error>> ResultExt<T> for Result<T, E> {
    fn retryable(self) -> Result<T, Error> {
        self.map_err(|e| e.into().into_retry())
    }

    fn rejecting(self) -> Result<T, Error> {
        self.map_err(|e| Error {
            kind: ErrorKind::Reject,
            ..e.into()
        })
    }

    fn context(self, context: impl fmt::Display) -> Result<T, Error> {
        self.map_err(|e| e.into().context(context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_json_errors_reject() {
        let err: Error = serde_json::from_str::<u8>("x")
            .expect_err("x is not a number")
            .into();
        assert_eq!(err.kind(), ErrorKind::Reject);
        assert!(err.message().starts_with("expected value"), "{err}");
    }

    #[test]
    fn transient_io_errors_retry() {
        let err: Error = io::Error::from(io::ErrorKind::TimedOut).into();
        assert!(err.is_retry());
        let err: Error = io::Error::from(io::ErrorKind::NotFound).into();
        assert_eq!(err.kind(), ErrorKind::Reject);
    }

    #[test]
    fn maps_to_the_wit_variant() {
        assert!(matches!(
            HandlerError::from(Error::reject("no")),
            HandlerError::Reject(m) if m == "no"
        ));
        assert!(matches!(
            HandlerError::from(Error::retry("later")),
            HandlerError::Retry(m) if m == "later"
        ));
    }

    #[test]
    fn source_chain_is_in_the_message() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("reading config")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err: Error = Outer(io::Error::other("disk on fire")).into();
        assert_eq!(err.message(), "reading config: disk on fire");
    }
}
