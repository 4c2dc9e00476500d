//! Recording how a job ended: its one result, its dead letter, its terminal event and
//! counters, then the ack — in that order, and only by the writer of the result.
//!
//! A result that cannot be stored is never answered by running the job again: a
//! record too large is cut down ([`store::shrink`]) until it fits or is a final
//! failure; a full store or an unreachable server is waited out with a growing
//! backoff while the message is kept alive, so the slot stays taken and the worker
//! stops starting new jobs it could not record either.

use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use jobbox::{DeadLetter, Job, JobEvent, JobEventType, JobResult, JobStatus, wire};
use tokio::time::Instant;

use super::Shared;
use super::dispatch::{ack, keep_alive_interval};
use super::store::{
    MAX_ERROR_BYTES, MAX_RECORD_BYTES, MAX_TRACEBACK_BYTES, Shrunk, WriteError, cap_text, shrink,
};
use super::verdict::Verdict;
use crate::otel::Outcome;
use crate::sandbox::{Failure, RunOutcome};

/// First pause before writing a record again after a failed write.
const WRITE_BACKOFF: Duration = Duration::from_millis(100);

/// Longest pause between two tries of the same write.
const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(10);

/// A job that a message may reuse the id of: a message published this long after the
/// result was written is another job with the same id, not a redelivery.
const REUSE_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// One attempt of a job, as far as recording it needs.
pub(super) struct Attempt<'a> {
    /// The job (its id is a valid key).
    pub job: &'a Job,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// The handler that ran, if one did.
    pub digest: Option<&'a str>,
    /// The `ack_wait` of the message's consumer.
    pub ack_wait: Duration,
}

/// How writing a record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// Written by us.
    Written,
    /// Someone else's value was there first (the fence): record nothing more.
    Fenced,
    /// Not known to be written, and no longer trying (the worker is stopping, or
    /// the stored value could not be read back): the message is handed back.
    GaveUp,
}

/// Records a job that ended without its handler running (bad job, poison message,
/// cancelled before start, no handler).
pub(super) async fn end_unrun(
    shared: &Shared,
    message: &Message,
    job: &Job,
    ack_wait: Duration,
    failure: Failure,
    verdict: Verdict,
) -> Outcome {
    tracing::warn!(%failure, "job cannot run");
    let attempt = Attempt {
        job,
        started_at: Utc::now(),
        digest: None,
        ack_wait,
    };
    record(
        shared,
        message,
        &attempt,
        RunOutcome::failed(failure),
        verdict,
    )
    .await
}

