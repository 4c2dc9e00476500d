//! Test guest: reports progress in a tight loop for `ms` milliseconds of its own
//! clock (input `{"ms": n}`, default 1000), then succeeds with `{"reports": n}`, the
//! number of progress calls it made.
//!
//! Expected: completed. The worker passes on at most one report per progress interval
//! (100 ms) plus the last one, so the job's PROGRESS events stay few however many
//! hundred thousand reports the guest makes: a handler cannot flood the event stream.

use std::time::{Duration, Instant};

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// Progress calls between two looks at the clock (a clock read is a host call too).
const BURST: u64 = 256;

/// The input, all optional; an empty payload means the defaults.
#[derive(Deserialize)]
#[serde(default)]
struct Params {
    /// How long to keep reporting, in milliseconds.
    ms: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self { ms: 1000 }
    }
}

/// The output.
#[derive(Serialize)]
struct Flooded {
    /// How many progress reports the guest made.
    reports: u64,
}

fn progress_flood(params: Option<Params>, ctx: &Context) -> Result<Flooded, Error> {
    let run_for = Duration::from_millis(params.unwrap_or_default().ms);
    let start = Instant::now();
    let mut reports = 0_u64;
    while start.elapsed() < run_for {
        for _ in 0..BURST {
            let percent = u8::try_from(reports % 100).unwrap_or(0);
            ctx.progress_message(percent, "flood", "progress in a tight loop");
            reports += 1;
        }
    }
    ctx.progress(100, "done");
    Ok(Flooded {
        reports: reports + 1,
    })
}

jobbox_guest::export_handler!(progress_flood);
