//! Schedules on [`Client`]: add, read, pause, resume, remove, trigger, and the fire
//! that workers run when a tick is due.
//!
//! Every change to a stored schedule is a compare-and-set (KV `update` with the
//! revision it was read at): two writers never both win, and a loser reads again.

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};

use super::cadence::Cadence;
use super::plan::{self, FirePlan};
use super::spec::{InvalidSchedule, ScheduleSpec, is_valid_schedule_id};
use crate::error::{ClientError, NatsContext};
use crate::model::{Job, JobEvent, JobEventType, Schedule, ScheduleFire, ScheduleStatus};
use crate::{Client, Enqueued, nats, wire};

/// Attempts at a compare-and-set that keeps losing to other writers.
///
/// Why: a schedule is written by a fire once per tick and by a person now and then;
/// losing this many times in a row means something writes it in a loop.
const CAS_ATTEMPTS: u32 = 16;

/// The longest wait before a worker tries again to enqueue for a failing schedule.
pub const MAX_FIRE_BACKOFF: TimeDelta = TimeDelta::seconds(60);

/// The wait after the `failures`-th failure in a row: 1 s, 2 s, 4 s, … up to
/// [`MAX_FIRE_BACKOFF`].
#[must_use]
pub fn fire_backoff(failures: u32) -> TimeDelta {
    let seconds = 1_i64 << failures.saturating_sub(1).min(6);
    TimeDelta::seconds(seconds).min(MAX_FIRE_BACKOFF)
}

/// What [`Client::fire_schedule`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FireOutcome {
    /// Nothing was due: not yet, or another worker fired it, or it is paused, finished
    /// or gone.
    NotDue,
    /// The due ticks' jobs are in the jobs stream and the schedule moved on. A job
    /// another worker had already published shows as `duplicate`.
    Fired(Vec<Enqueued>),
    /// The jobs are in the jobs stream but another writer changed the schedule
    /// between the read and the write; it was left as that writer left it.
    Lost(Vec<Enqueued>),
    /// Enqueueing failed; the failure is counted in the schedule and a retry is set.
    Failed(String),
}

/// A stored schedule and the revision it was read at.
struct Stored {
    schedule: Schedule,
    revision: u64,
}

