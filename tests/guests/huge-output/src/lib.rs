//! Test guest: returns `bytes` bytes of output (input `{"bytes": n}`, default 64 MiB).
//!
//! Expected: with the default size, over the output limit: a final failure, with
//! nothing of the output stored. With a small `bytes` it succeeds and returns that
//! many `x` bytes (raw, not JSON), which is how tests probe the exact limit.

use jobbox_guest::{Context, Error};
use serde::Deserialize;

/// The input, all optional; an empty payload means the defaults.
#[derive(Deserialize)]
#[serde(default)]
struct Params {
    /// How many bytes to return.
    bytes: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self { bytes: 64 << 20 }
    }
}

fn huge_output(payload: Vec<u8>, _ctx: &Context) -> Result<Vec<u8>, Error> {
    let params: Params = if payload.is_empty() {
        Params::default()
    } else {
        serde_json::from_slice(&payload)?
    };
    drop(payload);
    Ok(vec![b'x'; params.bytes])
}

jobbox_guest::export_handler!(raw huge_output);
