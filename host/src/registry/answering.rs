//! Answering the requests of one subscription: each answer JSON-encoded and sent to
//! the request's reply subject, a bounded number at a time (the next request waits
//! for a free slot, so a flood queues in the subscription instead of in tasks).

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt as _;
use jobbox::Client;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Answers each request of `requests` with `answer(payload)`, at most `concurrency`
/// at once, until `shutdown` or the subscription ends. `what` names the requests in
/// logs. Requests without a reply subject are skipped.
pub(super) fn answer_each<A, F, Fut>(
    client: Client,
    mut requests: async_nats::Subscriber,
    shutdown: CancellationToken,
    concurrency: usize,
    what: &'static str,
    answer: F,
) where
    F: Fn(bytes::Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = A> + Send + 'static,
    A: Serialize,
{
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(concurrency));
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                message = requests.next() => message,
            };
            let Some(message) = message else { break };
            let Some(reply_to) = message.reply.clone() else {
                continue;
            };
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let client = client.clone();
            let answered = answer(message.payload);
            tokio::spawn(async move {
                let _slot = slot;
                let body = serde_json::to_vec(&answered.await).unwrap_or_default();
                if let Err(e) = client.nats().publish(reply_to, body.into()).await {
                    tracing::warn!(error = %e, request = what, "failed to answer a request");
                }
            });
        }
        let _ = requests.unsubscribe().await;
    });
}
