//! The scratch area on the host: `<root>/<worker>.lock` and `<root>/<worker>/<job>/`.
//!
//! Every worker (every [`ScratchArea`]) holds an exclusive lock on its own
//! `<worker>.lock` for as long as it lives; the kernel drops the lock when the
//! process dies, `kill -9` included. Opening an area first sweeps the root: a
//! `<worker>` directory whose lock can be taken belongs to a dead worker and is
//! removed, one whose lock is held is left alone. So workers may share a root, and
//! one that starts never touches a live one's jobs.
//!
//! The lock file is created under a temporary name, locked, and only then renamed
//! into place, and the worker's directory is made after that: a sweeper never sees
//! a lock file that is not yet locked, and a `<worker>` directory without a lock file
//! can only be the remains of a sweep that was itself interrupted.

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;

/// Default ceiling on the bytes any one job's scratch directory may hold: 1 GiB.
///
/// Why: a route asks for what it needs at deploy; the worker's operator caps it
/// (`--max-scratch`) so that `concurrency` jobs at their ceiling fit on the disk.
pub const DEFAULT_MAX_SCRATCH_BYTES: u64 = 1 << 30;

/// Default ceiling on the entries any one job may create: 100,000.
///
/// Why: each entry costs an inode and directory space; 100,000 per job is far more
/// than temporary files need and far fewer than a filesystem has inodes.
pub const DEFAULT_MAX_SCRATCH_FILES: u64 = 100_000;

/// Mode of every directory jobbox makes for scratch: the worker's user only.
const PRIVATE: u32 = 0o700;

/// Suffix of a worker's lock file.
const LOCK_SUFFIX: &str = ".lock";

/// Suffix of a lock file that is still being set up.
const LOCKING_SUFFIX: &str = ".locking";

/// Prefix of a worker directory's name.
const WORKER_PREFIX: &str = "w-";

/// Age after which a half-made lock file (its creator died between creating and
/// renaming it) is removed: far longer than the microseconds the setup takes.
const STALE_LOCKING: Duration = Duration::from_secs(60);

/// Attempts at removing a job's directory before giving up (and leaving it to the
/// next start's sweep): a removal can race with a write still finishing on a
/// blocking thread.
const REMOVE_ATTEMPTS: u32 = 3;

/// The most scratch the worker grants any one job, whatever its route asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScratchCaps {
    /// Bytes a job may add to files, at most.
    pub max_bytes: u64,
    /// Entries a job may create, at most.
    pub max_files: u64,
}

impl Default for ScratchCaps {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_SCRATCH_BYTES,
            max_files: DEFAULT_MAX_SCRATCH_FILES,
        }
    }
}

/// One worker's share of a scratch root: its locked directory, and the caps.
#[derive(Debug)]
pub struct ScratchArea {
    root: PathBuf,
    dir: PathBuf,
    lock_path: PathBuf,
    /// Held (locked) for the area's lifetime.
    _lock: File,
    caps: ScratchCaps,
    next_job: AtomicU64,
}

/// A job's scratch directory; removed, with all it holds, when dropped.
#[derive(Debug)]
pub struct JobScratch {
    path: PathBuf,
}

impl JobScratch {
    /// The directory on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for JobScratch {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// This process's effective user id, where the platform says (Linux's `/proc`).
fn own_uid() -> Option<u32> {
    fs::metadata("/proc/self").map(|m| m.uid()).ok()
}

/// The default scratch root: a directory of this user's under the system temp dir.
pub fn default_root() -> PathBuf {
    let user = own_uid()
        .map(|uid| uid.to_string())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "user".into());
    std::env::temp_dir().join(format!("jobbox-scratch-{user}"))
}

impl ScratchArea {
    /// Opens (creating if needed, mode 0700) the scratch root `root`, removes what
    /// dead workers left in it, and sets up this worker's own locked directory.
    pub fn open(root: &Path, caps: ScratchCaps) -> anyhow::Result<Self> {
        make_private_root(root)?;
        let swept = sweep(root)
            .with_context(|| format!("failed to sweep the scratch root {}", root.display()))?;
        if swept > 0 {
            tracing::info!(root = %root.display(), swept, "removed scratch left by dead workers");
        }
        let id = format!(
            "{WORKER_PREFIX}{}-{}",
            std::process::id(),
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let lock_path = root.join(format!("{id}{LOCK_SUFFIX}"));
        let lock = create_lock(root, &id, &lock_path)
            .with_context(|| format!("failed to lock {}", lock_path.display()))?;
        let dir = root.join(&id);
        DirBuilder::new()
            .mode(PRIVATE)
            .create(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
            dir,
            lock_path,
            _lock: lock,
            caps,
            next_job: AtomicU64::new(0),
        })
    }

    /// The scratch root this area is in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This worker's directory, which holds its jobs' directories.
    pub fn worker_dir(&self) -> &Path {
        &self.dir
    }

    /// The most scratch any one job gets here.
    pub fn caps(&self) -> ScratchCaps {
        self.caps
    }

