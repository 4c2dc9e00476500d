//! The jobs this worker holds, by id: from admission until their message is acked.
//! A second delivery of a held job (a redelivery after a server restart lost the
//! consumer's state, or a second message with the same id) must not run it again;
//! a held job whose handler runs has a cancel flag, which a cancellation stops; the
//! heartbeat reports them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::sandbox::CancelFlag;

/// Job id → its cancel flag while its handler runs (`None` before and after).
#[derive(Debug, Default, Clone)]
pub struct RunningJobs {
    jobs: Arc<Mutex<HashMap<String, Option<CancelFlag>>>>,
    /// Notified when the worker goes from holding no job to holding one, or back.
    idle_or_busy: Arc<tokio::sync::Notify>,
}

impl RunningJobs {
    /// Holds `job_id` until the returned guard is dropped; `None` if it is held
    /// already.
    pub fn try_hold(&self, job_id: &str) -> Option<HeldGuard> {
        let mut jobs = self.lock();
        if jobs.contains_key(job_id) {
            return None;
        }
        let was_idle = jobs.is_empty();
        jobs.insert(job_id.to_string(), None);
        drop(jobs);
        if was_idle {
            self.idle_or_busy.notify_one();
        }
        Some(HeldGuard {
            jobs: self.clone(),
            job_id: job_id.to_string(),
        })
    }

    /// Cancels `job_id` if its handler runs here; returns whether it did.
    pub fn cancel(&self, job_id: &str) -> bool {
        match self.lock().get(job_id) {
            Some(Some(flag)) => {
                flag.cancel();
                true
            }
            _ => false,
        }
    }

    /// Ids of the jobs held now, sorted.
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<CancelFlag>>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A held job; released from [`RunningJobs`] when dropped.
#[derive(Debug)]
pub struct HeldGuard {
    jobs: RunningJobs,
    job_id: String,
}

impl HeldGuard {
    /// Marks the job's handler as running (`Some`: a cancellation raises the flag)
    /// or not (`None`).
    pub fn set_cancel(&self, cancel: Option<CancelFlag>) {
        if let Some(entry) = self.jobs.lock().get_mut(&self.job_id) {
            *entry = cancel;
        }
    }
}

impl Drop for HeldGuard {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_job_cannot_be_held_twice_until_released() {
        let held = RunningJobs::default();
        let first = held.try_hold("a").expect("free");
        assert!(held.try_hold("a").is_none());
        assert!(held.try_hold("b").is_some());
        assert_eq!(held.ids(), ["a"]);
        drop(first);
        assert!(held.try_hold("a").is_some());
        assert!(held.ids().is_empty());
    }

    #[test]
    fn only_a_running_handler_is_cancelled() {
        let jobs = RunningJobs::default();
        let held = jobs.try_hold("a").expect("free");
        assert!(!jobs.cancel("a"), "not running yet");
        let flag = CancelFlag::default();
        held.set_cancel(Some(flag.clone()));
        assert!(jobs.cancel("a"));
        assert!(flag.is_cancelled());
        held.set_cancel(None);
        assert!(!jobs.cancel("a"), "no longer running");
        assert!(!jobs.cancel("b"));
    }
}
