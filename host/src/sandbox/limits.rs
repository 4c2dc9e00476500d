//! Engine-wide sandbox bounds: the limits that are the same for every job a worker runs.
//!
//! Per-job limits (fuel, memory, wall clock, output and log sizes, and the component's
//! shape: core instances, memories, tables, table elements, size) live in
//! [`jobbox::HandlerLimits`]: their ceilings are set per job type at deploy time and a
//! job may ask for less. The bounds here protect the worker itself and are fixed when
//! the engine is built; where a route sets a ceiling of its own, the bound here is the
//! most any route may set (a deploy refuses more).

use std::time::Duration;

/// How often the epoch ticker advances the engine's epoch.
///
/// A job's wall-clock deadline and its cancellation are checked on every tick, so a
/// job overruns its deadline by at most one tick plus the time of one host call.
/// 10 ms keeps that overrun small while costing one atomic increment per tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Grace beyond a job's deadline before the host abandons the call outright.
///
/// Epoch interruption cannot stop a guest that is blocked inside a host call (for
/// example a WASI sleep); after this grace the whole call is dropped instead.
pub const HOST_CALL_GRACE: Duration = Duration::from_millis(50);

/// Deepest wasm stack a guest may use.
///
/// Engine-wide: wasmtime sets it per engine, not per store. Rust guests rarely need
/// more than a few hundred KiB; CPython and SpiderMonkey stop deep recursion
/// themselves well inside this bound (Python's `RecursionError` at its default depth
/// of 1,000, JavaScript's `InternalError: too much recursion`). Deep recursion past it
/// traps as `stack_overflow`. It must stay well below [`ASYNC_STACK_BYTES`], or a stack
/// overflow could run off the fiber's stack into host memory.
pub const MAX_WASM_STACK_BYTES: usize = 512 * 1024;

/// Size of the native fiber stack each running job gets.
///
/// Four times [`MAX_WASM_STACK_BYTES`] leaves ample room for host frames (WASI, the
/// component ABI) on top of the deepest guest stack.
pub const ASYNC_STACK_BYTES: usize = 2 * 1024 * 1024;

/// Most elements any one table may have, on any route.
///
/// A route sets its own ceiling (`HandlerLimits::table_elements`, default 20,000:
/// Rust components use a few hundred function-table entries, Python ones about 5,700,
/// JavaScript ones about 7,700); each job's store enforces it. This is the most a
/// route may set, and what the pool sizes each table slot for: 100,000 elements are
/// 800 KB of address space per slot, reserved, touched only as far as a job uses it.
/// (No test guest grows a table: `table.grow` cannot be written in stable Rust.)
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Most core instances one job's component may create, on any route.
///
/// A route sets its own ceiling (`HandlerLimits::instances`, default 32); each job's
/// store enforces it. A Rust component instantiates a handful of core modules, a
/// Python one (componentize-py) about 14, one per shared library of the interpreter,
/// and every native extension module adds one: 128 leaves room for those. Instances
/// are not reserved in advance, so the bound costs nothing until used.
pub const MAX_CORE_INSTANCES_PER_JOB: usize = 128;

/// Most tables one job may have in total, on any route (each route sets its own
/// ceiling, `HandlerLimits::tables`, default 16). Every table slot of the pool is
/// reserved up front, so this stays small.
pub const MAX_TABLES_PER_JOB: usize = 16;

/// Most linear memories one job may have in total, on any route (each route sets
/// its own ceiling, `HandlerLimits::memories`, default 4). Rust, Python and
/// JavaScript components have one memory each. Every memory slot of the pool
/// reserves address space for the largest memory a job may have, so this stays small.
pub const MAX_MEMORIES_PER_JOB: usize = 4;

/// Most bytes a guest may pass into the host in a single call (a log line, a progress
/// message, a WASI write).
///
/// wasmtime's default is 128 MiB; host calls in jobbox never need more than a few KiB
/// at a time (WASI writes are chunked), so 1 MiB bounds what a guest can make the host
/// allocate on its behalf. A call over it fails before the host copies anything (the
/// job ends as a `trap` with trap code `host`; test guest `host-bomb`).
///
/// The cap also applies to the handler's output, which crosses into the host as the
/// return value of `handle`: an output ceiling above it could never be reached, so a
/// deploy refuses one (`registry::deploy`'s `max_output_bytes`).
pub const HOSTCALL_BYTES: usize = 1024 * 1024;

/// Bytes of a guest's stdout (and, separately, stderr) that are kept.
///
/// Output past this is dropped and counted, never an error: a chatty handler is not a
/// failed one. Handlers should use the log import for anything that matters. Neither
/// stream is stored with a result; the tail of stderr explains a trap in its
/// `traceback`.
pub const STDIO_CAPTURE_BYTES: usize = 64 * 1024;

/// Longest single log line kept; longer lines are cut and marked with "…".
pub const MAX_LOG_LINE_BYTES: usize = 4 * 1024;

/// Shortest interval between two progress reports that are passed on.
///
/// A handler may report progress as often as it likes; the worker forwards at most
/// one report per interval (and always the last one), so a tight loop of reports
/// cannot flood the event stream.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
