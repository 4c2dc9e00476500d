//! Fetching: one durable pull consumer per priority lane, never more messages than
//! there are free slots.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, PullConsumer};
use futures::StreamExt;
use jobbox::nats::{self, Lane};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Shared;
use super::dispatch;

/// How long an idle worker's fetch waits on the server for a new job before it
/// looks at the other lanes again. This bounds how late a job in a lane other
/// than "normal" starts when the worker was idle.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Pause after a failed fetch (NATS unreachable), doubling up to [`MAX_FETCH_BACKOFF`].
const FETCH_BACKOFF: Duration = Duration::from_millis(100);
const MAX_FETCH_BACKOFF: Duration = Duration::from_secs(5);

/// The consumers of one queue, most urgent lane first.
pub(super) type Lanes = Vec<(Lane, PullConsumer)>;

/// Creates (or opens) the durable consumer of each lane of `queue`.
pub(super) async fn open_lanes(shared: &Shared, queue: &str) -> anyhow::Result<Lanes> {
    let stream = shared
        .client
        .jetstream()
        .get_stream(nats::JOBS_STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("failed to open the jobs stream: {e}"))?;
    let mut lanes = Vec::new();
    for lane in Lane::BY_URGENCY {
        let name = nats::consumer_name(queue, lane);
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: nats::lane_subject(queue, lane),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: shared.config.ack_wait,
            // Retries are counted by the worker (nak with delay); the server never
            // gives up on a job by itself, which would strand it in the stream.
            max_deliver: -1,
            max_ack_pending: 10_000,
            ..Default::default()
        };
        let consumer: PullConsumer = match stream.create_consumer(config).await {
            Ok(consumer) => consumer,
            // Already there (another worker made it, maybe with other settings).
            Err(_) => stream
                .get_consumer(&name)
                .await
                .map_err(|e| anyhow::anyhow!("failed to open consumer {name}: {e}"))?,
        };
        lanes.push((lane, consumer));
    }
    Ok(lanes)
}

/// Fetches jobs of one queue until `shutdown`, starting each on a free slot.
pub(super) async fn fetch_loop(
    shared: Arc<Shared>,
    queue: String,
    lanes: Lanes,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut backoff = FETCH_BACKOFF;
    while !shutdown.is_cancelled() {
        // Wait for one free slot, then fetch as many as are free.
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            permit = Arc::clone(&shared.slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let free = shared.slots.available_permits() + 1;
        let fetched = tokio::select! {
            () = shutdown.cancelled() => return,
            fetched = fetch(&lanes, free) => fetched,
        };
        let messages = match fetched {
            Ok(messages) => {
                backoff = FETCH_BACKOFF;
                messages
            }
            Err(e) => {
                tracing::warn!(%queue, error = %e, ?backoff, "fetch failed; retrying");
                drop(first);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_FETCH_BACKOFF);
                continue;
            }
        };
        let mut first = Some(first);
        for message in messages {
            let permit = match first.take() {
                Some(permit) => permit,
                // Slots were free when fetching; only this loop takes them.
                None => match Arc::clone(&shared.slots).acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let shared = Arc::clone(&shared);
            let queue = queue.clone();
            tracker.spawn(async move {
                dispatch::process(&shared, &queue, message).await;
                drop(permit);
            });
        }
    }
}

/// Takes up to `max` messages from the most urgent non-empty lane; when all are
/// empty, waits up to [`IDLE_POLL`] on the normal lane for one message (a pull
/// request for more would wait until the whole batch is there).
async fn fetch(lanes: &Lanes, max: usize) -> anyhow::Result<Vec<async_nats::jetstream::Message>> {
    for (_, consumer) in lanes {
        let messages = collect(
            consumer
                .fetch()
                .max_messages(max)
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )
        .await?;
        if !messages.is_empty() {
            return Ok(messages);
        }
    }
    let idle = lanes
        .iter()
        .find(|(lane, _)| *lane == Lane::Normal)
        .or(lanes.first())
        .map(|(_, consumer)| consumer);
    let Some(consumer) = idle else {
        return Ok(Vec::new());
    };
    collect(
        consumer
            .batch()
            .max_messages(1)
            .expires(IDLE_POLL)
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    )
    .await
}

async fn collect(
    mut batch: async_nats::jetstream::consumer::pull::Batch,
) -> anyhow::Result<Vec<async_nats::jetstream::Message>> {
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        match message {
            Ok(message) => messages.push(message),
            Err(e) if messages.is_empty() => return Err(anyhow::anyhow!("{e}")),
            Err(e) => {
                tracing::debug!(error = %e, "batch ended early");
                break;
            }
        }
    }
    Ok(messages)
}
