//! The jobs running on this worker, by id: what a cancellation broadcast stops and
//! what the heartbeat reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::sandbox::CancelFlag;

/// Job id → its cancel flag, for the jobs running now.
#[derive(Debug, Default, Clone)]
pub struct RunningJobs {
    jobs: Arc<Mutex<HashMap<String, CancelFlag>>>,
    /// Notified when the worker goes from idle to busy or back.
    idle_or_busy: Arc<tokio::sync::Notify>,
}

impl RunningJobs {
    /// Registers a running job until the returned guard is dropped.
    pub fn enter(&self, job_id: &str, cancel: CancelFlag) -> RunningGuard {
        let mut jobs = self.lock();
        let was_idle = jobs.is_empty();
        jobs.insert(job_id.to_string(), cancel);
        drop(jobs);
        if was_idle {
            self.idle_or_busy.notify_one();
        }
        RunningGuard {
            jobs: self.clone(),
            job_id: job_id.to_string(),
        }
    }

    /// Cancels `job_id` if it runs here; returns whether it did.
    pub fn cancel(&self, job_id: &str) -> bool {
        match self.lock().get(job_id) {
            Some(flag) => {
                flag.cancel();
                true
            }
            None => false,
        }
    }

    /// Ids of the jobs running now, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Waits until the worker goes from idle to busy or back (a change since the
    /// last call counts).
    pub async fn idle_or_busy(&self) {
        self.idle_or_busy.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancelFlag>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes its job from [`RunningJobs`] when dropped.
#[derive(Debug)]
pub struct RunningGuard {
    jobs: RunningJobs,
    job_id: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut jobs = self.jobs.lock();
        jobs.remove(&self.job_id);
        let idle = jobs.is_empty();
        drop(jobs);
        if idle {
            self.jobs.idle_or_busy.notify_one();
        }
    }
}

/// The jobs this worker holds a message of, from admission until that message is
/// acked: a second delivery of a held job (a redelivery after a server restart lost
/// the consumer's state, or a second message with the same id) must not run it again.
#[derive(Debug, Default, Clone)]
pub struct HeldJobs {
    ids: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl HeldJobs {
    /// Holds `job_id` until the returned guard is dropped; `None` if it is held
    /// already.
    pub fn try_hold(&self, job_id: &str) -> Option<HeldGuard> {
        let fresh = self
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job_id.to_string());
        fresh.then(|| HeldGuard {
            held: self.clone(),
            job_id: job_id.to_string(),
        })
    }
}

/// Releases its job from [`HeldJobs`] when dropped.
#[derive(Debug)]
pub struct HeldGuard {
    held: HeldJobs,
    job_id: String,
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.held
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.job_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_job_cannot_be_held_twice_until_released() {
        let held = HeldJobs::default();
        let first = held.try_hold("a").expect("free");
        assert!(held.try_hold("a").is_none());
        assert!(held.try_hold("b").is_some());
        drop(first);
        assert!(held.try_hold("a").is_some());
    }
}
