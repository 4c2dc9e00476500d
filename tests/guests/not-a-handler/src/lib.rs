//! Test guest: a well-formed component that exports `example:greeter/greet` and not
//! the jobbox `handler` interface; it does not use the jobbox SDK at all.
//!
//! Expected: refused at deploy time ("does not export `jobbox:handler/handler@0.1.0`"),
//! and the job type's route stays what it was.

mod bindings {
    wit_bindgen::generate!({
        inline: r"
            package example:greeter;

            interface greet {
                greet: func(name: string) -> string;
            }

            world greeter {
                export greet;
            }
        ",
        world: "greeter",
    });
}

use bindings::exports::example::greeter::greet::Guest;

/// The component's export.
struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

/// The component's exports, glued by wit-bindgen.
#[allow(
    unsafe_code,
    reason = "the export glue wit-bindgen generates is unsafe; the rest of this crate is not"
)]
mod export {
    use super::Greeter;

    crate::bindings::export!(Greeter with_types_in crate::bindings);
}
