//! jobbox's integration tests: one binary, a module per area (one link step).
//!
//! - `batches`: batches and dependencies: exact counts after a kill -9, callbacks once,
//!   a dependency diamond, refusals at enqueue, cancellation, resumable enqueue.
//! - `compile_sharing`: compiled handlers shared by a fleet under its key: compiled
//!   once per deploy, once for many workers, refused and replaced when tampered,
//!   foreign, moved or unsealed; bounded waits for claims; nothing shared without a key.
//! - `dashboard`: the web dashboard in headless Chromium (skipped without chromium).
//! - `sandbox`: real guests in the sandbox, no NATS.
//! - `worker`: the worker end to end against a real nats-server.
//! - `bad_input`: bad messages, unknown job types, hostile guests through the worker.
//! - `hostile`: the hostile-guest suite, resource bounds, deploy-time validation.
//! - `hot_swap`: handler versions, hot swap, rollback, pinning, the compile cache.
//! - `languages`: Python and JavaScript handlers (componentize-py, componentize-js)
//!   deployed and run through a worker, their output and failures as Rust ones'.
//! - `lifecycle`: retries, dead letters, job state, priorities, delays, cancellation,
//!   heartbeats, stats, shutdown.
//! - `metrics`: the worker's Prometheus metrics after known jobs.
//! - `cluster`: a three-node cluster: R3 layout, replicas changed on a live
//!   deployment, a node killed under load.
//! - `faults`: nats-server killed under load, a stalled worker, a full store.
//! - `poison`: hostile ids, oversized guest errors, reused ids: every message ends.
//! - `python_client`: the Python client's pytest suite against a real worker, and what
//!   it wrote read back by the Rust client, byte for byte.
//! - `results`: a result's content type (set by the handler, else the job's), decoded.
//! - `readme`: the README's commands work.
//! - `sdk`: jobbox-guest from a crate outside the repository, built as the docs say.
//! - `schedules`: recurring jobs across a fleet: once per tick, kills, pause, restarts.
//! - `tracing`: W3C trace context through a job, OTLP spans at a receiver in the test,
//!   hostile `traceparent` headers, an unreachable collector.

mod bad_input;
mod batches;
mod cluster;
mod compile_sharing;
mod dashboard;
mod faults;
mod hostile;
mod hot_swap;
mod languages;
mod lifecycle;
mod metrics;
mod poison;
mod python_client;
mod readme;
mod result_checks;
mod results;
mod route_sync;
mod sandbox;
mod schedules;
mod scratch;
mod sdk;
mod tracing;
mod worker;
