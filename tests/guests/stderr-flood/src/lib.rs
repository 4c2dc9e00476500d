//! Test guest: writes 1 KiB lines to stderr with `eprintln!` until it has written
//! `bytes` bytes (input `{"bytes": n}`), or forever when `bytes` is not given; then
//! succeeds with `{"written": n}`.
//!
//! Expected: the worker keeps the first bytes of stderr and drops the rest, never
//! failing a write (`eprintln!` would panic on a failed write). Forever, the guest
//! ends on its fuel or its deadline like any endless loop, and the tail of stderr
//! kept with the failure stays small.

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// One written line, newline included.
const LINE: usize = 1024;

/// The input, all optional; an empty payload means forever.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Params {
    /// How many bytes to write, rounded up to whole lines; `None` for no end.
    bytes: Option<u64>,
}

/// The output.
#[derive(Serialize)]
struct Written {
    /// How many bytes were written.
    written: u64,
}

fn stderr_flood(params: Option<Params>, _ctx: &Context) -> Result<Written, Error> {
    let limit = params.unwrap_or_default().bytes.unwrap_or(u64::MAX);
    let line = "e".repeat(LINE - 1);
    let mut written = 0;
    while written < limit {
        eprintln!("{line}");
        written += LINE as u64;
    }
    Ok(Written { written })
}

jobbox_guest::export_handler!(stderr_flood);
