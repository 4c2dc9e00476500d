//! Sending a write again while JetStream's answer is transient: a cluster electing a
//! stream leader after losing a node, a broken connection (see
//! [`ClientError::is_transient`]).

use std::future::Future;
use std::time::Duration;

use crate::ClientError;

/// How long a write is sent again while JetStream's answer is transient. A three-node
/// cluster elects a new stream leader within a few seconds of losing one; longer than
/// this is an outage the caller should hear about.
pub const RETRY_TRANSIENT_FOR: Duration = Duration::from_secs(15);

/// Runs `write` until it succeeds, fails for good, or [`RETRY_TRANSIENT_FOR`] has
/// passed, pausing 50 ms doubling to 1 s between tries. Only for writes that are safe
/// to repeat (message ids, puts of the same value).
pub(crate) async fn again_while_transient<T, F, Fut>(
    what: &str,
    mut write: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let give_up = tokio::time::Instant::now() + RETRY_TRANSIENT_FOR;
    let mut pause = Duration::from_millis(50);
    loop {
        match write().await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() + pause < give_up => {
                tracing::debug!(error = %e, "{what}: sending again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            outcome => return outcome,
        }
    }
}
