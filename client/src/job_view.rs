//! A job's state as the events stream and the results bucket tell it.
//!
//! Nothing on the per-job path writes a separate state record: the result (written
//! once, with `create`) and the events (one per step) already say everything `jobbox
//! status` shows. [`derive_state`] reads them back into a [`JobState`]; it is pure, so
//! every case is a unit test.

use crate::model::{JobEvent, JobEventType, JobResult, JobState, JobStatus};

/// The state of job `job_id` from its events (in stream order) and its result.
/// `None` when neither exists (the job is unknown).
pub(crate) fn derive_state(
    job_id: &str,
    events: &[JobEvent],
    result: Option<&JobResult>,
    cancel_requested: bool,
) -> Option<JobState> {
    let first = events.first();
    if first.is_none() && result.is_none() {
        return None;
    }
    let created_at = events
        .iter()
        .find(|e| e.event_type == JobEventType::Enqueued)
        .or(first)
        .map(|e| e.timestamp)
        .or(result.map(|r| r.start_time))?;
    let mut state = JobState {
        job_id: job_id.to_string(),
        queue: first.map(|e| e.queue.clone()).unwrap_or_default(),
        job_type: first.map(|e| e.job_type.clone()).unwrap_or_default(),
        status: JobStatus::Pending,
        attempts: 0,
        created_at,
        updated_at: created_at,
        scheduled_at: None,
        started_at: None,
        finished_at: None,
        cancel_requested,
        last_error: None,
        worker_id: None,
    };
    let mut scheduled = false;
    for event in events {
        state.updated_at = state.updated_at.max(event.timestamp);
        match event.event_type {
            // A replayed job starts over.
            JobEventType::Enqueued => {
                state.status = JobStatus::Pending;
                state.attempts = 0;
            }
            JobEventType::Scheduled => {
                scheduled = true;
                state.scheduled_at = event
                    .details
                    .get("scheduled_at")
                    .and_then(|at| at.parse().ok());
            }
            JobEventType::Started => {
                state.status = JobStatus::Running;
                state.attempts = state.attempts.max(event.attempt.unwrap_or(1));
                state.started_at = Some(event.timestamp);
                state.worker_id.clone_from(&event.worker_id);
            }
            JobEventType::RetryScheduled => {
                state.status = JobStatus::Retrying;
                state.last_error.clone_from(&event.error_message);
            }
            _ => {}
        }
    }
    if state.status == JobStatus::Pending && scheduled {
        state.status = JobStatus::Scheduled;
    }
    if let Some(result) = result {
        state.status = result.status;
        state.attempts = state.attempts.max(result.attempts);
        state.started_at = state.started_at.or(Some(result.start_time));
        state.finished_at = Some(result.finish_time);
        state.updated_at = state.updated_at.max(result.finish_time);
        state.last_error.clone_from(&result.error);
        if !result.worker_id.is_empty() {
            state.worker_id = Some(result.worker_id.clone());
        }
    } else if cancel_requested && state.status != JobStatus::Running {
        state.status = JobStatus::Cancelled;
    }
    Some(state)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{ErrorType, Job};

    fn job() -> Job {
        Job::new("echo", Vec::new()).queue("q")
    }

    fn event(kind: JobEventType, job: &Job, attempt: u32) -> JobEvent {
        let mut event = JobEvent::new(kind, job).with_worker("w1");
        event.attempt = Some(attempt);
        event
    }

    fn result(job: &Job, status: JobStatus, attempts: u32) -> JobResult {
        JobResult::failed(job.id.as_str(), ErrorType::GuestError, "boom")
            .with_status(status)
            .with_attempts(attempts)
            .with_worker("w2")
    }

    #[test]
    fn unknown_without_events_or_result() {
        assert_eq!(derive_state("x", &[], None, false), None);
    }

    #[test]
    fn follows_the_trail() {
        let job = job();
        let mut events = vec![event(JobEventType::Enqueued, &job, 1)];
        let state = derive_state(&job.id, &events, None, false).expect("known");
        assert_eq!(state.status, JobStatus::Pending);
        assert_eq!((state.queue.as_str(), state.attempts), ("q", 0));

        events.push(event(JobEventType::Started, &job, 1));
        let state = derive_state(&job.id, &events, None, false).expect("known");
        assert_eq!((state.status, state.attempts), (JobStatus::Running, 1));
        assert_eq!(state.worker_id.as_deref(), Some("w1"));

        events.push(event(JobEventType::RetryScheduled, &job, 1));
        let state = derive_state(&job.id, &events, None, false).expect("known");
        assert_eq!(state.status, JobStatus::Retrying);

        events.push(event(JobEventType::Started, &job, 2));
        let done = result(&job, JobStatus::DeadLetter, 2);
        let state = derive_state(&job.id, &events, Some(&done), false).expect("known");
        assert_eq!((state.status, state.attempts), (JobStatus::DeadLetter, 2));
        assert_eq!(state.worker_id.as_deref(), Some("w2"));
        assert_eq!(state.last_error.as_deref(), Some("boom"));
        assert!(state.finished_at.is_some());
    }

    #[test]
    fn delayed_and_cancelled() {
        let job = job().delay(Duration::from_secs(60));
        let mut scheduled = event(JobEventType::Scheduled, &job, 1);
        let at = job.scheduled_at.expect("delayed");
        scheduled = scheduled.with_detail("scheduled_at", at.to_rfc3339());
        let events = vec![scheduled, event(JobEventType::Enqueued, &job, 1)];
        let state = derive_state(&job.id, &events, None, false).expect("known");
        assert_eq!(state.status, JobStatus::Scheduled);
        assert_eq!(state.scheduled_at, Some(at));
        let state = derive_state(&job.id, &events, None, true).expect("known");
        assert_eq!(state.status, JobStatus::Cancelled);
        assert!(state.cancel_requested);
    }

    #[test]
    fn a_result_alone_is_enough() {
        let job = job();
        let done = result(&job, JobStatus::Completed, 1);
        let state = derive_state(&job.id, &[], Some(&done), false).expect("known");
        assert_eq!(state.status, JobStatus::Completed);
    }
}
