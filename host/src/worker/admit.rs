//! Whether a fetched job may run: the decisions taken between fetching a message and
//! running its handler. Pure, so every case is a unit test; `dispatch` does the I/O.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobbox::{ErrorType, Job};

use crate::sandbox::Failure;

/// Deliveries a job may use beyond its attempts before it is ended as a poison
/// message: room for hand-backs that are not runs (a worker shutting down, a result
/// that could not be read).
pub const DELIVERY_SLACK: u32 = 10;

/// A job that arrives this close to its `scheduled_at` runs now rather than being
/// handed back for a few milliseconds.
pub const EARLY_TOLERANCE: Duration = Duration::from_millis(50);

/// What to do with a fetched, valid job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Admission {
    /// Run it.
    Run,
    /// It already has a result: run nothing, ack.
    AlreadyFinished,
    /// It is not due yet: hand it back to wait this long, not counted as an attempt.
    NotYetDue(Duration),
    /// End it without running, with this failure recorded as its result.
    End(Failure),
    /// It keeps coming back without ending: dead-letter it with this reason.
    Poison(Failure),
}

/// The attempt a delivery is: the job's own `attempt` is the attempt of its first
/// delivery (1 unless the job was handed back), and each redelivery is one more.
pub(crate) fn attempt_of(job_attempt: u32, delivered: i64) -> u32 {
    let redeliveries = u32::try_from(delivered.saturating_sub(1).max(0)).unwrap_or(u32::MAX);
    job_attempt.max(1).saturating_add(redeliveries)
}

/// Decides what to do with `job`, delivered as attempt `attempt`, given whether it
/// has a result and whether its cancellation was asked for.
pub(crate) fn admit(
    job: &Job,
    attempt: u32,
    has_result: bool,
    cancel_requested: bool,
    now: DateTime<Utc>,
) -> Admission {
    if has_result {
        return Admission::AlreadyFinished;
    }
    let retries = job.max_retries.unwrap_or(jobbox::DEFAULT_MAX_RETRIES);
    let bound = retries.saturating_add(1).saturating_add(DELIVERY_SLACK);
    if attempt > bound {
        return Admission::Poison(Failure::new(
            ErrorType::Internal,
            format!(
                "delivered {attempt} times without ending (at most {bound}: {} attempts and {DELIVERY_SLACK} hand-backs); dead-lettered as a poison message",
                retries.saturating_add(1)
            ),
        ));
    }
    if cancel_requested {
        return Admission::End(Failure::new(
            ErrorType::Cancelled,
            "the job was cancelled before it started",
        ));
    }
    if let Some(at) = job.scheduled_at
        && let Ok(wait) = (at - now).to_std()
        && wait > EARLY_TOLERANCE
    {
        return Admission::NotYetDue(wait);
    }
    Admission::Run
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job::new("echo", Vec::new())
    }

    #[test]
    fn attempts_count_deliveries_from_the_jobs_own_attempt() {
        assert_eq!(attempt_of(1, 1), 1);
        assert_eq!(attempt_of(1, 3), 3);
        assert_eq!(attempt_of(3, 1), 3, "a handed-back job keeps its attempt");
        assert_eq!(attempt_of(0, 0), 1);
        assert_eq!(attempt_of(u32::MAX, i64::MAX), u32::MAX);
        assert_eq!(attempt_of(1, -5), 1);
    }

    #[test]
    fn a_result_wins_over_everything() {
        let late = job().delay(Duration::from_secs(60));
        assert_eq!(
            admit(&late, 1_000, true, true, Utc::now()),
            Admission::AlreadyFinished
        );
    }

    #[test]
    fn a_job_that_keeps_coming_back_ends() {
        let j = job().max_retries(2);
        assert_eq!(admit(&j, 13, false, false, Utc::now()), Admission::Run);
        let Admission::Poison(failure) = admit(&j, 14, false, false, Utc::now()) else {
            panic!("poison");
        };
        assert!(failure.message.contains("poison"), "{}", failure.message);
        assert!(!failure.retryable);
        // A hostile max_retries cannot overflow the bound.
        let j = job().max_retries(u32::MAX);
        assert_eq!(
            admit(&j, u32::MAX, false, false, Utc::now()),
            Admission::Run
        );
    }

    #[test]
    fn cancelled_jobs_end_without_running() {
        let Admission::End(failure) = admit(&job(), 1, false, true, Utc::now()) else {
            panic!("cancelled");
        };
        assert_eq!(failure.error_type, ErrorType::Cancelled);
    }

    #[test]
    fn early_jobs_wait_and_nearly_due_ones_run() {
        let now = Utc::now();
        let early = job().scheduled_at(now + chrono::TimeDelta::seconds(5));
        let Admission::NotYetDue(wait) = admit(&early, 1, false, false, now) else {
            panic!("early");
        };
        assert!(wait > Duration::from_secs(4));
        let nearly = job().scheduled_at(now + chrono::TimeDelta::milliseconds(10));
        assert_eq!(admit(&nearly, 1, false, false, now), Admission::Run);
        let past = job().scheduled_at(now - chrono::TimeDelta::seconds(5));
        assert_eq!(admit(&past, 1, false, false, now), Admission::Run);
    }
}
