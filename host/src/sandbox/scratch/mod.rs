//! Per-job scratch directories: where they live, how they are cleaned up, and the
//! quota in front of every write.
//!
//! - [`area`]: the worker's scratch area (`--scratch-dir`), one locked directory per
//!   worker inside it, one fresh directory per job, removed when the job's guard is
//!   dropped; leftovers of dead workers are swept when an area is opened.
//! - [`fs`]: `wasi:filesystem/types` for the guest: wasmtime-wasi's implementation
//!   (paths resolved inside the preopen by cap-std's `cap-primitives`), with the
//!   calls that add bytes or entries charged to the job's [`ScratchQuota`] first,
//!   and hard links refused.
//! - [`stream`]: the output streams of scratch files, charged the same way.
//! - [`quota`]: the counts.

pub mod area;
pub mod fs;
mod quota;
mod stream;

pub use area::{JobScratch, ScratchArea, ScratchCaps};
pub use quota::{DIRECTORY_BYTES, Exceeded, ScratchQuota};

/// Where a guest finds its scratch directory.
pub const GUEST_SCRATCH_DIR: &str = "/tmp";

/// `ENOSPC`, which wasmtime-wasi reports to the guest as `insufficient-space`
/// (the same number on Linux and macOS).
const ENOSPC: i32 = 28;

/// The host error a refused stream write carries: wasmtime-wasi's
/// `filesystem-error-code` turns it into `insufficient-space` for the guest.
fn io_error(exceeded: Exceeded) -> std::io::Error {
    match exceeded {
        Exceeded::Bytes | Exceeded::Files => std::io::Error::from_raw_os_error(ENOSPC),
    }
}
