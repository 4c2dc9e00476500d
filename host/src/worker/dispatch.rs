//! Processing one fetched message: decode, admit, run, record, ack.
//!
//! Order matters: the result is written (with KV `create`, the fence against a second
//! result) before the message is acked, so a crash in between is harmless: the
//! redelivered job finds its result and is acked without running again. Every job's
//! result is looked up before it runs, whatever its delivery count says.

use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use chrono::Utc;
use jobbox::{ErrorType, InvalidTraceContext, Job, JobEvent, JobEventType, JobResult, wire};
use tokio::sync::watch;

use super::Shared;
use super::admit::{Admission, admit, attempt_of};
use super::inbox::Fetched;
use super::native::NATIVE_DIGEST;
use super::record::{self, Attempt};
use super::running::HeldGuard;
use super::verdict::{Verdict, decide};
use crate::otel::Outcome;
use crate::sandbox::{CancelFlag, Failure, JobControl, RunOutcome};

/// First pause before reading a job's result again after a failed read; it doubles
/// up to [`MAX_READ_BACKOFF`].
const READ_BACKOFF: Duration = Duration::from_millis(100);
const MAX_READ_BACKOFF: Duration = Duration::from_secs(5);

/// Processes one message to the end. Never panics; every path acks, naks, terms or
/// leaves the message for redelivery on purpose.
#[tracing::instrument(skip_all, fields(otel.kind = "consumer", queue = %fetched.queue, lane = fetched.lane.token(), job_id, job_type, attempt))]
pub(super) async fn process(shared: &Shared, fetched: Fetched) {
    let span = tracing::Span::current();
    let Fetched {
        message,
        queue,
        ack_wait,
        ..
    } = fetched;
    let (delivered, sequence, published) = match message.info() {
        Ok(info) => (
            info.delivered,
            info.stream_sequence,
            info.published.unix_timestamp_nanos(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "message without JetStream metadata; dropping");
            return;
        }
    };
    let mut job = match wire::decode::<Job>(&message.payload) {
        Ok(job) => job,
        Err(e) => {
            let id = header_id(&message).unwrap_or_else(|| format!("seq-{sequence}"));
            let job = stand_in(&id, "unknown", &queue, attempt_of(1, delivered));
            let failure = Failure::new(ErrorType::BadJob, format!("message is not a job: {e}"));
            record::end_unrun(shared, &message, &job, ack_wait, failure, Verdict::Fail).await;
            return;
        }
    };
    if let Err(invalid) = job.validate() {
        // Nothing of an invalid job becomes a subject or key: it is recorded under its
        // id only if that id is valid, else under its stream sequence.
        let id = if jobbox::is_valid_name(&job.id) {
            job.id.clone()
        } else {
            format!("seq-{sequence}")
        };
        let job_type = if jobbox::is_valid_name(&job.job_type) {
            job.job_type.as_str()
        } else {
            "unknown"
        };
        let job = stand_in(&id, job_type, &queue, attempt_of(1, delivered));
        span.record("job_id", job.id.as_str());
        let failure = Failure::new(ErrorType::BadJob, invalid.to_string());
        record::end_unrun(shared, &message, &job, ack_wait, failure, Verdict::Fail).await;
        return;
    }
    // The queue is the one the job was fetched from, whatever the job says.
    job.queue = queue.to_string();
    job.attempt = attempt_of(job.attempt, delivered);
    span.record("job_id", job.id.as_str());
    span.record("job_type", job.job_type.as_str());
    span.record("attempt", job.attempt);

    // Held here already (its message redelivered while this worker still runs or
    // records it): leave this delivery unacked. The holder's ack ends the message;
    // were the holder to fail, the delivery comes back after ack_wait.
    let Some(held) = shared.running.try_hold(&job.id) else {
        tracing::debug!("job held by this worker already; delivery left for redelivery");
        return;
    };
    let Some(existing) = read_result(shared, &message, &job.id, ack_wait).await else {
        ack(&message, AckKind::Nak(None)).await;
        return;
    };
    // The trace: the enqueuer's when its `traceparent` is valid (a refused one is
    // counted and noted on STARTED); with export on, this attempt's span, whose new
    // root trace the job joins when there is no valid parent.
    let incoming = jobbox::TraceContext::from_headers(message.headers.as_ref());
    if let Some(refused) = incoming.refused
        && let Some(metrics) = &shared.metrics
    {
        metrics.trace_context_refused(refused);
    }
    let job_span = shared
        .tracer
        .as_ref()
        .map(|tracer| tracer.start(&job, incoming.context.as_ref()));
    job.trace = match &job_span {
        Some(span) if incoming.context.is_none() => span.context(),
        _ => incoming.context,
    };
    let outcome = admit_and_run(
        shared,
        &message,
        &held,
        &job,
        existing,
        (sequence, published),
        ack_wait,
        incoming.refused,
    )
    .await;
    if let Some(span) = job_span {
        span.end(&outcome);
    }
}

