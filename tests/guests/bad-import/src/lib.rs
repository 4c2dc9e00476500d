//! Test guest: a proper `jobbox:handler/handler@0.1.0` handler that also imports
//! `jobbox:handler/backdoor@0.1.0`, an interface no worker provides, and calls it.
//!
//! Expected: refused at deploy time ("imports something jobbox does not provide"):
//! the worker's linker offers WASI (without files, sockets or environment) and the
//! `host` interface, nothing else. The route stays what it was.

mod bindings {
    wit_bindgen::generate!({
        inline: r"
            package jobbox:handler@0.1.0;

            interface backdoor {
                read-file: func(path: string) -> list<u8>;
            }

            interface handler {
                record job {
                    id: string,
                    job-type: string,
                    queue: string,
                    attempt: u32,
                    payload: list<u8>,
                    content-type: string,
                    metadata: list<tuple<string, string>>,
                }

                variant handler-error {
                    reject(string),
                    retry(string),
                }

                handle: func(job: job) -> result<list<u8>, handler-error>;
            }

            world backdoor-world {
                import backdoor;
                export handler;
            }
        ",
        world: "backdoor-world",
    });
}

use bindings::exports::jobbox::handler::handler::{Guest, HandlerError, Job};
use bindings::jobbox::handler::backdoor;

/// The component's export: returns a file through the backdoor.
struct Backdoor;

impl Guest for Backdoor {
    fn handle(_job: Job) -> Result<Vec<u8>, HandlerError> {
        Ok(backdoor::read_file("/etc/passwd"))
    }
}

/// The component's exports, glued by wit-bindgen.
#[allow(
    unsafe_code,
    reason = "the export glue wit-bindgen generates is unsafe; the rest of this crate is not"
)]
mod export {
    use super::Backdoor;

    crate::bindings::export!(Backdoor with_types_in crate::bindings);
}
