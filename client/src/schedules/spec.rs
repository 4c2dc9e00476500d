//! What a user asks for when adding a schedule, and the checks that refuse a bad one
//! before anything is stored.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::cadence::Cadence;
use super::plan;
use crate::model::{
    DEFAULT_CATCH_UP_LIMIT, InvalidJob, Job, MAX_CATCH_UP_LIMIT, MAX_NAME_LEN, MissedPolicy,
    Schedule, ScheduleStatus, is_valid_name,
};
use crate::wire::{self, NATS_MAX_PAYLOAD};

/// Longest schedule id, in bytes.
///
/// Why: a schedule's job ids are `<schedule id>-now-<ulid>` at the longest (31 bytes
/// more), and job ids are at most [`MAX_NAME_LEN`] bytes.
pub const MAX_SCHEDULE_ID_LEN: usize = 64;

/// Largest encoded schedule record, in bytes.
///
/// Why: the record (job template included) is one KV value and must fit in one NATS
/// message; 64 KiB of headroom is left for the fire history and headers.
pub const MAX_SCHEDULE_BYTES: usize = NATS_MAX_PAYLOAD - 64 * 1024;

const _: () = assert!(MAX_SCHEDULE_ID_LEN + 31 <= MAX_NAME_LEN);

/// True if `id` can be a schedule id: 1 to [`MAX_SCHEDULE_ID_LEN`] bytes of ASCII
/// letters, digits, `_` and `-` (a valid KV key and subject token, with room for the
/// job ids derived from it).
#[must_use]
pub fn is_valid_schedule_id(id: &str) -> bool {
    id.len() <= MAX_SCHEDULE_ID_LEN && is_valid_name(id)
}

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSchedule {
    /// The id is not a valid schedule id (see [`is_valid_schedule_id`]).
    #[error(
        "schedule id {0:?} must be 1 to {MAX_SCHEDULE_ID_LEN} ASCII letters, digits, '_' or '-'"
    )]
    BadId(String),
    /// The cron expression does not parse.
    #[error("cron expression {expression:?} is not valid: {reason}")]
    BadCron {
        /// The expression.
        expression: String,
        /// Why.
        reason: String,
    },
    /// The cron expression never matches again.
    #[error("cron expression {0:?} never fires")]
    NeverFires(String),
    /// The time zone is not an IANA name known to this build.
    #[error("unknown time zone {0:?} (expected an IANA name such as Europe/Berlin)")]
    UnknownTimeZone(String),
    /// A time zone was given for an interval schedule.
    #[error("a time zone applies to --cron only; intervals are on a UTC grid")]
    TimeZoneWithoutCron,
    /// The interval is shorter than one second.
    #[error("interval {0:?} is under the minimum of 1s")]
    IntervalTooShort(Duration),
    /// The interval is not a whole number of seconds.
    #[error("interval {0:?} is not a whole number of seconds")]
    IntervalNotWholeSeconds(Duration),
    /// The stored record has neither or both of `cron` and `interval_seconds`.
    #[error("a schedule needs exactly one of cron and interval_seconds")]
    NoCadence,
    /// `repeat` is 0.
    #[error("repeat must be at least 1")]
    ZeroRepeat,
    /// The catch-up bound is out of range.
    #[error("catch-up bound {0} is out of range 1..={MAX_CATCH_UP_LIMIT}")]
    CatchUpLimit(u32),
    /// The job template would not make valid jobs.
    #[error("the job template is not valid: {0}")]
    Job(InvalidJob),
    /// The encoded record would be too large for one KV value.
    #[error("the schedule is {size} bytes encoded, more than {max} (a smaller payload fits)")]
    TooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The record could not be encoded.
    #[error("the schedule cannot be encoded: {0}")]
    Encode(String),
}

// By hand rather than `#[from]`: the message includes the reason already.
impl From<InvalidJob> for InvalidSchedule {
    fn from(invalid: InvalidJob) -> Self {
        Self::Job(invalid)
    }
}

/// How often a new schedule fires, as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    Cron {
        expression: String,
        tz: Option<String>,
    },
    Every(Duration),
}

/// A schedule to add: a job template, a cron expression or an interval, and options.
/// [`ScheduleSpec::build`] checks it and makes the [`Schedule`] record.
///
/// ```
/// use std::time::Duration;
///
/// let job = jobbox::Job::json("report", &serde_json::json!({"kind": "daily"}))?;
/// let spec = jobbox::ScheduleSpec::cron("0 0 7 * * MON-FRI", job)
///     .tz("Europe/Berlin")
///     .id("daily-report");
/// let schedule = spec.build(chrono::Utc::now())?;
/// assert_eq!(schedule.id, "daily-report");
///
/// let ping = jobbox::Job::json("ping", &serde_json::json!({}))?;
/// let too_fast = jobbox::ScheduleSpec::every(Duration::from_millis(500), ping);
/// assert!(too_fast.build(chrono::Utc::now()).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ScheduleSpec {
    id: Option<String>,
    job: Job,
    asked: Asked,
    repeat: Option<u32>,
    missed: MissedPolicy,
    catch_up_limit: u32,
    tz_on_interval: bool,
}

