//! The records jobbox exchanges over NATS, one module per record group.
//!
//! Every record is encoded with [`crate::wire::encode`] as a MessagePack map with named
//! fields; `docs/wire-format.md` is the field-by-field reference. All types are
//! re-exported here and at the crate root.

pub mod batch;
pub mod cancel;
pub mod dead_letter;
pub mod error_type;
pub mod event;
pub mod job;
pub mod limits;
pub mod media_type;
pub mod progress;
pub mod result;
pub mod route;
pub mod schedule;
mod spelling;
pub mod stats;
pub mod status;
pub mod timestamp;
pub mod usage;
pub mod worker;

pub use batch::{BatchCounts, BatchJob, BatchStatus, CallbackKind};
pub use cancel::CancelRequest;
pub use dead_letter::DeadLetter;
pub use error_type::ErrorType;
pub use event::{JobEvent, JobEventType};
pub use job::{
    DEFAULT_PRIORITY, DEFAULT_QUEUE, DependencyFailure, InvalidJob, Job, MAX_DEPENDENCIES,
    MAX_FIELD_LEN, MAX_METADATA_BYTES, MAX_NAME_LEN, MAX_PAYLOAD_BYTES, MAX_PRIORITY,
    is_valid_name, new_id,
};
pub use limits::{
    DEFAULT_COMPONENT_BYTES, DEFAULT_FUEL, DEFAULT_INSTANCES, DEFAULT_LOG_BYTES, DEFAULT_LOG_LINES,
    DEFAULT_MAX_RETRIES, DEFAULT_MEMORIES, DEFAULT_MEMORY_BYTES, DEFAULT_OUTPUT_BYTES,
    DEFAULT_TABLE_ELEMENTS, DEFAULT_TABLES, DEFAULT_TIMEOUT_MS, HandlerLimits, JobLimits,
};
pub use media_type::{MAX_MEDIA_TYPE_LEN, is_valid_content_type};
pub use progress::{JobProgress, LogEntry, LogLevel};
pub use result::JobResult;
pub use route::{DIGEST_PREFIX, Route, is_valid_digest};
pub use schedule::{
    DEFAULT_CATCH_UP_LIMIT, MAX_CATCH_UP_LIMIT, MissedPolicy, RECENT_FIRES, Schedule, ScheduleFire,
    ScheduleStatus,
};
pub use stats::QueueStats;
pub use status::{JobState, JobStatus};
pub use usage::Usage;
pub use worker::{WorkerState, WorkerStatus};
