//! The worker's scheduler: fires due schedule ticks. Every worker runs one, off the
//! per-job path; `Client::fire_schedule` (job ids derived from the tick, then a
//! compare-and-set on the record) makes each tick enqueue one job however many
//! workers wake for it, and any live worker fires it.
//!
//! The task follows the schedules bucket with a watch (current values, then changes),
//! sleeps until the earliest due tick, waits a random moment so that one worker
//! usually fires and the others see the record move on, then fires everything due.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use async_nats::jetstream::kv::{Entry, Operation};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use jobbox::{Cadence, Client, FireOutcome, Schedule, wire};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest random wait between a tick falling due and this worker firing it.
///
/// Why: the first worker to fire advances the record within a few milliseconds on a
/// local network, and the others see that in their watch before their own wait ends,
/// so most ticks are published once rather than once per worker (a second publish is
/// harmless, only wasted). 100 ms keeps ticks well inside their second.
pub const FIRE_JITTER: Duration = Duration::from_millis(100);

/// Pause before this worker looks again at a schedule it just tried to fire, unless
/// the watch brings its new state first.
///
/// Why: keeps a stale local view (a watch that lags, a fire that failed to reach the
/// server) from turning into a busy loop, while a lost compare-and-set is retried soon.
const RECHECK: Duration = Duration::from_millis(250);

/// How often the watch is made afresh, reading every schedule again.
///
/// Why: a watch is a consumer on the server; after a server restart or a missed
/// delete this brings the local view back without relying on the watch noticing.
const REWATCH_INTERVAL: Duration = Duration::from_secs(30);

/// Pause before this worker tries a schedule again after the fire itself failed
/// (the server unreachable, say), unless the watch brings a new state first.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// Pause before watching again after the watch could not be made.
const REWATCH_DELAY: Duration = Duration::from_secs(1);

/// Fires due ticks until `stop`.
pub(super) async fn run(client: Client, worker_id: String, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let mut watch = match client.layout().schedules.watch_with_history(">").await {
            Ok(watch) => watch,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the schedules bucket; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(REWATCH_DELAY) => continue,
                }
            }
        };
        let mut due = DueTimes::default();
        let rewatch = tokio::time::sleep(REWATCH_INTERVAL);
        tokio::pin!(rewatch);
        loop {
            let wake = due.earliest();
            tokio::select! {
                () = stop.cancelled() => return,
                () = &mut rewatch => break,
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => due.apply(&entry),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the schedules watch failed; watching again");
                        break;
                    }
                    None => break,
                },
                () = sleep_until(wake), if wake.is_some() => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(jitter()) => {}
                    }
                    // The watch may have moved schedules on during the jitter: take
                    // what it has before deciding what is due.
                    while let Some(Some(Ok(entry))) = futures::FutureExt::now_or_never(watch.next()) {
                        due.apply(&entry);
                    }
                    fire_due(&client, &worker_id, &mut due).await;
                }
            }
        }
    }
}

/// Fires every schedule whose local due time has passed.
async fn fire_due(client: &Client, worker_id: &str, due: &mut DueTimes) {
    let now = Utc::now();
    for id in due.due_by(now) {
        let mut recheck = RECHECK;
        match client.fire_schedule(&id, Some(worker_id), now).await {
            Ok(FireOutcome::Fired(jobs)) => {
                let ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
                let duplicates = jobs.iter().filter(|j| j.duplicate).count();
                tracing::info!(schedule_id = %id, jobs = ?ids, duplicates, "schedule fired");
            }
            Ok(FireOutcome::Lost(jobs)) => {
                tracing::debug!(schedule_id = %id, jobs = jobs.len(), "another writer advanced the schedule first");
            }
            Ok(FireOutcome::Failed(error)) => {
                tracing::warn!(schedule_id = %id, %error, "schedule could not enqueue; will retry");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(schedule_id = %id, error = %e, "schedule fire failed");
                recheck = RETRY_AFTER_ERROR;
            }
        }
        due.recheck_later(&id, now, recheck);
    }
}

/// When each known schedule is next due, as this worker last saw it.
#[derive(Debug, Default)]
struct DueTimes {
    by_id: HashMap<String, DateTime<Utc>>,
}

