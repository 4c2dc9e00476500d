//! Prometheus metrics of a worker, served as OpenMetrics text at `/metrics`
//! (`jobbox worker --metrics-addr`).
//!
//! Everything on the per-job path is an atomic add or a histogram observation on
//! handles taken once per queue and job type (found under a short read lock,
//! without allocating): nothing waits on NATS and no lock is held across an await. Values that live elsewhere (free
//! slots, handlers loaded, load failures, NATS reconnects) are read when scraped.
//!
//! Label sets are bounded: `queue` is one of the worker's queues, `status` and
//! `error_type` are wire enums, and `job_type` (tenant input) is the job type only
//! when it has a deployed route on this worker and fewer than
//! [`MAX_JOB_TYPE_LABELS`] job types have been labelled so far; otherwise `other`.

mod server;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use jobbox::{ErrorType, JobStatus, Usage};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use server::serve;

/// Most distinct `job_type` label values one worker reports; later job types are
/// counted as `other`. A route is an operator's deploy, so this is far above a real
/// fleet's job types, yet keeps a scrape small whatever is deployed.
pub const MAX_JOB_TYPE_LABELS: usize = 256;

/// The `job_type` label of job types that are not labelled by name.
pub const OTHER_JOB_TYPE: &str = "other";

/// Labels of the finished-jobs counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Finished {
    queue: String,
    job_type: String,
    status: &'static str,
    error_type: &'static str,
}

/// Labels of the per-job histograms, retries and dead letters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    queue: String,
    job_type: String,
}

/// Labels of the handler loads counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoadSource {
    source: &'static str,
}

/// Labels of the refused trace contexts counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refused {
    reason: &'static str,
}

/// Values read from the worker when scraped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Run slots not taken.
    pub free_slots: i64,
    /// Job types with a loaded handler.
    pub handlers_loaded: i64,
    /// Handler versions that failed to load so far.
    pub load_failures: u64,
    /// Times the NATS connection came back after a loss.
    pub reconnects: u64,
    /// Spans the OTLP collector accepted.
    pub spans_exported: u64,
    /// Spans lost by failed OTLP exports.
    pub spans_lost: u64,
    /// Handlers loaded from the local compile cache.
    pub loads_from_cache: u64,
    /// Handlers loaded from a fleet artifact.
    pub loads_from_fleet: u64,
    /// Handlers compiled here.
    pub loads_compiled: u64,
    /// Fleet artifacts refused (tampered, foreign key, unsealed).
    pub artifacts_refused: u64,
    /// Fleet artifacts this worker stored.
    pub artifacts_published: u64,
}

type SnapshotFn = Box<dyn Fn() -> Snapshot + Send + Sync>;

/// A worker's metrics.
pub struct Metrics {
    registry: Registry,
    finished: Family<Finished, Counter>,
    retries: Family<JobLabels, Counter>,
    dead_letters: Family<JobLabels, Counter>,
    queue_wait: Family<JobLabels, Histogram>,
    run_time: Family<JobLabels, Histogram>,
    fuel: Family<JobLabels, Histogram>,
    peak_memory: Family<JobLabels, Histogram>,
    running: Gauge,
    free_slots: Gauge,
    handlers_loaded: Gauge,
    load_failures: Counter,
    reconnects: Counter,
    trace_refused: Family<Refused, Counter>,
    spans_exported: Counter,
    spans_lost: Counter,
    handler_loads: Family<LoadSource, Counter>,
    artifacts_refused: Counter,
    artifacts_published: Counter,
    labelled: RwLock<HashSet<String>>,
    /// Each (queue, job_type label)'s metrics, looked up without allocating: the
    /// per-job path reads them under one short read lock.
    per_job_type: RwLock<HashMap<String, HashMap<String, Arc<JobTypeMetrics>>>>,
    snapshot: OnceLock<SnapshotFn>,
}

