//! Test guest: logs `log_lines` lines of `log_line_bytes` bytes each, then returns
//! exactly `output_bytes` bytes of output (raw `o` bytes, not JSON). Input
//! `{"output_bytes": n, "log_lines": n, "log_line_bytes": n}`, all required.
//!
//! Expected: with everything at the route's ceilings, the job completes and its
//! result — output, logs and all — is still stored: a handler that goes right up to
//! every limit at once must not produce a result NATS cannot carry (which would be
//! redelivered forever). One byte more output than the ceiling is `output_too_large`.

use std::hint::black_box;

use jobbox_guest::{Context, Error};
use serde::Deserialize;

/// The input.
#[derive(Deserialize)]
struct Params {
    /// Exact size of the output.
    output_bytes: usize,
    /// How many log lines to write.
    log_lines: u64,
    /// Size of each log line.
    log_line_bytes: usize,
}

fn max_out(payload: Vec<u8>, _ctx: &Context) -> Result<Vec<u8>, Error> {
    let params: Params = serde_json::from_slice(&payload)?;
    drop(payload);
    let line = "l".repeat(params.log_line_bytes);
    for _ in 0..params.log_lines {
        jobbox_guest::log::info(black_box(&line));
    }
    Ok(vec![b'o'; params.output_bytes])
}

jobbox_guest::export_handler!(raw max_out);
