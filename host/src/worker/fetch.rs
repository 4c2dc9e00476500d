//! Fetching: one durable pull consumer per priority lane of each queue, and one
//! fetcher task per lane that keeps its inbox buffer filled with pull requests sized
//! to the room left in it.
//!
//! An idle lane costs one open pull request at a time (renewed every
//! [`PULL_EXPIRES`]) and no run slot; a busy lane asks for half its prefetch at a time.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, PullConsumer};
use futures::StreamExt;
use jobbox::nats::{self, Lane};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::inbox::{Fetched, Inbox, LaneId};

/// How long one pull request waits on the server for messages. Idle lanes renew one
/// request this often; it bounds nothing else (messages are delivered as they come).
const PULL_EXPIRES: Duration = Duration::from_secs(10);

/// How long a lane's first pull may stay empty before the lane counts as idle for
/// the worker's start (see `Inbox::primed`). A backlog answers far sooner.
const PRIMING_WAIT: Duration = Duration::from_millis(50);

/// Longest a lane waits after a reconnect for the worker to read its routes again
/// (a deploy made while it was cut off), before it pulls anyway.
const ROUTES_RESYNC_WAIT: Duration = Duration::from_secs(10);

/// Pause after a failed pull (NATS unreachable), doubling up to [`MAX_FETCH_BACKOFF`].
const FETCH_BACKOFF: Duration = Duration::from_millis(100);
const MAX_FETCH_BACKOFF: Duration = Duration::from_secs(5);

/// One lane's consumer and the `ack_wait` it really has.
#[derive(Debug)]
pub(super) struct LaneConsumer {
    pub queue: Arc<str>,
    pub lane: Lane,
    pub consumer: PullConsumer,
    pub ack_wait: Duration,
    /// Changes when the worker's connection is established again.
    pub reconnects: tokio::sync::watch::Receiver<u64>,
    /// The last reconnect after which the worker read its routes again.
    pub routes_synced: tokio::sync::watch::Receiver<u64>,
}

/// Creates (or opens) the durable consumer of each lane of `queue`.
///
/// The `ack_wait` used to keep a job alive is the one the consumer has, which may
/// differ from this worker's setting when another worker created it: an existing
/// consumer is never updated.
pub(super) async fn open_lanes(shared: &Shared, queue: &str) -> anyhow::Result<Vec<LaneConsumer>> {
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
            // Retries are counted by the worker (nak with delay), and a message that
            // keeps coming back is ended by the worker's delivery bound. This bound is
            // for messages no worker sees (one the client cannot parse): the server's
            // MAX_DELIVERIES advisory has a worker dead-letter it (undeliverable.rs).
            max_deliver: i64::from(shared.config.max_deliveries),
            max_ack_pending: 10_000,
            ..Default::default()
        };
        // An existing consumer is opened as it is, never updated: it is shared by
        // the fleet, and a worker started with other settings must not change them
        // under the others' feet.
        let mut consumer: PullConsumer = stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| anyhow::anyhow!("failed to open consumer {name}: {e}"))?;
        let info = match consumer.info().await {
            Ok(info) => info.clone(),
            Err(_) => consumer.cached_info().clone(),
        };
        let ack_wait = info.config.ack_wait;
        if info.config.max_deliver <= 0 {
            bound_deliveries(&stream, info.config, shared.config.max_deliveries).await;
        }
        if ack_wait != shared.config.ack_wait {
            tracing::warn!(consumer = %name, consumer_ack_wait = ?ack_wait, worker_ack_wait = ?shared.config.ack_wait, "the existing consumer keeps its ack_wait; jobs are kept alive by it");
        }
        lanes.push(LaneConsumer {
            queue: Arc::from(queue),
            lane,
            consumer,
            ack_wait,
            reconnects: shared.client.reconnects(),
            routes_synced: shared.routes.synced(),
        });
    }
    Ok(lanes)
}

