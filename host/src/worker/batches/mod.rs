//! The batch tracker: every worker runs one, off the per-job path. It detects the end
//! of batches, keeps their records' counts fresh, fires their callbacks once, and
//! stops the running jobs of cancelled batches.
//!
//! - It follows the batches bucket (a watch with history), so it knows every active
//!   batch: its size, its callbacks, whether it is being cancelled ([`BatchBook`],
//!   which the pre-run [`gate`] reads without a round trip).
//! - It follows the terminal job events (COMPLETED, FAILED, DEAD_LETTERED, CANCELLED;
//!   an ordered consumer filtered by subject) and keeps, per batch, which job ended
//!   how ([`tally::Tally`]). Nothing is written per job: every [`FLUSH_INTERVAL`] it
//!   writes the counts of a batch that moved, with a compare-and-set, only if they
//!   are ahead of the stored ones.
//! - When a batch's tally is complete, the counts are derived again from the results
//!   (the record of truth: one read per job), the callbacks are enqueued with ids
//!   derived from the batch (`<batch_id>-on_complete`, ...) so that the jobs stream's
//!   `Nats-Msg-Id` and the results fence make each run once however many trackers
//!   race, the BATCH_COMPLETED / BATCH_FAILED event goes out (deduplicated by id),
//!   and last the record is marked ended with a compare-and-set. A crash anywhere in
//!   between leaves the record active, and the next tracker does it all again.
//! - Events a tracker missed (it started late, its consumer was recreated) are made
//!   up by reading the results of the unseen jobs once a batch has been quiet for
//!   [`RECONCILE_AFTER`].

