//! Processing one fetched message: decode, route, run, record, ack.
//!
//! Order matters: the result is written (with KV `create`, the fence against a second
//! result) before the message is acked, so a crash in between is harmless: the
//! redelivered job finds its result and is acked without running again.

use std::time::Duration;

use async_nats::jetstream::kv::CreateErrorKind;
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use jobbox::{ErrorType, Job, JobEvent, JobEventType, JobResult, JobStatus, wire};
use tokio::sync::watch;

use super::Shared;
use super::state::{self, Claim};
use super::verdict::{Verdict, decide};
use crate::sandbox::{CancelFlag, Failure, JobControl, RunOutcome};

/// Processes one message to the end. Never panics; every path acks, naks or leaves
/// the message for redelivery on purpose.
#[tracing::instrument(skip_all, fields(otel.kind = "consumer", queue, job_id, job_type, attempt))]
pub(super) async fn process(shared: &Shared, queue: &str, message: Message) {
    let span = tracing::Span::current();
    span.record("queue", queue);
    let info = match message.info() {
        Ok(info) => (info.delivered, info.stream_sequence),
        Err(e) => {
            tracing::warn!(error = %e, "message without JetStream metadata; dropping");
            return;
        }
    };
    let (delivered, sequence) = info;
    let mut job = match wire::decode::<Job>(&message.payload) {
        Ok(job) => job,
        Err(e) => return bad_message(shared, queue, &message, sequence, e.to_string()).await,
    };
    job.attempt = u32::try_from(delivered).unwrap_or(u32::MAX).max(1);
    span.record("job_id", job.id.as_str());
    span.record("job_type", job.job_type.as_str());
    span.record("attempt", job.attempt);
    if let Err(invalid) = job.validate() {
        let failure = Failure::new(ErrorType::BadJob, invalid.to_string());
        return finish_without_run(shared, &message, &job, failure).await;
    }

    // A redelivered job that already has its result was finished by a worker that
    // died before acking: ack it, run nothing. (A first delivery cannot have one.)
    if delivered > 1 && already_finished(shared, &message, &job).await {
        return;
    }

    // A delayed job is moved into its lane by the server when due; one that still
    // arrives early (clocks disagree) goes back until then.
    if let Some(at) = job.scheduled_at
        && let Ok(wait) = (at - Utc::now()).to_std()
        && wait > Duration::from_millis(50)
    {
        ack(&message, AckKind::Nak(Some(wait))).await;
        return;
    }

    match state::claim(shared, &job).await {
        Claim::Cancelled => {
            let failure = Failure::new(
                ErrorType::Cancelled,
                "the job was cancelled before it started",
            );
            return finish_without_run(shared, &message, &job, failure).await;
        }
        Claim::Run(attempt) => {
            job.attempt = attempt;
            span.record("attempt", job.attempt);
        }
        Claim::RunUntracked => {}
    }

    // Loading a new handler version can take a while (fetch + compile): keep the
    // message meanwhile, or it would be redelivered and run twice.
    let resolve = shared.routes.resolve(&job.job_type, job.handler.as_deref());
    let active = match with_progress_acks(shared, &message, resolve).await {
        Ok(active) => active,
        Err(failure) => return finish_without_run(shared, &message, &job, failure).await,
    };
    let mut limits = job.effective_limits(&active.route.limits);
    limits.memory_bytes = limits.memory_bytes.min(shared.config.max_memory_bytes);
    let max_retries = limits.max_retries;
    let digest = active.route.digest.clone();

    let started_at = Utc::now();
    let worker_id = shared.config.worker_id.clone();
    let started = JobEvent::new(JobEventType::Started, &job)
        .with_worker(&worker_id)
        .with_handler_digest(&digest)
        .with_nats(message.subject.to_string(), sequence);
    // Not awaited yet: the run need not wait for the event to be stored.
    let started_stored = shared.client.publish_event(&started).await;

    let (progress_tx, progress_rx) = watch::channel(None);
    let control = JobControl {
        cancel: CancelFlag::default(),
        progress: progress_tx,
    };
    let _running = shared.running.enter(&job.id, control.cancel.clone());
    let outcome = {
        let run = shared
            .sandbox
            .run(&active.handler, &job, limits, control.clone());
        let keepalive = keep_alive(shared, &message, &job, progress_rx, &control.cancel);
        tokio::pin!(run);
        tokio::select! {
            outcome = &mut run => outcome,
            () = keepalive => unreachable_keepalive(),
            () = shared.abort.cancelled() => {
                control.cancel.cancel();
                let _ = run.await;
                tracing::warn!("worker stopping: job handed back for redelivery");
                ack(&message, AckKind::Nak(None)).await;
                return;
            }
        }
    };

    let stored = match started_stored {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = stored {
        tracing::warn!(error = %e, "failed to record the STARTED event");
    }
    let verdict = decide(
        outcome.result.as_ref().map(|_| ()),
        job.attempt,
        max_retries,
        &job.id,
    );
    record(
        shared,
        &message,
        &job,
        started_at,
        Some(&digest),
        outcome,
        verdict,
    )
    .await;
}

/// Runs `work` while sending progress acks for `message` every third of ack_wait.
async fn with_progress_acks<T>(
    shared: &Shared,
    message: &Message,
    work: impl std::future::Future<Output = T>,
) -> T {
    let interval = (shared.config.ack_wait / 3).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticker.tick() => ack(message, AckKind::Progress).await,
        }
    }
}

