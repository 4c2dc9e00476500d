//! Resource limits: what a handler may use ([`HandlerLimits`]) and what a job asks for
//! ([`JobLimits`]).

use serde::{Deserialize, Serialize};

use crate::wire::NATS_MAX_PAYLOAD;

/// Default fuel per job.
///
/// Why: wasmtime charges roughly one unit per wasm instruction, so 5 × 10⁹ is a few
/// seconds of straight-line compute, well past any reasonable handler and short enough
/// that a runaway loop ends on fuel before most timeouts.
pub const DEFAULT_FUEL: u64 = 5_000_000_000;

/// Default linear-memory ceiling per job: 64 MiB.
///
/// Why: enough for JSON parsing and modest buffers; small enough that a worker running
/// many jobs concurrently cannot be pushed into swapping by guests.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 * 1024 * 1024;

/// Default wall-clock timeout per job: 30 s.
///
/// Why: covers slow host calls without holding a JetStream message (and a worker slot)
/// for long; jobs that need more ask for it through the route.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Default ceiling on captured log text per job: 64 KiB.
///
/// Why: logs travel inside the [`crate::JobResult`], which must fit in one NATS message
/// next to the output.
pub const DEFAULT_LOG_BYTES: u64 = 64 * 1024;

/// Default ceiling on captured log lines per job: 1000.
///
/// Why: each [`crate::LogEntry`] costs about 70 bytes of envelope (timestamp, level,
/// keys) on top of its text, so 1000 lines add at most ~70 KB to a result.
pub const DEFAULT_LOG_LINES: u64 = 1000;

/// Default ceiling on a handler's output per job: 1 MiB − 256 KiB = 768 KiB.
///
/// Why: the output is stored in a [`crate::JobResult`] that must fit in one NATS
/// message ([`NATS_MAX_PAYLOAD`], 1 MiB by default). The 256 KiB headroom holds the
/// logs (≤ 64 KiB of text plus ≤ ~70 KB of per-line envelope), error and trap text,
/// and the rest of the record.
pub const DEFAULT_OUTPUT_BYTES: u64 = (NATS_MAX_PAYLOAD - 256 * 1024) as u64;

/// Default number of retries after the first attempt: 3.
///
/// Why: enough to ride out a transient failure with exponential backoff without
/// hammering a broken dependency; deterministic failures are never retried anyway
/// (see [`crate::ErrorType::is_deterministic`]).
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// Default scratch directory size: 0, no scratch directory.
///
/// Why: a handler gets no filesystem unless its route grants one at deploy time
/// (`jobbox handler deploy … --scratch 64MiB`).
pub const DEFAULT_SCRATCH_BYTES: u64 = 0;

/// Default number of files, directories and symlinks a job may create in its scratch
/// directory when the route grants one without saying how many: 1024.
///
/// Why: enough for an archive tool's or a database's temporary files; small enough
/// that a job creating files in a loop fills its quota long before the worker's
/// filesystem runs out of inodes.
pub const DEFAULT_SCRATCH_FILES: u64 = 1024;

/// Default ceiling on the core WebAssembly instances one job's component may create: 32.
///
/// Why: a Rust component instantiates a handful of core modules (the program and the
/// canonical-ABI shims); a Python one (componentize-py) about 14, one per shared
/// library of the interpreter; JavaScript (componentize-js) fewer. Python with native
/// extension modules needs more: raise it per route (`--max-instances`).
pub const DEFAULT_INSTANCES: u32 = 32;

/// Default ceiling on the linear memories one job may have in total: 4.
///
/// Why: Rust, Python and JavaScript components have one (componentize-py links the
/// interpreter's shared libraries against a single memory). Each memory is a slot of
/// the worker's pool, reserved up front.
pub const DEFAULT_MEMORIES: u32 = 4;

/// Default ceiling on the tables one job may have in total: 16.
pub const DEFAULT_TABLES: u32 = 16;

/// Default ceiling on the elements of any one table: 20,000.
///
/// Why: a Rust component's function table has a few hundred entries, Python's about
/// 5,700, JavaScript's about 7,700; 20,000 leaves room for larger programs while
/// bounding a guest that grows a table on purpose (8 bytes an element).
pub const DEFAULT_TABLE_ELEMENTS: u64 = 20_000;

