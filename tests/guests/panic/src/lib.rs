//! Test guest: panics with the message `guest-panic: deliberate panic`.
//!
//! Expected: a trap, a final failure. Rust panics abort on wasm32-wasip2: the
//! instance traps with `unreachable` (wasmtime `Trap::UnreachableCodeReached`). Before
//! that, the SDK's panic hook appends `panicked at <file>:<line>:<col>: guest-panic:
//! deliberate panic` to the job's log at error level, and the default hook writes the
//! usual `thread '<unnamed>' panicked at ...` message to stderr.

use jobbox_guest::{Context, Error};

fn panic(_payload: Vec<u8>, _ctx: &Context) -> Result<Vec<u8>, Error> {
    panic!("guest-panic: deliberate panic");
}

jobbox_guest::export_handler!(raw panic);