/// Whether the job already has a result; if so acks the message. On a failed read
/// the message is handed back and `true` returned (nothing more to do now).
async fn already_finished(shared: &Shared, message: &Message, job: &Job) -> bool {
    match shared.client.layout().results.get(&job.id).await {
        Ok(Some(bytes)) => {
            tracing::info!("job already has a result; acking the redelivery");
            if let Ok(result) = wire::decode::<JobResult>(&bytes) {
                // Its worker may have died before publishing the terminal event.
                let mut event = JobEvent::new(final_event_type(result.status), job)
                    .with_worker(result.worker_id.as_str())
                    .with_usage(result.usage);
                event.attempt = Some(result.attempts);
                if let Some(digest) = &result.handler_digest {
                    event = event.with_handler_digest(digest.as_str());
                }
                if let (Some(error_type), Some(error)) = (result.error_type, &result.error) {
                    event = event.with_error(error_type, error.clone());
                }
                publish_final_event(shared, &event, result.start_time).await;
            }
            ack(message, AckKind::Ack).await;
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read results; handing the job back");
            ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            true
        }
    }
}

/// Sends progress acks so a long job keeps its message, and publishes the
/// handler's progress reports as PROGRESS events. Runs until dropped.
async fn keep_alive(
    shared: &Shared,
    message: &Message,
    job: &Job,
    mut progress: watch::Receiver<Option<jobbox::JobProgress>>,
    cancel: &CancelFlag,
) {
    let worker_id = shared.config.worker_id.as_str();
    let interval = (shared.config.ack_wait / 3).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                ack(message, AckKind::Progress).await;
                // The cancel broadcast is core NATS and can be missed; the state
                // bucket is the durable record of a cancellation.
                if state::cancel_requested(shared, &job.id).await {
                    cancel.cancel();
                }
            }
            changed = progress.changed() => {
                if changed.is_err() {
                    // The run is over; keep ticking until dropped.
                    std::future::pending::<()>().await;
                }
                let report = progress.borrow_and_update().clone();
                if let Some(report) = report {
                    let event = JobEvent::new(JobEventType::Progress, job)
                        .with_worker(worker_id)
                        .with_progress(report);
                    publish_event(shared, &event).await;
                }
            }
        }
    }
}

fn unreachable_keepalive() -> RunOutcome {
    // keep_alive never returns; this arm only satisfies the type checker.
    RunOutcome::failed(Failure::new(ErrorType::Internal, "keep-alive ended"))
}

/// Ends a job that could not be run at all (bad job, unknown type, missing handler).
async fn finish_without_run(shared: &Shared, message: &Message, job: &Job, failure: Failure) {
    tracing::warn!(%failure, "job cannot run");
    let max_retries = job.max_retries.unwrap_or(jobbox::DEFAULT_MAX_RETRIES);
    let verdict = decide(Err(&failure), job.attempt, max_retries, &job.id);
    let outcome = RunOutcome::failed(failure);
    record(shared, message, job, Utc::now(), None, outcome, verdict).await;
}

