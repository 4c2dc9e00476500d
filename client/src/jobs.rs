//! Job lifecycle on the client side: publishing (now or at `scheduled_at`), a job's
//! state (derived from its events and result), cancellation, queue stats and the
//! dead-letter queue.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, message::PublishMessage};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;

use crate::error::{ClientError, NatsContext};
use crate::model::{
    CancelRequest, DeadLetter, ErrorType, Job, JobEvent, JobEventType, JobResult, JobState,
    JobStatus, QueueStats,
};
use crate::nats::{self, Lane};
use crate::{Client, wire};

/// Counters kept per queue in [`nats::STATS_STREAM`].
pub const COUNTERS: [&str; 4] = ["completed", "failed", "dead_letter", "cancelled"];

/// How long reading one job's events may take before the read gives up.
const EVENTS_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes `job` to its lane now, or — when `scheduled_at` is in the future — as a
/// JetStream message schedule that the server moves into the lane when it is due.
/// Either way it survives restarts of workers and of the server.
///
/// `message_id` is the job's dedupe id (`Nats-Msg-Id`): the job id for an enqueue.
pub(crate) async fn publish_job(
    client: &Client,
    job: &Job,
    message_id: &str,
) -> Result<jetstream::context::PublishAckFuture, ClientError> {
    let (subject, headers, payload) = job_message(job, message_id)?;
    client
        .jetstream()
        .send_publish(
            subject,
            PublishMessage::build().payload(payload).headers(headers),
        )
        .await
        .during(|| format!("publish job {}", job.id))
}

/// The message that stores `job`: its subject (the lane, or the job's schedule
/// subject when it is not yet due), headers (`Nats-Msg-Id` = `message_id`, the
/// job's trace context, and the schedule's) and payload.
pub(crate) fn job_message(
    job: &Job,
    message_id: &str,
) -> Result<(String, HeaderMap, Bytes), ClientError> {
    let payload = Bytes::from(wire::encode(job)?);
    let lane_subject = nats::job_subject(&job.queue, job.priority);
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
    if let Some(trace) = &job.trace {
        trace.write_headers(&mut headers);
    }
    match job.scheduled_at {
        Some(at) if at > Utc::now() => {
            let when = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            headers.insert("Nats-Schedule", format!("@at {when}").as_str());
            headers.insert("Nats-Schedule-Target", lane_subject.as_str());
            Ok((
                nats::scheduled_subject(&job.queue, &job.id),
                headers,
                payload,
            ))
        }
        _ => Ok((lane_subject, headers, payload)),
    }
}

