//! Job lifecycle on the client side: publishing (now or at `scheduled_at`), the job
//! state bucket, cancellation, queue stats and the dead-letter queue.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, kv, message::PublishMessage};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;

use crate::error::{ClientError, NatsContext};
use crate::model::{DeadLetter, Job, JobEvent, JobEventType, JobState, JobStatus, QueueStats};
use crate::nats::{self, Lane};
use crate::{Client, wire};

/// Counters kept per queue in [`nats::STATS_STREAM`].
pub const COUNTERS: [&str; 4] = ["completed", "failed", "dead_letter", "cancelled"];

/// Publishes `job` to its lane now, or — when `scheduled_at` is in the future — as a
/// JetStream message schedule that the server moves into the lane when it is due.
/// Either way it survives restarts of workers and of the server.
pub(crate) async fn publish_job(
    client: &Client,
    job: &Job,
) -> Result<jetstream::context::PublishAckFuture, ClientError> {
    let payload = Bytes::from(wire::encode(job)?);
    let lane_subject = nats::job_subject(&job.queue, job.priority);
    let publish = match job.scheduled_at {
        Some(at) if at > Utc::now() => {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, job.id.as_str());
            let when = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            headers.insert("Nats-Schedule", format!("@at {when}").as_str());
            headers.insert("Nats-Schedule-Target", lane_subject.as_str());
            client
                .jetstream()
                .send_publish(
                    nats::scheduled_subject(&job.queue, &job.id),
                    PublishMessage::build().payload(payload).headers(headers),
                )
                .await
        }
        _ => {
            client
                .jetstream()
                .send_publish(
                    lane_subject,
                    PublishMessage::build().payload(payload).message_id(&job.id),
                )
                .await
        }
    };
    publish.during(|| format!("publish job {}", job.id))
}

/// Writes the state of a job just enqueued (PENDING or SCHEDULED) and, for a delayed
/// job, a SCHEDULED event. Returns the state write's ack future.
pub(crate) async fn record_pending(
    client: &Client,
    job: &Job,
) -> Result<jetstream::context::PublishAckFuture, ClientError> {
    let state = JobState::new(job);
    if state.status == JobStatus::Scheduled {
        let event = JobEvent::new(JobEventType::Scheduled, job);
        drop(client.publish_event(&event).await?);
    }
    put_state_async(client, &state).await
}

/// Publishes a job state without waiting for it to be stored.
pub(crate) async fn put_state_async(
    client: &Client,
    state: &JobState,
) -> Result<jetstream::context::PublishAckFuture, ClientError> {
    let bytes = Bytes::from(wire::encode(state)?);
    client
        .jetstream()
        .publish(format!("$KV.{}.{}", nats::JOBS_BUCKET, state.job_id), bytes)
        .await
        .during(|| format!("record the state of job {}", state.job_id))
}

/// What `cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job had not started: it will never run.
    Cancelled,
    /// The job is running: its worker stops it within one epoch tick.
    Stopping,
    /// The job had already ended; nothing changed.
    AlreadyFinished(JobStatus),
}

impl Client {
    /// The job's current state, if it is known.
    pub async fn job_state(&self, job_id: &str) -> Result<Option<JobState>, ClientError> {
        let bytes = self
            .layout()
            .jobs
            .get(job_id)
            .await
            .during(|| format!("read the state of job {job_id}"))?;
        bytes
            .map(|b| wire::decode(&b))
            .transpose()
            .map_err(Into::into)
    }

    /// Records a new state for a job (last write wins).
    pub async fn put_job_state(&self, state: &JobState) -> Result<(), ClientError> {
        put_state_async(self, state)
            .await?
            .await
            .during(|| format!("record the state of job {}", state.job_id))?;
        Ok(())
    }

    /// Sends a new state for a job without waiting for JetStream to store it.
    pub async fn put_job_state_nowait(&self, state: &JobState) -> Result<(), ClientError> {
        drop(put_state_async(self, state).await?);
        Ok(())
    }

