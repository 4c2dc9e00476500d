//! Test guest: logs its payload (as lossy UTF-8 text), reports it as a progress
//! step, and returns the payload unchanged.
//!
//! Expected: tenant text shows up in the result's logs, a PROGRESS event and the
//! output; the dashboard test sends `<script>` through it and checks that the page
//! shows it as text.

use jobbox_guest::{Context, Error};

fn log_echo(payload: Vec<u8>, ctx: &Context) -> Result<Vec<u8>, Error> {
    let text = String::from_utf8_lossy(&payload);
    jobbox_guest::info!("payload: {text}");
    ctx.progress_message(50, "echo", &text);
    Ok(payload)
}

jobbox_guest::export_handler!(raw log_echo);
