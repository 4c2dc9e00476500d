//! jobbox test support.

/// Paths of the wasm guests (example handlers and test guests) that `build.rs` built.
pub mod guests;
