//! Test guest: exports `jobbox:handler/handler@0.2.0` — the same shape as the
//! `handler` interface this host speaks (`@0.1.0`), under a version it does not.
//!
//! Expected: refused at deploy time ("does not export `jobbox:handler/handler@0.1.0`:
//! it exports jobbox:handler/handler@0.2.0"), and the route stays what it was.

mod bindings {
    wit_bindgen::generate!({
        inline: r"
            package jobbox:handler@0.2.0;

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

            world handler-world {
                export handler;
            }
        ",
        world: "handler-world",
    });
}

use bindings::exports::jobbox::handler::handler::{Guest, HandlerError, Job};

/// The component's export: an echo handler, one version too new.
struct Echo;

impl Guest for Echo {
    fn handle(job: Job) -> Result<Vec<u8>, HandlerError> {
        Ok(job.payload)
    }
}

/// The component's exports, glued by wit-bindgen.
#[allow(
    unsafe_code,
    reason = "the export glue wit-bindgen generates is unsafe; the rest of this crate is not"
)]
mod export {
    use super::Echo;

    crate::bindings::export!(Echo with_types_in crate::bindings);
}