impl DueTimes {
    /// Takes in one watch entry.
    fn apply(&mut self, entry: &Entry) {
        if entry.operation != Operation::Put {
            self.by_id.remove(&entry.key);
            return;
        }
        match readable(&entry.value) {
            Ok(schedule) => match schedule.due_at() {
                Some(at) => {
                    self.by_id.insert(entry.key.clone(), at);
                }
                None => {
                    self.by_id.remove(&entry.key);
                }
            },
            Err(e) => {
                tracing::warn!(key = %entry.key, error = %e, "not firing this schedule");
                self.by_id.remove(&entry.key);
            }
        }
    }

    /// The earliest due time.
    fn earliest(&self) -> Option<DateTime<Utc>> {
        self.by_id.values().min().copied()
    }

    /// Ids due at `now`, earliest first.
    fn due_by(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut due: Vec<(&DateTime<Utc>, &String)> = self
            .by_id
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, at)| (at, id))
            .collect();
        due.sort();
        due.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Looks at `id` again `after` `now` unless the watch says otherwise first.
    fn recheck_later(&mut self, id: &str, now: DateTime<Utc>, after: Duration) {
        if let Some(at) = self.by_id.get_mut(id) {
            let later = now + chrono::TimeDelta::from_std(after).unwrap_or_default();
            if *at < later {
                *at = later;
            }
        }
    }
}

/// A schedule this worker can fire: decodes, is not from a newer writer (whose
/// record it must not write back), and has a valid cadence.
fn readable(bytes: &[u8]) -> Result<Schedule, String> {
    let version = wire::version_of(bytes).map_err(|e| e.to_string())?;
    if version > wire::WIRE_VERSION {
        return Err(format!(
            "record version {version} is newer than {}; a newer worker fires it",
            wire::WIRE_VERSION
        ));
    }
    let schedule: Schedule = wire::decode(bytes).map_err(|e| e.to_string())?;
    Cadence::of(&schedule).map_err(|e| e.to_string())?;
    Ok(schedule)
}

/// Sleeps until the wall-clock time `at` (at once if it has passed).
async fn sleep_until(at: Option<DateTime<Utc>>) {
    let Some(at) = at else {
        return std::future::pending().await;
    };
    let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::time::sleep_until(Instant::now() + wait).await;
}

/// A random wait in `[0, FIRE_JITTER)`.
fn jitter() -> Duration {
    let random = std::hash::RandomState::new().build_hasher().finish();
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    FIRE_JITTER.mul_f64(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("valid time")
    }

    #[test]
    fn due_times_order_and_recheck() {
        let mut due = DueTimes::default();
        due.by_id.insert("b".into(), at(10));
        due.by_id.insert("a".into(), at(5));
        due.by_id.insert("c".into(), at(50));
        assert_eq!(due.earliest(), Some(at(5)));
        assert_eq!(due.due_by(at(10)), ["a", "b"]);
        due.recheck_later("a", at(10), RECHECK);
        assert!(due.by_id["a"] > at(10));
        assert_eq!(due.due_by(at(10)), ["b"]);
    }

    #[test]
    fn unreadable_and_newer_records_are_not_fired() {
        let job = jobbox::Job::new("echo", b"{}".to_vec());
        let schedule = jobbox::ScheduleSpec::every(Duration::from_secs(1), job)
            .build(Utc::now())
            .expect("valid");
        let bytes = wire::encode(&schedule).expect("encodes");
        assert!(readable(&bytes).is_ok());
        assert!(readable(b"not a record").is_err());
        let mut broken = schedule.clone();
        broken.cron = Some("0 * * * *".into());
        assert!(readable(&wire::encode(&broken).expect("encodes")).is_err());
        let mut newer: serde_json::Value = serde_json::to_value(&schedule).expect("json");
        newer["v"] = serde_json::json!(wire::WIRE_VERSION + 1);
        let newer = rmp_serde::to_vec_named(&newer).expect("encodes");
        assert!(readable(&newer).is_err());
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        for _ in 0..1_000 {
            assert!(jitter() < FIRE_JITTER);
        }
    }
}