/// A message that is not a Job: record a FAILED result under its message id (or its
/// stream sequence), then terminate it so it is never delivered again.
async fn bad_message(
    shared: &Shared,
    queue: &str,
    message: &Message,
    sequence: u64,
    error: String,
) {
    let job_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|id| id.as_str().to_string())
        .filter(|id| jobbox::is_valid_name(id))
        .unwrap_or_else(|| format!("seq-{sequence}"));
    tracing::warn!(%job_id, %error, "message is not a job");
    let mut job = Job::new("unknown", Vec::new()).id(job_id).queue(queue);
    job.attempt = 1;
    let failure = Failure::new(ErrorType::BadJob, format!("message is not a job: {error}"));
    let outcome = RunOutcome::failed(failure);
    let now = Utc::now();
    if write_result(shared, &job, now, None, &outcome, JobStatus::Failed).await {
        emit_final_event(shared, &job, None, &outcome, JobStatus::Failed, now).await;
        ack(message, AckKind::Term).await;
    } else {
        ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
    }
}

/// Records what the verdict says, then acks or naks.
async fn record(
    shared: &Shared,
    message: &Message,
    job: &Job,
    started_at: DateTime<Utc>,
    digest: Option<&str>,
    outcome: RunOutcome,
    verdict: Verdict,
) {
    let counters = &shared.counters;
    let Some(status) = verdict.final_status() else {
        let Verdict::Retry(delay) = verdict else {
            return;
        };
        let failure = outcome.result.as_ref().err();
        let mut event = JobEvent::new(JobEventType::RetryScheduled, job)
            .with_worker(&shared.config.worker_id)
            .with_delay(delay)
            .with_usage(outcome.usage);
        if let Some(failure) = failure {
            event = event.with_error(failure.error_type, failure.message.clone());
        }
        publish_event(shared, &event).await;
        let error = failure.map(|f| f.message.as_str());
        state::record_status(shared, job, JobStatus::Retrying, error, Some(started_at)).await;
        counters
            .retried
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ack(message, AckKind::Nak(Some(delay))).await;
        return;
    };
    if !write_result(shared, job, started_at, digest, &outcome, status).await {
        // NATS is unreachable or refused the write: leave the job for redelivery.
        ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
        return;
    }
    if status == JobStatus::DeadLetter {
        dead_letter(shared, job, &outcome).await;
    }
    let counter = if status == JobStatus::Completed {
        &counters.done
    } else {
        &counters.failed
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let error = outcome.result.as_ref().err().map(|f| f.message.as_str());
    state::record_status(shared, job, status, error, Some(started_at)).await;
    let queue_counter = match status {
        JobStatus::Completed => "completed",
        JobStatus::DeadLetter => "dead_letter",
        JobStatus::Cancelled => "cancelled",
        _ => "failed",
    };
    if let Err(e) = shared.client.count(&job.queue, queue_counter).await {
        tracing::warn!(error = %e, "failed to count the job");
    }
    // The result is durable: the event and the ack can go out together.
    tokio::join!(
        emit_final_event(shared, job, digest, &outcome, status, started_at),
        ack(message, AckKind::Ack)
    );
}

/// Writes the job's one result. Returns whether the job now has a result (written
/// here or by an earlier delivery).
async fn write_result(
    shared: &Shared,
    job: &Job,
    started_at: DateTime<Utc>,
    digest: Option<&str>,
    outcome: &RunOutcome,
    status: JobStatus,
) -> bool {
    let failure = outcome.result.as_ref().err();
    let result = JobResult {
        job_id: job.id.clone(),
        status,
        result: outcome.result.as_ref().ok().cloned(),
        error: failure.map(|f| f.message.clone()),
        error_type: failure.map(|f| f.error_type),
        retryable: failure.is_some_and(|f| f.retryable),
        traceback: failure.and_then(|f| match (&f.trap_code, &f.detail) {
            (Some(code), Some(detail)) => Some(format!("trap code: {code}\n{detail}")),
            (Some(code), None) => Some(format!("trap code: {code}")),
            (None, detail) => detail.clone(),
        }),
        start_time: started_at,
        finish_time: Utc::now(),
        attempts: job.attempt,
        worker_id: shared.config.worker_id.clone(),
        handler_digest: digest.map(str::to_string),
        usage: outcome.usage,
        logs: outcome.logs.clone(),
        logs_dropped: outcome.logs_dropped,
    };
    let bytes = match encode_result(result) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the result");
            return false;
        }
    };
    match shared.client.layout().results.create(&job.id, bytes).await {
        Ok(_) => true,
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
            tracing::info!("job already had a result; keeping the first");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "failed to write the result");
            false
        }
    }
}

