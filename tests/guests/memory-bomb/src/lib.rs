//! Test guest: allocates 1 MiB chunks, touching every byte, and keeps them all.
//!
//! Expected: the store's memory limit refuses a `memory.grow`; the guest's allocator
//! then aborts ("memory allocation of 1048576 bytes failed" on stderr, an
//! `unreachable` trap), unless the limiter traps on the refused grow itself. Either
//! way the worker classifies it as over the memory limit: a final failure.

use std::hint::black_box;

use jobbox_guest::{Context, Error};

/// Size of one allocation.
const CHUNK: usize = 1 << 20;

fn memory_bomb(_payload: Vec<u8>, _ctx: &Context) -> Result<Vec<u8>, Error> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        // Non-zero contents, so that every page really is written.
        chunks.push(black_box(vec![0xA5_u8; CHUNK]));
        black_box(&chunks);
    }
}

jobbox_guest::export_handler!(raw memory_bomb);
