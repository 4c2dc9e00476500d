//! Test guest: loops forever in pure WebAssembly, never calling the host.
//!
//! Expected: the worker stops it when it runs out of fuel (`Trap::OutOfFuel`) or, if
//! fuel is generous, at its wall-clock deadline (epoch interruption); a final
//! failure, and the worker itself carries on.

use std::hint::black_box;

use jobbox_guest::{Context, Error};

fn spin(_payload: Vec<u8>, _ctx: &Context) -> Result<Vec<u8>, Error> {
    let mut counter = 0_u64;
    loop {
        // `black_box` keeps the optimizer from proving the loop has no effect.
        counter = black_box(counter.wrapping_add(1));
    }
}

jobbox_guest::export_handler!(raw spin);