/// Default ceiling on a route's component size: 64 MiB.
///
/// Why: Rust handlers are well under 5 MiB; a Python component carries its interpreter
/// and standard library (about 19 MB for a word count), a JavaScript one its engine
/// (about 12 MB), and pure-Python dependencies add to that. Compilation is not bounded
/// by wasmtime, so size is capped; workers cap it again at their own maximum.
pub const DEFAULT_COMPONENT_BYTES: u64 = 64 * 1024 * 1024;

/// The limits a handler runs under: concrete values, no options.
///
/// A [`crate::Route`] carries one of these as the ceiling for every job of its
/// `job_type`; [`JobLimits::clamp_to`] turns a job's request into the effective limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HandlerLimits {
    /// Fuel (≈ wasm instructions) per attempt.
    pub fuel: u64,
    /// Linear memory ceiling in bytes.
    pub memory_bytes: u64,
    /// Wall-clock timeout per attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Largest output the handler may return, in bytes.
    pub output_bytes: u64,
    /// Largest total log text kept per attempt, in bytes.
    pub log_bytes: u64,
    /// Largest number of log lines kept per attempt.
    pub log_lines: u64,
    /// Retries after the first attempt (so at most `max_retries + 1` attempts).
    pub max_retries: u32,
    /// Bytes a job may add to files in its scratch directory; 0 (the default) means
    /// the job gets no scratch directory at all.
    pub scratch_bytes: u64,
    /// Files, directories and symlinks a job may create in its scratch directory.
    pub scratch_files: u64,
    /// Core WebAssembly instances one job's component may create.
    pub instances: u32,
    /// Linear memories one job may have in total.
    pub memories: u32,
    /// Tables one job may have in total.
    pub tables: u32,
    /// Elements any one table may have.
    pub table_elements: u64,
    /// Largest component (`.wasm`) the route may run, in bytes: checked at deploy.
    pub component_bytes: u64,
}

impl HandlerLimits {
    /// The defaults, usable in `const` context (same as [`Default::default`]).
    pub const DEFAULT: Self = Self {
        fuel: DEFAULT_FUEL,
        memory_bytes: DEFAULT_MEMORY_BYTES,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        output_bytes: DEFAULT_OUTPUT_BYTES,
        log_bytes: DEFAULT_LOG_BYTES,
        log_lines: DEFAULT_LOG_LINES,
        max_retries: DEFAULT_MAX_RETRIES,
        scratch_bytes: DEFAULT_SCRATCH_BYTES,
        scratch_files: DEFAULT_SCRATCH_FILES,
        instances: DEFAULT_INSTANCES,
        memories: DEFAULT_MEMORIES,
        tables: DEFAULT_TABLES,
        table_elements: DEFAULT_TABLE_ELEMENTS,
        component_bytes: DEFAULT_COMPONENT_BYTES,
    };

    /// Whether jobs under these limits get a scratch directory.
    #[must_use]
    pub const fn has_scratch(&self) -> bool {
        self.scratch_bytes > 0
    }
}

impl Default for HandlerLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A job's request for limits. Every field is optional: `None` takes the route's value,
/// `Some(x)` takes `min(x, route value)`. A job may ask for less, never more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobLimits {
    /// Requested fuel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Requested memory ceiling in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Requested timeout in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Requested output ceiling in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    /// Requested log ceiling in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<u64>,
}

