//! What a tracker knows about one batch's jobs: the final status of each job it saw
//! end, one byte per job. Pure, so the counting rules are unit tests.

use jobbox::{BatchCounts, JobStatus};
use tokio::time::Instant;

/// Final statuses seen, by job index.
#[derive(Debug)]
pub(super) struct Tally {
    /// 0 = not seen, else [`code`] of the status.
    statuses: Vec<u8>,
    counts: BatchCounts,
    /// When a job of the batch was last seen ending (or the tally made).
    pub last_change: Instant,
    /// When the results of the unseen jobs were last read.
    pub last_reconcile: Option<Instant>,
    /// True when counts moved since the last flush to the record.
    pub dirty: bool,
}

impl Tally {
    /// An empty tally of a batch of `jobs` jobs.
    pub fn new(jobs: u64, now: Instant) -> Self {
        Self {
            statuses: vec![0; usize::try_from(jobs).unwrap_or(usize::MAX)],
            counts: BatchCounts::default(),
            last_change: now,
            last_reconcile: None,
            dirty: false,
        }
    }

    /// Records that job `n` ended in `status`; a job seen before, an index out of
    /// range or a status that is not final changes nothing. Returns whether it counted.
    pub fn saw(&mut self, n: u64, status: JobStatus, now: Instant) -> bool {
        let Some(code) = code(status) else {
            return false;
        };
        let Some(slot) = usize::try_from(n)
            .ok()
            .and_then(|i| self.statuses.get_mut(i))
        else {
            return false;
        };
        if *slot != 0 {
            return false;
        }
        *slot = code;
        self.counts.add(status);
        self.last_change = now;
        self.dirty = true;
        true
    }

    /// The counts so far.
    pub fn counts(&self) -> BatchCounts {
        self.counts
    }

    /// True when every job was seen ending.
    pub fn complete(&self) -> bool {
        self.counts.ended() == self.statuses.len() as u64
    }

    /// Indices of the jobs not seen ending yet.
    pub fn unseen(&self) -> Vec<u64> {
        (0u64..)
            .zip(&self.statuses)
            .filter(|(_, code)| **code == 0)
            .map(|(n, _)| n)
            .collect()
    }
}

fn code(status: JobStatus) -> Option<u8> {
    match status {
        JobStatus::Completed => Some(1),
        JobStatus::Failed => Some(2),
        JobStatus::DeadLetter => Some(3),
        JobStatus::Cancelled => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_job_counts_once() {
        let now = Instant::now();
        let mut tally = Tally::new(3, now);
        assert!(tally.saw(0, JobStatus::Completed, now));
        assert!(
            !tally.saw(0, JobStatus::Failed, now),
            "a repeat changes nothing"
        );
        assert!(!tally.saw(3, JobStatus::Completed, now), "out of range");
        assert!(!tally.saw(1, JobStatus::Running, now), "not final");
        assert!(tally.saw(2, JobStatus::DeadLetter, now));
        assert_eq!(tally.unseen(), [1]);
        assert!(!tally.complete());
        assert!(tally.saw(1, JobStatus::Cancelled, now));
        assert!(tally.complete());
        let counts = tally.counts();
        assert_eq!(
            (counts.completed, counts.dead_letter, counts.cancelled),
            (1, 1, 1)
        );
    }
}
