//! Publishing job events without waiting on each: a publish goes out at once, in
//! order on the worker's connection, and its ack is collected by a background task.
//!
//! The result is the record of truth; events follow it. A failed event is logged (at
//! most once a second), never retried, except the terminal event: the job's message
//! is acked by the collector once that event is stored, and handed back if it is not
//! ([`EventSink::publish_then_ack`]), so a lost one is published again by the
//! redelivery. The run slot does not wait for either.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use async_nats::jetstream::context::PublishAckFuture;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jobbox::{Client, JobEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Event acks in flight before publishing waits: back-pressure when NATS is slow.
///
/// Why: at 20,000 jobs/s with three events each and a 1 ms round trip, about 60 are
/// in flight; 4,096 leaves room for a burst without letting a stalled server make the
/// worker buffer events without bound.
const MAX_IN_FLIGHT: usize = 4096;

/// How long a stopping worker waits for the acks of its last events.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes events and collects their acks in the background.
#[derive(Debug, Clone)]
pub(crate) struct EventSink {
    client: Client,
    acks: mpsc::Sender<Pending>,
}

/// An event on its way: its kind, its ack, and the job message to ack once it is
/// stored (handed back after the given pause if it is not).
struct Pending {
    kind: &'static str,
    ack: PublishAckFuture,
    then: Option<(Message, Duration)>,
}

impl EventSink {
    /// A sink publishing through `client`, and the task collecting its acks (it ends
    /// once every sink clone is dropped and the last ack is in).
    pub fn start(client: Client) -> (Self, JoinHandle<()>) {
        let (acks, rx) = mpsc::channel(MAX_IN_FLIGHT);
        let collector = tokio::spawn(collect(rx));
        (Self { client, acks }, collector)
    }

    /// Publishes `event`, with `Nats-Msg-Id` = `id` when given. Returns once it is on
    /// the connection; its ack is awaited in the background.
    pub async fn publish(&self, event: &JobEvent, id: Option<&str>) {
        let sent = match id {
            Some(id) => self.client.publish_event_with_id(event, id).await,
            None => self.client.publish_event(event).await,
        };
        self.follow(event, sent, None).await;
    }

    /// Publishes a terminal `event` with `Nats-Msg-Id` = `id`, then acks `message`
    /// in the background once the event is stored. If it is not, the message is
    /// handed back to come again after `retry_after`: an ack sent after an event
    /// lost in a server crash would lose it for good, while the redelivery finds the
    /// result and publishes the event again (same id).
    pub async fn publish_then_ack(
        &self,
        event: &JobEvent,
        id: &str,
        message: &Message,
        retry_after: Duration,
    ) {
        let sent = self.client.publish_event_with_id(event, id).await;
        self.follow(event, sent, Some((message.clone(), retry_after)))
            .await;
    }

    async fn follow(
        &self,
        event: &JobEvent,
        sent: Result<PublishAckFuture, jobbox::ClientError>,
        then: Option<(Message, Duration)>,
    ) {
        let kind = event.event_type.as_str();
        match sent {
            Ok(ack) => {
                if self.acks.send(Pending { kind, ack, then }).await.is_err() {
                    tracing::debug!(event = kind, "event collector gone");
                }
            }
            Err(e) => {
                tracing::warn!(event = kind, error = %e, "failed to publish an event");
                if let Some((message, retry_after)) = then {
                    ack_message(&message, AckKind::Nak(Some(retry_after))).await;
                }
            }
        }
    }
}

async fn ack_message(message: &Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "failed to ack");
    }
}

async fn collect(mut rx: mpsc::Receiver<Pending>) {
    let mut in_flight = FuturesUnordered::new();
    let mut failures = 0u64;
    let mut last_report = tokio::time::Instant::now();
    let mut open = true;
    loop {
        tokio::select! {
            next = rx.recv(), if open => match next {
                Some(Pending { kind, ack, then }) => in_flight.push(async move {
                    let stored = ack.await;
                    if let Some((message, retry_after)) = then {
                        let ack = if stored.is_ok() {
                            AckKind::Ack
                        } else {
                            AckKind::Nak(Some(retry_after))
                        };
                        ack_message(&message, ack).await;
                    }
                    (kind, stored)
                }),
                None => open = false,
            },
            Some((kind, stored)) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(e) = stored {
                    failures += 1;
                    if last_report.elapsed() >= Duration::from_secs(1) {
                        tracing::warn!(event = kind, error = %e, failures, "events not stored");
                        last_report = tokio::time::Instant::now();
                        failures = 0;
                    }
                }
            }
            else => break,
        }
        if !open && in_flight.is_empty() {
            break;
        }
    }
}

/// Waits (a bounded time) for the collector to store the last events.
pub(crate) async fn drain(collector: JoinHandle<()>) {
    if tokio::time::timeout(DRAIN_TIMEOUT, collector)
        .await
        .is_err()
    {
        tracing::warn!("gave up waiting for the last event acks");
    }
}
