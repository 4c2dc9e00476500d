//! Test guest: recurses without bound, and not in tail position.
//!
//! Expected: wasmtime's `Trap::StackOverflow` ("call stack exhausted") when the wasm
//! stack reaches the engine's `max_wasm_stack`; a final failure. Each frame keeps its
//! state in wasm locals only, so the limit hit is the engine's stack, not Rust's
//! shadow stack in linear memory (which has no guard page: overflowing that one shows
//! up as an out-of-bounds access or as corruption of the guest's own memory).

use std::hint::black_box;

use jobbox_guest::{Context, Error};

/// The function to recurse into, hidden from the optimizer, so that the recursion can
/// be neither inlined nor turned into a loop.
struct Recurse(fn(u64, &Recurse) -> u64);

fn descend(depth: u64, next: &Recurse) -> u64 {
    // The addition after the call keeps it from being a tail call.
    (next.0)(depth + 1, next).wrapping_add(depth)
}

fn recursion(_payload: Vec<u8>, _ctx: &Context) -> Result<Vec<u8>, Error> {
    let next = Recurse(black_box(descend as fn(u64, &Recurse) -> u64));
    let total = descend(0, &next);
    Ok(black_box(total).to_le_bytes().to_vec())
}

jobbox_guest::export_handler!(raw recursion);
