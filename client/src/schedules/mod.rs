//! Recurring jobs: cron and interval schedules that fire exactly once per tick across
//! a fleet of workers.
//!
//! - [`cadence`]: when a schedule fires (cron in a time zone, or an interval grid); pure.
//! - [`plan`]: which ticks a fire enqueues, their job ids, the record afterwards; pure.
//! - [`spec`]: what a user asks for ([`ScheduleSpec`]) and why it may be refused
//!   ([`InvalidSchedule`]).
//! - `ops`: the [`Client`](crate::Client) methods (`add_schedule`, `fire_schedule`, …).
//!
//! The mechanism (compare-and-set on the stored record, job ids derived from the tick)
//! is described in `docs/architecture.md`.

pub mod cadence;
mod ops;
pub mod plan;
pub mod spec;

pub use cadence::{Cadence, MIN_INTERVAL_SECONDS};
pub use ops::{FireOutcome, MAX_FIRE_BACKOFF, fire_backoff};
pub use plan::{FirePlan, tick_job_id};
pub use spec::{
    InvalidSchedule, MAX_SCHEDULE_BYTES, MAX_SCHEDULE_ID_LEN, ScheduleSpec, is_valid_schedule_id,
};
