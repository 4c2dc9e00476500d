//! Batches on the client side: enqueue (idempotent and resumable), read, list, wait
//! and cancel. Workers detect a batch's end and fire its callbacks
//! (`host/src/worker/batches/`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;

use crate::atomic::{self, AtomicOutcome, MAX_ATOMIC_JOBS};
use crate::error::{ClientError, NatsContext};
use crate::model::batch::{
    ENQUEUE_ABANDONED_AFTER, ENQUEUE_LEASE_REFRESH, MAX_BATCH_ID_LEN, MAX_BATCH_JOBS, batch_job_id,
    callback_job_id, is_valid_batch_id,
};
use crate::model::{BatchJob, BatchStatus, CallbackKind, Job, MAX_FIELD_LEN};
use crate::{Client, wire};

/// Tries of a compare-and-set on a batch record before giving up.
///
/// Why: a conflict means another writer (a worker refreshing the counts, which does so
/// a few times a second) got in between; a handful of tries always gets through.
const CAS_TRIES: usize = 16;

/// What to enqueue as a batch: its jobs, and the callbacks to enqueue when it ends.
#[derive(Debug, Clone)]
#[must_use]
pub struct BatchSpec {
    batch_id: String,
    name: String,
    jobs: Vec<Job>,
    on_success: Option<Job>,
    on_failure: Option<Job>,
    on_complete: Option<Job>,
}

impl BatchSpec {
    /// A batch named `name` of `jobs`, with a fresh id.
    pub fn new(name: impl Into<String>, jobs: Vec<Job>) -> Self {
        Self {
            batch_id: crate::new_id(),
            name: name.into(),
            jobs,
            on_success: None,
            on_failure: None,
            on_complete: None,
        }
    }

    /// Uses `batch_id` instead of a fresh id: enqueueing the same spec again with the
    /// same id completes a batch whose first enqueue was cut short, and adds nothing
    /// to one that was complete.
    pub fn id(mut self, batch_id: impl Into<String>) -> Self {
        self.batch_id = batch_id.into();
        self
    }

    /// The batch id.
    pub fn batch_id(&self) -> &str {
        &self.batch_id
    }

    /// Enqueues `job` (its payload replaced by the batch summary) when every job of
    /// the batch COMPLETED.
    pub fn on_success(mut self, job: Job) -> Self {
        self.on_success = Some(job);
        self
    }

    /// Enqueues `job` when some job of the batch FAILED or was dead-lettered.
    pub fn on_failure(mut self, job: Job) -> Self {
        self.on_failure = Some(job);
        self
    }

    /// Enqueues `job` when the batch ended, however it ended (also when cancelled).
    pub fn on_complete(mut self, job: Job) -> Self {
        self.on_complete = Some(job);
        self
    }
}

/// What [`Client::submit_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEnqueued {
    /// The batch id.
    pub batch_id: String,
    /// The job ids, in the order of the spec's jobs (`<batch_id>-<n>`).
    pub job_ids: Vec<String>,
    /// Jobs this call added (the others were already enqueued by an earlier try).
    pub added: usize,
}

impl Client {
    /// Enqueues `jobs` as one batch named `name` with a fresh batch id. See
    /// [`Client::submit_batch`].
    pub async fn enqueue_batch(
        &self,
        name: &str,
        jobs: Vec<Job>,
    ) -> Result<BatchEnqueued, ClientError> {
        self.submit_batch(BatchSpec::new(name, jobs)).await
    }

