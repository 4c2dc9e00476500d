//! Host-side bindings for `wit/handler.wit`.
//!
//! `handle` is called asynchronously so a job can be abandoned at its deadline even
//! while the guest is blocked inside a host call; the `host` imports are synchronous
//! because they only record data in the job's store.
//!
//! The job record the host passes to `handle` borrows from the host's `Job`
//! (`ownership: Borrowing`): its payload is copied once, straight into guest memory.

wasmtime::component::bindgen!({
    path: "../wit/handler.wit",
    world: "handler-world",
    exports: { default: async },
    ownership: Borrowing { duplicate_if_necessary: false },
});

pub use self::jobbox::handler::host::{Host, LogLevel as GuestLogLevel, Progress as GuestProgress};
pub use exports::jobbox::handler::handler::{HandlerError, Job as GuestJobRef};

/// The `job` record as a type, for type checks that need no value of it.
pub type GuestJob = GuestJobRef<'static>;
