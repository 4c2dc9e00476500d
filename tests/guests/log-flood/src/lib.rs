//! Test guest: logs `lines` lines at info level (input `{"lines": n}`, default
//! 1,000,000), then succeeds with `{"logged": n}`.
//!
//! Expected: completed. The worker keeps lines up to the job's log limit, drops and
//! counts the rest (`Usage::log_bytes`), and never fails the job for logging.

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// The input, all optional; an empty payload means the defaults.
#[derive(Deserialize)]
#[serde(default)]
struct Params {
    /// How many lines to log.
    lines: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self { lines: 1_000_000 }
    }
}

/// The output.
#[derive(Serialize)]
struct Logged {
    /// How many lines were logged.
    logged: u64,
}

fn log_flood(params: Option<Params>, _ctx: &Context) -> Result<Logged, Error> {
    let lines = params.unwrap_or_default().lines;
    for i in 0..lines {
        jobbox_guest::info!("log-flood line {i} of {lines}");
    }
    Ok(Logged { logged: lines })
}

jobbox_guest::export_handler!(log_flood);
