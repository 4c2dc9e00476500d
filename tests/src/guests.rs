//! The guests `tests/build.rs` built for `wasm32-wasip2`, as absolute paths of their
//! `.wasm` components: one constant per guest, named after its directory (`ECHO`,
//! `WORD_COUNT`, `SPIN`, `MEMORY_BOMB`, …), and the lists [`ALL`], [`EXAMPLES`] and
//! [`TEST_GUESTS`] of `(name, path)` pairs.
//!
//! Each constant's doc says what the guest does and how the worker should classify
//! its outcome; the guest's own `src/lib.rs` says more.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