impl JobLimits {
    /// The effective limits: each requested value, lowered to the ceiling if it asks
    /// for more; fields the job did not set, plus `log_lines`, `max_retries`, the
    /// scratch directory and the component's shape (instances, memories, tables,
    /// size), come from the ceiling.
    #[must_use]
    pub fn clamp_to(&self, ceiling: &HandlerLimits) -> HandlerLimits {
        let pick = |asked: Option<u64>, max: u64| asked.map_or(max, |a| a.min(max));
        HandlerLimits {
            fuel: pick(self.fuel, ceiling.fuel),
            memory_bytes: pick(self.memory_bytes, ceiling.memory_bytes),
            timeout_ms: pick(self.timeout_ms, ceiling.timeout_ms),
            output_bytes: pick(self.output_bytes, ceiling.output_bytes),
            log_bytes: pick(self.log_bytes, ceiling.log_bytes),
            log_lines: ceiling.log_lines,
            max_retries: ceiling.max_retries,
            scratch_bytes: ceiling.scratch_bytes,
            scratch_files: ceiling.scratch_files,
            instances: ceiling.instances,
            memories: ceiling.memories,
            tables: ceiling.tables,
            table_elements: ceiling.table_elements,
            component_bytes: ceiling.component_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ceilings() -> Vec<HandlerLimits> {
        vec![
            HandlerLimits::DEFAULT,
            HandlerLimits {
                fuel: 0,
                memory_bytes: 0,
                timeout_ms: 0,
                output_bytes: 0,
                log_bytes: 0,
                log_lines: 0,
                max_retries: 0,
                scratch_bytes: 0,
                scratch_files: 0,
                instances: 0,
                memories: 0,
                tables: 0,
                table_elements: 0,
                component_bytes: 0,
            },
            HandlerLimits {
                fuel: u64::MAX,
                memory_bytes: u64::MAX,
                timeout_ms: u64::MAX,
                output_bytes: u64::MAX,
                log_bytes: u64::MAX,
                log_lines: u64::MAX,
                max_retries: u32::MAX,
                scratch_bytes: u64::MAX,
                scratch_files: u64::MAX,
                instances: u32::MAX,
                memories: u32::MAX,
                tables: u32::MAX,
                table_elements: u64::MAX,
                component_bytes: u64::MAX,
            },
            HandlerLimits {
                fuel: 17,
                memory_bytes: 1 << 20,
                timeout_ms: 5,
                output_bytes: 100,
                log_bytes: 3,
                log_lines: 2,
                max_retries: 1,
                scratch_bytes: 1 << 20,
                scratch_files: 3,
                instances: 5,
                memories: 1,
                tables: 2,
                table_elements: 100,
                component_bytes: 1 << 20,
            },
        ]
    }

    fn requests() -> Vec<JobLimits> {
        let values = [
            None,
            Some(0),
            Some(1),
            Some(16),
            Some(1 << 30),
            Some(u64::MAX),
        ];
        let mut out = Vec::new();
        for v in values {
            for w in values {
                out.push(JobLimits {
                    fuel: v,
                    memory_bytes: w,
                    timeout_ms: v,
                    output_bytes: w,
                    log_bytes: v,
                });
            }
        }
        out
    }

    #[test]
    fn clamp_never_raises_a_ceiling() {
        for ceiling in ceilings() {
            for req in requests() {
                let got = req.clamp_to(&ceiling);
                assert!(got.fuel <= ceiling.fuel);
                assert!(got.memory_bytes <= ceiling.memory_bytes);
                assert!(got.timeout_ms <= ceiling.timeout_ms);
                assert!(got.output_bytes <= ceiling.output_bytes);
                assert!(got.log_bytes <= ceiling.log_bytes);
                assert_eq!(got.log_lines, ceiling.log_lines);
                assert_eq!(got.max_retries, ceiling.max_retries);
                assert_eq!(got.scratch_bytes, ceiling.scratch_bytes);
                assert_eq!(got.scratch_files, ceiling.scratch_files);
                assert_eq!(
                    (got.instances, got.memories, got.tables),
                    (ceiling.instances, ceiling.memories, ceiling.tables)
                );
                assert_eq!(got.table_elements, ceiling.table_elements);
                assert_eq!(got.component_bytes, ceiling.component_bytes);
            }
        }
    }

    #[test]
    fn clamp_honours_smaller_requests_and_defaults_to_ceiling() {
        let ceiling = HandlerLimits::DEFAULT;
        assert_eq!(JobLimits::default().clamp_to(&ceiling), ceiling);
        let req = JobLimits {
            fuel: Some(10),
            timeout_ms: Some(u64::MAX),
            ..JobLimits::default()
        };
        let got = req.clamp_to(&ceiling);
        assert_eq!(got.fuel, 10);
        assert_eq!(got.timeout_ms, ceiling.timeout_ms);
        assert_eq!(got.memory_bytes, ceiling.memory_bytes);
    }

    #[test]
    fn defaults_fit_in_a_nats_message() {
        let d = HandlerLimits::default();
        assert_eq!(d, HandlerLimits::DEFAULT);
        let budget = d.output_bytes + d.log_bytes + d.log_lines * 80;
        assert!(budget < NATS_MAX_PAYLOAD as u64);
    }
}
