//! Traces: a job's `traceparent` travels in its headers, the worker's span (exported
//! over OTLP/HTTP to a receiver in the test) is its child, and the result and events
//! carry the trace id; hostile trace contexts are refused without hurting the job.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use jobbox::{Client, Job, JobEvent, JobEventType, JobResult, JobStatus, TraceContext};
use jobbox_host::worker::WorkerConfig;
use jobbox_tests::otlp::{OtlpReceiver, attribute, proto};
use jobbox_tests::{
    NatsServer, RunningWorker, brief, deploy_guest, free_port, guests, wait_result,
};
use serde_json::json;

const QUEUE: &str = "traced";

const TIMEOUT: Duration = Duration::from_secs(30);

fn config(endpoint: Option<String>) -> WorkerConfig {
    let mut config = WorkerConfig::new(vec![QUEUE.to_string()]);
    config.concurrency = 4;
    config.ack_wait = Duration::from_secs(5);
    config.shutdown_grace = Duration::from_secs(10);
    config.otlp_endpoint = endpoint;
    config
}

fn traceparent(trace_id: &str, parent_id: &str) -> String {
    format!("00-{trace_id}-{parent_id}-01")
}

fn echo(i: u32) -> Job {
    Job::json("echo", &json!({ "i": i }))
        .expect("json")
        .queue(QUEUE)
}

/// Trace contexts a tenant may send that must not be borrowed.
fn hostile_traceparents() -> Vec<(&'static str, Vec<String>)> {
    let parent = "00f067aa0ba902b7";
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    vec![
        ("not hex", vec![traceparent(&"g".repeat(32), parent)]),
        ("zero trace id", vec![traceparent(&"0".repeat(32), parent)]),
        ("zero parent id", vec![traceparent(trace, &"0".repeat(16))]),
        ("10 KB", vec![format!("00-{}", "a".repeat(10 * 1024))]),
        (
            "upper case",
            vec![traceparent(&trace.to_uppercase(), parent)],
        ),
        ("version ff", vec![format!("ff-{trace}-{parent}-01")]),
        (
            "control chars",
            vec![format!("00-{trace}-{parent}-\t\u{1}")],
        ),
        (
            "two headers",
            vec![traceparent(trace, parent), traceparent(trace, parent)],
        ),
    ]
}