/// The events a just-enqueued job gets: SCHEDULED (with its due time) for a delayed
/// job, then ENQUEUED.
pub(crate) fn enqueue_events(job: &Job) -> Vec<(JobEvent, String)> {
    let mut events = Vec::with_capacity(2);
    if let Some(at) = job.scheduled_at
        && at > Utc::now()
    {
        let event = JobEvent::new(JobEventType::Scheduled, job)
            .with_detail("scheduled_at", at.to_rfc3339());
        events.push((event, format!("{}.scheduled", job.id)));
    }
    let event = JobEvent::new(JobEventType::Enqueued, job);
    events.push((event, format!("{}.enqueued", job.id)));
    events
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

/// The id under which a job's terminal event is published: derived from the result it
/// reports, so that whoever finds the result can publish the event again (its writer
/// may have died in between) without a duplicate.
pub fn final_event_id(job_id: &str, result_start: chrono::DateTime<Utc>) -> String {
    format!("{job_id}.final.{}", result_start.timestamp_micros())
}

impl Client {
    /// The job's current state, derived from its events and its result; `None` if
    /// the job is unknown.
    pub async fn job_state(&self, job_id: &str) -> Result<Option<JobState>, ClientError> {
        let result = self.result(job_id).await?;
        let events = self.job_events(job_id).await?;
        let cancel_requested = self
            .layout()
            .cancels
            .get(job_id)
            .await
            .during(|| format!("read the cancellation of job {job_id}"))?
            .is_some();
        Ok(crate::job_view::derive_state(
            job_id,
            &events,
            result.as_ref(),
            cancel_requested,
        ))
    }

    /// Every event of one job still kept, in stream order.
    pub async fn job_events(&self, job_id: &str) -> Result<Vec<JobEvent>, ClientError> {
        if !crate::is_valid_name(job_id) {
            return Err(ClientError::NotFound(format!(
                "job {job_id:?} (not a valid id)"
            )));
        }
        let filter = nats::events_filter(None, Some(job_id));
        let stream = self
            .jetstream()
            .get_stream(nats::EVENTS_STREAM)
            .await
            .during(|| "open the events stream".to_string())?;
        let mut consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .during(|| format!("read events on {filter}"))?;
        let pending = consumer
            .info()
            .await
            .during(|| format!("read events on {filter}"))?
            .num_pending;
        let mut events = Vec::new();
        if pending == 0 {
            return Ok(events);
        }
        let mut messages = consumer
            .messages()
            .await
            .during(|| format!("read events on {filter}"))?;
        let read = async {
            while let Some(message) = messages.next().await {
                let message = message.during(|| format!("read events on {filter}"))?;
                let left = message.info().map(|i| i.pending).unwrap_or(0);
                if let Ok(event) = wire::decode::<JobEvent>(&message.payload) {
                    events.push(event);
                }
                if left == 0 {
                    break;
                }
            }
            Ok::<_, ClientError>(())
        };
        tokio::time::timeout(EVENTS_READ_TIMEOUT, read)
            .await
            .map_err(|_| {
                ClientError::Timeout(EVENTS_READ_TIMEOUT, format!("events of {job_id}"))
            })??;
        Ok(events)
    }

    /// Cancels a job: a pending, delayed or retrying job never runs again; a running
    /// one is stopped by its worker within one epoch tick.
    ///
    /// The CANCELLED result of a job that has not started is written here, with
    /// `create`, so it fences the job exactly as a worker's result would: a worker that
    /// takes the job later finds the result and runs nothing.
    pub async fn cancel(&self, job_id: &str) -> Result<CancelOutcome, ClientError> {
        if let Some(result) = self.result(job_id).await? {
            return Ok(CancelOutcome::AlreadyFinished(result.status));
        }
        let state = self
            .job_state(job_id)
            .await?
            .ok_or_else(|| ClientError::NotFound(format!("job {job_id}")))?;
        let request = CancelRequest {
            job_id: job_id.to_string(),
            requested_at: Utc::now(),
        };
        // The request first: a worker that started the job meanwhile stops it.
        self.layout()
            .cancels
            .put(job_id, Bytes::from(wire::encode(&request)?))
            .await
            .during(|| format!("record the cancellation of job {job_id}"))?;
        if state.status == JobStatus::Running {
            return Ok(CancelOutcome::Stopping);
        }
        let now = Utc::now();
        let message = "the job was cancelled before it started";
        let result = JobResult::cancelled(job_id, message).with_times(now, now);
        let bytes = Bytes::from(wire::encode(&result)?);
        match self.layout().results.create(job_id, bytes).await {
            Ok(_) => {}
            Err(e) if e.kind() == jetstream::kv::CreateErrorKind::AlreadyExists => {
                // A worker finished it first.
                let status = self
                    .result(job_id)
                    .await?
                    .map_or(JobStatus::Cancelled, |r| r.status);
                return Ok(CancelOutcome::AlreadyFinished(status));
            }
            Err(e) => return Err(ClientError::nats(format!("cancel job {job_id}"), e)),
        }
        if state.status == JobStatus::Scheduled {
            self.remove_schedule(&state).await?;
        }
        let job = Job::new(state.job_type.as_str(), Vec::new())
            .id(job_id)
            .queue(state.queue.as_str());
        let mut event = JobEvent::new(JobEventType::Cancelled, &job)
            .with_error(ErrorType::Cancelled, message)
            .with_message(message);
        event.attempt = None;
        self.publish_event_with_id(&event, &final_event_id(job_id, now))
            .await?
            .await
            .during(|| format!("record CANCELLED for job {job_id}"))?;
        self.count(&state.queue, "cancelled", 1).await?;
        Ok(CancelOutcome::Cancelled)
    }

    /// Removes a delayed job's schedule so it never reaches its lane. If the schedule
    /// already fired, the worker that takes the job finds its CANCELLED result.
    async fn remove_schedule(&self, state: &JobState) -> Result<(), ClientError> {
        if !crate::is_valid_name(&state.queue) {
            return Ok(());
        }
        let stream = self
            .jetstream()
            .get_stream(nats::JOBS_STREAM)
            .await
            .during(|| "open the jobs stream".to_string())?;
        let subject = nats::scheduled_subject(&state.queue, &state.job_id);
        stream
            .purge()
            .filter(&subject)
            .await
            .during(|| format!("remove the schedule of job {}", state.job_id))?;
        Ok(())
    }

    /// Adds `n` to a queue counter (completed, failed, dead_letter, cancelled). Not
    /// awaited: counters are statistics, and workers add in batches.
    pub async fn count(&self, queue: &str, counter: &str, n: u64) -> Result<(), ClientError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Incr", format!("+{n}").as_str());
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
            match consumer {
                Ok(mut consumer) => {
                    if let Ok(info) = consumer.info().await {
                        stats.pending += info.num_pending;
                        stats.running += info.num_ack_pending as u64;
                    }
                }
                // No worker has served this lane yet: its jobs are all pending.
                Err(_) => {
                    stats.pending += messages_on(&jobs, &nats::lane_subject(queue, lane)).await?;
                }
            }
        }
        // Delayed jobs wait as message schedules until they are due.
        stats.pending += messages_on(&jobs, &nats::scheduled_subject(queue, ">")).await?;
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

    /// Every queue that has a consumer, a job in the jobs stream or a counter.
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
        // Queues no worker has served yet have jobs but no consumer.
        for (subject, _) in subject_counts(&jobs, nats::JOBS_SUBJECTS).await? {
            if let Some(queue) = nats::queue_of_job_subject(&subject) {
                queues.insert(queue.to_string());
            }
        }
        let counters = self
            .jetstream()
            .get_stream(nats::STATS_STREAM)
            .await
            .during(|| "open the stats stream".to_string())?;
        for (subject, _) in subject_counts(&counters, nats::STATS_SUBJECTS).await? {
            if let Some((queue, _counter)) = subject
                .strip_prefix("jobbox.stats.")
                .and_then(|rest| rest.split_once('.'))
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
        let filter = queue.map_or_else(|| nats::DLQ_SUBJECTS.to_string(), nats::dlq_subject);
        let read = ReadThrough {
            filter,
            deliver_policy: consumer::DeliverPolicy::All,
            until: Some(info.state.last_sequence),
            idle: Duration::from_millis(500),
        };
        let mut letters = Vec::new();
        for message in read_through(&stream, read, "dead letters").await? {
            let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            letters.push((sequence, wire::decode::<DeadLetter>(&message.payload)?));
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
        // The latest heartbeat of each worker, read in one pass by a consumer, which
        // the stream's leader serves: on a cluster a direct get may be answered by a
        // follower still catching up (a restarted node), which would show a live
        // worker as silent.
        let name = format!("KV_{}", nats::WORKERS_BUCKET);
        let stream = self
            .jetstream()
            .get_stream(&name)
            .await
            .during(|| "list workers".to_string())?;
        let read = ReadThrough {
            filter: nats::kv_subject(nats::WORKERS_BUCKET, ">"),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            until: None,
            idle: Duration::from_secs(5),
        };
        let mut workers = Vec::new();
        for message in read_through(&stream, read, "workers").await? {
            let removed = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
            if !removed {
                workers.push(wire::decode::<crate::model::WorkerStatus>(
                    &message.payload,
                )?);
            }
        }
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(workers)
    }
}

/// What [`read_through`] reads.
struct ReadThrough {
    filter: String,
    deliver_policy: consumer::DeliverPolicy,
    /// Stop at this stream sequence (what the stream held when asked).
    until: Option<u64>,
    /// Stop when no message comes for this long.
    idle: Duration,
}

/// Every message of `stream` on `read.filter`, read once by an ordered consumer (which
/// the stream's leader serves), up to what was pending when it started.
async fn read_through(
    stream: &jetstream::stream::Stream,
    read: ReadThrough,
    what: &str,
) -> Result<Vec<jetstream::Message>, ClientError> {
    let operation = || format!("read {what} on {}", read.filter);
    let mut consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: read.filter.clone(),
            deliver_policy: read.deliver_policy,
            ..Default::default()
        })
        .await
        .during(operation)?;
    let mut read_all = Vec::new();
    if consumer.info().await.during(operation)?.num_pending == 0 {
        return Ok(read_all);
    }
    let mut messages = consumer.messages().await.during(operation)?;
    loop {
        let next = tokio::time::timeout(read.idle, messages.next()).await;
        let Ok(Some(message)) = next else { break };
        let message = message.during(operation)?;
        let (sequence, pending) = message
            .info()
            .map_or((0, 0), |i| (i.stream_sequence, i.pending));
        read_all.push(message);
        if pending == 0 || read.until.is_some_and(|last| sequence >= last) {
            break;
        }
    }
    Ok(read_all)
}

/// How many messages of `stream` are on subjects matching `filter`.
async fn messages_on(
    stream: &async_nats::jetstream::stream::Stream,
    filter: &str,
) -> Result<u64, ClientError> {
    let counts = subject_counts(stream, filter).await?;
    Ok(counts.iter().map(|(_, count)| *count as u64).sum())
}

/// The subjects of `stream` matching `filter`, each with its number of messages.
async fn subject_counts(
    stream: &async_nats::jetstream::stream::Stream,
    filter: &str,
) -> Result<Vec<(String, usize)>, ClientError> {
    let mut subjects = stream
        .info_with_subjects(filter)
        .await
        .during(|| format!("list the subjects of {filter}"))?;
    let mut counts = Vec::new();
    while let Some(subject) = subjects.next().await {
        counts.push(subject.during(|| format!("list the subjects of {filter}"))?);
    }
    Ok(counts)
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
