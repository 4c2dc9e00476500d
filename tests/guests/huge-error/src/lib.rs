//! Test guest: fails with an error message of `{"bytes": n}` bytes, as `reject` or,
//! with `{"retry": true}`, as `retry`.
//!
//! Expected: the worker caps the message, stores the result (and dead letter) whatever
//! `n` is, and never runs the job more than `max_retries + 1` times.

use jobbox_guest::{Context, Error};

#[derive(Clone, Copy, serde::Deserialize)]
struct Input {
    bytes: usize,
    #[serde(default)]
    retry: bool,
}

fn fail(input: Input, _ctx: &Context) -> Result<(), Error> {
    let message = "e".repeat(input.bytes);
    Err(if input.retry {
        Error::retry(message)
    } else {
        Error::reject(message)
    })
}

jobbox_guest::export_handler!(fail);