    /// Cancels a job: a pending or delayed job never runs; a running one is stopped.
    pub async fn cancel(&self, job_id: &str) -> Result<CancelOutcome, ClientError> {
        const ATTEMPTS: usize = 10;
        for _ in 0..ATTEMPTS {
            let entry = self
                .layout()
                .jobs
                .entry(job_id)
                .await
                .during(|| format!("read the state of job {job_id}"))?
                .filter(|entry| entry.operation == kv::Operation::Put)
                .ok_or_else(|| ClientError::NotFound(format!("job {job_id}")))?;
            let mut state: JobState = wire::decode(&entry.value)?;
            if state.status.is_terminal() {
                return Ok(CancelOutcome::AlreadyFinished(state.status));
            }
            let running = state.status == JobStatus::Running;
            let scheduled = state.status == JobStatus::Scheduled;
            state.cancel_requested = true;
            state.updated_at = Utc::now();
            if !running {
                state.status = JobStatus::Cancelled;
            }
            let bytes = Bytes::from(wire::encode(&state)?);
            match self
                .layout()
                .jobs
                .update(job_id, bytes, entry.revision)
                .await
            {
                Ok(_) => {
                    if scheduled {
                        self.cancel_scheduled(&state).await?;
                    }
                    // Tell running workers now; idle ones read the flag before running.
                    self.nats()
                        .publish(nats::cancel_subject(job_id), Bytes::new())
                        .await
                        .during(|| format!("broadcast the cancellation of job {job_id}"))?;
                    return Ok(if running {
                        CancelOutcome::Stopping
                    } else {
                        CancelOutcome::Cancelled
                    });
                }
                // Someone else wrote the state meanwhile: read it again.
                Err(_) => continue,
            }
        }
        Err(ClientError::Timeout(
            Duration::ZERO,
            format!("a stable state of job {job_id} to cancel"),
        ))
    }

    /// Removes a delayed job's schedule so it never reaches its lane, and records
    /// its CANCELLED result and event. If the schedule already fired, the worker
    /// that takes the job sees the cancel flag and does the same.
    async fn cancel_scheduled(&self, state: &JobState) -> Result<(), ClientError> {
        let stream = self
            .jetstream()
            .get_stream(nats::JOBS_STREAM)
            .await
            .during(|| "open the jobs stream".to_string())?;
        let subject = nats::scheduled_subject(&state.queue, &state.job_id);
        let purged = stream
            .purge()
            .filter(&subject)
            .await
            .during(|| format!("remove the schedule of job {}", state.job_id))?;
        if purged.purged == 0 {
            return Ok(());
        }
        let now = Utc::now();
        let result = crate::model::JobResult {
            job_id: state.job_id.clone(),
            status: JobStatus::Cancelled,
            result: None,
            error: Some("the job was cancelled before it started".into()),
            error_type: Some(crate::model::ErrorType::Cancelled),
            retryable: false,
            traceback: None,
            start_time: now,
            finish_time: now,
            attempts: 0,
            worker_id: String::new(),
            handler_digest: None,
            usage: crate::model::Usage::default(),
            logs: Vec::new(),
            logs_dropped: 0,
        };
        let bytes = Bytes::from(wire::encode(&result)?);
        if self
            .layout()
            .results
            .create(&state.job_id, bytes)
            .await
            .is_ok()
        {
            let mut event = JobEvent::new(
                JobEventType::Cancelled,
                &Job::new(state.job_type.as_str(), Vec::new())
                    .id(state.job_id.as_str())
                    .queue(state.queue.as_str()),
            )
            .with_message("cancelled before it was due");
            event.attempt = None;
            self.publish_event(&event)
                .await?
                .await
                .during(|| format!("record CANCELLED for job {}", state.job_id))?;
            self.count(&state.queue, "cancelled").await?;
        }
        Ok(())
    }

