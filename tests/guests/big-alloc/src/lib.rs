//! Test guest: allocates one `Vec` of `bytes` bytes in a single step and writes every
//! byte (input `{"bytes": n}`, default 1 GiB), then succeeds with `{"allocated": n}`.
//!
//! Expected: unlike `memory-bomb`, which creeps up 1 MiB at a time, this asks for the
//! whole amount in one `memory.grow`. Past the job's memory limit the store's limiter
//! refuses that one grow: `memory_limit`, a final failure, and nothing of the
//! requested size is ever reserved for the guest. Under the limit it completes.

use std::hint::black_box;

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// The input, all optional; an empty payload means the defaults.
#[derive(Deserialize)]
#[serde(default)]
struct Params {
    /// How many bytes to allocate at once.
    bytes: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self { bytes: 1 << 30 }
    }
}

/// The output.
#[derive(Serialize)]
struct Allocated {
    /// How many bytes were allocated (and written).
    allocated: usize,
}

fn big_alloc(params: Option<Params>, _ctx: &Context) -> Result<Allocated, Error> {
    let bytes = params.unwrap_or_default().bytes;
    // Non-zero contents, so that every page really is written.
    let buffer = black_box(vec![0xA5_u8; bytes]);
    Ok(Allocated {
        allocated: buffer.len(),
    })
}

jobbox_guest::export_handler!(big_alloc);
