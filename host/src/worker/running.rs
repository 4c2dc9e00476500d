//! The jobs running on this worker, by id: what a cancellation broadcast stops and
//! what the heartbeat reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::sandbox::CancelFlag;

/// Job id → its cancel flag, for the jobs running now.
#[derive(Debug, Default, Clone)]
pub struct RunningJobs {
    jobs: Arc<Mutex<HashMap<String, CancelFlag>>>,
}

impl RunningJobs {
    /// Registers a running job until the returned guard is dropped.
    pub fn enter(&self, job_id: &str, cancel: CancelFlag) -> RunningGuard {
        self.lock().insert(job_id.to_string(), cancel);
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
        self.jobs.lock().remove(&self.job_id);
    }
}
