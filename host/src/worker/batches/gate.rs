//! The pre-run gate of batch jobs and jobs with dependencies: the one call the
//! per-job path makes into batches. A job of a cancelled batch is recorded CANCELLED
//! without running; a job whose dependencies have not all ended waits (handed back
//! as a message schedule, a growing delay, no delivery counted); a job with a
//! dependency that ended other than COMPLETED is cancelled or failed, by its policy.
//!
//! A job with neither a batch nor dependencies passes with two field checks; a batch
//! job costs one lookup in memory; only dependencies cost reads (one per dependency).

use std::time::Duration;

use async_nats::jetstream::Message;
use chrono::Utc;
use jobbox::{DependencyFailure, ErrorType, Job, JobStatus};

use super::super::Shared;
use super::super::record;
use super::super::verdict::Verdict;
use crate::sandbox::Failure;

/// First wait before a job whose dependencies are unfinished is looked at again.
pub const DEPENDENCY_WAIT: Duration = Duration::from_millis(250);

/// Longest wait between two looks at a job's dependencies.
///
/// Why: bounds how late a job starts after its last dependency ended, while a job
/// waiting on a long one costs one message schedule and a few reads per this period.
pub const MAX_DEPENDENCY_WAIT: Duration = Duration::from_secs(5);

/// How many times a job may find its dependencies unfinished before it ends: at
/// [`MAX_DEPENDENCY_WAIT`] between looks, about the results' lifetime (7 days), past
/// which a dependency's result may be gone and could never be seen.
///
/// Why: a job published around the enqueue checks (raw, or by an old client) may
/// depend on an id that never runs; without a bound it would be put back forever.
/// Counted by the worker on each hand-back, so a job can only shorten its wait.
pub const MAX_DEPENDENCY_CHECKS: u32 =
    (jobbox::layout::RESULTS_TTL.as_secs() / MAX_DEPENDENCY_WAIT.as_secs()) as u32;

/// Whether a job that found its dependencies unfinished `checks` times has waited
/// long enough. Pure.
pub(crate) fn waited_too_long(checks: u32) -> bool {
    checks >= MAX_DEPENDENCY_CHECKS
}

/// What the gate found about a job's dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dependencies {
    /// All COMPLETED (or none): run.
    Met,
    /// Some have not ended (or could not be read): wait.
    Waiting,
    /// This one ended in this status: the job will never run.
    Broken(String, JobStatus),
}

/// Decides from the dependencies' results (`None`: no result yet). Pure.
pub(crate) fn judge(results: &[(String, Option<JobStatus>)]) -> Dependencies {
    let mut waiting = false;
    for (id, status) in results {
        match status {
            Some(JobStatus::Completed) => {}
            Some(status) if status.is_terminal() => {
                return Dependencies::Broken(id.clone(), *status);
            }
            _ => waiting = true,
        }
    }
    if waiting {
        Dependencies::Waiting
    } else {
        Dependencies::Met
    }
}

/// The wait before the `checks`-th look (from 1): doubling from
/// [`DEPENDENCY_WAIT`] up to [`MAX_DEPENDENCY_WAIT`].
pub(crate) fn dependency_wait(checks: u32) -> Duration {
    let doubled = DEPENDENCY_WAIT.saturating_mul(1u32 << checks.saturating_sub(1).min(16));
    doubled.min(MAX_DEPENDENCY_WAIT)
}

