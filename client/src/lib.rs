//! The client side of jobbox: the data model, the wire format, the NATS names and the
//! `Client` that enqueues jobs and reads results.
//!
//! jobbox runs untrusted job handlers in a WebAssembly sandbox, fed by NATS JetStream.
//! This crate has no wasmtime in it: an application that only enqueues jobs and reads
//! results depends on `jobbox` alone; the worker lives in `jobbox-host`.
//!
//! - [`model`]: the records ([`Job`], [`JobResult`], [`JobEvent`], ...), re-exported here.
//! - [`wire`]: [`encode`] / [`decode`], MessagePack maps with named fields, the format
//!   that `docs/wire-format.md` documents for clients in other languages.
//!
//! ```
//! let job = jobbox::Job::json("echo", &serde_json::json!({ "hello": "world" }))?
//!     .queue("default")
//!     .priority(jobbox::MAX_PRIORITY);
//! job.validate()?;
//! let bytes = jobbox::encode(&job)?;
//! assert_eq!(jobbox::decode::<jobbox::Job>(&bytes)?, job);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod atomic;
mod batches;
mod client;
mod error;
mod job_view;
mod jobs;
pub mod layout;
pub mod model;
pub mod nats;
mod result_batch;
mod result_reads;
pub mod schedules;
pub mod trace;
mod transient;
pub mod wire;

pub use atomic::MAX_ATOMIC_JOBS;
pub use batches::{BatchEnqueued, BatchSpec};
pub use client::{
    Client, ClientOptions, ENQUEUE_PIPELINE, ENQUEUE_RETRY_FOR, Enqueued, EventsFrom, digest_of,
    server_urls,
};
pub use error::{ClientError, is_store_full};
pub use jobs::{COUNTERS, CancelOutcome, final_event_id};
pub use result_batch::{MAX_RESULT_BATCH, ResultBatchReader};

pub use model::batch::{
    ENQUEUE_ABANDONED_AFTER, ENQUEUE_LEASE_REFRESH, MAX_BATCH_ID_LEN, MAX_BATCH_JOBS, batch_job_id,
    callback_job_id, is_valid_batch_id, parse_batch_job_id,
};
pub use model::*;
pub use schedules::{
    Cadence, FireOutcome, InvalidSchedule, MAX_SCHEDULE_ID_LEN, ScheduleSpec, is_valid_schedule_id,
};
pub use trace::{IncomingTrace, InvalidTraceContext, TraceContext};
pub use wire::{
    CONTENT_TYPE_JSON, CONTENT_TYPE_MSGPACK, NATS_MAX_PAYLOAD, WIRE_VERSION, WireError, decode,
    encode, version_of,
};
