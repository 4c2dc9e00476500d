//! `jobbox bench --transport`: the raw NATS ceiling. The jobs are enqueued as in a
//! real run, then taken by a bare pull consumer that makes the stored writes a
//! worker makes for each job (STARTED, the result `create`, the terminal event
//! awaited, the ack) and nothing else: no decoding, no admission, no sandbox, no
//! scheduling. jobbox's share of a job's cost is the ratio of the two runs.

use std::time::Instant;

use async_nats::jetstream::consumer::{self, PullConsumer};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jobbox::{Client, Job, JobEvent, JobEventType, JobResult, nats, wire};

/// Runs the stored writes of `count` jobs on `queue` with at most `in_flight` jobs at
/// once; returns when the last job is acked, with each job's id (its `Nats-Msg-Id`)
/// and when its ack went out.
pub(super) async fn consume(
    client: &Client,
    queue: &str,
    count: usize,
    in_flight: usize,
    template: &Job,
) -> anyhow::Result<Vec<(String, Instant)>> {
    let lane = nats::Lane::for_priority(template.priority);
    let stream = client
        .jetstream()
        .get_stream(nats::JOBS_STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("failed to open the jobs stream: {e}"))?;
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            &format!("bench-transport-{queue}"),
            consumer::pull::Config {
                durable_name: Some(format!("bench-transport-{queue}")),
                filter_subject: nats::lane_subject(queue, lane),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("failed to create the transport consumer: {e}"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(in_flight)
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("failed to pull: {e}"))?;
    // Records of a real job's size, encoded once: the writes, not the encoding, are
    // what this measures.
    let started = Bytes::from(wire::encode(&JobEvent::new(
        JobEventType::Started,
        template,
    ))?);
    let finished = Bytes::from(wire::encode(&JobEvent::new(
        JobEventType::Completed,
        template,
    ))?);
    let result = Bytes::from(wire::encode(&JobResult::completed(
        template.id.as_str(),
        template.payload.clone(),
    ))?);
    let mut running = FuturesUnordered::new();
    let mut took = Vec::with_capacity(count);
    let mut taken = 0;
    while took.len() < count {
        tokio::select! {
            next = messages.next(), if taken < count && running.len() < in_flight => {
                let message = next
                    .ok_or_else(|| anyhow::anyhow!("the pull ended early"))?
                    .map_err(|e| anyhow::anyhow!("pull failed: {e}"))?;
                taken += 1;
                let (started, finished, result) = (started.clone(), finished.clone(), result.clone());
                let job_id = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|id| id.as_str().to_string())
                    .unwrap_or_default();
                let key = format!("transport-{taken}");
                running.push(async move {
                    let js = client.jetstream();
                    let events = format!("jobbox.events.{queue}.{key}");
                    drop(js.publish(format!("{events}.started"), started).await?);
                    client.layout().results.create(&key, result).await?;
                    js.publish(format!("{events}.completed"), finished).await?.await?;
                    message.ack().await.map_err(|e| anyhow::anyhow!("ack failed: {e}"))?;
                    anyhow::Ok((job_id, Instant::now()))
                });
            }
            Some(done) = running.next() => took.push(done?),
        }
    }
    Ok(took)
}
