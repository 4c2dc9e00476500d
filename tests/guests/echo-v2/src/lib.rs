//! Test guest: version 2 of echo. Takes the same JSON payload as `examples/echo` and
//! returns it wrapped as `{"v":2,"input":<payload>}`, so a result tells which version
//! ran it (besides its `handler_digest`).
//!
//! Expected: COMPLETED with the wrapped payload, for any JSON payload.

use jobbox_guest::{Context, Error};

/// Wraps `payload` (JSON, taken as is) in `{"v":2,"input":…}`.
fn echo_v2(mut payload: Vec<u8>, _ctx: &Context) -> Result<Vec<u8>, Error> {
    let prefix = br#"{"v":2,"input":"#;
    payload.splice(0..0, prefix.iter().copied());
    payload.push(b'}');
    Ok(payload)
}

jobbox_guest::export_handler!(raw echo_v2);
