//! The job's scratch directory: a fresh, empty directory per job, when the route
//! grants one (`jobbox handler deploy … --scratch 64MiB --scratch-files 1000`).
//!
//! Use it with `std::fs` like any directory; the worker removes it, with everything
//! in it, when the job ends, however it ends. Nothing in it survives to the next job
//! or a retry, and no other job sees it.
//!
//! ```no_run
//! use std::io::Write as _;
//!
//! fn build(rows: &[&str]) -> std::io::Result<Vec<u8>> {
//!     let dir = jobbox_guest::scratch::dir().ok_or_else(|| {
//!         std::io::Error::other("this route has no scratch directory (deploy with --scratch)")
//!     })?;
//!     let path = dir.join("rows.txt");
//!     let mut file = std::fs::File::create(&path)?;
//!     for row in rows {
//!         // Past the route's size this fails: an error the handler can handle,
//!         // not a trap.
//!         writeln!(file, "{row}")?;
//!     }
//!     drop(file);
//!     std::fs::read(&path)
//! }
//! ```
//!
//! The limits count what a job adds: a write that moves a file's end past its size
//! counts the difference (rewriting in place counts nothing); deleting or truncating
//! a file gives nothing back. Each file, directory or symlink created counts against
//! the file limit (and a directory 4 KiB against the size); past it, creating one
//! fails with "disk quota exceeded" ([`is_full`] says so). A write past the size
//! fails with WASI's `insufficient-space`; `std::fs` reports that one as a generic
//! I/O error (wasi-libc turns every stream error into `EIO`), so treat any failed
//! write as possibly "full". Hard links are refused. Paths are resolved inside the
//! directory: `..`, absolute paths elsewhere and symlinks that lead out fail.

use std::path::Path;

/// Where the scratch directory is, in the guest's view.
pub const DIR: &str = "/tmp";

/// The scratch directory, if this job has one.
#[must_use]
pub fn dir() -> Option<&'static Path> {
    let dir = Path::new(DIR);
    std::fs::metadata(dir)
        .is_ok_and(|m| m.is_dir())
        .then_some(dir)
}

/// Whether an error says the scratch directory is full: the file limit (creating a
/// file or directory) or, where the error code survives (positional writes, raw
/// WASI), the size limit. A `std::fs` write past the size is a plain I/O error.
#[must_use]
pub fn is_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}
