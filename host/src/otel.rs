//! OpenTelemetry traces: one span per job attempt, exported over OTLP/HTTP
//! (protobuf) when the worker is given an endpoint (`--otlp-endpoint` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`).
//!
//! A span covers a job from its enqueue (`created_at`) to the result of the attempt;
//! its parent is the enqueuer's `traceparent` when the job message carries a valid
//! one (a new root trace otherwise). Spans are handed to a batch processor that
//! exports from its own thread: ending a span never waits, a full queue drops the
//! span, and a collector that is down loses the spans of its batches (counted in
//! [`ExportStats`]), never a job. Without an endpoint none of this exists.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use jobbox::{ErrorType, Job, JobStatus, TraceContext};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

/// The environment variable that names the collector when `--otlp-endpoint` does not.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Spans waiting for export at most; past this, new spans are dropped.
///
/// Why: at 20,000 jobs/s a batch of [`EXPORT_BATCH`] leaves every ~25 ms; 8,192
/// spans (a few MiB) ride out a collector that pauses for a few hundred ms without
/// letting one that is down make the worker hold spans without bound.
pub const MAX_QUEUED_SPANS: usize = 8192;

/// Spans in one export request.
pub const EXPORT_BATCH: usize = 512;

/// How long spans wait at most before they are exported.
pub const EXPORT_INTERVAL: Duration = Duration::from_secs(1);

/// How long one export request may take before its spans count as lost.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Attributes a job's span has at most: five from its start, three from its end.
const SPAN_ATTRIBUTES: usize = 8;

/// How long a stopping worker waits for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts of what the exporter did with the spans handed to it.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans lost because an export request failed (collector down, refused, slow).
    pub lost: AtomicU64,
}

/// The tracer of a worker that exports spans.
#[derive(Debug)]
pub struct JobTracer {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    stats: Arc<ExportStats>,
}

/// How one attempt of a job ended, as its span records it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// What the attempt left the job as: its final status, RETRYING, or `None` when
    /// it recorded nothing (handed back, fenced by another result).
    pub status: Option<JobStatus>,
    /// The failure's class, if the attempt failed.
    pub error_type: Option<ErrorType>,
    /// Fuel the handler consumed, if it ran.
    pub fuel: Option<u64>,
    /// When the handler started, if it did.
    pub started_at: Option<DateTime<Utc>>,
}

/// The collector URL for traces: `endpoint` as given (`OTEL_EXPORTER_OTLP_ENDPOINT`
/// semantics: a base URL) with `/v1/traces` added.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim().trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

impl JobTracer {
    /// A tracer exporting to the OTLP/HTTP collector at `endpoint` (a base URL such
    /// as `http://127.0.0.1:4318`), naming `worker_id` as the service instance.
    ///
    /// Starts the exporter's thread; nothing is sent until spans end.
    pub fn new(endpoint: &str, worker_id: &str) -> anyhow::Result<Self> {
        let url = traces_url(endpoint);
        // The exporter is built without TLS (no second TLS stack in the worker).
        anyhow::ensure!(
            url.starts_with("http://"),
            "the OTLP endpoint {endpoint:?} is not an http:// URL (https is not supported: \
             export to a local collector or agent)"
        );
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .with_context(|| format!("failed to set up OTLP export to {url}"))?;
        let stats = Arc::new(ExportStats::default());
        let exporter = Counted {
            inner: exporter,
            stats: Arc::clone(&stats),
            url,
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUED_SPANS)
            .with_max_export_batch_size(EXPORT_BATCH)
            .with_scheduled_delay(EXPORT_INTERVAL)
            .build();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name("jobbox-worker")
            .with_attribute(KeyValue::new("service.instance.id", worker_id.to_string()))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build(),
            )
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("jobbox");
        Ok(Self {
            provider,
            tracer,
            stats,
        })
    }

    /// What the exporter did so far.
    pub fn stats(&self) -> &Arc<ExportStats> {
        &self.stats
    }

    /// Starts the span of one attempt of `job`: a child of `parent` when given, a
    /// new root trace otherwise, starting when the job was enqueued.
    pub fn start(&self, job: &Job, parent: Option<&TraceContext>) -> JobSpan {
        let parent_cx = match parent.and_then(remote_context) {
            Some(remote) => Context::new().with_remote_span_context(remote),
            None => Context::new(),
        };
        // `created_at` is the enqueuer's clock: never after now.
        let enqueued = SystemTime::from(job.created_at.min(Utc::now()));
        // Room for the attributes `end` adds, so they do not grow the vector.
        let mut attributes = Vec::with_capacity(SPAN_ATTRIBUTES);
        attributes.extend([
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("jobbox.queue", job.queue.clone()),
            KeyValue::new("jobbox.job_type", job.job_type.clone()),
            KeyValue::new("jobbox.job_id", job.id.clone()),
            KeyValue::new("jobbox.attempt", i64::from(job.attempt)),
        ]);
        let span = self
            .tracer
            .span_builder(format!("job {}", job.job_type))
            .with_kind(SpanKind::Consumer)
            .with_start_time(enqueued)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent_cx);
        JobSpan { span }
    }

    /// Exports the spans still queued (waiting at most a few seconds) and stops the
    /// exporter's thread.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let stopped =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the span exporter did not stop cleanly"),
            Err(e) => tracing::warn!(error = %e, "the span exporter's shutdown panicked"),
        }
    }
}

