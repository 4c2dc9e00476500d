//! Test guest: fails with `Error::retry("upstream unavailable")`, every time.
//!
//! Expected: the WIT `handler-error::retry("upstream unavailable")`; the worker retries
//! the job with backoff while it has retries left, then records a final failure
//! (dead letter) after the last attempt.

use jobbox_guest::{Context, Error};

fn retry(_payload: Vec<u8>, _ctx: &Context) -> Result<Vec<u8>, Error> {
    Err(Error::retry("upstream unavailable"))
}

jobbox_guest::export_handler!(raw retry);