mod gate;
mod tally;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer;
use async_nats::jetstream::kv::{self, Entry, Operation};
use chrono::Utc;
use futures::StreamExt;
use jobbox::{
    BatchCounts, BatchJob, BatchStatus, CallbackKind, Client, ClientError, Job, JobEvent,
    JobEventType, JobResult, JobStatus, batch_job_id, nats, parse_batch_job_id, wire,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
pub(super) use gate::gate;
use tally::Tally;

/// How often a tracker writes the counts of batches that moved, and looks for ended
/// ones.
///
/// Why: a few writes per second per batch cost nothing next to the jobs, and a batch's
/// end is noticed within a quarter second.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// How long a batch must go without a job ending before a tracker reads the results
/// of its unseen jobs (and how long between two such reads).
///
/// Why: a tracker that follows the events never needs this; one that started late or
/// lost its consumer does, and a few seconds of delay at the end of a batch is fine,
/// while reading results more often would cost one read per unfinished job each time.
pub const RECONCILE_AFTER: Duration = Duration::from_secs(5);

/// Results read at once when counting a batch from its results.
///
/// Why: enough to keep the connection busy (10,000 reads in well under a second on a
/// local server), few enough not to crowd out the workers' own reads and writes.
const RESULT_READS: usize = 128;

/// Pause before following the bucket and events again after an error.
const REOPEN_DELAY: Duration = Duration::from_secs(1);

/// The active batches as last seen in the batches bucket.
#[derive(Debug, Default)]
pub(crate) struct BatchBook {
    batches: Mutex<HashMap<String, BatchJob>>,
}

impl BatchBook {
    /// True if batch `batch_id` is active and being cancelled.
    pub fn cancel_requested(&self, batch_id: &str) -> bool {
        self.lock()
            .get(batch_id)
            .is_some_and(|batch| batch.cancel_requested)
    }

    fn get(&self, batch_id: &str) -> Option<BatchJob> {
        self.lock().get(batch_id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BatchJob>> {
        self.batches.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Tracks batches until `stop`.
pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tallies: HashMap<String, Tally> = HashMap::new();
    while !stop.is_cancelled() {
        if let Err(e) = follow(&shared, &mut tallies, &stop).await {
            tracing::warn!(error = %e, "the batch tracker lost its feeds; following again");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REOPEN_DELAY) => {}
            }
        }
    }
}

/// Follows the batches bucket and the terminal events until an error or `stop`.
async fn follow(
    shared: &Shared,
    tallies: &mut HashMap<String, Tally>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let client = &shared.client;
    let mut watch = client.layout().batches.watch_with_history(">").await?;
    // The terminal events are followed only while a batch is active: with none, a
    // worker reads no job event at all (a fleet of N workers would otherwise have the
    // server deliver every job's end N more times). Ends that go by before the feed
    // opens are made up from the results (see RECONCILE_AFTER).
    let mut events: Option<consumer::pull::Ordered> = None;
    let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if tallies.is_empty() {
            events = None;
        } else if events.is_none() {
            events = Some(open_events(client).await?);
        }
        let next_event = async {
            match events.as_mut() {
                Some(events) => events.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            entry = watch.next() => match entry {
                Some(entry) => apply_entry(shared, tallies, &entry?),
                None => anyhow::bail!("the batches watch ended"),
            },
            message = next_event => match message {
                Some(message) => saw_event(shared, tallies, message?.subject.as_str()),
                None => anyhow::bail!("the events feed ended"),
            },
            _ = ticker.tick() => tick(shared, tallies).await,
        }
    }
}

/// An ordered consumer of the terminal job events from now on.
async fn open_events(client: &Client) -> anyhow::Result<consumer::pull::Ordered> {
    let stream = client.jetstream().get_stream(nats::EVENTS_STREAM).await?;
    let events = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subjects: nats::terminal_event_filters(),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    Ok(events.messages().await?)
}

/// Takes in a change of the batches bucket.
fn apply_entry(shared: &Shared, tallies: &mut HashMap<String, Tally>, entry: &Entry) {
    let batch = match entry.operation {
        Operation::Put => match wire::decode::<BatchJob>(&entry.value) {
            Ok(batch) => Some(batch),
            Err(e) => {
                tracing::warn!(batch_id = %entry.key, error = %e, "a batch record does not decode; ignored");
                None
            }
        },
        Operation::Delete | Operation::Purge => None,
    };
    let mut book = shared.batches.lock();
    match batch {
        Some(batch) if batch.active => {
            let cancelling = batch.cancel_requested;
            tallies
                .entry(batch.batch_id.clone())
                .or_insert_with(|| Tally::new(batch.jobs, Instant::now()));
            book.insert(batch.batch_id.clone(), batch);
            drop(book);
            if cancelling {
                stop_running(shared, &entry.key);
            }
        }
        _ => {
            book.remove(&entry.key);
            tallies.remove(&entry.key);
        }
    }
}

/// Takes in one terminal event (only its subject is read).
fn saw_event(shared: &Shared, tallies: &mut HashMap<String, Tally>, subject: &str) {
    let Some(job_id) = nats::job_id_of_event_subject(subject) else {
        return;
    };
    let Some((batch_id, n)) = parse_batch_job_id(job_id) else {
        return;
    };
    let Some(status) = subject.rsplit('.').next().and_then(status_of_token) else {
        return;
    };
    // A batch not (yet) in the book: its record comes through the watch; what is
    // missed here is made up from the results (see RECONCILE_AFTER).
    if let Some(tally) = tallies.get_mut(batch_id) {
        tally.saw(n, status, Instant::now());
    } else if let Some(batch) = shared.batches.get(batch_id) {
        let mut tally = Tally::new(batch.jobs, Instant::now());
        tally.saw(n, status, Instant::now());
        tallies.insert(batch_id.to_string(), tally);
    }
}

fn status_of_token(token: &str) -> Option<JobStatus> {
    match JobEventType::from_token(token)? {
        JobEventType::Completed => Some(JobStatus::Completed),
        JobEventType::Failed => Some(JobStatus::Failed),
        JobEventType::DeadLettered => Some(JobStatus::DeadLetter),
        JobEventType::Cancelled => Some(JobStatus::Cancelled),
        _ => None,
    }
}

/// Stops the jobs of batch `batch_id` whose handlers run here.
fn stop_running(shared: &Shared, batch_id: &str) {
    for job_id in shared.running.ids() {
        if parse_batch_job_id(&job_id).is_some_and(|(batch, _)| batch == batch_id)
            && shared.running.cancel(&job_id)
        {
            tracing::info!(%job_id, batch_id, "cancelling a running job of a cancelled batch");
        }
    }
}

/// Every [`FLUSH_INTERVAL`]: ends batches whose jobs all ended, reads the results of
/// quiet ones, writes the counts of the others that moved.
async fn tick(shared: &Shared, tallies: &mut HashMap<String, Tally>) {
    let now = Instant::now();
    let ids: Vec<String> = tallies.keys().cloned().collect();
    for batch_id in ids {
        let Some(batch) = shared.batches.get(&batch_id) else {
            tallies.remove(&batch_id);
            continue;
        };
        let Some(tally) = tallies.get_mut(&batch_id) else {
            continue;
        };
        if batch.enqueue_abandoned(Utc::now()) {
            if let Err(e) = abandon(&shared.client, &batch_id).await {
                tracing::warn!(%batch_id, error = %e, "failed to give up on a batch's enqueue; trying again");
            }
            continue;
        }
        if batch.cancel_requested {
            stop_running(shared, &batch_id);
        }
        let quiet = now.duration_since(tally.last_change) >= RECONCILE_AFTER
            && tally
                .last_reconcile
                .is_none_or(|at| now.duration_since(at) >= RECONCILE_AFTER);
        if batch.status == BatchStatus::Running && (quiet || tally.complete()) {
            if !tally.complete() {
                reconcile(&shared.client, &batch, tally).await;
            }
            let recently_checked = tally
                .last_reconcile
                .is_some_and(|at| now.duration_since(at) < RECONCILE_AFTER);
            if tally.complete() && (!recently_checked || quiet) {
                tally.last_reconcile = Some(Instant::now());
                match finish(&shared.client, &batch).await {
                    Ok(true) => {
                        tallies.remove(&batch_id);
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(%batch_id, error = %e, "failed to end a batch; trying again");
                    }
                }
            }
        }
        if let Some(tally) = tallies.get_mut(&batch_id)
            && tally.dirty
        {
            tally.dirty = false;
            let counts = tally.counts();
            if counts.ended() > batch.counts.ended()
                && let Err(e) = flush_counts(&shared.client, &batch_id, counts).await
            {
                tracing::debug!(%batch_id, error = %e, "failed to write a batch's counts");
                tally.dirty = true;
            }
        }
    }
}

/// Reads the results of the jobs `tally` has not seen ending. For an abandoned batch
/// (quiet by now: its stored jobs were stopped or ran), records the jobs still
/// without a result CANCELLED, so that the batch ends.
async fn reconcile(client: &Client, batch: &BatchJob, tally: &mut Tally) {
    tally.last_reconcile = Some(Instant::now());
    let unseen = tally.unseen();
    let found = read_results(client, &batch.batch_id, unseen).await;
    let now = Instant::now();
    let mut missing = Vec::new();
    for (n, status) in found {
        match status {
            Some(status) => {
                tally.saw(n, status, now);
            }
            None => missing.push(n),
        }
    }
    if batch.abandoned {
        for (n, status) in cancel_unstored(client, &batch.batch_id, missing).await {
            tally.saw(n, status, Instant::now());
        }
    }
}

/// Gives up on the enqueue of batch `batch_id` (ENQUEUING, untouched for longer than
/// `ENQUEUE_ABANDONED_AFTER`): marks it abandoned and cancelled, so that its stored
/// jobs stop or never start, and the others are recorded CANCELLED once it is quiet.
/// A compare-and-set: the enqueuer touching the record first keeps it going.
async fn abandon(client: &Client, batch_id: &str) -> Result<(), ClientError> {
    let stored = client
        .update_batch(batch_id, |batch| {
            if !batch.enqueue_abandoned(Utc::now()) {
                return false;
            }
            batch.abandoned = true;
            batch.cancel_requested = true;
            batch.status = BatchStatus::Running;
            true
        })
        .await?;
    if stored.abandoned {
        tracing::warn!(%batch_id, "a batch's enqueue stopped short long ago; its missing jobs are cancelled");
    }
    Ok(())
}

/// Records the jobs `indices` of an abandoned batch CANCELLED where they have no
/// result (a job stored after all is then acked without running when it comes);
/// returns each job's final status (`None` left out: could not be written or read).
async fn cancel_unstored(
    client: &Client,
    batch_id: &str,
    indices: Vec<u64>,
) -> Vec<(u64, JobStatus)> {
    let message = "the job's batch was abandoned before the job was enqueued";
    futures::stream::iter(indices)
        .map(|n| async move {
            let id = batch_job_id(batch_id, n);
            let now = Utc::now();
            let result = JobResult::cancelled(id.as_str(), message).with_times(now, now);
            let written = match wire::encode(&result) {
                Ok(bytes) => client.layout().results.create(&id, bytes.into()).await,
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "cannot encode a result");
                    return None;
                }
            };
            match written {
                Ok(_) => Some((n, JobStatus::Cancelled)),
                // Its job ended meanwhile: that result stands.
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match client.result(&id).await {
                        Ok(Some(result)) => Some((n, result.status)),
                        _ => None,
                    }
                }
                Err(e) => {
                    tracing::debug!(job_id = %id, error = %e, "cannot record a job of an abandoned batch");
                    None
                }
            }
        })
        .buffer_unordered(RESULT_READS)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// The final status of each job in `indices` that has a result (`None`: no result,