/// Admits a job that may run (see `admit`), runs it and records it. Returns how the
/// attempt ended.
#[allow(clippy::too_many_arguments)]
async fn admit_and_run(
    shared: &Shared,
    message: &Message,
    held: &HeldGuard,
    job: &Job,
    existing: Option<bytes::Bytes>,
    (sequence, published): (u64, i128),
    ack_wait: Duration,
    trace_refused: Option<InvalidTraceContext>,
) -> Outcome {
    let cancel_requested = existing.is_none() && shared.cancelled.contains(&job.id);
    match admit(
        job,
        job.attempt,
        existing.is_some(),
        cancel_requested,
        Utc::now(),
    ) {
        Admission::Run => {}
        Admission::AlreadyFinished => {
            let result = existing.and_then(|bytes| wire::decode::<JobResult>(&bytes).ok());
            record::already_finished(shared, message, job, result, published, ack_wait).await;
            return Outcome::default();
        }
        Admission::NotYetDue(wait) => {
            record::hand_back_until_due(shared, message, job, sequence, wait).await;
            return Outcome {
                status: Some(jobbox::JobStatus::Scheduled),
                ..Outcome::default()
            };
        }
        Admission::End(failure) => {
            let verdict = decide(Err(&failure), job.attempt, 0, &job.id);
            return record::end_unrun(shared, message, job, ack_wait, failure, verdict).await;
        }
        Admission::Poison(failure) => {
            tracing::warn!(%failure, "poison message");
            return record::end_unrun(shared, message, job, ack_wait, failure, Verdict::DeadLetter)
                .await;
        }
    }
    if super::batches::gate(shared, message, job, sequence, ack_wait).await {
        return Outcome::default();
    }
    run(
        shared,
        message,
        held,
        job,
        ack_wait,
        sequence,
        trace_refused,
    )
    .await
}