impl ScheduleSpec {
    /// Fires `job` on the cron `expression` (5 fields, or 6 with seconds first), UTC
    /// unless [`ScheduleSpec::tz`] says otherwise.
    pub fn cron(expression: impl Into<String>, job: Job) -> Self {
        Self::new(
            job,
            Asked::Cron {
                expression: expression.into(),
                tz: None,
            },
        )
    }

    /// Fires `job` every `interval` (whole seconds, at least 1 s), on the grid of
    /// multiples of it since the Unix epoch.
    pub fn every(interval: Duration, job: Job) -> Self {
        Self::new(job, Asked::Every(interval))
    }

    fn new(job: Job, asked: Asked) -> Self {
        Self {
            id: None,
            job,
            asked,
            repeat: None,
            missed: MissedPolicy::Skip,
            catch_up_limit: DEFAULT_CATCH_UP_LIMIT,
            tz_on_interval: false,
        }
    }

    /// The schedule id (default: a fresh ULID).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The IANA time zone a cron expression is read in (default UTC). Refused by
    /// [`ScheduleSpec::build`] on an interval schedule.
    pub fn tz(mut self, tz: impl Into<String>) -> Self {
        match &mut self.asked {
            Asked::Cron { tz: zone, .. } => *zone = Some(tz.into()),
            Asked::Every(_) => self.tz_on_interval = true,
        }
        self
    }

    /// Fires at most `n` times, then finishes.
    pub fn repeat(mut self, n: u32) -> Self {
        self.repeat = Some(n);
        self
    }

    /// Under [`MissedPolicy::CatchUp`], enqueue at most `limit` missed ticks.
    pub fn catch_up(mut self, limit: u32) -> Self {
        self.missed = MissedPolicy::CatchUp;
        self.catch_up_limit = limit;
        self
    }

    /// Enqueue one job for missed ticks, then continue (the default).
    pub fn skip_missed(mut self) -> Self {
        self.missed = MissedPolicy::Skip;
        self
    }

    /// Checks everything and makes the record, its first tick the first after `now`.
    ///
    /// # Errors
    ///
    /// The first problem found, as an [`InvalidSchedule`].
    pub fn build(&self, now: DateTime<Utc>) -> Result<Schedule, InvalidSchedule> {
        if self.tz_on_interval {
            return Err(InvalidSchedule::TimeZoneWithoutCron);
        }
        let id = self
            .id
            .clone()
            .unwrap_or_else(|| crate::model::new_id().to_lowercase());
        if !is_valid_schedule_id(&id) {
            return Err(InvalidSchedule::BadId(id));
        }
        if self.repeat == Some(0) {
            return Err(InvalidSchedule::ZeroRepeat);
        }
        if self.missed == MissedPolicy::CatchUp
            && !(1..=MAX_CATCH_UP_LIMIT).contains(&self.catch_up_limit)
        {
            return Err(InvalidSchedule::CatchUpLimit(self.catch_up_limit));
        }
        let (cron, tz, interval_seconds, cadence) = match &self.asked {
            Asked::Cron { expression, tz } => (
                Some(expression.clone()),
                tz.clone(),
                None,
                Cadence::cron(expression, tz.as_deref())?,
            ),
            Asked::Every(interval) => {
                if interval.subsec_nanos() != 0 {
                    return Err(if interval.as_secs() == 0 {
                        InvalidSchedule::IntervalTooShort(*interval)
                    } else {
                        InvalidSchedule::IntervalNotWholeSeconds(*interval)
                    });
                }
                let seconds = interval.as_secs();
                (None, None, Some(seconds), Cadence::every(seconds)?)
            }
        };
        let next_run_at = cadence
            .next_after(now)
            .ok_or_else(|| InvalidSchedule::NeverFires(cron.clone().unwrap_or_default()))?;
        let mut job = self.job.clone();
        job.scheduled_at = None;
        let schedule = Schedule {
            id,
            job,
            cron,
            tz,
            interval_seconds,
            repeat: self.repeat,
            next_run_at,
            status: ScheduleStatus::Active,
            last_enqueued_at: None,
            failure_count: 0,
            missed: self.missed,
            catch_up_limit: self.catch_up_limit,
            fired: 0,
            recent_fires: Vec::new(),
            last_error: None,
            retry_at: None,
            created_at: Some(now),
            updated_at: Some(now),
        };
        check_template(&schedule, now)?;
        let size = wire::encode(&schedule)
            .map_err(|e| InvalidSchedule::Encode(e.to_string()))?
            .len();
        if size > MAX_SCHEDULE_BYTES {
            return Err(InvalidSchedule::TooLarge {
                size,
                max: MAX_SCHEDULE_BYTES,
            });
        }
        Ok(schedule)
    }
}

