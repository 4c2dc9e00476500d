//! Test guest: calls the host's `log` import directly, bypassing the SDK (which cuts
//! strings to 64 KiB before they cross), with one string of `bytes` bytes (input
//! `{"bytes": n, "import": "log" | "progress"}`, default 8 MiB through `log`), then
//! succeeds with `{"sent": n}`.
//!
//! Expected: the host caps the bytes one host call may copy out of the guest
//! (`HOSTCALL_BYTES`, 1 MiB): the call fails before the host allocates anything of
//! that size, and the job ends as a final `trap` (trap code `host`). Under the cap
//! the line is cut to the longest log line the worker keeps and the job completes.

use jobbox_guest::bindings::jobbox::handler::host::{self, LogLevel, Progress};
use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// Which import to flood.
#[derive(Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Import {
    /// `log(level, message)`.
    #[default]
    Log,
    /// `report-progress(progress)`, with the string as its message.
    Progress,
}

/// The input, all optional; an empty payload means the defaults.
#[derive(Deserialize)]
#[serde(default)]
struct Params {
    /// Size of the string passed in one call.
    bytes: usize,
    /// Which import gets it.
    import: Import,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            bytes: 8 << 20,
            import: Import::Log,
        }
    }
}

/// The output.
#[derive(Serialize)]
struct Sent {
    /// Bytes passed in the one call.
    sent: usize,
}

fn host_bomb(params: Option<Params>, _ctx: &Context) -> Result<Sent, Error> {
    let params = params.unwrap_or_default();
    let huge = "h".repeat(params.bytes);
    match params.import {
        Import::Log => host::log(LogLevel::Info, &huge),
        Import::Progress => host::report_progress(&Progress {
            percent: 50,
            step: None,
            message: Some(huge),
        }),
    }
    Ok(Sent { sent: params.bytes })
}

jobbox_guest::export_handler!(host_bomb);
