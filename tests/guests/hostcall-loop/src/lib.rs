//! Test guest: loops forever, calling the host's `log` import on every iteration.
//!
//! Expected: like `spin`, out of fuel or deadline, a final failure; time spent in
//! the host must not let it escape either limit. Almost all of its log lines are
//! dropped by the log cap (and counted), which must not fail the job by itself.

use jobbox_guest::{Context, Error, log};

fn hostcall_loop(_payload: Vec<u8>, _ctx: &Context) -> Result<Vec<u8>, Error> {
    loop {
        log::trace("still here");
    }
}

jobbox_guest::export_handler!(raw hostcall_loop);
