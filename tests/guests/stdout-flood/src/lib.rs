//! Test guest: prints `bytes` bytes to stdout with `println!` (input `{"bytes": n}`,
//! default 100 MiB, in lines of 1 KiB), then succeeds with `{"printed": n}`.
//!
//! Expected: completed, with stdout captured up to the cap and the rest dropped.
//! `println!` panics if a write fails, so a host whose stdout pipe *errors* past its
//! cap turns this job into a panic trap ("failed printing to stdout"): the host
//! should discard output past the cap rather than fail the write.

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// One printed line, newline included.
const LINE: usize = 1024;

/// The input, all optional; an empty payload means the defaults.
#[derive(Deserialize)]
#[serde(default)]
struct Params {
    /// How many bytes to print, rounded up to whole lines.
    bytes: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self { bytes: 100 << 20 }
    }
}

/// The output.
#[derive(Serialize)]
struct Printed {
    /// How many bytes were printed.
    printed: u64,
}

#[allow(
    clippy::print_stdout,
    reason = "printing to stdout is what this guest is for"
)]
fn stdout_flood(params: Option<Params>, _ctx: &Context) -> Result<Printed, Error> {
    let bytes = params.unwrap_or_default().bytes;
    let line = "o".repeat(LINE - 1);
    let mut printed = 0;
    while printed < bytes {
        println!("{line}");
        printed += LINE as u64;
    }
    Ok(Printed { printed })
}

jobbox_guest::export_handler!(stdout_flood);
