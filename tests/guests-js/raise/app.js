// JavaScript test guest: throws `new TypeError("guest-raise: deliberate")`, uncaught.
//
// Expected: as the Rust `panic` guest (and the Python `raise` guest), a trap and a
// final failure, whose message is `uncaught exception: TypeError: guest-raise:
// deliberate`. The helper appends the same line to the job's log at error level;
// componentize-js prints what was thrown to stderr and aborts.

import { exportHandler } from "../../../guest-sdk/js/jobbox_guest.js";

function fail() {
  throw new TypeError("guest-raise: deliberate");
}

export const handler = exportHandler(fail);
