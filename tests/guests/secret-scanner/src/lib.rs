//! Test guest: grows its linear memory, then scans every byte of it for a secret:
//! input `{"needle_reversed": "terces", "grow_mib": 32, "plant": false}`, output
//! `{"found": false, "found_at": [], "scanned_bytes": n, "memory_bytes": n}`.
//!
//! Expected: completed with `"found": false` — even right after `secret-writer` spread
//! the same secret through its own memory in an earlier job on the same worker. A
//! find means memory leaked from one job's instance into another's.
//!
//! Avoiding false positives: the input carries the needle *byte-reversed* (use an
//! ASCII, non-palindromic secret), so neither the payload nor anything decoded from it
//! holds the needle forwards. The guest reverses it into one exactly-sized allocation
//! (no reallocation leaves partial copies behind) and skips a match at that one
//! address; any other match is a real leak. `"plant": true` makes the guest put one
//! more copy of its own into memory first, which it must then find: the check that a
//! negative result means something.
//!
//! The scan covers all of linear memory from address 1 (address 0 cannot be read
//! without undefined behaviour) to `memory.size`, after `memory.grow` by `grow_mib`
//! MiB and a 16 MiB heap allocation that is never written (memory a pooling allocator
//! may have handed over from an earlier instance). A host memory limit below that
//! simply means less is grown; the scan still covers what there is. It costs about
//! ten wasm instructions per byte: give the job ~1e9 fuel (or set `grow_mib` lower).

use std::hint::black_box;

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// Size of the uninitialized heap allocation made before scanning.
const HEAP_PROBE_BYTES: usize = 16 << 20;

/// The input.
#[derive(Deserialize)]
struct Input {
    /// The secret, byte-reversed.
    needle_reversed: String,
    /// How far to grow linear memory before scanning, in MiB.
    #[serde(default = "default_grow_mib")]
    grow_mib: u32,
    /// Whether to plant a copy of the needle first (a self-test: it must be found).
    #[serde(default)]
    plant: bool,
}

fn default_grow_mib() -> u32 {
    32
}

/// The output.
#[derive(Debug, Serialize)]
struct Report {
    /// Whether the needle was found anywhere but in the guest's own copy.
    found: bool,
    /// Where it was found (the first 16 addresses).
    found_at: Vec<usize>,
    /// How many bytes were scanned.
    scanned_bytes: usize,
    /// The size of linear memory when the scan ran.
    memory_bytes: usize,
}

fn secret_scanner(
    Input {
        needle_reversed,
        grow_mib,
        plant,
    }: Input,
    _ctx: &Context,
) -> Result<Report, Error> {
    let reversed = needle_reversed.as_bytes();
    if reversed.is_empty() {
        return Err(Error::reject("needle_reversed must not be empty"));
    }
    if reversed.iter().eq(reversed.iter().rev()) {
        return Err(Error::reject(
            "the needle must not be a palindrome: the input would contain it",
        ));
    }
    let mut needle = Vec::with_capacity(reversed.len());
    needle.extend(reversed.iter().rev());

    let planted = plant.then(|| black_box(needle.clone()));
    let heap_probe = black_box(Vec::<u8>::with_capacity(HEAP_PROBE_BYTES));
    let report = scan::scan(&needle, grow_mib);
    drop((planted, heap_probe));
    report
}

#[cfg(target_arch = "wasm32")]
mod scan {
    use core::arch::wasm32;

    use super::{Error, Report};

    /// One WebAssembly page.
    const PAGE: usize = 64 << 10;

    /// How many match addresses to report at most.
    const MAX_REPORTED: usize = 16;

    pub(super) fn scan(needle: &[u8], grow_mib: u32) -> Result<Report, Error> {
        let pages = usize::try_from(grow_mib)
            .unwrap_or(usize::MAX)
            .saturating_mul((1 << 20) / PAGE);
        // `usize::MAX` means the grow was refused (a memory limit): scan what there is.
        let _ = wasm32::memory_grow(0, pages);
        let memory_bytes = wasm32::memory_size(0) * PAGE;
        let own_copy = needle.as_ptr().addr();

        // Allocated up front: the scan itself allocates nothing.
        let mut found_at = Vec::with_capacity(MAX_REPORTED);
        let last_start = memory_bytes.saturating_sub(needle.len());
        for address in 1..=last_start {
            if byte_at(address) == needle[0]
                && address != own_copy
                && (1..needle.len()).all(|i| byte_at(address + i) == needle[i])
            {
                found_at.push(address);
                if found_at.len() == MAX_REPORTED {
                    break;
                }
            }
        }
        Ok(Report {
            found: !found_at.is_empty(),
            found_at,
            scanned_bytes: memory_bytes - 1,
            memory_bytes,
        })
    }

    /// The byte at `address` in linear memory, which must be in `1..memory.size`.
    #[allow(
        unsafe_code,
        reason = "reading all of linear memory is the point of this guest"
    )]
    fn byte_at(address: usize) -> u8 {
        // SAFETY: on wasm32 every address below `memory.size` is readable and
        // initialized (memory starts zeroed), and memory never shrinks; address 0, the
        // null pointer, is never read. A raw (volatile) read asserts nothing about other
        // references to the same byte, and the guest is single-threaded.
        unsafe { core::ptr::with_exposed_provenance::<u8>(address).read_volatile() }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod scan {
    use super::{Error, Report};

    pub(super) fn scan(_needle: &[u8], _grow_mib: u32) -> Result<Report, Error> {
        Err(Error::reject(
            "secret-scanner only scans wasm32 linear memory",
        ))
    }
}

jobbox_guest::export_handler!(secret_scanner);