/// The metrics of one queue and `job_type` label: handles into the families,
/// taken once (a family lookup hashes and allocates its label set).
#[derive(Debug)]
struct JobTypeMetrics {
    completed: Counter,
    retries: Counter,
    dead_letters: Counter,
    queue_wait: Histogram,
    run_time: Histogram,
    fuel: Histogram,
    peak_memory: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("jobbox");
        let finished = Family::<Finished, Counter>::default();
        let retries = Family::<JobLabels, Counter>::default();
        let dead_letters = Family::<JobLabels, Counter>::default();
        // Seconds: 1 ms to ~9 h (queue wait), 100 µs to ~55 min (run time).
        let queue_wait = Family::<JobLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 25))) as fn() -> Histogram,
        );
        let run_time = Family::<JobLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0001, 2.0, 25))) as fn() -> Histogram,
        );
        // Fuel (≈ instructions): 1,000 to ~10^12. Memory: 64 KiB (one page) to 64 GiB.
        let fuel = Family::<JobLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(1000.0, 4.0, 16))) as fn() -> Histogram,
        );
        let peak_memory = Family::<JobLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(65536.0, 2.0, 21))) as fn() -> Histogram,
        );
        registry.register(
            "jobs_finished",
            "Jobs that ended here, by final status and error type",
            finished.clone(),
        );
        registry.register(
            "job_retries",
            "Attempts handed back for a retry",
            retries.clone(),
        );
        registry.register(
            "dead_letters",
            "Jobs put into the dead-letter queue",
            dead_letters.clone(),
        );
        registry.register(
            "job_queue_wait_seconds",
            "Time from enqueue (or the scheduled time) to the start of a run",
            queue_wait.clone(),
        );
        registry.register(
            "job_run_seconds",
            "Wall time of a handler run",
            run_time.clone(),
        );
        registry.register("job_fuel", "Fuel a handler run consumed", fuel.clone());
        registry.register(
            "job_peak_memory_bytes",
            "Peak linear memory of a handler run",
            peak_memory.clone(),
        );
        let running = Gauge::default();
        let free_slots = Gauge::default();
        let handlers_loaded = Gauge::default();
        let load_failures = Counter::default();
        let reconnects = Counter::default();
        registry.register("running_jobs", "Handlers running now", running.clone());
        registry.register("free_slots", "Run slots not taken", free_slots.clone());
        registry.register(
            "handlers_loaded",
            "Job types with a loaded handler",
            handlers_loaded.clone(),
        );
        registry.register(
            "handler_load_failures",
            "Handler versions that failed to load",
            load_failures.clone(),
        );
        registry.register(
            "nats_reconnects",
            "Times the NATS connection came back after a loss",
            reconnects.clone(),
        );
        let trace_refused = Family::<Refused, Counter>::default();
        let spans_exported = Counter::default();
        let spans_lost = Counter::default();
        registry.register(
            "trace_context_refused",
            "Job messages whose traceparent or tracestate was refused, by reason",
            trace_refused.clone(),
        );
        registry.register(
            "spans_exported",
            "Job spans the OTLP collector accepted",
            spans_exported.clone(),
        );
        registry.register(
            "spans_lost",
            "Job spans lost because an OTLP export failed",
            spans_lost.clone(),
        );
        let handler_loads = Family::<LoadSource, Counter>::default();
        let artifacts_refused = Counter::default();
        let artifacts_published = Counter::default();
        registry.register(
            "handler_loads",
            "Handlers loaded, by source: cache (local compile cache), fleet (an artifact another worker compiled) or compiled (here)",
            handler_loads.clone(),
        );
        registry.register(
            "fleet_artifacts_refused",
            "Fleet artifacts refused (tampered, sealed under another key, not sealed) and compiled again",
            artifacts_refused.clone(),
        );
        registry.register(
            "fleet_artifacts_published",
            "Compiled handlers this worker sealed and shared with the fleet",
            artifacts_published.clone(),
        );
        Self {
            registry,
            handler_loads,
            artifacts_refused,
            artifacts_published,
            trace_refused,
            spans_exported,
            spans_lost,
            finished,
            retries,
            dead_letters,
            queue_wait,
            run_time,
            fuel,
            peak_memory,
            running,
            free_slots,
            handlers_loaded,
            load_failures,
            reconnects,
            labelled: RwLock::default(),
            per_job_type: RwLock::default(),
            snapshot: OnceLock::new(),
        }
    }

    /// Sets where scrape-time values come from (once; later calls are ignored).
    pub fn set_snapshot(&self, snapshot: impl Fn() -> Snapshot + Send + Sync + 'static) {
        let _ = self.snapshot.set(Box::new(snapshot));
    }

    /// The `job_type` label for `job_type`: itself if `routed` (it has a deployed
    /// route here) and the label budget allows, else [`OTHER_JOB_TYPE`].
    pub fn job_type_label<'a>(&self, job_type: &'a str, routed: bool) -> &'a str {
        if !routed {
            return OTHER_JOB_TYPE;
        }
        if self
            .labelled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(job_type)
        {
            return job_type;
        }
        let mut labelled = self
            .labelled
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if labelled.contains(job_type) || labelled.len() < MAX_JOB_TYPE_LABELS {
            labelled.insert(job_type.to_string());
            job_type
        } else {
            OTHER_JOB_TYPE
        }
    }

    /// The handles of `queue` and `job_type` (a label from [`Self::job_type_label`]),
    /// made on first use. Both are bounded (the worker's queues, the label budget),
    /// so the map is too.
    fn per_job_type(&self, queue: &str, job_type: &str) -> Arc<JobTypeMetrics> {
        if let Some(found) = self
            .per_job_type
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(queue)
            .and_then(|by_type| by_type.get(job_type))
        {
            return Arc::clone(found);
        }
        let labels = labels(queue, job_type);
        let made = Arc::new(JobTypeMetrics {
            completed: self
                .finished
                .get_or_create(&Finished {
                    queue: queue.to_string(),
                    job_type: job_type.to_string(),
                    status: JobStatus::Completed.as_str(),
                    error_type: "",
                })
                .clone(),
            retries: self.retries.get_or_create(&labels).clone(),
            dead_letters: self.dead_letters.get_or_create(&labels).clone(),
            queue_wait: self.queue_wait.get_or_create(&labels).clone(),
            run_time: self.run_time.get_or_create(&labels).clone(),
            fuel: self.fuel.get_or_create(&labels).clone(),
            peak_memory: self.peak_memory.get_or_create(&labels).clone(),
        });
        let mut map = self
            .per_job_type
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry(queue.to_string())
                .or_default()
                .entry(job_type.to_string())
                .or_insert(made),
        )
    }

    /// Counts a job that ended in `status` (with `error_type` if it failed).
    pub fn finished(
        &self,
        queue: &str,
        job_type: &str,
        status: JobStatus,
        error_type: Option<ErrorType>,
    ) {
        if status == JobStatus::Completed && error_type.is_none() {
            self.per_job_type(queue, job_type).completed.inc();
            return;
        }
        self.finished
            .get_or_create(&Finished {
                queue: queue.to_string(),
                job_type: job_type.to_string(),
                status: status.as_str(),
                error_type: error_type.map_or("", ErrorType::as_str),
            })
            .inc();
    }

    /// Counts an attempt handed back for a retry.
    pub fn retried(&self, queue: &str, job_type: &str) {
        self.per_job_type(queue, job_type).retries.inc();
    }

    /// Counts a job put into the dead-letter queue.
    pub fn dead_lettered(&self, queue: &str, job_type: &str) {
        self.per_job_type(queue, job_type).dead_letters.inc();
    }

    /// Records how long a job waited from enqueue to start.
    pub fn queue_wait(&self, queue: &str, job_type: &str, wait: Duration) {
        self.per_job_type(queue, job_type)
            .queue_wait
            .observe(wait.as_secs_f64());
    }

    /// Records the resource receipt of a handler run.
    pub fn ran(&self, queue: &str, job_type: &str, usage: &Usage) {
        let handles = self.per_job_type(queue, job_type);
        handles.run_time.observe(usage.wall_time_us as f64 / 1e6);
        handles.fuel.observe(usage.fuel_consumed as f64);
        handles.peak_memory.observe(usage.peak_memory_bytes as f64);
    }

    /// Counts a job message whose trace context was refused.
    pub fn trace_context_refused(&self, reason: jobbox::InvalidTraceContext) {
        self.trace_refused
            .get_or_create(&Refused {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Marks a handler run as started until the guard is dropped.
    pub fn running(&self) -> RunningGuard<'_> {
        self.running.inc();
        RunningGuard(&self.running)
    }

    /// The metrics as OpenMetrics text, scrape-time values read first.
    pub fn encode(&self) -> String {
        if let Some(snapshot) = self.snapshot.get() {
            let now = snapshot();
            self.free_slots.set(now.free_slots);
            self.handlers_loaded.set(now.handlers_loaded);
            advance(&self.load_failures, now.load_failures);
            advance(&self.reconnects, now.reconnects);
            advance(&self.spans_exported, now.spans_exported);
            advance(&self.spans_lost, now.spans_lost);
            for (source, total) in [
                ("cache", now.loads_from_cache),
                ("fleet", now.loads_from_fleet),
                ("compiled", now.loads_compiled),
            ] {
                advance(
                    &self.handler_loads.get_or_create(&LoadSource { source }),
                    total,
                );
            }
            advance(&self.artifacts_refused, now.artifacts_refused);
            advance(&self.artifacts_published, now.artifacts_published);
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "failed to encode the metrics");
        }
        text
    }
}

