//! Test guest: fails with `Error::reject("bad input")`, every time.
//!
//! Expected: the WIT `handler-error::reject("bad input")`; the worker records a final
//! failure at once, with no retry, whatever the job's `max_retries`.

use jobbox_guest::{Context, Error};

fn reject(_payload: Vec<u8>, _ctx: &Context) -> Result<Vec<u8>, Error> {
    Err(Error::reject("bad input"))
}

jobbox_guest::export_handler!(raw reject);
