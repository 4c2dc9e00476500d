//! Job messages the server stopped delivering.
//!
//! Every lane consumer has a bounded `max_deliver`. A message that reaches it never
//! ended on a worker: most often one that no client can even read (async-nats drops
//! its connection on a header value holding a bare LF, so the worker never sees the
//! message and cannot end it itself). The server then publishes a MAX_DELIVERIES
//! advisory, which the [`UNDELIVERABLE_STREAM`](jobbox::nats::UNDELIVERABLE_STREAM)
//! keeps, so none is lost while no worker listens. Any live worker takes each
//! advisory, reads the message by its sequence through the JSON message API (the
//! headers arrive base64-encoded and are never parsed), records the job as
//! dead-lettered with the reason, and removes the message from the jobs stream.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, PullConsumer};
use async_nats::jetstream::{AckKind, Message};
use base64::Engine as _;
use futures::StreamExt as _;
use jobbox::{ErrorType, Job, nats, wire};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::dispatch::{ack, stand_in};
use super::record;
use super::verdict::Verdict;
use crate::sandbox::Failure;

/// How long an advisory may be held before the server offers it to another worker.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long one pull for advisories stays open.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// Pause after a failed pull, doubling up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// How long a read of the message through the JSON API may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A MAX_DELIVERIES advisory (`io.nats.jetstream.advisory.v1.max_deliver`).
#[derive(Debug, Deserialize)]
struct Advisory {
    stream: String,
    stream_seq: u64,
    deliveries: u64,
}

/// An answer of `$JS.API.STREAM.MSG.GET`.
#[derive(Debug, Deserialize)]
struct GetResponse {
    message: Option<StoredMessage>,
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct StoredMessage {
    subject: String,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    description: String,
}

/// Takes undeliverable-job advisories until `stop`.
pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut pause = BACKOFF;
    let consumer = loop {
        match open(&shared).await {
            Ok(consumer) => break consumer,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the undeliverable-jobs consumer; trying again");
                if sleep_or_stop(&stop, &mut pause).await {
                    return;
                }
            }
        }
    };
    pause = BACKOFF;
    loop {
        let batch = consumer
            .batch()
            .max_messages(8)
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut messages = match batch {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull undeliverable-job advisories");
                if sleep_or_stop(&stop, &mut pause).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = messages.next() => next,
            };
            match next {
                None => break,
                Some(Ok(message)) => {
                    pause = BACKOFF;
                    handle(&shared, &message).await;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "advisory pull ended");
                    break;
                }
            }
        }
    }
}

/// Sleeps for `pause` (doubling it for next time); true if `stop` came first.
async fn sleep_or_stop(stop: &CancellationToken, pause: &mut Duration) -> bool {
    let stopped = tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(*pause) => false,
    };
    *pause = (*pause * 2).min(MAX_BACKOFF);
    stopped
}

async fn open(shared: &Shared) -> anyhow::Result<PullConsumer> {
    let stream = shared
        .client
        .jetstream()
        .get_stream(nats::UNDELIVERABLE_STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("open stream {}: {e}", nats::UNDELIVERABLE_STREAM))?;
    let config = consumer::pull::Config {
        durable_name: Some(nats::UNDELIVERABLE_CONSUMER.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: -1,
        ..Default::default()
    };
    stream
        .get_or_create_consumer(nats::UNDELIVERABLE_CONSUMER, config)
        .await
        .map_err(|e| anyhow::anyhow!("open consumer {}: {e}", nats::UNDELIVERABLE_CONSUMER))
}

/// Ends the job message one advisory names, then acks the advisory.
async fn handle(shared: &Shared, advisory_message: &Message) {
    let advisory = match serde_json::from_slice::<Advisory>(&advisory_message.payload) {
        Ok(advisory) if advisory.stream == nats::JOBS_STREAM => advisory,
        Ok(other) => {
            tracing::warn!(stream = %other.stream, "advisory for another stream; ignored");
            ack(advisory_message, AckKind::Term).await;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "unreadable advisory; ignored");
            ack(advisory_message, AckKind::Term).await;
            return;
        }
    };
    let sequence = advisory.stream_seq;
    let stored = match read_stored(shared, sequence).await {
        Ok(Some(stored)) => stored,
        // Gone: ended already (by a worker, or by an earlier take of this advisory).
        Ok(None) => {
            ack(advisory_message, AckKind::Ack).await;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, sequence, "cannot read an undeliverable job; trying again later");
            ack(advisory_message, AckKind::Nak(Some(BACKOFF * 4))).await;
            return;
        }
    };
    let Some(queue) = nats::queue_of_job_subject(&stored.subject).map(str::to_string) else {
        tracing::warn!(subject = %stored.subject, sequence, "undeliverable message outside the lanes; removed");
        delete(shared, sequence).await;
        ack(advisory_message, AckKind::Ack).await;
        return;
    };
    let payload = stored
        .data
        .as_deref()
        .map(|data| base64::engine::general_purpose::STANDARD.decode(data))
        .transpose()
        .unwrap_or_default()
        .unwrap_or_default();
    let attempts = u32::try_from(advisory.deliveries).unwrap_or(u32::MAX);
    let job = job_of(&payload, &queue, sequence, attempts);
    let failure = Failure::new(
        ErrorType::BadJob,
        format!(
            "the server stopped delivering this job after {} deliveries without an end (its message may be one no client can read, such as a header value holding a line break); dead-lettered",
            advisory.deliveries
        ),
    );
    tracing::warn!(job_id = %job.id, %queue, sequence, deliveries = advisory.deliveries, "undeliverable job");
    record::end_unrun(
        shared,
        advisory_message,
        &job,
        ACK_WAIT,
        failure,
        Verdict::DeadLetter,
    )
    .await;
    delete(shared, sequence).await;
}