/// Takes one running job off the gauge when dropped.
#[derive(Debug)]
pub struct RunningGuard<'a>(&'a Gauge);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn labels(queue: &str, job_type: &str) -> JobLabels {
    JobLabels {
        queue: queue.to_string(),
        job_type: job_type.to_string(),
    }
}

/// Moves a counter that mirrors a total kept elsewhere up to `total`.
fn advance(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_type_labels_are_bounded() {
        let metrics = Metrics::new();
        assert_eq!(metrics.job_type_label("<script>", false), OTHER_JOB_TYPE);
        for n in 0..MAX_JOB_TYPE_LABELS {
            assert_eq!(
                metrics.job_type_label(&format!("t{n}"), true),
                format!("t{n}")
            );
        }
        assert_eq!(metrics.job_type_label("one-too-many", true), OTHER_JOB_TYPE);
        assert_eq!(metrics.job_type_label("t0", true), "t0");
    }

    #[test]
    fn counts_and_histograms_show_in_the_text() {
        let metrics = Metrics::new();
        metrics.finished("q", "echo", JobStatus::Completed, None);
        metrics.finished("q", "echo", JobStatus::Failed, Some(ErrorType::Trap));
        let usage = Usage {
            wall_time_us: 1500,
            fuel_consumed: 10,
            peak_memory_bytes: 65536,
            ..Usage::default()
        };
        metrics.ran("q", "echo", &usage);
        {
            let _running = metrics.running();
            assert!(metrics.encode().contains("jobbox_running_jobs 1"));
        }
        let text = metrics.encode();
        assert!(text.contains(r#"jobbox_jobs_finished_total{queue="q",job_type="echo",status="COMPLETED",error_type=""} 1"#), "{text}");
        assert!(
            text.contains("jobbox_job_run_seconds_count{queue=\"q\",job_type=\"echo\"} 1"),
            "{text}"
        );
        assert!(text.contains("jobbox_running_jobs 0"), "{text}");
    }
}
