//! What a fire does: which ticks are due, which jobs they become, and what the
//! schedule looks like afterwards. Pure functions of (schedule, now).
//!
//! A fire is planned from the stored record alone, so every worker that plans it from
//! the same revision plans the same ticks and the same job ids: a second worker that
//! fires the same revision publishes jobs the jobs stream drops as duplicates, and its
//! compare-and-set on the record fails.

use chrono::{DateTime, Utc};

use super::cadence::Cadence;
use crate::model::{Job, MissedPolicy, Schedule, ScheduleStatus};

/// Metadata key naming the schedule that enqueued a job.
pub const SCHEDULE_METADATA: &str = "jobbox.schedule";
/// Metadata key holding the tick (RFC 3339) a job was enqueued for.
pub const TICK_METADATA: &str = "jobbox.tick";

/// The due ticks of one fire and the schedule's state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePlan {
    /// The ticks to enqueue a job for, oldest first (never empty).
    pub ticks: Vec<DateTime<Utc>>,
    /// The next tick after this fire; `None` when the schedule is finished.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Fires left after this one (`None`: forever).
    pub repeat: Option<u32>,
}

/// The fire due at `now`, or `None` when nothing is due (not active, or the next tick
/// is still ahead).
///
/// Ticks from `next_run_at` up to `now` are due. Under [`MissedPolicy::Skip`] only the
/// oldest is enqueued; under [`MissedPolicy::CatchUp`] up to `catch_up_limit` of them,
/// oldest first. Either way the schedule then continues with the first tick after
/// `now`, and `repeat` caps the ticks and counts down.
#[must_use]
pub fn plan(schedule: &Schedule, cadence: &Cadence, now: DateTime<Utc>) -> Option<FirePlan> {
    if schedule.due_at().is_none_or(|due| due > now) {
        return None;
    }
    let mut limit = match schedule.missed {
        MissedPolicy::CatchUp => schedule.catch_up_limit.max(1),
        _ => 1,
    };
    if let Some(repeat) = schedule.repeat {
        limit = limit.min(repeat);
    }
    let mut ticks = Vec::new();
    let mut tick = Some(schedule.next_run_at);
    while let Some(at) = tick {
        if at > now || ticks.len() >= limit as usize {
            break;
        }
        ticks.push(at);
        tick = cadence.next_after(at);
    }
    if ticks.is_empty() {
        return None;
    }
    let fired = u32::try_from(ticks.len()).unwrap_or(u32::MAX);
    let repeat = schedule.repeat.map(|left| left.saturating_sub(fired));
    let next_run_at = match repeat {
        Some(0) => None,
        _ => cadence.next_after(now),
    };
    Some(FirePlan {
        ticks,
        next_run_at,
        repeat,
    })
}

/// The schedule after `plan` was fired: next tick, fires left, status. Fires
/// themselves are recorded with [`Schedule::record_fires`].
#[must_use]
pub fn advanced(schedule: &Schedule, plan: &FirePlan) -> Schedule {
    let mut next = schedule.clone();
    next.repeat = plan.repeat;
    match plan.next_run_at {
        Some(at) => next.next_run_at = at,
        None => next.status = ScheduleStatus::Finished,
    }
    next
}

/// The id of the job a schedule enqueues for `tick`: `<schedule id>-<Unix seconds>`.
///
/// Derived, not random: whoever fires the tick publishes the same id, so the jobs
/// stream's duplicate window keeps one job per tick.
#[must_use]
pub fn tick_job_id(schedule_id: &str, tick: DateTime<Utc>) -> String {
    format!("{schedule_id}-{}", tick.timestamp())
}

/// The id of a job enqueued by `trigger`: `<schedule id>-now-<ulid>`, never equal to a
/// tick's id (those end in digits after the last `-`, a ULID has letters and is 26
/// characters long).
#[must_use]
pub fn manual_job_id(schedule_id: &str) -> String {
    format!(
        "{schedule_id}-now-{}",
        crate::model::new_id().to_lowercase()
    )
}

