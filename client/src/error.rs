//! Errors of the client: one enum, with the operation that failed as context.

use crate::model::InvalidJob;
use crate::schedules::InvalidSchedule;
use crate::wire::WireError;

/// What went wrong talking to NATS on jobbox's behalf.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect to the NATS server.
    #[error("failed to connect to NATS at {url}: {source}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// A NATS or JetStream operation failed.
    #[error("failed to {operation}: {source}")]
    Nats {
        /// What was being done, e.g. "publish job 01J…".
        operation: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The JetStream store (the server's or the account's storage limit) is full:
    /// writes fail until space returns.
    #[error(
        "failed to {operation}: the JetStream store is full (free space on the server, or \
         raise its max_file_store or the account's storage limit)"
    )]
    StoreFull {
        /// What was being done.
        operation: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record could not be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The job was refused before it was sent.
    #[error("invalid job: {0}")]
    InvalidJob(InvalidJob),
    /// The schedule was refused before it was stored.
    #[error("invalid schedule: {0}")]
    InvalidSchedule(InvalidSchedule),
    /// The batch was refused before anything was stored (a bad name, an unknown
    /// dependency, a cycle, ...).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// The change conflicts with what is stored (e.g. the id is taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Waiting for something took longer than allowed.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, String),
    /// A layout setting (replicas, server URLs) was refused.
    #[error("invalid layout: {0}")]
    InvalidLayout(String),
    /// Something that should exist does not.
    #[error("{0} not found")]
    NotFound(String),
    /// The server's content does not match what was asked for.
    #[error("integrity check failed: {0}")]
    Integrity(String),
}

// By hand rather than `#[from]`: the message already includes the reason, and a
// `source` would print it twice in an error chain.
impl From<InvalidJob> for ClientError {
    fn from(invalid: InvalidJob) -> Self {
        Self::InvalidJob(invalid)
    }
}

impl From<InvalidSchedule> for ClientError {
    fn from(invalid: InvalidSchedule) -> Self {
        Self::InvalidSchedule(invalid)
    }
}

impl ClientError {
    /// Wraps a NATS error with the operation that failed.
    pub fn nats(
        operation: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let operation = operation.into();
        if is_store_full(&source) {
            return Self::StoreFull {
                operation,
                source: Box::new(source),
            };
        }
        Self::Nats {
            operation,
            source: Box::new(source),
        }
    }
}

/// Whether `error`, or an error it was caused by, is JetStream saying its store is
/// full (`insufficient resources`, or an account's storage limit exceeded).
pub fn is_store_full(error: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::ErrorCode;
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(api) = e.downcast_ref::<async_nats::jetstream::Error>() {
            return matches!(
                api.error_code(),
                ErrorCode::INSUFFICIENT_RESOURCES | ErrorCode::STORAGE_RESOURCES_EXCEEDED
            );
        }
        current = e.source();
    }
    false
}

impl ClientError {
    /// Whether sending the same write again may succeed: JetStream did not answer, or
    /// answered that the stream has no leader right now (after a cluster node is lost,
    /// until a new leader is elected), or the connection broke. Not a full store, not a
    /// refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Nats { source, .. } => is_transient(source.as_ref()),
            Self::Timeout(..) => true,
            _ => false,
        }
    }
}

/// Whether `error`, or an error it was caused by, says "no answer now" rather than
/// "no": see [`ClientError::is_transient`].
fn is_transient(error: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(publish) = e.downcast_ref::<PublishError>()
            && matches!(
                publish.kind(),
                PublishErrorKind::StreamNotFound
                    | PublishErrorKind::TimedOut
                    | PublishErrorKind::BrokenPipe
            )
        {
            return true;
        }
        if let Some(api) = e.downcast_ref::<async_nats::jetstream::Error>() {
            // 503: JetStream (or the stream's leader) is not available right now.
            return api.code() == 503;
        }
        // An object store put keeps only the text of its publish errors ("failed
        // getting chunk ack: no stream found…"): a chunk or its metadata that was not
        // stored is worth sending again, the whole put being repeatable.
        if let Some(put) = e.downcast_ref::<async_nats::jetstream::object_store::PutError>() {
            use async_nats::jetstream::object_store::PutErrorKind;
            return matches!(
                put.kind(),
                PutErrorKind::PublishChunks
                    | PutErrorKind::PublishMetadata
                    | PutErrorKind::TimedOut
            );
        }
        current = e.source();
    }
    false
}

/// Adds operation context to NATS results.
pub(crate) trait NatsContext<T> {
    /// Maps the error to [`ClientError::Nats`] with the given operation.
    fn during(self, operation: impl FnOnce() -> String) -> Result<T, ClientError>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> NatsContext<T> for Result<T, E> {
    fn during(self, operation: impl FnOnce() -> String) -> Result<T, ClientError> {
        self.map_err(|e| ClientError::nats(operation(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    use async_nats::jetstream::object_store::{PutError, PutErrorKind};

    #[test]
    fn no_answer_now_is_transient_and_a_refusal_is_not() {
        let leaderless = ClientError::nats(
            "publish job j",
            PublishError::new(PublishErrorKind::StreamNotFound),
        );
        assert!(leaderless.is_transient());
        // An object store put keeps only the text of the chunk's publish error.
        let chunk = ClientError::nats(
            "store handler",
            PutError::with_source(
                PutErrorKind::PublishChunks,
                "failed getting chunk ack: no stream found for given subject",
            ),
        );
        assert!(chunk.is_transient());
        let bad_name = ClientError::nats("store handler", PutError::new(PutErrorKind::InvalidName));
        assert!(!bad_name.is_transient());
        let too_big = ClientError::nats(
            "publish job j",
            PublishError::new(PublishErrorKind::MaxPayloadExceeded),
        );
        assert!(!too_big.is_transient());
        assert!(!ClientError::NotFound("x".into()).is_transient());
    }
}