/// The job a stored message holds, or a stand-in under `seq-<n>` when it is not a
/// valid job: nothing of an invalid job becomes a subject or key.
fn job_of(payload: &[u8], queue: &str, sequence: u64, attempts: u32) -> Job {
    match wire::decode::<Job>(payload) {
        Ok(mut job) if job.validate().is_ok() => {
            job.queue = queue.to_string();
            job.attempt = attempts.max(1);
            job
        }
        Ok(job) => {
            let job_type = if jobbox::is_valid_name(&job.job_type) {
                job.job_type.as_str()
            } else {
                "unknown"
            };
            stand_in(&format!("seq-{sequence}"), job_type, queue, attempts)
        }
        Err(_) => stand_in(&format!("seq-{sequence}"), "unknown", queue, attempts),
    }
}

/// Reads message `sequence` of the jobs stream through the JSON message API.
/// `Ok(None)`: there is no such message (any more).
async fn read_stored(shared: &Shared, sequence: u64) -> anyhow::Result<Option<StoredMessage>> {
    let request = serde_json::to_vec(&serde_json::json!({ "seq": sequence }))?;
    let answer = tokio::time::timeout(
        READ_TIMEOUT,
        shared.client.nats().request(
            nats::stream_message_get_subject(nats::JOBS_STREAM),
            request.into(),
        ),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {READ_TIMEOUT:?}"))?
    .map_err(|e| anyhow::anyhow!("read message {sequence}: {e}"))?;
    let response: GetResponse = serde_json::from_slice(&answer.payload)
        .map_err(|e| anyhow::anyhow!("unreadable answer for message {sequence}: {e}"))?;
    match (response.message, response.error) {
        (Some(message), _) => Ok(Some(message)),
        (None, Some(error)) if error.code == 404 => Ok(None),
        (None, Some(error)) => Err(anyhow::anyhow!(
            "read message {sequence}: {} ({})",
            error.description,
            error.code
        )),
        (None, None) => Err(anyhow::anyhow!("empty answer for message {sequence}")),
    }
}

/// Removes message `sequence` from the jobs stream (a missing one is fine).
async fn delete(shared: &Shared, sequence: u64) {
    let stream = match shared
        .client
        .jetstream()
        .get_stream(nats::JOBS_STREAM)
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, sequence, "cannot open the jobs stream to remove an undeliverable job");
            return;
        }
    };
    if let Err(e) = stream.delete_message(sequence).await {
        tracing::debug!(error = %e, sequence, "undeliverable job not removed (gone already?)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_job_is_recorded_under_its_id_and_anything_else_under_its_sequence() {
        let job = Job::new("echo", b"{}".to_vec()).queue("elsewhere");
        let bytes = wire::encode(&job).expect("encode");
        let got = job_of(&bytes, "q", 7, 5);
        assert_eq!(got.id, job.id);
        assert_eq!(got.queue, "q", "the queue is the lane's, not the job's");
        assert_eq!(got.attempt, 5);

        let hostile = Job::new("echo", Vec::new()).id("a b");
        let bytes = wire::encode(&hostile).expect("encode");
        assert_eq!(job_of(&bytes, "q", 7, 5).id, "seq-7");
        assert_eq!(job_of(b"\xff not a job", "q", 8, 5).id, "seq-8");
        assert_eq!(job_of(b"", "q", 9, 0).job_type, "unknown");
    }

    #[test]
    fn advisories_and_answers_decode() {
        let advisory: Advisory = serde_json::from_str(
            r#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2026-01-01T00:00:00Z","stream":"JOBBOX_JOBS","consumer":"jobbox-q-normal","stream_seq":42,"deliveries":5}"#,
        )
        .expect("advisory");
        assert_eq!((advisory.stream_seq, advisory.deliveries), (42, 5));
        let missing: GetResponse = serde_json::from_str(
            r#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":404,"err_code":10037,"description":"no message found"}}"#,
        )
        .expect("answer");
        assert_eq!(missing.error.map(|e| e.code), Some(404));
    }
}