/// Runs the gate for an admitted job; returns `true` when it dealt with the message
/// (recorded or handed back), `false` when the job should run now.
pub(in crate::worker) async fn gate(
    shared: &Shared,
    message: &Message,
    job: &Job,
    sequence: u64,
    ack_wait: Duration,
) -> bool {
    if job
        .batch_id
        .as_deref()
        .is_some_and(|batch| shared.batches.cancel_requested(batch))
    {
        let failure = Failure::new(ErrorType::Cancelled, "the job's batch was cancelled");
        record::end_unrun(shared, message, job, ack_wait, failure, Verdict::Cancel).await;
        return true;
    }
    if job.depends_on.is_empty() {
        return false;
    }
    let mut results = Vec::with_capacity(job.depends_on.len());
    for id in &job.depends_on {
        let status = match shared.client.result(id).await {
            Ok(result) => result.map(|r| r.status),
            Err(e) => {
                tracing::debug!(dependency = %id, error = %e, "cannot read a dependency's result");
                None
            }
        };
        results.push((id.clone(), status));
    }
    match judge(&results) {
        Dependencies::Met => false,
        Dependencies::Waiting if waited_too_long(job.dependency_checks) => {
            let unfinished = results
                .iter()
                .find(|(_, status)| !status.is_some_and(JobStatus::is_terminal))
                .map_or("?", |(id, _)| id.as_str());
            let reason = format!(
                "dependency {unfinished} did not end after {} looks (about {} days)",
                job.dependency_checks,
                jobbox::layout::RESULTS_TTL.as_secs() / 86_400
            );
            end_for_dependency(shared, message, job, ack_wait, reason).await;
            true
        }
        Dependencies::Waiting => {
            let mut later = job.clone();
            later.dependency_checks = later.dependency_checks.saturating_add(1);
            let wait = dependency_wait(later.dependency_checks);
            later.scheduled_at = Some(Utc::now() + wait);
            tracing::debug!(?wait, "dependencies not ended; the job waits");
            record::hand_back_until_due(shared, message, &later, sequence, wait).await;
            true
        }
        Dependencies::Broken(id, status) => {
            let reason = format!("dependency {id} ended {}", status.as_str());
            end_for_dependency(shared, message, job, ack_wait, reason).await;
            true
        }
    }
}

/// Ends a job that will never run because of a dependency, by its policy.
async fn end_for_dependency(
    shared: &Shared,
    message: &Message,
    job: &Job,
    ack_wait: Duration,
    reason: String,
) {
    let (failure, verdict) = match job.on_dependency_failure {
        DependencyFailure::Cancel => (Failure::new(ErrorType::Cancelled, reason), Verdict::Cancel),
        DependencyFailure::Fail => (
            Failure::new(ErrorType::DependencyFailed, reason),
            Verdict::Fail,
        ),
    };
    record::end_unrun(shared, message, job, ack_wait, failure, verdict).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(id: &str, status: Option<JobStatus>) -> (String, Option<JobStatus>) {
        (id.to_string(), status)
    }

    #[test]
    fn dependencies_are_judged() {
        assert_eq!(judge(&[]), Dependencies::Met);
        assert_eq!(
            judge(&[dep("a", Some(JobStatus::Completed))]),
            Dependencies::Met
        );
        assert_eq!(
            judge(&[dep("a", Some(JobStatus::Completed)), dep("b", None)]),
            Dependencies::Waiting
        );
        assert_eq!(
            judge(&[dep("a", None), dep("b", Some(JobStatus::Failed))]),
            Dependencies::Broken("b".into(), JobStatus::Failed)
        );
        assert_eq!(
            judge(&[dep("a", Some(JobStatus::Running))]),
            Dependencies::Waiting
        );
    }

    #[test]
    fn waiting_ends_after_a_week_of_looks() {
        assert!(!waited_too_long(0));
        assert!(!waited_too_long(MAX_DEPENDENCY_CHECKS - 1));
        assert!(waited_too_long(MAX_DEPENDENCY_CHECKS));
        assert!(waited_too_long(u32::MAX));
        let week = MAX_DEPENDENCY_WAIT * MAX_DEPENDENCY_CHECKS;
        assert!(week >= jobbox::layout::RESULTS_TTL - MAX_DEPENDENCY_WAIT);
    }

    #[test]
    fn waits_grow_and_stop_growing() {
        assert_eq!(dependency_wait(1), DEPENDENCY_WAIT);
        assert_eq!(dependency_wait(2), DEPENDENCY_WAIT * 2);
        assert_eq!(dependency_wait(100), MAX_DEPENDENCY_WAIT);
        assert_eq!(dependency_wait(u32::MAX), MAX_DEPENDENCY_WAIT);
    }
}
