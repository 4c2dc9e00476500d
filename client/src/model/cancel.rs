//! Cancellation requests: the value in the cancellations KV bucket
//! (`jobbox_cancels`, key = job id).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A request to cancel one job. Workers watch the bucket and stop the job if it runs
/// on them; a job that has not started is fenced by the CANCELLED result that
/// `cancel` writes itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// The job to cancel.
    pub job_id: String,
    /// When the cancellation was asked for.
    pub requested_at: DateTime<Utc>,
}
