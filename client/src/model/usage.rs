//! The resource receipt of one attempt.

use serde::{Deserialize, Serialize};

/// What one attempt of a job used: the resource receipt attached to results, events
/// and dead letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Fuel consumed (≈ wasm instructions executed).
    pub fuel_consumed: u64,
    /// Peak linear memory in bytes.
    pub peak_memory_bytes: u64,
    /// Wall-clock time of the handler call, in microseconds.
    pub wall_time_us: u64,
    /// Bytes of output returned by the handler.
    pub output_bytes: u64,
    /// Bytes of log text written by the handler (including any that were dropped).
    pub log_bytes: u64,
    /// Scratch-directory bytes counted against the job's limit at their highest.
    /// Deleting a file gives nothing back, so this is the total the job added to
    /// files (at least its true peak on disk); 0 without a scratch directory.
    pub peak_scratch_bytes: u64,
    /// Files, directories and symlinks the job created in its scratch directory.
    pub scratch_files: u64,
}
