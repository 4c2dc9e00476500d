//! Test guest: `secret-writer` and `secret-scanner` in one module. Input
//! `{"write": {"secret": "..."}}` spreads the secret through an 8 MiB leaked heap
//! allocation and a 64 KiB static buffer (output `{"written": n}`);
//! `{"scan": {"needle_reversed": "...", "plant": false}}` scans all of linear memory
//! for it (output `{"found": bool, "found_at": [..], "scanned_bytes": n}`).
//!
//! Why one module: wasmtime's pooling allocator gives an instance the pool slot its
//! own module used last ("module affinity") and, for that case, resets the slot
//! in place rather than starting from a fresh mapping — the path of past advisories
//! (CVE-2022-39393). Two different modules, like `secret-writer` and
//! `secret-scanner`, usually get different slots; two jobs of this one module on a
//! worker running one job at a time get the same slot, so a scan right after a
//! write reads exactly the memory the write filled, after its reset.
//!
//! Expected: a scan never finds the secret (`"found": false`); with `"plant": true`
//! it must find the copy it plants itself (the check that the scan works). The
//! needle travels byte-reversed and the scan skips the guest's own copy, as in
//! `secret-scanner`, whose scanning code this repeats.

use std::hint::black_box;
use std::sync::Mutex;

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// Size of the leaked heap allocation a write fills.
const HEAP_BYTES: usize = 8 << 20;

/// Size of the static buffer a write fills: it lives in the module's data section,
/// which the pool restores from the module's memory image on reset.
const STATIC_BYTES: usize = 64 << 10;

/// How far a scan grows memory first, in MiB: past everything a write touches.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
const GROW_MIB: usize = 16;

/// Size of the never-written heap allocation a scan makes before scanning.
const HEAP_PROBE_BYTES: usize = 16 << 20;

static STATIC_BUFFER: Mutex<[u8; STATIC_BYTES]> = Mutex::new([0; STATIC_BYTES]);

/// The input: one of two modes.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Input {
    /// Spread `secret` through memory.
    Write {
        /// What to spread.
        secret: String,
    },
    /// Look for the byte-reversed needle.
    Scan {
        /// The secret, byte-reversed.
        needle_reversed: String,
        /// Plant a copy first (a self-test: it must be found).
        #[serde(default)]
        plant: bool,
    },
}

/// The output of either mode.
#[derive(Debug, Default, Serialize)]
struct Report {
    /// Bytes written with copies of the secret (write mode).
    written: usize,
    /// Whether the needle was found anywhere but in the guest's own copy (scan mode).
    found: bool,
    /// Where it was found (the first 16 addresses).
    found_at: Vec<usize>,
    /// How many bytes were scanned.
    scanned_bytes: usize,
}

/// Fills `buf` with back-to-back copies of `secret`.
fn fill(buf: &mut [u8], secret: &[u8]) {
    for (byte, s) in buf.iter_mut().zip(secret.iter().cycle()) {
        *byte = *s;
    }
}

fn secret_twin(input: Input, _ctx: &Context) -> Result<Report, Error> {
    match input {
        Input::Write { secret } => {
            let secret = secret.as_bytes();
            if secret.is_empty() {
                return Err(Error::reject("secret must not be empty"));
            }
            let heap: &'static mut [u8] = vec![0_u8; HEAP_BYTES].leak();
            fill(heap, secret);
            black_box(heap);
            let mut buffer = STATIC_BUFFER
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            fill(&mut buffer[..], secret);
            black_box(&mut buffer[..]);
            Ok(Report {
                written: HEAP_BYTES + STATIC_BYTES,
                ..Report::default()
            })
        }
        Input::Scan {
            needle_reversed,
            plant,
        } => {
            let reversed = needle_reversed.as_bytes();
            if reversed.len() < 16 || reversed.iter().eq(reversed.iter().rev()) {
                return Err(Error::reject(
                    "the needle must be 16 bytes or more and not a palindrome",
                ));
            }
            let mut needle = Vec::with_capacity(reversed.len());
            needle.extend(reversed.iter().rev());
            let planted = plant.then(|| black_box(needle.clone()));
            let mut heap_probe = Vec::<u8>::new();
            let _ = heap_probe.try_reserve_exact(HEAP_PROBE_BYTES);
            let heap_probe = black_box(heap_probe);
            // Touch the static buffer so it is not optimized away in scan mode.
            black_box(
                STATIC_BUFFER
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len(),
            );
            let report = scan::scan(&needle);
            drop((planted, heap_probe));
            report
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod scan {
    use core::arch::wasm32;

    use super::{Error, GROW_MIB, Report};

    /// One WebAssembly page.
    const PAGE: usize = 64 << 10;
    /// How many match addresses to report at most.
    const MAX_REPORTED: usize = 16;
    /// The scan reads a `u64` at a time.
    const WORD: usize = 8;
    /// 0x01 in every byte of a word.
    const LOW_BITS: u64 = u64::from_ne_bytes([0x01; WORD]);
    /// 0x80 in every byte of a word.
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; WORD]);

    pub(super) fn scan(needle: &[u8]) -> Result<Report, Error> {
        // `usize::MAX` means the grow was refused (a memory limit): scan what there is.
        let _ = wasm32::memory_grow(0, GROW_MIB * ((1 << 20) / PAGE));
        let memory_bytes = wasm32::memory_size(0) * PAGE;
        let own_copy = needle.as_ptr().addr();
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
            ..Report::default()
        })
    }

    /// The byte at `address` in linear memory, which must be in `1..memory.size`.
    #[allow(
        unsafe_code,
        reason = "reading all of linear memory is the point of this guest"
    )]
    fn byte_at(address: usize) -> u8 {
        // SAFETY: on wasm32 every address below `memory.size` is readable and
        // initialized, and memory never shrinks; address 0 is never read. A volatile
        // read asserts nothing about other references, and the guest is
        // single-threaded.
        unsafe { core::ptr::with_exposed_provenance::<u8>(address).read_volatile() }
    }

    /// The aligned word at `address`, a non-zero multiple of 8 below `memory.size`.
    #[allow(
        unsafe_code,
        reason = "reading all of linear memory is the point of this guest"
    )]
    fn word_at(address: usize) -> u64 {
        // SAFETY: as for `byte_at`; memory sizes are multiples of 64 KiB, so all
        // eight bytes are below `memory.size`.
        unsafe { core::ptr::with_exposed_provenance::<u64>(address).read_volatile() }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod scan {
    use super::{Error, Report};

    pub(super) fn scan(_needle: &[u8]) -> Result<Report, Error> {
        Err(Error::reject("secret-twin only scans wasm32 linear memory"))
    }
}

jobbox_guest::export_handler!(secret_twin);
