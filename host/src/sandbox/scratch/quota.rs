//! One job's scratch allowance: bytes added to files and entries created, counted
//! before the filesystem call that would use them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes a new directory is charged: one filesystem block, what an empty directory
/// takes on ext4 and xfs. Files and symlinks are charged their contents instead.
pub const DIRECTORY_BYTES: u64 = 4096;

/// Which allowance a refused operation ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The byte allowance: the guest sees `insufficient-space` (ENOSPC).
    Bytes,
    /// The file-count allowance: the guest sees `quota` (EDQUOT).
    Files,
}

/// A job's scratch allowance and what it has used.
///
/// Both counters only go up (but for a creation that failed and so created nothing):
/// deleting or truncating a file gives nothing back, so
/// the count is an upper bound of what is on disk however the guest interleaves
/// writes, truncations, deletes and files it keeps open after unlinking them.
#[derive(Debug)]
pub struct ScratchQuota {
    max_bytes: u64,
    max_files: u64,
    bytes: AtomicU64,
    files: AtomicU64,
}

impl ScratchQuota {
    /// An allowance of `max_bytes` bytes and `max_files` entries, nothing used.
    pub fn new(max_bytes: u64, max_files: u64) -> Self {
        Self {
            max_bytes,
            max_files,
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
        }
    }

    /// Counts `n` more bytes, or refuses (counting nothing) if that would pass the
    /// allowance.
    pub fn charge_bytes(&self, n: u64) -> Result<(), Exceeded> {
        charge(&self.bytes, n, self.max_bytes).map_err(|()| Exceeded::Bytes)
    }

    /// Counts one more entry and its `bytes`, or refuses (counting nothing).
    pub fn charge_entry(&self, bytes: u64) -> Result<(), Exceeded> {
        charge(&self.files, 1, self.max_files).map_err(|()| Exceeded::Files)?;
        if let Err(e) = self.charge_bytes(bytes) {
            self.files.fetch_sub(1, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    /// Gives back an entry and its `bytes` counted by [`ScratchQuota::charge_entry`]
    /// for a creation that then failed (nothing was created).
    pub fn refund_entry(&self, bytes: u64) {
        let sub = |counter: &AtomicU64, n: u64| {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(n))
            });
        };
        sub(&self.files, 1);
        sub(&self.bytes, bytes);
    }

    /// Bytes counted so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Entries counted so far.
    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }
}

/// Adds `n` to `counter` unless the sum would pass `max` (or overflow).
fn charge(counter: &AtomicU64, n: u64, max: u64) -> Result<(), ()> {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(n).filter(|total| *total <= max)
        })
        .map(drop)
        .map_err(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_stop_at_the_allowance_and_a_refusal_counts_nothing() {
        let quota = ScratchQuota::new(10, 5);
        assert_eq!(quota.charge_bytes(10), Ok(()));
        assert_eq!(quota.charge_bytes(1), Err(Exceeded::Bytes));
        assert_eq!(quota.charge_bytes(0), Ok(()));
        assert_eq!(quota.bytes(), 10);
        assert_eq!(quota.charge_bytes(u64::MAX), Err(Exceeded::Bytes));
        assert_eq!(quota.bytes(), 10);
    }

    #[test]
    fn entries_stop_at_the_allowance_and_carry_their_bytes() {
        let quota = ScratchQuota::new(DIRECTORY_BYTES, 2);
        assert_eq!(quota.charge_entry(0), Ok(()));
        // The byte allowance refuses the second entry: it is not counted either.
        assert_eq!(
            quota.charge_entry(DIRECTORY_BYTES + 1),
            Err(Exceeded::Bytes)
        );
        assert_eq!(quota.files(), 1);
        assert_eq!(quota.charge_entry(DIRECTORY_BYTES), Ok(()));
        assert_eq!(quota.charge_entry(0), Err(Exceeded::Files));
        assert_eq!((quota.files(), quota.bytes()), (2, DIRECTORY_BYTES));
        quota.refund_entry(DIRECTORY_BYTES);
        assert_eq!((quota.files(), quota.bytes()), (1, 0));
        assert_eq!(quota.charge_entry(0), Ok(()));
    }

    #[test]
    fn a_zero_allowance_refuses_everything_but_nothing() {
        let quota = ScratchQuota::new(0, 0);
        assert_eq!(quota.charge_bytes(0), Ok(()));
        assert_eq!(quota.charge_bytes(1), Err(Exceeded::Bytes));
        assert_eq!(quota.charge_entry(0), Err(Exceeded::Files));
    }
}