/// Gives a consumer made before deliveries were bounded its bound: the one change a
/// worker makes to an existing consumer, the same from every worker of this version.
async fn bound_deliveries(
    stream: &async_nats::jetstream::stream::Stream,
    mut config: consumer::Config,
    max_deliveries: u32,
) {
    let name = config.durable_name.clone().unwrap_or_default();
    config.max_deliver = i64::from(max_deliveries);
    match stream.update_consumer(config).await {
        Ok(_) => {
            tracing::info!(consumer = %name, max_deliveries, "bounded the deliveries of an existing consumer");
        }
        Err(e) => {
            tracing::warn!(consumer = %name, error = %e, "cannot bound the deliveries of an existing consumer; a message no worker can read will keep coming back");
        }
    }
}

/// Keeps the inbox buffer of one lane filled until `shutdown`.
pub(super) async fn fetch_lane(
    inbox: Arc<Inbox>,
    id: LaneId,
    lane: LaneConsumer,
    shutdown: CancellationToken,
) {
    let mut backoff = FETCH_BACKOFF;
    let mut primed = false;
    let mut reconnects = lane.reconnects.clone();
    let mut routes_synced = lane.routes_synced.clone();
    let mut resync_after: Option<u64> = None;
    loop {
        // Cut off, the worker may have missed a deploy: its routes are read again
        // before this lane takes more jobs, so none runs on a replaced version.
        if let Some(reconnect) = resync_after.take() {
            let synced = tokio::time::timeout(
                ROUTES_RESYNC_WAIT,
                routes_synced.wait_for(|synced| *synced >= reconnect),
            );
            tokio::select! {
                () = shutdown.cancelled() => return,
                synced = synced => if synced.is_err() {
                    tracing::warn!(queue = %lane.queue, "routes not read again in time after a reconnect; pulling anyway");
                },
            }
        }
        let want = tokio::select! {
            () = shutdown.cancelled() => return,
            want = inbox.reserve(id) => match want {
                Some(want) => want,
                None => return,
            },
        };
        let batch = lane
            .consumer
            .batch()
            .max_messages(want)
            // No idle heartbeat: async-nats 0.51's `Batch` stops waking after one
            // (it returns `Pending` without registering for the next message), and a
            // message delivered meanwhile would sit until the client-side timer. A lost
            // request ends by that timer, `PULL_EXPIRES` + 5 s.
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => {
                backoff = FETCH_BACKOFF;
                batch
            }
            Err(e) => {
                inbox.release(id, want);
                if !primed {
                    primed = true;
                    inbox.prime(id);
                }
                tracing::warn!(queue = %lane.queue, lane = lane.lane.token(), error = %e, ?backoff, "pull request failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_FETCH_BACKOFF);
                continue;
            }
        };
        let mut received = 0;
        let priming = tokio::time::sleep(PRIMING_WAIT);
        tokio::pin!(priming);
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => break,
                () = &mut priming, if !primed => {
                    primed = true;
                    inbox.prime(id);
                    continue;
                }
                next = batch.next() => next,
                // A pull request open when the connection dropped may be gone with
                // the server that held it: ask again now rather than when it expires.
                Ok(()) = reconnects.changed() => {
                    tracing::info!(queue = %lane.queue, lane = lane.lane.token(), "reconnected; pulling again");
                    resync_after = Some(*reconnects.borrow_and_update());
                    break;
                }
            };
            match next {
                Some(Ok(message)) => {
                    received += 1;
                    let fetched =
                        Fetched::new(message, Arc::clone(&lane.queue), lane.lane, lane.ack_wait);
                    inbox.push(id, fetched);
                    if !primed {
                        primed = true;
                        inbox.prime(id);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(queue = %lane.queue, error = %e, "pull request ended early");
                    break;
                }
                None => break,
            }
        }
        inbox.release(id, want.saturating_sub(received));
    }
}
