//! Host-side bindings for `wit/handler.wit`.
//!
//! `handle` is called asynchronously so a job can be abandoned at its deadline even
//! while the guest is blocked inside a host call; the `host` imports are synchronous
//! because they only record data in the job's store.

wasmtime::component::bindgen!({
    path: "../wit/handler.wit",
    world: "handler-world",
    exports: { default: async },
});

pub use self::jobbox::handler::host::{Host, LogLevel as GuestLogLevel, Progress as GuestProgress};
pub use exports::jobbox::handler::handler::{HandlerError, Job as GuestJob};
