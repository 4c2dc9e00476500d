//! Test guest: grows its linear memory, then scans every byte of it for a secret:
//! input `{"needle_reversed": "terces", "grow_mib": 16, "plant": false}`, output
//! `{"found": false, "found_at": [], "scanned_bytes": n, "memory_bytes": n}`.
//!
//! Expected: completed with `"found": false` — even right after `secret-writer` spread
//! the same secret through its own memory in an earlier job on the same worker. A
//! find means memory leaked from one job's instance into another's.
//!
//! Avoiding false positives: the input carries the needle *byte-reversed* (use a long
//! random ASCII secret, 16 bytes or more, that can't occur by chance in the guest's
//! own code or data), so neither the payload nor anything decoded from it
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
//! simply means less is grown; the scan still covers what there is. With the defaults
//! it scans about 35 MiB, which takes about 250 million fuel (and 25 ms).

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

/// More than `secret-writer` ever touches (8 MiB and change).
fn default_grow_mib() -> u32 {
    16
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
    let mut heap_probe = Vec::<u8>::new();
    // Fallible: under a tight memory limit, scan what there is instead of aborting.
    let _ = heap_probe.try_reserve_exact(HEAP_PROBE_BYTES);
    let heap_probe = black_box(heap_probe);
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

    /// The scan reads memory a `u64` at a time: scanning byte by byte costs several
    /// times the fuel.
    const WORD: usize = 8;
    /// 0x01 in every byte of a word.
    const LOW_BITS: u64 = u64::from_ne_bytes([0x01; WORD]);
    /// 0x80 in every byte of a word.
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; WORD]);

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
        let mut check = |address: usize| {
            if address != own_copy
                && address + needle.len() <= memory_bytes
                && found_at.len() < MAX_REPORTED
                && (0..needle.len()).all(|i| byte_at(address + i) == needle[i])
            {
                found_at.push(address);
            }
        };
        // Addresses 1 to 7 one by one, then word by word: a word is only looked at
        // byte by byte when one of its bytes equals the needle's first byte.
        for address in 1..WORD {
            check(address);
        }
        let first_bytes = u64::from_ne_bytes([needle[0]; WORD]);
        for word_address in (WORD..memory_bytes).step_by(WORD) {
            let x = word_at(word_address) ^ first_bytes;
            // Some byte of `x` is zero (the classic SWAR test).
            if x.wrapping_sub(LOW_BITS) & !x & HIGH_BITS != 0 {
                for address in word_address..word_address + WORD {
                    check(address);
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

    /// The aligned word at `address` in linear memory, which must be a non-zero
    /// multiple of 8 below `memory.size`.
    #[allow(
        unsafe_code,
        reason = "reading all of linear memory is the point of this guest"
    )]
    fn word_at(address: usize) -> u64 {
        // SAFETY: as for `byte_at`; `address` is 8-aligned and non-zero, and memory
        // sizes are multiples of 64 KiB, so all eight bytes are below `memory.size`.
        unsafe { core::ptr::with_exposed_provenance::<u64>(address).read_volatile() }
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