/// Encodes a result, trimming logs and traceback if it would not fit in a message.
fn encode_result(mut result: JobResult) -> Result<Bytes, jobbox::WireError> {
    let limit = jobbox::NATS_MAX_PAYLOAD - 16 * 1024;
    let mut bytes = wire::encode(&result)?;
    if bytes.len() > limit {
        result.logs_dropped += result.logs.len() as u64;
        result.logs.clear();
        if let Some(traceback) = &mut result.traceback {
            traceback.truncate(8 * 1024);
        }
        bytes = wire::encode(&result)?;
    }
    Ok(Bytes::from(bytes))
}

async fn dead_letter(shared: &Shared, job: &Job, outcome: &RunOutcome) {
    let failure = outcome.result.as_ref().err();
    let letter = jobbox::DeadLetter {
        job: job.clone(),
        error: failure.map(|f| f.message.clone()),
        error_type: failure.map(|f| f.error_type),
        usage: outcome.usage,
        attempts: job.attempt,
        failed_at: Utc::now(),
        worker_id: Some(shared.config.worker_id.clone()),
    };
    match wire::encode(&letter) {
        Ok(bytes) => {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{}.dlq.{}", job.id, job.attempt).as_str(),
            );
            let published = shared
                .client
                .jetstream()
                .publish_with_headers(
                    jobbox::nats::dlq_subject(&job.queue),
                    headers,
                    Bytes::from(bytes),
                )
                .await;
            match published {
                Ok(ack) => {
                    if let Err(e) = ack.await {
                        tracing::error!(error = %e, "failed to dead-letter the job");
                    }
                }
                Err(e) => tracing::error!(error = %e, "failed to dead-letter the job"),
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot encode the dead letter"),
    }
    let event = JobEvent::new(JobEventType::DeadLettered, job)
        .with_worker(&shared.config.worker_id)
        .with_usage(outcome.usage);
    publish_event(shared, &event).await;
}

async fn emit_final_event(
    shared: &Shared,
    job: &Job,
    digest: Option<&str>,
    outcome: &RunOutcome,
    status: JobStatus,
    started_at: DateTime<Utc>,
) {
    let event_type = final_event_type(status);
    let elapsed = (Utc::now() - started_at).to_std().unwrap_or_default();
    let mut event = JobEvent::new(event_type, job)
        .with_worker(&shared.config.worker_id)
        .with_duration(elapsed)
        .with_usage(outcome.usage);
    if let Some(digest) = digest {
        event = event.with_handler_digest(digest);
    }
    if let Err(failure) = &outcome.result {
        event = event.with_error(failure.error_type, failure.message.clone());
    }
    publish_final_event(shared, &event, started_at).await;
}

/// The terminal event of a job's result: COMPLETED, CANCELLED or FAILED.
fn final_event_type(status: JobStatus) -> JobEventType {
    match status {
        JobStatus::Completed => JobEventType::Completed,
        JobStatus::Cancelled => JobEventType::Cancelled,
        _ => JobEventType::Failed,
    }
}

/// Publishes a terminal event with a message id derived from the result it reports,
/// so the worker that finds the result on a redelivery can publish it again (its
/// first worker may have died between the result and the event) without a duplicate.
async fn publish_final_event(shared: &Shared, event: &JobEvent, started_at: DateTime<Utc>) {
    let id = format!("{}.final.{}", event.job_id, started_at.timestamp_micros());
    let stored = match shared.client.publish_event_with_id(event, &id).await {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = stored {
        tracing::warn!(event = event.event_type.as_str(), error = %e, "failed to record an event");
    }
}

/// Publishes an event and waits for JetStream to store it; failures are logged, not
/// fatal (the result is the record of truth).
async fn publish_event(shared: &Shared, event: &JobEvent) {
    if let Err(e) = shared.client.record_event(event).await {
        tracing::warn!(event = event.event_type.as_str(), error = %e, "failed to record an event");
    }
}

async fn ack(message: &Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "failed to ack");
    }
}
