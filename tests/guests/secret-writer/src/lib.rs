//! Test guest: writes the secret from `{"secret": "..."}` over and over into an 8 MiB
//! heap allocation that it leaks, and into a 64 KiB static buffer, then succeeds with
//! `{"heap_bytes": n, "static_bytes": n}`.
//!
//! Expected: completed, and nothing of it survives: run `secret-scanner` afterwards
//! (same worker, same or another job type) and it must not find the secret. A fresh
//! instance per job, and a pooling allocator that zeroes reused memory, guarantee it.

use std::hint::black_box;
use std::sync::Mutex;

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// Size of the leaked heap allocation.
const HEAP_BYTES: usize = 8 << 20;

/// Size of the static buffer: it lives in the module's data section, not on the heap.
const STATIC_BYTES: usize = 64 << 10;

static STATIC_BUFFER: Mutex<[u8; STATIC_BYTES]> = Mutex::new([0; STATIC_BYTES]);

/// The input.
#[derive(Deserialize)]
struct Input {
    /// What to spread through memory.
    secret: String,
}

/// The output.
#[derive(Serialize)]
struct Written {
    /// Bytes of the heap filled with copies of the secret.
    heap_bytes: usize,
    /// Bytes of the static buffer filled with copies of the secret.
    static_bytes: usize,
}

/// Fills `buf` with back-to-back copies of `secret` (the last one possibly cut short).
fn fill(buf: &mut [u8], secret: &[u8]) {
    for (byte, s) in buf.iter_mut().zip(secret.iter().cycle()) {
        *byte = *s;
    }
}

fn secret_writer(Input { secret }: Input, _ctx: &Context) -> Result<Written, Error> {
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

    Ok(Written {
        heap_bytes: HEAP_BYTES,
        static_bytes: STATIC_BYTES,
    })
}

jobbox_guest::export_handler!(secret_writer);
