//! From a job's outcome to what happens next: the one place that maps outcomes to
//! result status and ack kind. Pure, so every case is a unit test.

use std::time::Duration;

use jobbox::{ErrorType, JobStatus};

use super::backoff::retry_delay;
use crate::sandbox::Failure;

/// What to do with a job after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Record a COMPLETED result, then ack.
    Complete,
    /// Record a final FAILED result, then ack.
    Fail,
    /// Retry later: no result; nak with this delay.
    Retry(Duration),
    /// Retries exhausted: record a DEAD_LETTER result, publish to the DLQ, then ack.
    DeadLetter,
    /// Cancelled: record a CANCELLED result, then ack.
    Cancel,
}

impl Verdict {
    /// The status recorded in the job's result, if this verdict ends the job.
    pub fn final_status(self) -> Option<JobStatus> {
        match self {
            Verdict::Complete => Some(JobStatus::Completed),
            Verdict::Fail => Some(JobStatus::Failed),
            Verdict::DeadLetter => Some(JobStatus::DeadLetter),
            Verdict::Cancel => Some(JobStatus::Cancelled),
            Verdict::Retry(_) => None,
        }
    }
}

/// Decides the verdict for attempt `attempt` (1-based) of a job allowed
/// `max_retries` retries.
///
/// Only retryable failures are retried; a deterministic failure (out of fuel, a trap,
/// memory limit, ...) would fail the same way again, so it is final at once.
pub fn decide(
    result: Result<(), &Failure>,
    attempt: u32,
    max_retries: u32,
    job_id: &str,
) -> Verdict {
    let Err(failure) = result else {
        return Verdict::Complete;
    };
    if failure.error_type == ErrorType::Cancelled {
        return Verdict::Cancel;
    }
    if !failure.retryable || failure.error_type.is_deterministic() {
        return Verdict::Fail;
    }
    if attempt <= max_retries {
        Verdict::Retry(retry_delay(attempt, job_id))
    } else {
        Verdict::DeadLetter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retryable() -> Failure {
        Failure::new(ErrorType::GuestError, "upstream down").retryable(true)
    }

    #[test]
    fn success_completes() {
        assert_eq!(decide(Ok(()), 1, 3, "j"), Verdict::Complete);
    }

    #[test]
    fn retryable_failures_retry_until_exhausted() {
        let failure = retryable();
        for attempt in 1..=3 {
            assert!(matches!(
                decide(Err(&failure), attempt, 3, "j"),
                Verdict::Retry(_)
            ));
        }
        assert_eq!(decide(Err(&failure), 4, 3, "j"), Verdict::DeadLetter);
        assert_eq!(decide(Err(&failure), 1, 0, "j"), Verdict::DeadLetter);
    }

    #[test]
    fn deterministic_failures_are_final_even_if_marked_retryable() {
        let failure = Failure::new(ErrorType::OutOfFuel, "x").retryable(true);
        assert_eq!(decide(Err(&failure), 1, 3, "j"), Verdict::Fail);
        let failure = Failure::new(ErrorType::GuestError, "bad input");
        assert_eq!(decide(Err(&failure), 1, 3, "j"), Verdict::Fail);
    }

    #[test]
    fn cancellation_is_its_own_end() {
        let failure = Failure::new(ErrorType::Cancelled, "x");
        assert_eq!(decide(Err(&failure), 1, 3, "j"), Verdict::Cancel);
        assert_eq!(Verdict::Cancel.final_status(), Some(JobStatus::Cancelled));
        assert_eq!(Verdict::Retry(Duration::ZERO).final_status(), None);
    }
}
