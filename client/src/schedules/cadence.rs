//! When a schedule fires: the ticks of a cron expression in a time zone, or of an
//! interval grid. Pure functions of (cadence, instant): nothing here reads a clock.
//!
//! Cron matching is `croner`'s; time zones are `chrono-tz`'s IANA database. Daylight
//! saving time is handled by evaluating the expression at one fixed UTC offset at a
//! time, from one offset change to the next, so every answer is a real instant
//! strictly after the one asked about:
//!
//! - **Clocks go forward** (a wall-clock hour does not exist): an expression for a fixed
//!   time of day (fixed second, minute and hour, e.g. `0 30 2 * * *`) whose time falls in
//!   the gap fires once, at the first instant after the change (03:00 local); one with
//!   wildcards or steps in those fields (`*/15 * * * *`) skips the times that do not exist.
//! - **Clocks go back** (a wall-clock hour happens twice): a fixed-time expression fires
//!   once, in the first pass; one with wildcards or steps fires at every instant that
//!   matches, in both passes.
//!
//! This is the rule Vixie cron and `croner` itself follow.

use chrono::{DateTime, FixedOffset, Offset, SubsecRound, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use super::InvalidSchedule;

/// The shortest interval between fires.
///
/// Why: ticks are whole seconds (cron's finest field, and the job id carries the tick
/// in seconds), and a sub-second schedule is a loop, not a schedule.
pub const MIN_INTERVAL_SECONDS: u64 = 1;

/// Offset changes crossed at most while looking for one tick.
///
/// Why: real zones change offset at most a few times a year; a tick that needs more
/// than this many is an expression that (almost) never matches.
const MAX_OFFSET_CHANGES: usize = 16;

/// The step at which offsets are sampled to find a change between two instants.
///
/// Why: no zone changes its offset twice within a day, so sampling daily and then
/// bisecting finds every change.
const OFFSET_PROBE: TimeDelta = TimeDelta::days(1);

/// How often a schedule fires.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// A cron expression in a time zone (boxed: a parsed expression is a few hundred
    /// bytes).
    Cron(Box<CronCadence>),
    /// Every `seconds`, on the grid of multiples of `seconds` since the Unix epoch.
    Every {
        /// The interval in seconds (at least [`MIN_INTERVAL_SECONDS`]).
        seconds: u64,
    },
}

/// A parsed cron expression and its time zone.
#[derive(Debug, Clone)]
pub struct CronCadence {
    cron: Cron,
    tz: Tz,
    /// Fixed second, minute and hour (croner's "fixed-time job"): fires once across an
    /// offset change, see the module docs.
    fixed_time: bool,
}

impl Cadence {
    /// Parses `expression` (5 fields, or 6 with seconds first; croner's extensions
    /// `L`, `W`, `#` and names are accepted) in `tz` (an IANA name; none = UTC).
    ///
    /// # Errors
    ///
    /// [`InvalidSchedule::BadCron`], [`InvalidSchedule::UnknownTimeZone`].
    pub fn cron(expression: &str, tz: Option<&str>) -> Result<Self, InvalidSchedule> {
        let tz = match tz {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| InvalidSchedule::UnknownTimeZone(name.to_string()))?,
        };
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(InvalidSchedule::BadCron {
                expression: expression.to_string(),
                reason: format!(
                    "has {fields} fields; expected 5 (minute hour day month weekday) or 6 (seconds first)"
                ),
            });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| InvalidSchedule::BadCron {
                expression: expression.to_string(),
                reason: e.to_string(),
            })?;
        let fixed_time = cron.determine_job_type() == croner::JobType::FixedTime;
        Ok(Self::Cron(Box::new(CronCadence {
            cron,
            tz,
            fixed_time,
        })))
    }

    /// Every `seconds` seconds.
    ///
    /// # Errors
    ///
    /// [`InvalidSchedule::IntervalTooShort`] below [`MIN_INTERVAL_SECONDS`].
    pub fn every(seconds: u64) -> Result<Self, InvalidSchedule> {
        if seconds < MIN_INTERVAL_SECONDS || i64::try_from(seconds).is_err() {
            return Err(InvalidSchedule::IntervalTooShort(
                std::time::Duration::from_secs(seconds),
            ));
        }
        Ok(Self::Every { seconds })
    }

    /// The cadence a stored schedule describes.
    ///
    /// # Errors
    ///
    /// As [`Cadence::cron`] and [`Cadence::every`]; [`InvalidSchedule::NoCadence`] when
    /// the record has neither or both.
    pub fn of(schedule: &crate::Schedule) -> Result<Self, InvalidSchedule> {
        match (&schedule.cron, schedule.interval_seconds) {
            (Some(cron), None) => Self::cron(cron, schedule.tz.as_deref()),
            (None, Some(seconds)) => Self::every(seconds),
            _ => Err(InvalidSchedule::NoCadence),
        }
    }

    /// The first tick strictly after `after`; `None` if there is none (a cron
    /// expression that never matches again).
    #[must_use]
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every { seconds } => {
                let step = i64::try_from(*seconds).ok()?;
                let next = after.timestamp().div_euclid(step).checked_add(1)?;
                DateTime::from_timestamp(next.checked_mul(step)?, 0)
            }
            Self::Cron(cron) => cron.next_after(after),
        }
    }

    /// The next `n` ticks after `after`, in order.
    #[must_use]
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::with_capacity(n);
        let mut at = after;
        while ticks.len() < n {
            let Some(next) = self.next_after(at) else {
                break;
            };
            ticks.push(next);
            at = next;
        }
        ticks
    }
}