/// Refuses a template whose jobs would fail [`Job::validate`]: the job for the
/// longest id this schedule can derive (a `trigger`'s) is checked.
fn check_template(schedule: &Schedule, now: DateTime<Utc>) -> Result<(), InvalidJob> {
    let longest_id = plan::manual_job_id(&schedule.id);
    plan::job_for(schedule, &longest_id, now, now).validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job::new("echo", b"{}".to_vec())
    }

    fn every_second() -> ScheduleSpec {
        ScheduleSpec::every(Duration::from_secs(1), job())
    }

    #[test]
    fn ids_are_checked_as_keys() {
        let now = Utc::now();
        for bad in ["", "a b", "a*", "a>", "a.b", ".a", "a\n", "ä"] {
            assert_eq!(
                every_second().id(bad).build(now),
                Err(InvalidSchedule::BadId(bad.to_string())),
                "{bad:?}"
            );
        }
        let huge = "a".repeat(10 * 1024);
        assert!(matches!(
            every_second().id(huge.as_str()).build(now),
            Err(InvalidSchedule::BadId(_))
        ));
        let longest = "a".repeat(MAX_SCHEDULE_ID_LEN);
        assert!(every_second().id(longest.as_str()).build(now).is_ok());
        assert!(
            every_second()
                .id("a".repeat(MAX_SCHEDULE_ID_LEN + 1))
                .build(now)
                .is_err()
        );
        let generated = every_second().build(now).expect("a generated id is valid");
        assert!(is_valid_schedule_id(&generated.id));
    }

    #[test]
    fn cadences_are_checked() {
        let now = Utc::now();
        for short in [Duration::ZERO, Duration::from_millis(999)] {
            assert!(matches!(
                ScheduleSpec::every(short, job()).build(now),
                Err(InvalidSchedule::IntervalTooShort(_))
            ));
        }
        assert!(matches!(
            ScheduleSpec::every(Duration::from_millis(1_500), job()).build(now),
            Err(InvalidSchedule::IntervalNotWholeSeconds(_))
        ));
        assert!(matches!(
            every_second().tz("Europe/Berlin").build(now),
            Err(InvalidSchedule::TimeZoneWithoutCron)
        ));
        assert!(matches!(
            ScheduleSpec::cron("0 61 * * *", job()).build(now),
            Err(InvalidSchedule::BadCron { .. })
        ));
        assert!(matches!(
            ScheduleSpec::cron("0 * * * *", job())
                .tz("Nowhere/City")
                .build(now),
            Err(InvalidSchedule::UnknownTimeZone(_))
        ));
        assert!(matches!(
            ScheduleSpec::cron("0 0 0 30 2 *", job()).build(now),
            Err(InvalidSchedule::NeverFires(_) | InvalidSchedule::BadCron { .. })
        ));
        assert_eq!(
            every_second().repeat(0).build(now),
            Err(InvalidSchedule::ZeroRepeat)
        );
        assert_eq!(
            every_second().catch_up(0).build(now),
            Err(InvalidSchedule::CatchUpLimit(0))
        );
        assert_eq!(
            every_second().catch_up(MAX_CATCH_UP_LIMIT + 1).build(now),
            Err(InvalidSchedule::CatchUpLimit(MAX_CATCH_UP_LIMIT + 1))
        );
    }

    #[test]
    fn templates_are_checked() {
        let now = Utc::now();
        let bad_queue = job().queue("a b");
        assert!(matches!(
            ScheduleSpec::every(Duration::from_secs(5), bad_queue).build(now),
            Err(InvalidSchedule::Job(InvalidJob::BadName {
                field: "queue",
                ..
            }))
        ));
        let bad_priority = job().priority(42);
        assert!(matches!(
            ScheduleSpec::every(Duration::from_secs(5), bad_priority).build(now),
            Err(InvalidSchedule::Job(InvalidJob::Priority(42)))
        ));
        let big = Job::new("echo", vec![b'x'; MAX_SCHEDULE_BYTES]);
        assert!(matches!(
            ScheduleSpec::every(Duration::from_secs(5), big).build(now),
            Err(InvalidSchedule::TooLarge { .. })
        ));
    }

    #[test]
    fn a_good_spec_becomes_an_active_record() {
        let now = DateTime::from_timestamp(1_000, 500).expect("valid");
        let schedule = ScheduleSpec::cron("*/5 * * * * *", job())
            .tz("Europe/Berlin")
            .id("five")
            .repeat(3)
            .catch_up(4)
            .build(now)
            .expect("valid");
        assert_eq!(schedule.status, ScheduleStatus::Active);
        assert_eq!(schedule.next_run_at.timestamp(), 1_005);
        assert_eq!(schedule.tz.as_deref(), Some("Europe/Berlin"));
        assert_eq!(schedule.missed, MissedPolicy::CatchUp);
        assert_eq!(schedule.catch_up_limit, 4);
        let decoded: Schedule =
            wire::decode(&wire::encode(&schedule).expect("encodes")).expect("decodes");
        assert_eq!(decoded, schedule);
    }
}