    /// Enqueues a batch: checks everything first (names, sizes, dependencies: an
    /// unknown id or a cycle refuses the whole batch), stores the batch record, then
    /// publishes the jobs, pipelined, with ids `<batch_id>-<n>`.
    ///
    /// Job `n`'s `depends_on` may name the original id of another job of the spec;
    /// it is rewritten to that job's batch id. Retried with the same batch id after an
    /// error, it publishes what is missing (each job's `Nats-Msg-Id` is its id) and
    /// ends with the batch exactly complete.
    pub async fn submit_batch(&self, spec: BatchSpec) -> Result<BatchEnqueued, ClientError> {
        let (record, jobs) = prepare(spec)?;
        self.check_dependencies(&jobs).await?;
        let existing = self.create_batch_record(&record).await?;
        let resuming = existing
            .as_ref()
            .is_some_and(|b| b.status == BatchStatus::Enqueuing);
        if resuming {
            self.renew_enqueue(&record.batch_id).await?;
        }
        let added = self.publish_batch_jobs(&record.batch_id, &jobs).await?;
        if existing.is_none() || resuming {
            let stored = self
                .update_batch(&record.batch_id, |batch| {
                    if batch.status == BatchStatus::Enqueuing && !batch.abandoned {
                        batch.status = BatchStatus::Running;
                        true
                    } else {
                        false
                    }
                })
                .await?;
            if stored.abandoned {
                return Err(abandoned(&record.batch_id));
            }
        }
        Ok(BatchEnqueued {
            batch_id: record.batch_id,
            job_ids: jobs.into_iter().map(|job| job.id).collect(),
            added,
        })
    }

    /// Publishes a batch's jobs and their enqueue events, [`MAX_ATOMIC_JOBS`] at a
    /// time as one atomic publish each. A chunk the server refuses as a whole (some of
    /// its jobs were stored by an earlier try, or the stream takes no atomic batches)
    /// goes again one job at a time, where duplicates are dropped by id. Returns how
    /// many jobs this call added.
    async fn publish_batch_jobs(&self, batch_id: &str, jobs: &[Job]) -> Result<usize, ClientError> {
        let mut atomic = true;
        let mut added = 0;
        let mut renewed = tokio::time::Instant::now();
        for chunk in jobs.chunks(MAX_ATOMIC_JOBS) {
            if renewed.elapsed() >= ENQUEUE_LEASE_REFRESH {
                self.renew_enqueue(batch_id).await?;
                renewed = tokio::time::Instant::now();
            }
            if atomic {
                let mut events = Vec::with_capacity(chunk.len());
                for job in chunk {
                    for (event, id) in crate::jobs::enqueue_events(job) {
                        events.push((job, self.publish_event_with_id(&event, &id).await?));
                    }
                }
                let outcome = atomic::publish_jobs(self, chunk).await?;
                for (job, ack) in events {
                    ack.await
                        .during(|| format!("record the enqueue of job {}", job.id))?;
                }
                match outcome {
                    AtomicOutcome::Stored => {
                        added += chunk.len();
                        continue;
                    }
                    AtomicOutcome::Refused(reason) => {
                        return Err(ClientError::nats(
                            format!(
                                "store jobs {} to {} as one batch (none of them was stored)",
                                chunk[0].id,
                                chunk[chunk.len() - 1].id
                            ),
                            std::io::Error::other(reason),
                        ));
                    }
                    AtomicOutcome::OneByOne { disabled, reason } => {
                        atomic = !disabled;
                        tracing::debug!(
                            first_job = %chunk[0].id,
                            jobs = chunk.len(),
                            %reason,
                            "an atomic publish was refused; publishing one by one"
                        );
                    }
                }
            }
            for outcome in self.enqueue_many(chunk).await? {
                if !outcome?.duplicate {
                    added += 1;
                }
            }
        }
        Ok(added)
    }

    /// Touches the record of a batch being enqueued, so that no worker takes it for
    /// abandoned; an error if one already did.
    async fn renew_enqueue(&self, batch_id: &str) -> Result<(), ClientError> {
        let stored = self
            .update_batch(batch_id, |batch| {
                batch.status == BatchStatus::Enqueuing && !batch.abandoned
            })
            .await?;
        if stored.abandoned {
            return Err(abandoned(batch_id));
        }
        Ok(())
    }

