//! Test guest: holds a 96 MiB zero-initialised static, which the linker places in the
//! component's linear memory, so the memory's *initial* size is above 96 MiB.
//!
//! Expected: a deploy with the default memory ceiling (64 MiB) is refused — every
//! instantiation would fail — and a deploy with a ceiling of 128 MiB succeeds; then the
//! handler runs and returns the static's length as text.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use jobbox_guest::{Context, Error};

/// Bytes of the static: more than the default ceiling, well under 128 MiB.
const BIG: usize = 96 << 20;

/// Zeroed and mutable, so it lands in `.bss`: no bytes in the `.wasm`, only initial
/// pages.
static BLOCK: [AtomicU64; BIG / 8] = [const { AtomicU64::new(0) }; BIG / 8];

fn big_memory_min(_input: Vec<u8>, _ctx: &Context) -> Result<Vec<u8>, Error> {
    let block = black_box(&BLOCK);
    block[block.len() - 1].store(1, Ordering::Relaxed);
    Ok((block.len() * 8).to_string().into_bytes())
}

jobbox_guest::export_handler!(raw big_memory_min);
