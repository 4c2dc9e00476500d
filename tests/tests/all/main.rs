//! jobbox's integration tests: one binary, a module per area (one link step).
//!
//! - `sandbox`: real guests in the sandbox, no NATS.
//! - `worker`: the worker end to end against a real nats-server.
//! - `bad_input`: bad messages, unknown job types, hostile guests through the worker.
//! - `readme`: the README's commands work.

mod bad_input;
mod readme;
mod sandbox;
mod worker;