/// The span of one attempt.
#[derive(Debug)]
pub struct JobSpan {
    span: opentelemetry_sdk::trace::Span,
}

impl JobSpan {
    /// The trace context this span puts the job in: its trace id, with this span as
    /// the parent. `None` for a span that records nothing (its parent was not
    /// sampled).
    pub fn context(&self) -> Option<TraceContext> {
        let cx = self.span.span_context();
        if !cx.is_valid() || !cx.is_sampled() {
            return None;
        }
        TraceContext::new(cx.trace_id().to_bytes(), cx.span_id().to_bytes(), true)
    }

    /// Records how the attempt ended and ends the span now.
    pub fn end(mut self, outcome: &Outcome) {
        if !self.span.is_recording() {
            return;
        }
        if let Some(started_at) = outcome.started_at {
            self.span
                .add_event_with_timestamp("started", SystemTime::from(started_at), Vec::new());
        }
        if let Some(status) = outcome.status {
            self.span
                .set_attribute(KeyValue::new("jobbox.status", status.as_str()));
        }
        if let Some(error_type) = outcome.error_type {
            self.span
                .set_attribute(KeyValue::new("jobbox.error_type", error_type.as_str()));
        }
        if let Some(fuel) = outcome.fuel {
            self.span.set_attribute(KeyValue::new(
                "jobbox.fuel",
                i64::try_from(fuel).unwrap_or(i64::MAX),
            ));
        }
        let now = SystemTime::now();
        self.span
            .add_event_with_timestamp("finished", now, Vec::new());
        match (outcome.status, outcome.error_type) {
            (Some(JobStatus::Completed), _) => self.span.set_status(Status::Ok),
            (_, Some(error_type)) => self.span.set_status(Status::error(error_type.as_str())),
            _ => {}
        }
        self.span.end_with_timestamp(now);
    }
}

/// The OpenTelemetry form of a checked trace context.
fn remote_context(parent: &TraceContext) -> Option<SpanContext> {
    let trace_id = TraceId::from_hex(parent.trace_id()).ok()?;
    let span_id = SpanId::from_hex(parent.parent_id()).ok()?;
    let state = parent
        .tracestate()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or(TraceState::NONE);
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(parent.flags()),
        true,
        state,
    ))
}

/// An exporter that counts what it exported and what it lost.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    stats: Arc<ExportStats>,
    url: String,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                self.stats.exported.fetch_add(spans, Ordering::Relaxed);
            }
            Err(e) => {
                let before = self.stats.lost.fetch_add(spans, Ordering::Relaxed);
                // One warning for the first loss, then one per ~10,000 spans lost.
                if before == 0 || before / 10_000 != (before + spans) / 10_000 {
                    tracing::warn!(url = %self.url, error = %e, lost = before + spans, "spans not exported");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(traces_url("http://c/otel/"), "http://c/otel/v1/traces");
    }

    #[test]
    fn remote_contexts_keep_ids_and_flags() {
        let parent = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("congo=t61rcWkgMzE"),
        )
        .expect("valid");
        let cx = remote_context(&parent).expect("converts");
        assert_eq!(
            format!("{:032x}", cx.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(format!("{:016x}", cx.span_id()), "00f067aa0ba902b7");
        assert!(cx.is_sampled() && cx.is_remote());
        assert_eq!(cx.trace_state().get("congo"), Some("t61rcWkgMzE"));
    }
}