/// The job's result, if it has one. A failed read (NATS away, the server restarting)
/// is tried again with a growing backoff while the message is kept alive: handing
/// the message back would count a delivery that was not a run. `None` only when the
/// worker stops meanwhile.
async fn read_result(
    shared: &Shared,
    message: &Message,
    key: &str,
    ack_wait: Duration,
) -> Option<Option<bytes::Bytes>> {
    let mut pause = READ_BACKOFF;
    let mut since_extended = Duration::ZERO;
    let mut warned = false;
    loop {
        match shared.result_checks.get(key).await {
            Ok(existing) => return Some(existing),
            Err(e) if !warned => {
                tracing::warn!(error = %e, "cannot read results; trying again with a growing backoff");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = shared.abort.cancelled() => return None,
            () = tokio::time::sleep(pause) => {}
        }
        since_extended += pause;
        if since_extended >= keep_alive_interval(ack_wait) {
            ack(message, AckKind::Progress).await;
            since_extended = Duration::ZERO;
        }
        pause = (pause * 2)
            .min(MAX_READ_BACKOFF)
            .min(keep_alive_interval(ack_wait));
    }
}

/// Resolves the handler, runs the job and records what happened.
async fn run(
    shared: &Shared,
    message: &Message,
    held: &HeldGuard,
    job: &Job,
    ack_wait: Duration,
    sequence: u64,
    trace_refused: Option<InvalidTraceContext>,
) -> Outcome {
    let native = shared.config.native.get(&job.job_type).cloned();
    let (handler, limits, digest) = if native.is_some() {
        let limits = job.effective_limits(&jobbox::HandlerLimits::default());
        (None, limits, NATIVE_DIGEST.to_string())
    } else {
        // Loading a new handler version can take a while (fetch + compile): keep the
        // message meanwhile, or it would be redelivered and run twice.
        let resolve = shared.routes.resolve(&job.job_type, job.handler.as_deref());
        let active = match with_progress_acks(message, ack_wait, resolve).await {
            Ok(active) => active,
            Err(failure) => {
                let max_retries = job.max_retries.unwrap_or(jobbox::DEFAULT_MAX_RETRIES);
                let verdict = decide(Err(&failure), job.attempt, max_retries, &job.id);
                return record::end_unrun(shared, message, job, ack_wait, failure, verdict).await;
            }
        };
        let mut limits = job.effective_limits(&active.route.limits);
        limits.memory_bytes = limits.memory_bytes.min(shared.config.max_memory_bytes);
        let digest = active.route.digest.clone();
        (Some(active), limits, digest)
    };

    let started_at = Utc::now();
    let metrics = shared.metrics_for(&job.job_type);
    if let Some((metrics, job_type)) = &metrics {
        let enqueued = job
            .scheduled_at
            .unwrap_or(job.created_at)
            .max(job.created_at);
        let wait = (started_at - enqueued).to_std().unwrap_or_default();
        metrics.queue_wait(&job.queue, job_type, wait);
    }
    let mut started = JobEvent::new(JobEventType::Started, job)
        .with_worker(&shared.config.worker_id)
        .with_handler_digest(&digest)
        .with_nats(message.subject.to_string(), sequence);
    if let Some(refused) = trace_refused {
        started = started.with_detail("trace_context_refused", refused.as_str());
    }
    shared.events.publish(&started, None).await;

    let (progress_tx, mut progress_rx) = watch::channel(None);
    let control = JobControl {
        cancel: CancelFlag::default(),
        progress: progress_tx,
    };
    held.set_cancel(Some(control.cancel.clone()));
    // A cancellation stored between admission and now was not seen by the watch
    // as a running job's: look once more.
    if shared.cancelled.contains(&job.id) {
        control.cancel.cancel();
    }
    let outcome = {
        let work = async {
            match (&handler, &native) {
                (_, Some(native)) => run_native(native.as_ref(), job),
                (Some(active), None) => {
                    shared
                        .sandbox
                        .run(&active.handler, job, limits, control.clone())
                        .await
                }
                (None, None) => {
                    RunOutcome::failed(Failure::new(ErrorType::Internal, "no handler resolved"))
                }
            }
        };
        let keepalive = keep_alive(shared, message, job, ack_wait, &mut progress_rx);
        let _running = metrics.as_ref().map(|(metrics, _)| metrics.running());
        tokio::pin!(work);
        tokio::select! {
            outcome = &mut work => outcome,
            () = keepalive => unreachable_keepalive(),
            () = shared.abort.cancelled() => {
                control.cancel.cancel();
                let _ = work.await;
                tracing::warn!("worker stopping: job handed back for redelivery");
                ack(message, AckKind::Nak(None)).await;
                return Outcome {
                    started_at: Some(started_at),
                    ..Outcome::default()
                };
            }
        }
    };
    held.set_cancel(None);
    // The last report may have come after the keep-alive's last look.
    let last_report = if progress_rx.has_changed().unwrap_or(true) {
        progress_rx.borrow_and_update().clone()
    } else {
        None
    };
    if let Some(report) = last_report {
        let event = JobEvent::new(JobEventType::Progress, job)
            .with_worker(&shared.config.worker_id)
            .with_progress(report);
        shared.events.publish(&event, None).await;
    }

    let verdict = decide(
        outcome.result.as_ref().map(|_| ()),
        job.attempt,
        limits.max_retries,
        &job.id,
    );
    let attempt = Attempt {
        job,
        started_at,
        digest: Some(&digest),
        ack_wait,
    };
    record::record(shared, message, &attempt, outcome, verdict).await
}

fn run_native(handler: &super::native::NativeFn, job: &Job) -> RunOutcome {
    let start = std::time::Instant::now();
    let result = handler(job);
    let mut outcome = RunOutcome::failed(Failure::new(ErrorType::Internal, ""));
    outcome.usage.wall_time_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    outcome.usage.output_bytes = result.as_ref().map_or(0, |out| out.len() as u64);
    outcome.result = result;
    outcome
}

/// Runs `work` while sending progress acks for `message` every third of `ack_wait`.
async fn with_progress_acks<T>(
    message: &Message,
    ack_wait: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    let interval = keep_alive_interval(ack_wait);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticker.tick() => ack(message, AckKind::Progress).await,
        }
    }
}

/// How often a held message is extended: a third of its consumer's `ack_wait`.
pub(super) fn keep_alive_interval(ack_wait: Duration) -> Duration {
    (ack_wait / 3).max(Duration::from_millis(100))
}

/// Sends progress acks so a long job keeps its message, and publishes the
/// handler's progress reports as PROGRESS events. Runs until dropped.
async fn keep_alive(
    shared: &Shared,
    message: &Message,
    job: &Job,
    ack_wait: Duration,
    progress: &mut watch::Receiver<Option<jobbox::JobProgress>>,
) {
    let worker_id = shared.config.worker_id.as_str();
    let interval = keep_alive_interval(ack_wait);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => ack(message, AckKind::Progress).await,
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
                    shared.events.publish(&event, None).await;
                }
            }
        }
    }
}

fn unreachable_keepalive() -> RunOutcome {
    // keep_alive never returns; this arm only satisfies the type checker.
    RunOutcome::failed(Failure::new(ErrorType::Internal, "keep-alive ended"))
}

/// The message's `Nats-Msg-Id`, if it is usable as a job id.
fn header_id(message: &Message) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|id| id.as_str().to_string())
        .filter(|id| jobbox::is_valid_name(id))
}

/// A job made only of safe parts, to record the end of one that is not a valid job.
pub(super) fn stand_in(id: &str, job_type: &str, queue: &str, attempt: u32) -> Job {
    let mut job = Job::new(job_type, Vec::new()).id(id).queue(queue);
    job.attempt = attempt;
    job
}

pub(super) async fn ack(message: &Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "failed to ack");
    }
}