/// Publishes `job` straight to its lane with `traceparents` as its headers (what a
/// client in another language could send).
async fn publish_raw(client: &Client, job: &Job, traceparents: &[String]) {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, job.id.as_str());
    for value in traceparents {
        headers.append("traceparent", value.as_str());
    }
    client
        .jetstream()
        .publish_with_headers(
            jobbox::nats::job_subject(&job.queue, job.priority),
            headers,
            jobbox::encode(job).expect("encode").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// The job's events once its terminal event is stored (it follows the result).
async fn events_after_result(client: &Client, job_id: &str) -> Vec<JobEvent> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let events = client.job_events(job_id).await.expect("read events");
        let ended = events.iter().any(|e| {
            matches!(
                e.event_type,
                JobEventType::Completed | JobEventType::Failed | JobEventType::Cancelled
            )
        });
        if ended || Instant::now() > deadline {
            assert!(ended, "no terminal event for {job_id}: {events:?}");
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event of a job carries `trace_id`.
fn assert_events_carry(events: &[JobEvent], trace_id: Option<&str>) {
    assert!(!events.is_empty());
    for event in events {
        assert_eq!(
            event.trace_id.as_deref(),
            trace_id,
            "{:?} of {}",
            event.event_type,
            event.job_id
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans by the job id they name.
fn spans_by_job(receiver: &OtlpReceiver) -> HashMap<String, Vec<proto::Span>> {
    let mut by_job: HashMap<String, Vec<proto::Span>> = HashMap::new();
    for span in receiver.spans() {
        let job_id = attribute(&span, "jobbox.job_id").expect("every span names its job");
        by_job.entry(job_id).or_default().push(span);
    }
    by_job
}

fn only_span<'a>(spans: &'a HashMap<String, Vec<proto::Span>>, job_id: &str) -> &'a proto::Span {
    let found = spans.get(job_id).map_or(&[][..], Vec::as_slice);
    assert_eq!(found.len(), 1, "spans of {job_id}: {found:?}");
    &found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_spans_are_children_of_the_enqueuers_trace() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "reject", guests::REJECT).await;
    let receiver = OtlpReceiver::start().await;
    let worker = RunningWorker::start(&server.url(), config(Some(receiver.endpoint()))).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let context = TraceContext::parse(&traceparent(trace_id, parent_id), Some("congo=t61"))
        .expect("valid traceparent");
    let traced = echo(1).trace(context.clone());
    let failing = Job::json("reject", &json!({}))
        .expect("json")
        .queue(QUEUE)
        .max_retries(0)
        .trace(
            TraceContext::parse(&traceparent(&"ab".repeat(16), "1122334455667788"), None)
                .expect("valid"),
        );
    // A delayed job waits as a message schedule: the headers survive it.
    let delayed = echo(2).delay(Duration::from_millis(500)).trace(
        TraceContext::parse(&traceparent(&"cd".repeat(16), "8877665544332211"), None)
            .expect("valid"),
    );
    let untraced = echo(3);
    // Through the atomic batch path (several jobs in one publish).
    let batch = jobbox::BatchSpec::new(
        "traced-batch",
        (10..13).map(|i| echo(i).trace(context.clone())).collect(),
    );
    for job in [&traced, &failing, &delayed, &untraced] {
        client.enqueue(job).await.expect("enqueue");
    }
    let batch = client.submit_batch(batch).await.expect("submit the batch");
    let mut hostile = Vec::new();
    for (i, (what, values)) in hostile_traceparents().into_iter().enumerate() {
        let job = echo(100 + i as u32);
        publish_raw(&client, &job, &values).await;
        hostile.push((what, job));
    }

    let result = wait_result(&client, &traced.id, TIMEOUT).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert_eq!(result.trace_id.as_deref(), Some(trace_id));
    assert_events_carry(
        &events_after_result(&client, &traced.id).await,
        Some(trace_id),
    );
    let failed = wait_result(&client, &failing.id, TIMEOUT).await;
    assert_ne!(failed.status, JobStatus::Completed, "{}", brief(&failed));
    assert_eq!(failed.trace_id.as_deref(), failing.trace_id());
    let delayed_result = wait_result(&client, &delayed.id, TIMEOUT).await;
    assert_eq!(delayed_result.trace_id.as_deref(), delayed.trace_id());
    let root = wait_result(&client, &untraced.id, TIMEOUT).await;
    let root_trace = root
        .trace_id
        .clone()
        .expect("with export on, a job gets a root trace");
    // The enqueuer knew of no trace; the worker's events carry its root trace.
    let events = events_after_result(&client, &untraced.id).await;
    let (enqueued, worker_events): (Vec<_>, Vec<_>) = events
        .into_iter()
        .partition(|e| e.event_type == JobEventType::Enqueued);
    assert_events_carry(&enqueued, None);
    assert_events_carry(&worker_events, Some(&root_trace));
    let mut batch_results = Vec::new();
    for n in 0..3 {
        let id = jobbox::batch_job_id(&batch.batch_id, n);
        let result = wait_result(&client, &id, TIMEOUT).await;
        assert_eq!(
            result.trace_id.as_deref(),
            Some(trace_id),
            "{}",
            brief(&result)
        );
        batch_results.push(result);
    }
    let mut hostile_results: Vec<(&str, Job, JobResult)> = Vec::new();
    for (what, job) in hostile {
        let result = wait_result(&client, &job.id, TIMEOUT).await;
        assert_eq!(
            result.status,
            JobStatus::Completed,
            "{what}: {}",
            brief(&result)
        );
        let started = events_after_result(&client, &job.id)
            .await
            .into_iter()
            .find(|e| e.event_type == JobEventType::Started)
            .expect("a STARTED event");
        assert!(
            started.details.contains_key("trace_context_refused"),
            "{what}: {:?}",
            started.details
        );
        hostile_results.push((what, job, result));
    }

    // Stopping the worker exports every span still queued.
    worker.stop().await;
    let spans = spans_by_job(&receiver);

    let span = only_span(&spans, &traced.id);
    assert_eq!(hex(&span.trace_id), trace_id);
    assert_eq!(hex(&span.parent_span_id), parent_id);
    assert_eq!(span.name, "job echo");
    assert_eq!(span.kind, proto::span::SpanKind::Consumer as i32);
    assert_eq!(span.trace_state, "congo=t61");
    assert_eq!(attribute(span, "jobbox.queue").as_deref(), Some(QUEUE));
    assert_eq!(attribute(span, "jobbox.job_type").as_deref(), Some("echo"));
    assert_eq!(attribute(span, "jobbox.attempt").as_deref(), Some("1"));
    assert_eq!(
        attribute(span, "jobbox.status").as_deref(),
        Some("COMPLETED")
    );
    assert_eq!(attribute(span, "jobbox.error_type"), None);
    assert_eq!(
        attribute(span, "jobbox.fuel"),
        Some(result.usage.fuel_consumed.to_string())
    );
    // From enqueue to result: it starts at the job's creation and ends after the run.
    let created = traced.created_at.timestamp_nanos_opt().expect("in range");
    assert_eq!(
        span.start_time_unix_nano,
        u64::try_from(created).expect("after 1970")
    );
    let finished = result.finish_time.timestamp_nanos_opt().expect("in range") as u64;
    assert!(span.end_time_unix_nano >= finished);
    let names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["started", "finished"]);
    let started = result.start_time.timestamp_nanos_opt().expect("in range") as u64;
    assert_eq!(span.events[0].time_unix_nano, started);
    assert_eq!(span.status.as_ref().map(|s| s.code), Some(1), "ok");

    let span = only_span(&spans, &failing.id);
    assert_eq!(hex(&span.parent_span_id), "1122334455667788");
    assert_eq!(
        attribute(span, "jobbox.status"),
        Some(failed.status.to_string())
    );
    assert_eq!(
        attribute(span, "jobbox.error_type"),
        failed.error_type.map(|e| e.to_string())
    );
    assert_eq!(span.status.as_ref().map(|s| s.code), Some(2), "error");

    let span = only_span(&spans, &delayed.id);
    assert_eq!(hex(&span.parent_span_id), "8877665544332211");
    assert_eq!(
        Some(hex(&span.trace_id)),
        delayed.trace_id().map(str::to_string)
    );

    let span = only_span(&spans, &untraced.id);
    assert_eq!(hex(&span.trace_id), root_trace);
    assert!(span.parent_span_id.is_empty(), "a root span");

    for result in &batch_results {
        let span = only_span(&spans, &result.job_id);
        assert_eq!(hex(&span.parent_span_id), parent_id);
    }

    for (what, job, result) in &hostile_results {
        let span = only_span(&spans, &job.id);
        assert!(span.parent_span_id.is_empty(), "{what}: no borrowed parent");
        assert_eq!(Some(hex(&span.trace_id)), result.trace_id, "{what}");
        assert_ne!(result.trace_id.as_deref(), Some(trace_id), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_ids_travel_without_export_and_hostile_ones_are_refused() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut config = config(None);
    config.metrics_addr = Some(metrics_addr.parse().expect("socket address"));
    let worker = RunningWorker::start(&server.url(), config).await;

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let traced = echo(1).trace(
        TraceContext::parse(&traceparent(trace_id, "b7ad6b7169203331"), None).expect("valid"),
    );
    let untraced = echo(2);
    // What the client refuses never reaches a header: a newline cannot be sent.
    for hostile in [
        format!("00-{trace_id}-b7ad6b7169203331-01\n"),
        format!("00-{trace_id}\n-b7ad6b716920333-01"),
    ] {
        assert!(TraceContext::parse(&hostile, None).is_err());
    }
    for job in [&traced, &untraced] {
        client.enqueue(job).await.expect("enqueue");
    }
    let hostile = hostile_traceparents();
    let mut hostile_jobs = Vec::new();
    for (i, (what, values)) in hostile.iter().enumerate() {
        let job = echo(100 + i as u32);
        publish_raw(&client, &job, values).await;
        hostile_jobs.push((*what, job));
    }

    let result = wait_result(&client, &traced.id, TIMEOUT).await;
    assert_eq!(
        result.trace_id.as_deref(),
        Some(trace_id),
        "{}",
        brief(&result)
    );
    assert_events_carry(
        &events_after_result(&client, &traced.id).await,
        Some(trace_id),
    );
    let result = wait_result(&client, &untraced.id, TIMEOUT).await;
    assert_eq!(result.trace_id, None, "no trace, no export: no trace id");
    assert_events_carry(&events_after_result(&client, &untraced.id).await, None);
    for (what, job) in &hostile_jobs {
        let result = wait_result(&client, &job.id, TIMEOUT).await;
        assert_eq!(
            result.status,
            JobStatus::Completed,
            "{what}: {}",
            brief(&result)
        );
        assert_eq!(result.trace_id, None, "{what}");
        assert_events_carry(&events_after_result(&client, &job.id).await, None);
    }
    let samples =
        jobbox_tests::http::parse_metrics(&jobbox_tests::http::get(&metrics_addr, "/metrics").body);
    assert_eq!(
        jobbox_tests::http::sum(&samples, "jobbox_trace_context_refused_total", &[]),
        hostile.len() as f64
    );
    assert_eq!(
        jobbox_tests::http::sum(
            &samples,
            "jobbox_trace_context_refused_total",
            &[("reason", "trace_id")]
        ),
        3.0,
        "not hex, all zeros, upper case"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_loses_spans_not_jobs() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    // A port nothing listens on: every export is refused.
    let mut config = config(Some(format!("http://127.0.0.1:{}", free_port())));
    config.metrics_addr = Some(metrics_addr.parse().expect("socket address"));
    let worker = RunningWorker::start(&server.url(), config).await;

    let jobs: Vec<Job> = (0..20).map(echo).collect();
    for job in &jobs {
        client.enqueue(job).await.expect("enqueue");
    }
    for job in &jobs {
        let result = wait_result(&client, &job.id, TIMEOUT).await;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
        assert!(result.trace_id.is_some());
    }
    // The lost spans are counted once their export has failed.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let body = jobbox_tests::http::get(&metrics_addr, "/metrics").body;
        let samples = jobbox_tests::http::parse_metrics(&body);
        let lost = jobbox_tests::http::sum(&samples, "jobbox_spans_lost_total", &[]);
        if lost >= jobs.len() as f64 || Instant::now() > deadline {
            assert_eq!(lost, jobs.len() as f64, "{body}");
            assert_eq!(
                jobbox_tests::http::sum(&samples, "jobbox_spans_exported_total", &[]),
                0.0
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The worker still runs jobs, and stops cleanly.
    let more = echo(99);
    client.enqueue(&more).await.expect("enqueue");
    assert_eq!(
        wait_result(&client, &more.id, TIMEOUT).await.status,
        JobStatus::Completed
    );
    worker.stop().await;
}