/// The job for `tick`, from the schedule's template: id `job_id`, created `now`, not
/// delayed, with metadata naming the schedule and the tick.
#[must_use]
pub fn job_for(schedule: &Schedule, job_id: &str, tick: DateTime<Utc>, now: DateTime<Utc>) -> Job {
    let mut job = schedule.job.clone();
    job.id = job_id.to_string();
    job.created_at = now;
    job.scheduled_at = None;
    job.attempt = 1;
    job.created_by = Some(format!("schedule:{}", schedule.id));
    job.metadata
        .insert(SCHEDULE_METADATA.to_string(), schedule.id.clone());
    job.metadata
        .insert(TICK_METADATA.to_string(), tick.to_rfc3339());
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("valid time")
    }

    fn every_ten(next: i64) -> (Schedule, Cadence) {
        let job = Job::new("echo", b"{}".to_vec());
        let schedule = crate::ScheduleSpec::every(std::time::Duration::from_secs(10), job)
            .id("s")
            .build(at(next - 1))
            .expect("valid spec");
        assert_eq!(schedule.next_run_at, at(next));
        let cadence = Cadence::of(&schedule).expect("valid cadence");
        (schedule, cadence)
    }

    #[test]
    fn nothing_is_due_before_the_tick_or_the_retry_or_when_paused() {
        let (mut schedule, cadence) = every_ten(100);
        assert_eq!(plan(&schedule, &cadence, at(99)), None);
        schedule.record_failure("stream full", at(100), chrono::TimeDelta::seconds(2));
        assert_eq!(schedule.failure_count, 1);
        assert_eq!(plan(&schedule, &cadence, at(101)), None);
        assert!(plan(&schedule, &cadence, at(102)).is_some());
        schedule.status = ScheduleStatus::Paused;
        assert_eq!(plan(&schedule, &cadence, at(100)), None);
    }

    #[test]
    fn an_on_time_fire_takes_one_tick_and_moves_on() {
        let (schedule, cadence) = every_ten(100);
        let fire = plan(&schedule, &cadence, at(100)).expect("due");
        assert_eq!(fire.ticks, [at(100)]);
        assert_eq!(fire.next_run_at, Some(at(110)));
        let next = advanced(&schedule, &fire);
        assert_eq!(next.next_run_at, at(110));
        assert_eq!(plan(&next, &cadence, at(105)), None);
    }

    #[test]
    fn skip_fires_the_oldest_missed_tick_once_then_the_grid() {
        let (schedule, cadence) = every_ten(100);
        // Down from 100 to 155: ticks 100..150 were missed.
        let fire = plan(&schedule, &cadence, at(155)).expect("due");
        assert_eq!(fire.ticks, [at(100)]);
        assert_eq!(fire.next_run_at, Some(at(160)));
    }

    #[test]
    fn catch_up_fires_missed_ticks_up_to_its_bound() {
        let (mut schedule, cadence) = every_ten(100);
        schedule.missed = MissedPolicy::CatchUp;
        schedule.catch_up_limit = 3;
        let fire = plan(&schedule, &cadence, at(155)).expect("due");
        assert_eq!(fire.ticks, [at(100), at(110), at(120)]);
        assert_eq!(fire.next_run_at, Some(at(160)));
        schedule.catch_up_limit = 100;
        let fire = plan(&schedule, &cadence, at(125)).expect("due");
        assert_eq!(fire.ticks, [at(100), at(110), at(120)]);
        assert_eq!(fire.next_run_at, Some(at(130)));
    }

    #[test]
    fn repeat_caps_and_finishes() {
        let (mut schedule, cadence) = every_ten(100);
        schedule.repeat = Some(2);
        schedule.missed = MissedPolicy::CatchUp;
        let fire = plan(&schedule, &cadence, at(100)).expect("due");
        assert_eq!(fire.repeat, Some(1));
        let schedule = advanced(&schedule, &fire);
        let fire = plan(&schedule, &cadence, at(135)).expect("due");
        assert_eq!(fire.ticks, [at(110)], "one fire left caps the catch-up");
        assert_eq!(fire.next_run_at, None);
        let done = advanced(&schedule, &fire);
        assert_eq!(done.status, ScheduleStatus::Finished);
        assert_eq!(done.repeat, Some(0));
        assert_eq!(plan(&done, &cadence, at(1_000)), None);
    }

    #[test]
    fn a_berlin_cron_fires_at_wall_clock_times_across_both_changes() {
        // 02:30 every day in Berlin, stepped through March and October 2026 with
        // injected time: each fire's tick, and the next, as the workers would see them.
        let job = Job::new("echo", b"{}".to_vec());
        let utc = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .expect("test time parses")
                .with_timezone(&Utc)
        };
        for (created, expected) in [
            (
                "2026-03-27T12:00:00Z",
                [
                    "2026-03-28T01:30:00+00:00", // 02:30 CET
                    "2026-03-29T01:00:00+00:00", // 02:30 does not exist: 03:00 CEST
                    "2026-03-30T00:30:00+00:00", // 02:30 CEST
                ],
            ),
            (
                "2026-10-24T12:00:00Z",
                [
                    "2026-10-25T00:30:00+00:00", // 02:30 CEST, the first pass
                    "2026-10-26T01:30:00+00:00", // 02:30 CET (not 01:30 UTC on the 25th)
                    "2026-10-27T01:30:00+00:00",
                ],
            ),
        ] {
            let mut schedule = crate::ScheduleSpec::cron("0 30 2 * * *", job.clone())
                .tz("Europe/Berlin")
                .id("berlin")
                .build(utc(created))
                .expect("valid spec");
            let cadence = Cadence::of(&schedule).expect("valid cadence");
            let mut fired = Vec::new();
            for _ in 0..3 {
                let now = schedule.next_run_at + chrono::TimeDelta::milliseconds(50);
                assert_eq!(
                    plan(&schedule, &cadence, now - chrono::TimeDelta::seconds(1)),
                    None,
                    "not due a second early"
                );
                let fire = plan(&schedule, &cadence, now).expect("due");
                fired.push(fire.ticks[0].to_rfc3339());
                schedule = advanced(&schedule, &fire);
            }
            assert_eq!(fired, expected);
        }
    }

    #[test]
    fn the_same_revision_plans_the_same_jobs() {
        let (schedule, cadence) = every_ten(100);
        let a = plan(&schedule, &cadence, at(101)).expect("due");
        let b = plan(&schedule, &cadence, at(109)).expect("due");
        assert_eq!(a.ticks, b.ticks);
        assert_eq!(tick_job_id("s", a.ticks[0]), "s-100");
        let job = job_for(&schedule, "s-100", a.ticks[0], at(101));
        assert_eq!(job.id, "s-100");
        assert_eq!(
            job.metadata.get(SCHEDULE_METADATA).map(String::as_str),
            Some("s")
        );
        job.validate().expect("a planned job is valid");
        assert_ne!(manual_job_id("s"), manual_job_id("s"));
    }
}
