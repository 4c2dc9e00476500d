//! Run with: `cargo build -p example-echo --target wasm32-wasip2 --release` then
//! `jobbox run target/wasm32-wasip2/release/example_echo.wasm --json '{"hello":"world"}'`
//!
//! Returns its payload unchanged, whatever its content type: the smallest useful
//! handler, and the one `jobbox bench` measures the sandbox's overhead with.

use jobbox_guest::{Context, Error};

/// Returns `payload` as it came.
fn echo(payload: Vec<u8>, _ctx: &Context) -> Result<Vec<u8>, Error> {
    Ok(payload)
}

jobbox_guest::export_handler!(raw echo);