/// Records what the verdict says, then acks or naks. Returns what the attempt left
/// the job as, for its span.
pub(super) async fn record(
    shared: &Shared,
    message: &Message,
    attempt: &Attempt<'_>,
    outcome: RunOutcome,
    verdict: Verdict,
) -> Outcome {
    let job = attempt.job;
    let failure = outcome.result.as_ref().err().map(capped);
    let ran = attempt.digest.is_some();
    let mut ended = Outcome {
        status: None,
        error_type: failure.as_ref().map(|f| f.error_type),
        fuel: ran.then_some(outcome.usage.fuel_consumed),
        started_at: ran.then_some(attempt.started_at),
    };
    let Some(status) = verdict.final_status() else {
        let Verdict::Retry(delay) = verdict else {
            return ended;
        };
        ended.status = Some(JobStatus::Retrying);
        let mut event = JobEvent::new(JobEventType::RetryScheduled, job)
            .with_worker(&shared.config.worker_id)
            .with_delay(delay)
            .with_usage(outcome.usage);
        if let Some(failure) = &failure {
            event = event.with_error(failure.error_type, failure.message.clone());
        }
        shared.events.publish(&event, None).await;
        shared
            .counters
            .retried
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some((metrics, job_type)) = shared.metrics_for(&job.job_type) {
            metrics.retried(&job.queue, job_type);
            if attempt.digest.is_some() {
                metrics.ran(&job.queue, job_type, &outcome.usage);
            }
        }
        ack(message, AckKind::Nak(Some(delay))).await;
        return ended;
    };
    let mut result = build_result(shared, attempt, &outcome, failure.as_ref(), status);
    match store_result(shared, message, attempt.ack_wait, &mut result).await {
        Stored::Written => ended.status = Some(result.status),
        Stored::Fenced => {
            tracing::info!("the job already had a result; keeping the first, recording nothing");
            ack(message, AckKind::Ack).await;
            return ended;
        }
        Stored::GaveUp => {
            ack(message, AckKind::Nak(None)).await;
            return ended;
        }
    }
    if result.status == JobStatus::DeadLetter
        && store_dead_letter(shared, message, attempt.ack_wait, job, &result).await
            == Stored::GaveUp
    {
        // The result stands; the redelivery finds it and stores the dead letter.
        ack(message, AckKind::Nak(None)).await;
        return ended;
    }
    let counter = if result.status == JobStatus::Completed {
        &shared.counters.done
    } else {
        &shared.counters.failed
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared.queue_counters.add(&job.queue, result.status);
    if let Some((metrics, job_type)) = shared.metrics_for(&job.job_type) {
        metrics.finished(&job.queue, job_type, result.status, result.error_type);
        if result.status == JobStatus::DeadLetter {
            metrics.dead_lettered(&job.queue, job_type);
        }
        if attempt.digest.is_some() {
            metrics.ran(&job.queue, job_type, &result.usage);
        }
    }
    let event = final_event(shared, job, &result, attempt.started_at);
    let id = jobbox::final_event_id(&job.id, result.start_time);
    let retry_after = super::dispatch::keep_alive_interval(attempt.ack_wait);
    shared
        .events
        .publish_then_ack(&event, &id, message, retry_after)
        .await;
    ended
}

/// A message whose job already has a result. A redelivery of the message that
/// produced it (its worker died before acking) gets the terminal event and dead
/// letter published again, deduplicated by id; a later message reusing the id of a
/// finished job is refused and runs nothing.
pub(super) async fn already_finished(
    shared: &Shared,
    message: &Message,
    job: &Job,
    result: Option<JobResult>,
    published_nanos: i128,
    ack_wait: Duration,
) {
    let Some(result) = result else {
        tracing::warn!("the job has a result that does not decode; acking without running");
        ack(message, AckKind::Term).await;
        return;
    };
    let published =
        DateTime::<Utc>::from_timestamp_nanos(i64::try_from(published_nanos).unwrap_or(i64::MAX));
    if published > result.finish_time + REUSE_MARGIN {
        tracing::warn!(
            finished = %result.finish_time,
            "a new message reuses the id of a finished job; refused, nothing runs"
        );
        ack(message, AckKind::Term).await;
        return;
    }
    tracing::info!("job already has a result; acking the redelivery");
    if result.status == JobStatus::DeadLetter {
        let _ = store_dead_letter(shared, message, ack_wait, job, &result).await;
    }
    let mut event = final_event(shared, job, &result, result.start_time);
    event.worker_id = Some(result.worker_id.clone());
    event.attempt = Some(result.attempts);
    let id = jobbox::final_event_id(&job.id, result.start_time);
    let retry_after = super::dispatch::keep_alive_interval(ack_wait);
    shared
        .events
        .publish_then_ack(&event, &id, message, retry_after)
        .await;
}

/// Hands a job that arrived before its `scheduled_at` back until it is due, without
/// counting a delivery: it is published again as a message schedule (same attempt),
/// then the early message is removed. If that publish fails, a plain delayed nak
/// does the same at the price of one delivery.
pub(super) async fn hand_back_until_due(
    shared: &Shared,
    message: &Message,
    job: &Job,
    sequence: u64,
    wait: Duration,
) {
    let dedupe = format!("{}.handback.{sequence}", job.id);
    let republished = match shared.client.publish_job_with_id(job, &dedupe).await {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match republished {
        Ok(()) => ack(message, AckKind::Term).await,
        Err(e) => {
            tracing::warn!(error = %e, "cannot reschedule an early job; handing it back");
            ack(message, AckKind::Nak(Some(wait))).await;
        }
    }
}

/// The failure as recorded: its message and detail cut to size.
fn capped(failure: &Failure) -> Failure {
    let mut failure = failure.clone();
    cap_text(&mut failure.message, MAX_ERROR_BYTES);
    if let Some(detail) = &mut failure.detail {
        cap_text(detail, MAX_TRACEBACK_BYTES);
    }
    failure
}

fn build_result(
    shared: &Shared,
    attempt: &Attempt<'_>,
    outcome: &RunOutcome,
    failure: Option<&Failure>,
    status: JobStatus,
) -> JobResult {
    let job_id = attempt.job.id.as_str();
    let mut result = match (&outcome.result, failure) {
        (Ok(output), _) => JobResult::completed(job_id, output.clone()).with_content_type(
            outcome
                .output_content_type
                .as_deref()
                .unwrap_or(&attempt.job.content_type),
        ),
        (Err(_), Some(f)) => {
            JobResult::failed(job_id, f.error_type, f.message.clone()).with_retryable(f.retryable)
        }
        (Err(f), None) => JobResult::failed(job_id, f.error_type, f.message.clone()),
    };
    if let Some(traceback) = failure.and_then(|f| match (&f.trap_code, &f.detail) {
        (Some(code), Some(detail)) => Some(format!("trap code: {code}\n{detail}")),
        (Some(code), None) => Some(format!("trap code: {code}")),
        (None, detail) => detail.clone(),
    }) {
        result = result.with_traceback(traceback);
    }
    result
        .with_status(status)
        .with_times(attempt.started_at, Utc::now())
        .with_attempts(attempt.job.attempt)
        .with_worker(shared.config.worker_id.as_str())
        .with_handler_digest(attempt.digest)
        .with_usage(outcome.usage)
        .with_logs(outcome.logs.clone(), outcome.logs_dropped)
        .with_trace_id(attempt.job.trace_id())
}

/// Writes the job's one result with `create`, cutting it down while it is too large
/// and waiting out a full store or an unreachable server.
async fn store_result(
    shared: &Shared,
    message: &Message,
    ack_wait: Duration,
    result: &mut JobResult,
) -> Stored {
    let mut shrunk: Option<Shrunk> = None;
    let mut wait = Waiter::new(message, ack_wait);
    loop {
        let bytes = match wire::encode(&*result) {
            // Past the first cut, the server's own limit decides (it refuses with
            // "too large", which cuts further).
            Ok(bytes) if bytes.len() <= MAX_RECORD_BYTES || shrunk.is_some() => bytes,
            Ok(_) => match shrink(result, shrunk) {
                Some(step) => {
                    shrunk = Some(step);
                    continue;
                }
                None => return give_up_too_large(message).await,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the result");
                match shrink(result, shrunk) {
                    Some(step) => {
                        shrunk = Some(step);
                        continue;
                    }
                    None => return give_up_too_large(message).await,
                }
            }
        };
        let written = shared
            .client
            .layout()
            .results
            .create(&result.job_id, Bytes::from(bytes))
            .await;
        let Err(error) = written else {
            return Stored::Written;
        };
        match WriteError::classify(&error) {
            // A write whose answer was lost (the server crashed after storing it)
            // conflicts with itself: on the retry, or within the first `create`
            // (which reads the key after a failed write and reports it as taken).
            WriteError::Conflict => {
                return match owner_of_stored(shared, result).await {
                    Owner::Ours => Stored::Written,
                    Owner::Theirs => Stored::Fenced,
                    Owner::Unknown => Stored::GaveUp,
                };
            }
            WriteError::TooLarge => match shrink(result, shrunk) {
                Some(step) => shrunk = Some(step),
                None => return give_up_too_large(message).await,
            },
            kind @ (WriteError::StoreFull | WriteError::Transient) => {
                if !wait.wait(shared, kind, &error.to_string()).await {
                    return Stored::GaveUp;
                }
            }
        }
    }
}

/// Whose result the stored one is, after a `create` found the key taken.
enum Owner {
    /// This very write (same worker, same start): its answer was lost.
    Ours,
    /// Another run's.
    Theirs,
    /// The read failed: the message is handed back and the redelivery decides.
    Unknown,
}

async fn owner_of_stored(shared: &Shared, result: &JobResult) -> Owner {
    match shared.client.result(&result.job_id).await {
        Ok(Some(stored))
            if stored.worker_id == result.worker_id && stored.start_time == result.start_time =>
        {
            Owner::Ours
        }
        Ok(_) => Owner::Theirs,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the stored result back; handing the job back");
            Owner::Unknown
        }
    }
}

/// A result that cannot be made to fit (never expected: a final failure is small):
/// the message is terminated so that it ends, and the reason logged.
async fn give_up_too_large(message: &Message) -> Stored {
    tracing::error!("the result cannot be made small enough to store; terminating the message");
    ack(message, AckKind::Term).await;
    Stored::Fenced
}

/// Stores the dead letter of `job` (whose result is `result`), deduplicated by
/// job id and attempt so that a redelivery storing it again adds nothing.
async fn store_dead_letter(
    shared: &Shared,
    message: &Message,
    ack_wait: Duration,
    job: &Job,
    result: &JobResult,
) -> Stored {
    let mut letter = DeadLetter {
        job: job.clone(),
        error: result.error.clone(),
        error_type: result.error_type,
        usage: result.usage,
        attempts: result.attempts,
        failed_at: result.finish_time,
        worker_id: Some(result.worker_id.clone()),
    };
    let dedupe = format!("{}.dlq.{}", job.id, result.attempts);
    let mut wait = Waiter::new(message, ack_wait);
    loop {
        let bytes = match wire::encode(&letter) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the dead letter");
                return Stored::GaveUp;
            }
        };
        let error = match publish_dead_letter(shared, &job.queue, &dedupe, bytes).await {
            Ok(()) => break,
            Err(e) => e,
        };
        match WriteError::classify(&error) {
            WriteError::TooLarge if letter.error.as_ref().is_some_and(|e| e.len() > 256) => {
                if let Some(error) = &mut letter.error {
                    cap_text(error, 256);
                }
            }
            WriteError::TooLarge | WriteError::Conflict => {
                tracing::error!(error = %error, "the dead letter cannot be stored");
                return Stored::Fenced;
            }
            kind @ (WriteError::StoreFull | WriteError::Transient) => {
                if !wait.wait(shared, kind, &error.to_string()).await {
                    return Stored::GaveUp;
                }
            }
        }
    }
    let event = JobEvent::new(JobEventType::DeadLettered, job)
        .with_worker(&shared.config.worker_id)
        .with_usage(result.usage);
    let id = format!("{}.dead_lettered.{}", job.id, result.attempts);
    shared.events.publish(&event, Some(&id)).await;
    Stored::Written
}