impl Client {
    /// Adds a schedule; fails with [`ClientError::Conflict`] if the id is taken.
    ///
    /// ```no_run
    /// # async fn demo(client: jobbox::Client) -> Result<(), jobbox::ClientError> {
    /// let job = jobbox::Job::json("cleanup", &serde_json::json!({"older_than": "7d"}))?;
    /// let spec = jobbox::ScheduleSpec::cron("0 30 3 * * *", job)
    ///     .tz("Europe/Berlin")
    ///     .id("nightly-cleanup");
    /// let schedule = client.add_schedule(&spec).await?;
    /// println!("first run at {}", schedule.next_run_at);
    /// # Ok(()) }
    /// ```
    pub async fn add_schedule(&self, spec: &ScheduleSpec) -> Result<Schedule, ClientError> {
        let schedule = spec.build(Utc::now())?;
        let bytes = Bytes::from(wire::encode(&schedule)?);
        match self.layout().schedules.create(&schedule.id, bytes).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                return Err(ClientError::Conflict(format!(
                    "schedule {} already exists (remove it first)",
                    schedule.id
                )));
            }
            Err(e) => {
                return Err(ClientError::nats(
                    format!("add schedule {}", schedule.id),
                    e,
                ));
            }
        }
        self.schedule_event(
            JobEvent::schedule(JobEventType::Scheduled, &schedule)
                .with_detail("change", "added")
                .with_detail("next_run_at", schedule.next_run_at.to_rfc3339()),
        )
        .await;
        Ok(schedule)
    }

    /// The schedule `id`, if it exists.
    pub async fn schedule(&self, id: &str) -> Result<Option<Schedule>, ClientError> {
        Ok(self.stored_schedule(id).await?.map(|s| s.schedule))
    }

    /// Every schedule, sorted by id.
    pub async fn schedules(&self) -> Result<Vec<Schedule>, ClientError> {
        let keys = crate::layout::keys(&self.layout().schedules, "schedules").await?;
        let mut schedules = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(stored) = self.stored_schedule(&key).await? {
                schedules.push(stored.schedule);
            }
        }
        schedules.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(schedules)
    }

    /// Pauses a schedule: no tick fires until it is resumed.
    pub async fn pause_schedule(&self, id: &str) -> Result<Schedule, ClientError> {
        let now = Utc::now();
        let schedule = self
            .change_schedule(id, |schedule| {
                if schedule.status == ScheduleStatus::Finished {
                    return Err(ClientError::Conflict(format!("schedule {id} has finished")));
                }
                schedule.status = ScheduleStatus::Paused;
                schedule.updated_at = Some(now);
                Ok(())
            })
            .await?;
        self.schedule_event(
            JobEvent::schedule(JobEventType::Scheduled, &schedule).with_detail("change", "paused"),
        )
        .await;
        Ok(schedule)
    }

    /// Resumes a paused schedule. Ticks that passed while it was paused are not
    /// fired: it continues with the first tick after now.
    pub async fn resume_schedule(&self, id: &str) -> Result<Schedule, ClientError> {
        let now = Utc::now();
        let schedule = self
            .change_schedule(id, |schedule| {
                if schedule.status == ScheduleStatus::Finished {
                    return Err(ClientError::Conflict(format!("schedule {id} has finished")));
                }
                if schedule.status == ScheduleStatus::Paused {
                    let cadence = Cadence::of(schedule)?;
                    schedule.next_run_at = cadence.next_after(now).ok_or_else(|| {
                        InvalidSchedule::NeverFires(schedule.cron.clone().unwrap_or_default())
                    })?;
                    schedule.retry_at = None;
                }
                schedule.status = ScheduleStatus::Active;
                schedule.updated_at = Some(now);
                Ok(())
            })
            .await?;
        self.schedule_event(
            JobEvent::schedule(JobEventType::Scheduled, &schedule)
                .with_detail("change", "resumed")
                .with_detail("next_run_at", schedule.next_run_at.to_rfc3339()),
        )
        .await;
        Ok(schedule)
    }

    /// Removes a schedule. Jobs it already enqueued are not touched.
    pub async fn delete_schedule(&self, id: &str) -> Result<(), ClientError> {
        let stored = self
            .stored_schedule(id)
            .await?
            .ok_or_else(|| ClientError::NotFound(format!("schedule {id}")))?;
        self.layout()
            .schedules
            .delete(id)
            .await
            .during(|| format!("remove schedule {id}"))?;
        self.schedule_event(JobEvent::schedule(
            JobEventType::ScheduleRemoved,
            &stored.schedule,
        ))
        .await;
        Ok(())
    }

    /// Enqueues the schedule's job now, once, outside its grid (`jobbox schedule
    /// trigger`). The schedule's next tick and fires left are unchanged.
    pub async fn trigger_schedule(&self, id: &str) -> Result<Enqueued, ClientError> {
        let stored = self
            .stored_schedule(id)
            .await?
            .ok_or_else(|| ClientError::NotFound(format!("schedule {id}")))?;
        let now = Utc::now();
        let job_id = plan::manual_job_id(id);
        let job = plan::job_for(&stored.schedule, &job_id, now, now);
        let enqueued = self.enqueue_fire(&stored.schedule, &job, now, None).await?;
        let fire = ScheduleFire {
            tick: now,
            job_id,
            fired_at: now,
            worker_id: None,
            manual: true,
        };
        self.change_schedule(id, |schedule| {
            schedule.record_fires([fire.clone()]);
            Ok(())
        })
        .await?;
        Ok(enqueued)
    }

    /// Fires the schedule `id` if a tick of it is due at `now`: enqueues the due
    /// ticks' jobs (ids derived from the ticks, so a repeat is a duplicate), then
    /// advances the record with a compare-and-set. What workers run; safe to run from
    /// any number of them at once.
    pub async fn fire_schedule(
        &self,
        id: &str,
        worker_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<FireOutcome, ClientError> {
        let Some(Stored { schedule, revision }) = self.stored_schedule(id).await? else {
            return Ok(FireOutcome::NotDue);
        };
        let cadence = Cadence::of(&schedule)?;
        let Some(fire) = plan::plan(&schedule, &cadence, now) else {
            return Ok(FireOutcome::NotDue);
        };
        match self.enqueue_ticks(&schedule, &fire, worker_id, now).await {
            Ok((jobs, fires)) => {
                let mut next = plan::advanced(&schedule, &fire);
                next.record_fires(fires);
                Ok(match self.put_schedule(&next, revision).await? {
                    true => FireOutcome::Fired(jobs),
                    false => FireOutcome::Lost(jobs),
                })
            }
            Err(e) => {
                let error = e.to_string();
                let mut next = schedule.clone();
                let failures = next.failure_count.saturating_add(1);
                next.record_failure(error.clone(), now, fire_backoff(failures));
                // Lost or not, the failure is reported: the next try reads again.
                let _ = self.put_schedule(&next, revision).await;
                let mut event = JobEvent::schedule(JobEventType::ScheduleFailed, &schedule)
                    .with_error(crate::ErrorType::Internal, error.clone())
                    .with_detail("failure_count", failures.to_string());
                if let Some(worker) = worker_id {
                    event = event.with_worker(worker);
                }
                self.schedule_event(event).await;
                Ok(FireOutcome::Failed(error))
            }
        }
    }

    /// Publishes the jobs of `fire`'s ticks, pipelined; the fires to record.
    async fn enqueue_ticks(
        &self,
        schedule: &Schedule,
        fire: &FirePlan,
        worker_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Enqueued>, Vec<ScheduleFire>), ClientError> {
        let jobs: Vec<Job> = fire
            .ticks
            .iter()
            .map(|tick| {
                let id = plan::tick_job_id(&schedule.id, *tick);
                plan::job_for(schedule, &id, *tick, now)
            })
            .collect();
        let mut pending = Vec::with_capacity(jobs.len());
        for (job, tick) in jobs.iter().zip(&fire.ticks) {
            job.validate()?;
            let trigger = trigger_event(schedule, job, *tick, worker_id);
            let trigger = self
                .publish_event_with_id(&trigger, &format!("{}.schedule_triggered", job.id))
                .await?;
            pending.push((trigger, self.send_enqueue(job).await?));
        }
        let mut enqueued = Vec::with_capacity(jobs.len());
        let mut fires = Vec::with_capacity(jobs.len());
        for ((trigger, sent), (job, tick)) in pending.into_iter().zip(jobs.iter().zip(&fire.ticks))
        {
            trigger
                .await
                .during(|| format!("record SCHEDULE_TRIGGERED for job {}", job.id))?;
            enqueued.push(sent.stored(job).await?);
            fires.push(ScheduleFire {
                tick: *tick,
                job_id: job.id.clone(),
                fired_at: now,
                worker_id: worker_id.map(str::to_string),
                manual: false,
            });
        }
        Ok((enqueued, fires))
    }

    /// Publishes one job of `schedule` with its SCHEDULE_TRIGGERED event.
    async fn enqueue_fire(
        &self,
        schedule: &Schedule,
        job: &Job,
        tick: DateTime<Utc>,
        worker_id: Option<&str>,
    ) -> Result<Enqueued, ClientError> {
        job.validate()?;
        let trigger = trigger_event(schedule, job, tick, worker_id);
        self.publish_event_with_id(&trigger, &format!("{}.schedule_triggered", job.id))
            .await?
            .await
            .during(|| format!("record SCHEDULE_TRIGGERED for job {}", job.id))?;
        self.enqueue(job).await
    }

    /// Reads schedule `id` with its revision; refuses an invalid id before it reaches
    /// NATS.
    async fn stored_schedule(&self, id: &str) -> Result<Option<Stored>, ClientError> {
        if !is_valid_schedule_id(id) {
            return Err(InvalidSchedule::BadId(id.to_string()).into());
        }
        let entry = self
            .layout()
            .schedules
            .entry(id)
            .await
            .during(|| format!("read schedule {id}"))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let version = wire::version_of(&entry.value)?;
        if version > wire::WIRE_VERSION {
            return Err(ClientError::Conflict(format!(
                "schedule {id} was written by a newer jobbox (record version {version}); \
                 this version does not change it"
            )));
        }
        Ok(Some(Stored {
            schedule: wire::decode(&entry.value)?,
            revision: entry.revision,
        }))
    }

    /// Writes `schedule` if it is still at `revision`; false if another writer was
    /// first.
    async fn put_schedule(&self, schedule: &Schedule, revision: u64) -> Result<bool, ClientError> {
        let bytes = Bytes::from(wire::encode(schedule)?);
        match self
            .layout()
            .schedules
            .update(&schedule.id, bytes, revision)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(ClientError::nats(
                format!("update schedule {}", schedule.id),
                e,
            )),
        }
    }

    /// Reads, changes and writes back schedule `id` until the write wins.
    async fn change_schedule(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Schedule) -> Result<(), ClientError>,
    ) -> Result<Schedule, ClientError> {
        for _ in 0..CAS_ATTEMPTS {
            let Stored {
                mut schedule,
                revision,
            } = self
                .stored_schedule(id)
                .await?
                .ok_or_else(|| ClientError::NotFound(format!("schedule {id}")))?;
            change(&mut schedule)?;
            if self.put_schedule(&schedule, revision).await? {
                return Ok(schedule);
            }
        }
        Err(ClientError::Conflict(format!(
            "schedule {id} kept changing under {CAS_ATTEMPTS} attempts to update it"
        )))
    }

    /// Publishes an event about a schedule. Events are a record, not the state: a
    /// failure to publish one is logged, not returned.
    async fn schedule_event(&self, event: JobEvent) {
        let Some(id) = event.details.get("schedule_id").cloned() else {
            return;
        };
        let publish = async {
            let payload = Bytes::from(wire::encode(&event)?);
            self.jetstream()
                .publish(nats::schedule_event_subject(&id, event.event_type), payload)
                .await
                .during(|| format!("publish {} for schedule {id}", event.event_type))?
                .await
                .during(|| format!("publish {} for schedule {id}", event.event_type))?;
            Ok::<_, ClientError>(())
        };
        if let Err(e) = publish.await {
            tracing::warn!(schedule_id = %id, error = %e, "failed to record a schedule event");
        }
    }
}

/// The SCHEDULE_TRIGGERED event of `job`, fired by `schedule` for `tick`.
fn trigger_event(
    schedule: &Schedule,
    job: &Job,
    tick: DateTime<Utc>,
    worker_id: Option<&str>,
) -> JobEvent {
    let mut event = JobEvent::new(JobEventType::ScheduleTriggered, job)
        .with_detail("schedule_id", schedule.id.clone())
        .with_detail("tick", tick.to_rfc3339());
    if let Some(worker) = worker_id {
        event = event.with_worker(worker);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let waits: Vec<i64> = (1..=9).map(|n| fire_backoff(n).num_seconds()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(fire_backoff(u32::MAX), MAX_FIRE_BACKOFF);
    }
}