/// or it could not be read).
async fn read_results(
    client: &Client,
    batch_id: &str,
    indices: Vec<u64>,
) -> Vec<(u64, Option<JobStatus>)> {
    futures::stream::iter(indices)
        .map(|n| async move {
            let id = batch_job_id(batch_id, n);
            match client.result(&id).await {
                Ok(result) => (n, result.map(|r| r.status)),
                Err(e) => {
                    tracing::debug!(job_id = %id, error = %e, "cannot read a result");
                    (n, None)
                }
            }
        })
        .buffer_unordered(RESULT_READS)
        .collect()
        .await
}

/// Writes `counts` into the record if they are ahead of what it holds.
async fn flush_counts(
    client: &Client,
    batch_id: &str,
    counts: BatchCounts,
) -> Result<(), ClientError> {
    client
        .update_batch(batch_id, |batch| {
            if !batch.active || counts.ended() <= batch.counts.ended() {
                return false;
            }
            batch.counts = counts;
            true
        })
        .await
        .map(|_| ())
}

/// Ends `batch` if every job has a result: counts from the results, callbacks,
/// final event, then the record. Returns whether the batch is ended now.
async fn finish(client: &Client, batch: &BatchJob) -> Result<bool, ClientError> {
    let all = read_results(client, &batch.batch_id, (0..batch.jobs).collect()).await;
    let mut counts = BatchCounts::default();
    for (_, status) in all {
        match status {
            Some(status) if status.is_terminal() => counts.add(status),
            // Not ended after all (or unreadable): wait for the next look.
            _ => return Ok(false),
        }
    }
    let mut ended = batch.clone();
    ended.counts = counts;
    ended.status = batch.final_status(&counts);
    ended.active = false;
    ended.updated_at = Utc::now();
    let summary = ended.summary();
    for kind in batch.callbacks_due(&counts) {
        enqueue_callback(client, batch, kind, &summary).await?;
    }
    let event_type = if ended.status == BatchStatus::Completed {
        JobEventType::BatchCompleted
    } else {
        JobEventType::BatchFailed
    };
    let subject_job = Job::new("batch", Vec::new())
        .id(batch.batch_id.as_str())
        .queue(nats::BATCH_EVENTS_TOKEN);
    let mut event = JobEvent::new(event_type, &subject_job)
        .with_message(format!(
            "batch {} ended {}: {} of {} completed",
            batch.batch_id,
            ended.status.as_str(),
            counts.completed,
            batch.jobs
        ))
        .with_detail("summary", summary.to_string());
    event.attempt = None;
    client
        .publish_event_with_id(&event, &format!("{}.batch_end", batch.batch_id))
        .await?
        .await
        .map_err(|e| ClientError::nats(format!("record the end of batch {}", batch.batch_id), e))?;
    client
        .update_batch(&batch.batch_id, |stored| {
            if !stored.active {
                return false;
            }
            stored.counts = counts;
            stored.status = ended.status;
            stored.active = false;
            true
        })
        .await?;
    tracing::info!(batch_id = %batch.batch_id, status = ended.status.as_str(), "batch ended");
    Ok(true)
}

/// Enqueues the callback `kind` of `batch` with the summary as its payload, unless it
/// already has a result (it ran, and the dedupe window may be over).
async fn enqueue_callback(
    client: &Client,
    batch: &BatchJob,
    kind: CallbackKind,
    summary: &serde_json::Value,
) -> Result<(), ClientError> {
    let Some(template) = batch.callback(kind) else {
        return Ok(());
    };
    if client.result(&template.id).await?.is_some() {
        return Ok(());
    }
    let mut job = template.clone();
    job.payload = summary.to_string().into_bytes();
    job.content_type = jobbox::CONTENT_TYPE_JSON.to_string();
    job.created_at = Utc::now();
    let enqueued = client.enqueue(&job).await?;
    tracing::info!(
        batch_id = %batch.batch_id,
        job_id = %job.id,
        callback = kind.as_str(),
        duplicate = enqueued.duplicate,
        "batch callback enqueued"
    );
    Ok(())
}