/// Publishes a dead letter and waits until JetStream has stored it.
async fn publish_dead_letter(
    shared: &Shared,
    queue: &str,
    dedupe: &str,
    bytes: Vec<u8>,
) -> Result<(), async_nats::jetstream::context::PublishError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, dedupe);
    shared
        .client
        .jetstream()
        .publish_with_headers(
            jobbox::nats::dlq_subject(queue),
            headers,
            Bytes::from(bytes),
        )
        .await?
        .await
        .map(|_| ())
}

/// Waits between tries of a write: a growing pause, the message kept alive meanwhile,
/// one warning per kind of failure in a row.
struct Waiter<'a> {
    message: &'a Message,
    ack_wait: Duration,
    pause: Duration,
    extended: Instant,
    warned: Option<WriteError>,
}

impl<'a> Waiter<'a> {
    fn new(message: &'a Message, ack_wait: Duration) -> Self {
        Self {
            message,
            ack_wait,
            pause: WRITE_BACKOFF,
            extended: Instant::now(),
            warned: None,
        }
    }

    /// Waits before the next try; false when the worker is stopping instead.
    async fn wait(&mut self, shared: &Shared, kind: WriteError, error: &str) -> bool {
        if self.warned != Some(kind) {
            tracing::warn!(%error, "{}; trying again with a growing backoff", kind.describe());
            self.warned = Some(kind);
        }
        let keep_alive = keep_alive_interval(self.ack_wait);
        let pause = self.pause.min(keep_alive);
        tokio::select! {
            () = shared.abort.cancelled() => return false,
            () = tokio::time::sleep(pause) => {}
        }
        if self.extended.elapsed() + pause >= keep_alive {
            ack(self.message, AckKind::Progress).await;
            self.extended = Instant::now();
        }
        self.pause = (self.pause * 2).min(MAX_WRITE_BACKOFF);
        true
    }
}

fn final_event(
    shared: &Shared,
    job: &Job,
    result: &JobResult,
    started_at: DateTime<Utc>,
) -> JobEvent {
    let event_type = match result.status {
        JobStatus::Completed => JobEventType::Completed,
        JobStatus::Cancelled => JobEventType::Cancelled,
        _ => JobEventType::Failed,
    };
    let elapsed = (result.finish_time - started_at)
        .to_std()
        .unwrap_or_default();
    let mut event = JobEvent::new(event_type, job)
        .with_worker(&shared.config.worker_id)
        .with_duration(elapsed)
        .with_usage(result.usage);
    if let Some(digest) = &result.handler_digest {
        event = event.with_handler_digest(digest.as_str());
    }
    if let (Some(error_type), Some(error)) = (result.error_type, &result.error) {
        event = event.with_error(error_type, error.clone());
    }
    event
}
