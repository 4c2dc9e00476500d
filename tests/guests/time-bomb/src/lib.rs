//! Test guest: sleeps `sleep_ms` milliseconds with `std::thread::sleep` (input
//! `{"sleep_ms": n}`, default one hour), then succeeds with `{"slept_ms": n}`.
//!
//! Expected: ended at the job's wall-clock deadline as a timeout, a final failure. The
//! sleep is a host call (`wasi:clocks/monotonic-clock` `subscribe-duration` and
//! `wasi:io/poll` `poll`), and a guest blocked in the host runs no wasm code: neither
//! fuel nor epoch interruption can stop it there. The worker must bound the call
//! itself (e.g. run it async under a timeout, so the pending poll is dropped at the
//! deadline). With a short `sleep_ms` it completes normally.

use std::time::{Duration, Instant};

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// The input, all optional; an empty payload means the defaults.
#[derive(Deserialize)]
#[serde(default)]
struct Params {
    /// How long to sleep, in milliseconds.
    sleep_ms: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            sleep_ms: 60 * 60 * 1000,
        }
    }
}

/// The output.
#[derive(Serialize)]
struct Slept {
    /// How long the sleep took, as measured by the guest.
    slept_ms: u64,
}

fn time_bomb(params: Option<Params>, _ctx: &Context) -> Result<Slept, Error> {
    let sleep_ms = params.unwrap_or_default().sleep_ms;
    jobbox_guest::info!("sleeping {sleep_ms} ms");
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(sleep_ms));
    Ok(Slept {
        slept_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

jobbox_guest::export_handler!(time_bomb);