    /// Adds one to a queue counter (completed, failed, dead_letter, cancelled).
    pub async fn count(&self, queue: &str, counter: &str) -> Result<(), ClientError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Incr", "+1");
        drop(
            self.jetstream()
                .publish_with_headers(nats::stats_subject(queue, counter), headers, Bytes::new())
                .await
                .during(|| format!("count {counter} on {queue}"))?,
        );
        Ok(())
    }

    /// Pending, running and finished counts of `queue`.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats, ClientError> {
        let mut stats = QueueStats::new(queue);
        let jobs = self
            .jetstream()
            .get_stream(nats::JOBS_STREAM)
            .await
            .during(|| "open the jobs stream".to_string())?;
        for lane in Lane::BY_URGENCY {
            let consumer: Result<consumer::PullConsumer, _> =
                jobs.get_consumer(&nats::consumer_name(queue, lane)).await;
            if let Ok(mut consumer) = consumer
                && let Ok(info) = consumer.info().await
            {
                stats.pending += info.num_pending;
                stats.running += info.num_ack_pending as u64;
            }
        }
        let counters = self
            .jetstream()
            .get_stream(nats::STATS_STREAM)
            .await
            .during(|| "open the stats stream".to_string())?;
        for counter in COUNTERS {
            let value = match counters
                .get_last_raw_message_by_subject(&nats::stats_subject(queue, counter))
                .await
            {
                Ok(message) => parse_counter(&message.payload),
                Err(_) => 0,
            };
            match counter {
                "completed" => stats.completed = value,
                "failed" => stats.failed = value,
                "dead_letter" => stats.dead_letter = value,
                _ => {}
            }
        }
        Ok(stats)
    }

    /// Every queue that has a consumer or a counter.
    pub async fn queues(&self) -> Result<Vec<String>, ClientError> {
        let jobs = self
            .jetstream()
            .get_stream(nats::JOBS_STREAM)
            .await
            .during(|| "open the jobs stream".to_string())?;
        let mut names = jobs.consumer_names();
        let mut queues = std::collections::BTreeSet::new();
        while let Some(name) = names.next().await {
            let name = name.during(|| "list consumers".to_string())?;
            if let Some(rest) = name.strip_prefix("jobbox-")
                && let Some((queue, _lane)) = rest.rsplit_once('-')
            {
                queues.insert(queue.to_string());
            }
        }
        Ok(queues.into_iter().collect())
    }

    /// Dead letters, oldest first, with their sequence in the DLQ stream.
    pub async fn dead_letters(
        &self,
        queue: Option<&str>,
    ) -> Result<Vec<(u64, DeadLetter)>, ClientError> {
        let mut stream = self
            .jetstream()
            .get_stream(nats::DLQ_STREAM)
            .await
            .during(|| "open the dead-letter stream".to_string())?;
        let info = stream
            .info()
            .await
            .during(|| "read the dead-letter stream".to_string())?;
        if info.state.messages == 0 {
            return Ok(Vec::new());
        }
        let last = info.state.last_sequence;
        let filter = queue.map_or_else(|| nats::DLQ_SUBJECTS.to_string(), nats::dlq_subject);
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .during(|| format!("read dead letters on {filter}"))?;
        let mut messages = consumer
            .messages()
            .await
            .during(|| format!("read dead letters on {filter}"))?;
        let mut letters = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
            let Ok(Some(message)) = next else { break };
            let message = message.during(|| "read a dead letter".to_string())?;
            let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            letters.push((sequence, wire::decode::<DeadLetter>(&message.payload)?));
            if sequence >= last || message.info().map(|i| i.pending).unwrap_or(0) == 0 {
                break;
            }
        }
        Ok(letters)
    }

    /// Runs a dead-lettered job again: clears its result, enqueues it afresh (same id,
    /// attempts from 1) and removes it from the dead-letter stream.
    pub async fn replay_dead_letter(
        &self,
        sequence: u64,
        letter: &DeadLetter,
    ) -> Result<(), ClientError> {
        let mut job = letter.job.clone();
        job.attempt = 1;
        job.scheduled_at = None;
        self.layout()
            .results
            .purge(&job.id)
            .await
            .during(|| format!("clear the result of job {}", job.id))?;
        let state = JobState::new(&job);
        self.put_job_state(&state).await?;
        let event = JobEvent::new(JobEventType::Enqueued, &job)
            .with_message("replayed from the dead-letter queue");
        self.publish_event(&event)
            .await?
            .await
            .during(|| format!("record ENQUEUED for job {}", job.id))?;
        // A fresh message id: the original id is still inside the duplicate window.
        let payload = Bytes::from(wire::encode(&job)?);
        self.jetstream()
            .send_publish(
                nats::job_subject(&job.queue, job.priority),
                PublishMessage::build()
                    .payload(payload)
                    .message_id(format!("{}.replay.{sequence}", job.id)),
            )
            .await
            .during(|| format!("replay job {}", job.id))?
            .await
            .during(|| format!("replay job {}", job.id))?;
        let stream = self
            .jetstream()
            .get_stream(nats::DLQ_STREAM)
            .await
            .during(|| "open the dead-letter stream".to_string())?;
        stream
            .delete_message(sequence)
            .await
            .during(|| format!("remove job {} from the dead-letter stream", job.id))?;
        Ok(())
    }
}

/// A counter message's value: `{"val":"<n>"}`.
fn parse_counter(payload: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("val").and_then(|v| v.as_str().map(str::to_string)))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Client {
    /// Live workers, from their heartbeats (an expired heartbeat is a dead worker).
    pub async fn workers(&self) -> Result<Vec<crate::model::WorkerStatus>, ClientError> {
        let keys: Vec<String> = match self.layout().workers.keys().await {
            Ok(keys) => {
                use futures::TryStreamExt as _;
                keys.try_collect()
                    .await
                    .during(|| "list workers".to_string())?
            }
            Err(e) => return Err(ClientError::nats("list workers", e)),
        };
        let mut workers = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(bytes) = self
                .layout()
                .workers
                .get(&key)
                .await
                .during(|| format!("read worker {key}"))?
            {
                workers.push(wire::decode::<crate::model::WorkerStatus>(&bytes)?);
            }
        }
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(workers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_values_parse() {
        assert_eq!(parse_counter(br#"{"val":"42"}"#), 42);
        assert_eq!(parse_counter(b"garbage"), 0);
    }
}