    /// A fresh, empty directory (mode 0700) for one job. Its name is a counter, never
    /// anything the job chose, and never reused by this area.
    pub fn job_dir(&self) -> io::Result<JobScratch> {
        loop {
            let n = self.next_job.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.join(format!("job-{n}"));
            match DirBuilder::new().mode(PRIVATE).create(&path) {
                Ok(()) => return Ok(JobScratch { path }),
                // Only if something else wrote into our directory: take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for ScratchArea {
    fn drop(&mut self) {
        remove_tree(&self.dir);
        // The lock goes last: until then no sweeper takes this worker for dead.
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Creates `root` (and its parents) if missing and makes it a private directory:
/// mode 0700, owned by this process's user; a root someone else made is refused
/// (under a shared `/tmp` another user could have made it first).
fn make_private_root(root: &Path) -> anyhow::Result<()> {
    if let Some(parent) = root.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    match DirBuilder::new().mode(PRIVATE).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e).with_context(|| format!("failed to create {}", root.display()));
        }
    }
    let meta = fs::symlink_metadata(root)
        .with_context(|| format!("failed to inspect {}", root.display()))?;
    anyhow::ensure!(
        meta.is_dir(),
        "the scratch root {} is not a directory (a symlink is refused too)",
        root.display()
    );
    if let Some(uid) = own_uid() {
        anyhow::ensure!(
            meta.uid() == uid,
            "the scratch root {} belongs to user {}, not to this worker's user {uid}",
            root.display(),
            meta.uid()
        );
    }
    fs::set_permissions(root, fs::Permissions::from_mode(PRIVATE)).with_context(|| {
        format!(
            "failed to make the scratch root {} private (mode 0700): is it another user's?",
            root.display()
        )
    })?;
    Ok(())
}

/// Creates `<root>/.<id>.locking`, locks it and renames it to `lock_path`.
fn create_lock(root: &Path, id: &str, lock_path: &Path) -> io::Result<File> {
    let temporary = root.join(format!(".{id}{LOCKING_SUFFIX}"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&temporary)?;
    file.try_lock().map_err(|e| match e {
        TryLockError::Error(e) => e,
        TryLockError::WouldBlock => io::Error::other("a fresh lock file was already locked"),
    })?;
    fs::rename(&temporary, lock_path)?;
    Ok(file)
}

/// Removes what dead workers left under `root`; returns how many workers' remains
/// were removed. Live workers' directories (their locks are held) are left alone.
pub fn sweep(root: &Path) -> io::Result<usize> {
    let mut swept = 0;
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        if let Some(id) = name.strip_suffix(LOCK_SUFFIX) {
            if !id.starts_with(WORKER_PREFIX) || holder_alive(&path, None)? {
                continue;
            }
            remove_tree(&root.join(id));
            let _ = fs::remove_file(&path);
            swept += 1;
        } else if name.starts_with(WORKER_PREFIX) {
            // A worker directory without its lock file: the remains of a sweep that
            // died between removing the two (a live worker locks first).
            if !root.join(format!("{name}{LOCK_SUFFIX}")).exists() {
                remove_tree(&path);
                swept += 1;
            }
        } else if name.ends_with(LOCKING_SUFFIX) && !holder_alive(&path, Some(STALE_LOCKING))? {
            let _ = fs::remove_file(&path);
        }
    }
    Ok(swept)
}

/// Whether the lock on `path` is held by a live process. With `min_age`, a file
/// younger than that counts as held (it may be mid-setup).
fn holder_alive(path: &Path, min_age: Option<Duration>) -> io::Result<bool> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        // Removed meanwhile by another sweeper or its worker: nothing to do.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    if let Some(min_age) = min_age {
        let young = file
            .metadata()?
            .modified()?
            .elapsed()
            .map_or(true, |age| age < min_age);
        if young {
            return Ok(true);
        }
    }
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Removes `path` and everything under it, never following a symlink out of it
/// (`std::fs::remove_dir_all` removes links, not their targets).
fn remove_tree(path: &Path) {
    for attempt in 1..=REMOVE_ATTEMPTS {
        match fs::remove_dir_all(path) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) if attempt == REMOVE_ATTEMPTS => {
                tracing::warn!(path = %path.display(), error = %e,
                    "failed to remove a scratch directory; the next worker start sweeps it");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> ScratchCaps {
        ScratchCaps::default()
    }

    #[test]
    fn job_dirs_are_private_fresh_and_removed_on_drop() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("scratch");
        let area = ScratchArea::open(&root, caps()).expect("open");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&root), PRIVATE);
        let a = area.job_dir().expect("job dir");
        let b = area.job_dir().expect("job dir");
        assert_ne!(a.path(), b.path());
        assert_eq!(mode(a.path()), PRIVATE);
        fs::create_dir(a.path().join("sub")).expect("mkdir");
        fs::write(a.path().join("sub/f"), b"x").expect("write");
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        drop(b);
        let dir = area.worker_dir().to_path_buf();
        drop(area);
        assert!(!dir.exists());
        assert_eq!(fs::read_dir(&root).expect("list").count(), 0);
    }

    #[test]
    fn a_sweep_leaves_live_workers_alone_and_removes_dead_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let live = ScratchArea::open(root, caps()).expect("open");
        let job = live.job_dir().expect("job dir");
        fs::write(job.path().join("f"), b"x").expect("write");
        // A dead worker: a lock file nobody holds, its directory with a job in it.
        fs::create_dir_all(root.join("w-1-dead/job-0")).expect("mkdir");
        fs::write(root.join("w-1-dead.lock"), b"").expect("lock file");
        // The remains of an interrupted sweep: a worker directory without a lock.
        fs::create_dir_all(root.join("w-2-orphan/job-0")).expect("mkdir");
        // Not jobbox's: left alone.
        fs::write(root.join("other"), b"").expect("other");
        let second = ScratchArea::open(root, caps()).expect("open");
        assert!(!root.join("w-1-dead").exists());
        assert!(!root.join("w-1-dead.lock").exists());
        assert!(!root.join("w-2-orphan").exists());
        assert!(root.join("other").exists());
        assert!(
            job.path().join("f").exists(),
            "a live worker's job was touched"
        );
        drop(second);
        assert!(job.path().join("f").exists());
    }

    #[test]
    fn a_symlink_as_root_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("elsewhere");
        fs::create_dir(&target).expect("mkdir");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(ScratchArea::open(&link, caps()).is_err());
    }
}
