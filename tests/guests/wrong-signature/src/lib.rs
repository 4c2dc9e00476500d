//! Test guest: exports `jobbox:handler/handler@0.1.0` — the right name and version —
//! whose `handle` has another signature (`func(payload: list<u8>) -> list<u8>`).
//!
//! Expected: refused at deploy time: the export's name matches but its type does
//! not, so the worker could not call it; the route stays what it was.

mod bindings {
    wit_bindgen::generate!({
        inline: r"
            package jobbox:handler@0.1.0;

            interface handler {
                handle: func(payload: list<u8>) -> list<u8>;
            }

            world handler-world {
                export handler;
            }
        ",
        world: "handler-world",
    });
}

use bindings::exports::jobbox::handler::handler::Guest;

/// The component's export: an echo with the wrong signature.
struct Echo;

impl Guest for Echo {
    fn handle(payload: Vec<u8>) -> Vec<u8> {
        payload
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