impl CronCadence {
    /// See [`Cadence::next_after`].
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Ticks are whole seconds: searching from the second `after` falls in keeps
        // every answer strictly after it.
        let mut from = after.trunc_subsecs(0);
        // The offset the search runs at: the one at `from`, then, after each change
        // crossed, the one after it.
        let mut offset = self.offset_at(from);
        for _ in 0..MAX_OFFSET_CHANGES {
            let local = from.with_timezone(&offset);
            let candidate = self
                .cron
                .find_next_occurrence(&local, false)
                .ok()?
                .with_timezone(&Utc);
            let Some(change) = self.first_change(from, candidate, offset) else {
                return Some(candidate);
            };
            // The candidate was computed at an offset that no longer holds at its
            // instant: go on from the change, at the new offset.
            let new_offset = self.offset_at(change);
            let shift = TimeDelta::seconds(i64::from(
                new_offset.local_minus_utc() - offset.local_minus_utc(),
            ));
            if self.fixed_time && shift > TimeDelta::zero() {
                // Clocks went forward: wall times in [change at old offset, change at
                // new offset) do not exist. A fixed time among them fires at the change.
                let wall = candidate.with_timezone(&offset).naive_local();
                let gap_start = change.with_timezone(&offset).naive_local();
                if wall >= gap_start && wall < gap_start + shift {
                    return Some(change);
                }
            }
            from = if self.fixed_time && shift < TimeDelta::zero() {
                // Clocks went back: the repeated wall times had their fire in the
                // first pass; search from the end of the repeat.
                change - shift - TimeDelta::seconds(1)
            } else {
                change - TimeDelta::seconds(1)
            };
            offset = new_offset;
        }
        None
    }

    /// The zone's UTC offset at `at`.
    fn offset_at(&self, at: DateTime<Utc>) -> FixedOffset {
        self.tz.offset_from_utc_datetime(&at.naive_utc()).fix()
    }

    /// The first instant in `(from, to]` whose offset differs from `offset`, to the
    /// second; `None` if the offset holds throughout.
    fn first_change(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        offset: FixedOffset,
    ) -> Option<DateTime<Utc>> {
        // Sample daily for the first sample with another offset...
        let mut before = from;
        let after = loop {
            let probe = (before + OFFSET_PROBE).min(to);
            if self.offset_at(probe) != offset {
                break probe;
            }
            if probe >= to {
                return None;
            }
            before = probe;
        };
        // ...then bisect between the last sample with `offset` and it.
        let (mut low, mut high) = (before.timestamp(), after.timestamp());
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            let at = DateTime::from_timestamp(mid, 0)?;
            if self.offset_at(at) == offset {
                low = mid;
            } else {
                high = mid;
            }
        }
        DateTime::from_timestamp(high, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test time parses")
            .with_timezone(&Utc)
    }

    fn ticks(cadence: &Cadence, after: &str, n: usize) -> Vec<String> {
        cadence
            .upcoming(utc(after), n)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect()
    }

    fn berlin(expression: &str) -> Cadence {
        Cadence::cron(expression, Some("Europe/Berlin")).expect("valid cron")
    }

    #[test]
    fn intervals_sit_on_an_epoch_grid() {
        let every = Cadence::every(30).expect("valid");
        assert_eq!(
            ticks(&every, "2026-01-01T00:00:10.500Z", 3),
            [
                "2026-01-01T00:00:30+00:00",
                "2026-01-01T00:01:00+00:00",
                "2026-01-01T00:01:30+00:00"
            ]
        );
        // Strictly after: a tick is not its own successor.
        let at = utc("2026-01-01T00:00:30Z");
        assert_eq!(every.next_after(at), Some(utc("2026-01-01T00:01:00Z")));
        assert!(matches!(
            Cadence::every(0),
            Err(InvalidSchedule::IntervalTooShort(_))
        ));
    }

    #[test]
    fn cron_with_seconds_and_without() {
        let five = Cadence::cron("0 */5 * * * *", None).expect("valid");
        assert_eq!(
            ticks(&five, "2026-03-01T10:02:00Z", 2),
            ["2026-03-01T10:05:00+00:00", "2026-03-01T10:10:00+00:00"]
        );
        let minute = Cadence::cron("*/30 * * * *", None).expect("valid");
        assert_eq!(
            ticks(&minute, "2026-03-01T10:02:59.900Z", 1),
            ["2026-03-01T10:30:00+00:00"]
        );
        let every_second = Cadence::cron("* * * * * *", None).expect("valid");
        assert_eq!(
            ticks(&every_second, "2026-03-01T10:02:59.900Z", 2),
            ["2026-03-01T10:03:00+00:00", "2026-03-01T10:03:01+00:00"]
        );
    }

    #[test]
    fn a_time_zone_is_wall_clock_time() {
        // 09:00 in Berlin is 08:00 UTC in winter, 07:00 UTC in summer.
        let nine = berlin("0 0 9 * * *");
        assert_eq!(
            ticks(&nine, "2026-01-10T12:00:00Z", 1),
            ["2026-01-11T08:00:00+00:00"]
        );
        assert_eq!(
            ticks(&nine, "2026-07-10T12:00:00Z", 1),
            ["2026-07-11T07:00:00+00:00"]
        );
        // Across the spring change (2026-03-29, 02:00 CET → 03:00 CEST).
        assert_eq!(
            ticks(&nine, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T08:00:00+00:00",
                "2026-03-29T07:00:00+00:00",
                "2026-03-30T07:00:00+00:00"
            ]
        );
        // A monthly tick computed months ahead lands on the far side's offset.
        let first = berlin("0 0 9 1 * *");
        assert_eq!(
            ticks(&first, "2026-03-15T00:00:00Z", 2),
            ["2026-04-01T07:00:00+00:00", "2026-05-01T07:00:00+00:00"]
        );
        let july = berlin("0 0 9 1 7 *");
        assert_eq!(
            ticks(&july, "2026-01-15T00:00:00Z", 1),
            ["2026-07-01T07:00:00+00:00"]
        );
    }

    #[test]
    fn spring_forward_fixed_time_in_the_gap_fires_once_at_the_change() {
        // 02:30 does not exist in Berlin on 2026-03-29; it fires at 03:00 CEST
        // (01:00 UTC), and at 02:30 CET/CEST on the days around it.
        let half_past_two = berlin("0 30 2 * * *");
        assert_eq!(
            ticks(&half_past_two, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-30T00:30:00+00:00"
            ]
        );
    }

    #[test]
    fn spring_forward_steps_skip_the_missing_hour() {
        // Every 30 minutes: 01:30 CET, then 03:00 CEST; 02:00 and 02:30 do not exist.
        let half_hourly = berlin("0 */30 * * * *");
        assert_eq!(
            ticks(&half_hourly, "2026-03-29T00:00:00Z", 3),
            [
                "2026-03-29T00:30:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-29T01:30:00+00:00"
            ]
        );
    }

    #[test]
    fn fall_back_fixed_time_fires_once_in_the_first_pass() {
        // 2026-10-25: 03:00 CEST → 02:00 CET, so 02:30 happens at 00:30 and 01:30 UTC.
        let half_past_two = berlin("0 30 2 * * *");
        assert_eq!(
            ticks(&half_past_two, "2026-10-24T12:00:00Z", 3),
            [
                "2026-10-25T00:30:00+00:00",
                "2026-10-26T01:30:00+00:00",
                "2026-10-27T01:30:00+00:00"
            ]
        );
    }

    #[test]
    fn fall_back_steps_fire_in_both_passes() {
        let half_hourly = berlin("0 */30 * * * *");
        assert_eq!(
            ticks(&half_hourly, "2026-10-24T23:45:00Z", 6),
            [
                "2026-10-25T00:00:00+00:00", // 02:00 CEST
                "2026-10-25T00:30:00+00:00", // 02:30 CEST
                "2026-10-25T01:00:00+00:00", // 02:00 CET
                "2026-10-25T01:30:00+00:00", // 02:30 CET
                "2026-10-25T02:00:00+00:00", // 03:00 CET
                "2026-10-25T02:30:00+00:00",
            ]
        );
        // Asked from inside the second pass, the answer is still after the question.
        assert_eq!(
            ticks(&half_hourly, "2026-10-25T01:00:00Z", 1),
            ["2026-10-25T01:30:00+00:00"]
        );
    }

    #[test]
    fn new_york_changes_on_its_own_dates() {
        // 2026-03-08 02:00 EST → 03:00 EDT; 2026-11-01 02:00 EDT → 01:00 EST.
        let nine = Cadence::cron("0 9 * * *", Some("America/New_York")).expect("valid");
        assert_eq!(
            ticks(&nine, "2026-03-07T12:00:00Z", 2),
            ["2026-03-07T14:00:00+00:00", "2026-03-08T13:00:00+00:00"]
        );
        let half_past_one = Cadence::cron("30 1 * * *", Some("America/New_York")).expect("valid");
        assert_eq!(
            ticks(&half_past_one, "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"]
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused() {
        for bad in [
            "",
            "* * * *",
            "61 * * * * *",
            "* * * * * * * *",
            "0 0 32 * *",
            "nonsense",
        ] {
            assert!(
                matches!(
                    Cadence::cron(bad, None),
                    Err(InvalidSchedule::BadCron { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            Cadence::cron("0 * * * *", Some("Mars/Olympus_Mons")),
            Err(InvalidSchedule::UnknownTimeZone(_))
        ));
    }
}