    /// Stores `record` unless a batch with its id exists; an existing batch of the
    /// same name and size is the same batch enqueued again (returned), any other is a
    /// conflict.
    async fn create_batch_record(
        &self,
        record: &BatchJob,
    ) -> Result<Option<BatchJob>, ClientError> {
        let bytes = Bytes::from(wire::encode(record)?);
        match self.layout().batches.create(&record.batch_id, bytes).await {
            Ok(_) => Ok(None),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let existing = self.batch(&record.batch_id).await?.ok_or_else(|| {
                    ClientError::Conflict(format!("batch {} vanished", record.batch_id))
                })?;
                if existing.abandoned {
                    return Err(abandoned(&record.batch_id));
                }
                if existing.jobs != record.jobs || existing.batch_name != record.batch_name {
                    return Err(ClientError::Conflict(format!(
                        "batch {} exists with {} jobs named {:?}",
                        record.batch_id, existing.jobs, existing.batch_name
                    )));
                }
                Ok(Some(existing))
            }
            Err(e) => Err(ClientError::nats(
                format!("store batch {}", record.batch_id),
                e,
            )),
        }
    }

    /// Refuses jobs whose dependencies outside `jobs` are unknown (no result and no
    /// event). Dependencies inside `jobs` were checked by [`prepare`].
    pub(crate) async fn check_dependencies(&self, jobs: &[Job]) -> Result<(), ClientError> {
        let inside: HashSet<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
        let outside: BTreeSet<&str> = jobs
            .iter()
            .flat_map(|job| job.depends_on.iter().map(String::as_str))
            .filter(|id| !inside.contains(id))
            .collect();
        for id in outside {
            if self.result(id).await?.is_some() {
                continue;
            }
            if self.job_events(id).await?.is_empty() {
                return Err(ClientError::InvalidBatch(format!(
                    "dependency {id} is not a known job"
                )));
            }
        }
        Ok(())
    }

    /// The batch record, if the batch exists.
    pub async fn batch(&self, batch_id: &str) -> Result<Option<BatchJob>, ClientError> {
        Ok(self.batch_entry(batch_id).await?.map(|(batch, _)| batch))
    }

    async fn batch_entry(&self, batch_id: &str) -> Result<Option<(BatchJob, u64)>, ClientError> {
        if !is_valid_batch_id(batch_id) {
            return Err(ClientError::NotFound(format!(
                "batch {batch_id:?} (not a valid id)"
            )));
        }
        let entry = self
            .layout()
            .batches
            .entry(batch_id)
            .await
            .during(|| format!("read batch {batch_id}"))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                Ok(Some((wire::decode(&entry.value)?, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Every batch record, oldest first.
    pub async fn batches(&self) -> Result<Vec<BatchJob>, ClientError> {
        let keys = crate::layout::keys(&self.layout().batches, "batches").await?;
        let mut batches = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(batch) = self.batch(&key).await? {
                batches.push(batch);
            }
        }
        batches.sort_by_key(|a| a.created_at);
        Ok(batches)
    }

    /// Changes the batch record with compare-and-set: `change` edits the record read
    /// and says whether to write it. Returns the record as stored at the end.
    pub async fn update_batch(
        &self,
        batch_id: &str,
        mut change: impl FnMut(&mut BatchJob) -> bool,
    ) -> Result<BatchJob, ClientError> {
        for _ in 0..CAS_TRIES {
            let (mut batch, revision) = self
                .batch_entry(batch_id)
                .await?
                .ok_or_else(|| ClientError::NotFound(format!("batch {batch_id}")))?;
            if !change(&mut batch) {
                return Ok(batch);
            }
            batch.updated_at = Utc::now();
            let bytes = Bytes::from(wire::encode(&batch)?);
            match self
                .layout()
                .batches
                .update(batch_id, bytes, revision)
                .await
            {
                Ok(_) => return Ok(batch),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(ClientError::nats(format!("update batch {batch_id}"), e)),
            }
        }
        Err(ClientError::Conflict(format!(
            "batch {batch_id} kept changing; try again"
        )))
    }

    /// Cancels a batch: its jobs that have not started never run (workers record
    /// them CANCELLED), running ones are stopped as `jobbox cancel` stops them, and
    /// `on_complete` still fires once. A batch that ended is left as it is.
    pub async fn cancel_batch(&self, batch_id: &str) -> Result<BatchJob, ClientError> {
        self.update_batch(batch_id, |batch| {
            if !batch.active || batch.cancel_requested {
                return false;
            }
            batch.cancel_requested = true;
            true
        })
        .await
    }

    /// Waits up to `timeout` for the batch to end; returns its final record.
    pub async fn wait_batch(
        &self,
        batch_id: &str,
        timeout: Duration,
    ) -> Result<BatchJob, ClientError> {
        // Watch first, then read: an end written in between is seen by one of them.
        let mut watch = self
            .layout()
            .batches
            .watch(batch_id)
            .await
            .during(|| format!("watch batch {batch_id}"))?;
        let batch = self
            .batch(batch_id)
            .await?
            .ok_or_else(|| ClientError::NotFound(format!("batch {batch_id}")))?;
        if !batch.active {
            return Ok(batch);
        }
        let wait = async {
            while let Some(entry) = watch.next().await {
                let entry = entry.during(|| format!("watch batch {batch_id}"))?;
                if entry.operation == kv::Operation::Put {
                    let batch: BatchJob = wire::decode(&entry.value)?;
                    if !batch.active {
                        return Ok(batch);
                    }
                }
            }
            Err(ClientError::NotFound(format!("batch {batch_id}")))
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout(timeout, format!("the end of batch {batch_id}")))?
    }
}

/// The error for an enqueue that comes back to a batch a worker gave up on.
fn abandoned(batch_id: &str) -> ClientError {
    ClientError::Conflict(format!(
        "batch {batch_id} was abandoned: its enqueue showed no progress for over {} s, so \
         the jobs it had not stored were cancelled; enqueue the jobs again under a new \
         batch id",
        ENQUEUE_ABANDONED_AFTER.as_secs()
    ))
}

/// Checks a spec and turns it into the record and the jobs to publish: ids
/// `<batch_id>-<n>`, `batch_id` set, dependencies on jobs of the spec rewritten to
/// their new ids, callbacks checked. Refuses cycles.
pub(crate) fn prepare(spec: BatchSpec) -> Result<(BatchJob, Vec<Job>), ClientError> {
    let BatchSpec {
        batch_id,
        name,
        mut jobs,
        on_success,
        on_failure,
        on_complete,
    } = spec;
    if !is_valid_batch_id(&batch_id) {
        return Err(ClientError::InvalidBatch(format!(
            "batch id {:?} must be 1 to {MAX_BATCH_ID_LEN} ASCII letters, digits, '_' or '-'",
            truncated(&batch_id)
        )));
    }
    if name.is_empty() || name.len() > MAX_FIELD_LEN {
        return Err(ClientError::InvalidBatch(format!(
            "the batch name must be 1 to {MAX_FIELD_LEN} bytes, not {}",
            name.len()
        )));
    }
    if jobs.is_empty() || jobs.len() > MAX_BATCH_JOBS {
        return Err(ClientError::InvalidBatch(format!(
            "a batch has 1 to {MAX_BATCH_JOBS} jobs, not {}",
            jobs.len()
        )));
    }
    let mut new_ids: HashMap<String, String> = HashMap::with_capacity(jobs.len());
    for (n, job) in (0u64..).zip(jobs.iter()) {
        let new_id = batch_job_id(&batch_id, n);
        if new_ids.insert(job.id.clone(), new_id).is_some() {
            return Err(ClientError::InvalidBatch(format!(
                "job id {:?} appears twice in the batch",
                truncated(&job.id)
            )));
        }
    }
    for (n, job) in (0u64..).zip(jobs.iter_mut()) {
        job.id = batch_job_id(&batch_id, n);
        job.batch_id = Some(batch_id.clone());
        for dependency in &mut job.depends_on {
            if let Some(new_id) = new_ids.get(dependency.as_str()) {
                dependency.clone_from(new_id);
            }
        }
        job.validate()
            .map_err(|e| ClientError::InvalidBatch(format!("job {n}: {e}")))?;
    }
    if let Some(cycle) = find_cycle(&jobs) {
        return Err(ClientError::InvalidBatch(format!(
            "dependency cycle: {}",
            cycle.join(" -> ")
        )));
    }
    let mut record = BatchJob::new(batch_id.as_str(), name, jobs.len() as u64);
    for (kind, template) in [
        (CallbackKind::OnSuccess, on_success),
        (CallbackKind::OnFailure, on_failure),
        (CallbackKind::OnComplete, on_complete),
    ] {
        let Some(mut job) = template else { continue };
        job.id = callback_job_id(&batch_id, kind);
        job.batch_id = None;
        job.depends_on.clear();
        job.validate()
            .map_err(|e| ClientError::InvalidBatch(format!("{} callback: {e}", kind.as_str())))?;
        match kind {
            CallbackKind::OnSuccess => record.on_success = Some(job),
            CallbackKind::OnFailure => record.on_failure = Some(job),
            CallbackKind::OnComplete => record.on_complete = Some(job),
        }
    }
    Ok((record, jobs))
}

/// A dependency cycle among `jobs` (edges to ids outside `jobs` ignored: those jobs
/// exist already, so they cannot depend on these), as the ids along it.
pub(crate) fn find_cycle(jobs: &[Job]) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| (job.id.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = jobs
        .iter()
        .map(|job| {
            job.depends_on
                .iter()
                .filter_map(|id| index.get(id.as_str()).copied())
                .collect()
        })
        .collect();
    // Iterative depth-first search: 0 = unseen, 1 = on the path, 2 = done.
    let mut state = vec![0u8; jobs.len()];
    for start in 0..jobs.len() {
        if state[start] != 0 {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match state[to] {
                    0 => {
                        state[to] = 1;
                        path.push((to, 0));
                    }
                    1 => {
                        let from = path.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        let mut cycle: Vec<String> = path[from..]
                            .iter()
                            .map(|(n, _)| jobs[*n].id.clone())
                            .collect();
                        cycle.push(jobs[to].id.clone());
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                path.pop();
            }
        }
    }
    None
}

fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, deps: &[&str]) -> Job {
        Job::new("echo", Vec::new())
            .id(id)
            .depends_on(deps.iter().copied())
    }

    #[test]
    fn a_diamond_has_no_cycle_and_gets_batch_ids() {
        let jobs = vec![
            job("A", &[]),
            job("B", &["A"]),
            job("C", &["A"]),
            job("D", &["B", "C"]),
        ];
        let (record, jobs) =
            prepare(BatchSpec::new("d", jobs).id("bt")).expect("a diamond is fine");
        assert_eq!(record.jobs, 4);
        assert_eq!(jobs[3].id, "bt-3");
        assert_eq!(jobs[3].depends_on, ["bt-1", "bt-2"]);
        assert_eq!(jobs[0].batch_id.as_deref(), Some("bt"));
    }

    #[test]
    fn cycles_are_refused() {
        let jobs = vec![job("A", &["C"]), job("B", &["A"]), job("C", &["B"])];
        let err = prepare(BatchSpec::new("c", jobs).id("bt")).expect_err("a cycle");
        assert!(err.to_string().contains("cycle"), "{err}");
        let jobs = vec![job("A", &["A"])];
        assert!(prepare(BatchSpec::new("c", jobs).id("bt")).is_err());
    }

    #[test]
    fn bad_batches_are_refused() {
        for id in [
            "",
            "a b",
            "*",
            ">",
            "a.b",
            &"x".repeat(MAX_BATCH_ID_LEN + 1),
        ] {
            let spec = BatchSpec::new("n", vec![job("A", &[])]).id(id);
            assert!(prepare(spec).is_err(), "{id:?}");
        }
        assert!(prepare(BatchSpec::new("n", Vec::new())).is_err());
        assert!(
            prepare(BatchSpec::new(
                "x".repeat(MAX_FIELD_LEN + 1),
                vec![job("A", &[])]
            ))
            .is_err()
        );
        let twice = vec![job("A", &[]), job("A", &[])];
        assert!(prepare(BatchSpec::new("n", twice)).is_err());
    }

    #[test]
    fn callbacks_get_derived_ids() {
        let spec = BatchSpec::new("n", vec![job("A", &[])])
            .id("bt")
            .on_complete(job("x", &["A"]));
        let (record, _) = prepare(spec).expect("valid");
        let callback = record.on_complete.expect("kept");
        assert_eq!(callback.id, "bt-on_complete");
        assert!(callback.depends_on.is_empty());
    }
}
