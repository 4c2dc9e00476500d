//! Test guest: calls `set-output-content-type` with its payload (as lossy UTF-8) and
//! returns `<b>plain</b>`.
//!
//! Expected: a media type is recorded in the result's `content_type`; anything else
//! (empty, 10 KB, a newline, no slash) is ignored with a warning in the job's log and
//! the result says the job's own content type.

use jobbox_guest::{Context, Error};

fn content_type(payload: Vec<u8>, ctx: &Context) -> Result<Vec<u8>, Error> {
    let content_type = String::from_utf8(payload)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    ctx.set_output_content_type(&content_type);
    Ok(b"<b>plain</b>".to_vec())
}

jobbox_guest::export_handler!(raw content_type);
