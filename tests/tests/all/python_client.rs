//! The Python client (`clients/python`) against a real nats-server and a real `jobbox
//! worker` process: its pytest suite runs, then the Rust client reads back what the
//! Python client wrote and checks that the bytes are the ones Rust would write.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jobbox::{Client, Job, JobEvent, JobStatus, nats};
use jobbox_tests::{
    KillOnDrop, NatsServer, brief, deploy_guest, guests, jobbox_bin, spawn_worker_process,
    wait_result,
};
use serde_json::{Value, json};

/// The queue the worker serves.
const QUEUE: &str = "py";
/// A queue no worker serves: jobs there stay as the enqueue left them.
const IDLE_QUEUE: &str = "py-idle";

fn python_client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/python")
}

/// The raw message last stored on `subject` of `stream`.
async fn last_message(
    client: &Client,
    stream: &str,
    subject: &str,
) -> async_nats::jetstream::message::StreamMessage {
    client
        .jetstream()
        .get_stream(stream)
        .await
        .expect("open the stream")
        .get_last_raw_message_by_subject(subject)
        .await
        .unwrap_or_else(|e| panic!("no message on {subject}: {e}"))
}

fn header<'a>(message: &'a async_nats::jetstream::message::StreamMessage, name: &str) -> &'a str {
    message
        .headers
        .get(name)
        .map(|value| value.as_str())
        .unwrap_or_else(|| panic!("{} has no {name} header", message.subject))
}

/// Decodes a record of type `$type` the Python client wrote, and checks that the Rust
/// writer gives the same bytes for it.
macro_rules! same_bytes_as_rust {
    ($type:ty, $payload:expr) => {{
        let payload: &[u8] = $payload;
        let record: $type = jobbox::decode(payload).expect("the Python record decodes");
        let rust = jobbox::encode(&record).expect("encodes");
        assert_eq!(
            rust,
            payload,
            "the Python client wrote other bytes than Rust would for a {}",
            stringify!($type)
        );
        record
    }};
}

/// The enqueue events of `job_id` on `queue`: each with its message id, each byte for
/// byte what Rust writes.
async fn check_enqueue_event(client: &Client, queue: &str, job_id: &str, token: &str) -> JobEvent {
    let subject = format!("jobbox.events.{queue}.{job_id}.{token}");
    let message = last_message(client, nats::EVENTS_STREAM, &subject).await;
    assert_eq!(header(&message, "Nats-Msg-Id"), format!("{job_id}.{token}"));
    let event = same_bytes_as_rust!(JobEvent, &message.payload);
    assert_eq!(
        (event.job_id.as_str(), event.queue.as_str()),
        (job_id, queue)
    );
    assert_eq!(event.attempt, Some(1));
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_suite_against_a_real_worker() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "spin", guests::SPIN).await;
    let _worker = KillOnDrop(spawn_worker_process(
        &server.url(),
        &["--queue", QUEUE, "--concurrency", "4"],
    ));

    // A job the Rust client enqueued, for the Python client to read.
    let rust_job = Job::json("echo", &json!({"from": "rust"}))
        .expect("encodes")
        .queue(QUEUE);
    client.enqueue(&rust_job).await.expect("enqueue");
    let result = wait_result(&client, &rust_job.id, Duration::from_secs(120)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));

    // A server where no jobbox process ran: the Python client must not create its layout.
    let empty = NatsServer::start();

    let scratch = tempfile::tempdir().expect("temp dir");
    let handoff = scratch.path().join("handoff.json");
    let dir = python_client_dir();
    let mut command = Command::new("python3");
    command
        .args(["-m", "pytest", "-v", "-p", "no:cacheprovider", "tests"])
        .current_dir(&dir)
        .env("PYTHONPATH", dir.join("src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("JOBBOX_TEST_NATS_URL", server.url())
        .env("JOBBOX_TEST_REQUIRE_SERVER", "1")
        .env("JOBBOX_BIN", jobbox_bin())
        .env("JOBBOX_TEST_QUEUE", QUEUE)
        .env("JOBBOX_TEST_IDLE_QUEUE", IDLE_QUEUE)
        .env("JOBBOX_TEST_EMPTY_NATS_URL", empty.url())
        .env("JOBBOX_TEST_RUST_JOB", &rust_job.id)
        .env("JOBBOX_TEST_HANDOFF", &handoff);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run python3 -m pytest (scripts/setup installs pytest, nats-py and msgpack)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the Python client's tests failed");
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" passed") && !summary.contains("skipped"),
        "every Python test ran: {summary}"
    );

    let ids: Value =
        serde_json::from_str(&std::fs::read_to_string(&handoff).expect("handoff file"))
            .expect("handoff JSON");
    let id = |key: &str| {
        ids[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {ids}"))
            .to_string()
    };

    // A job Python enqueued and a worker ran.
    let completed = id("completed");
    let result = client
        .result(&completed)
        .await
        .expect("read")
        .expect("has a result");
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert_eq!(
        result.result_json::<Value>().expect("json"),
        json!({"hello": "python"})
    );

    // A job Python cancelled before it started: its result fences it, its CANCELLED
    // event carries the id of a terminal event.
    let cancelled = id("cancelled");
    let result = client
        .result(&cancelled)
        .await
        .expect("read")
        .expect("has a result");
    assert_eq!(result.status, JobStatus::Cancelled, "{}", brief(&result));
    assert_eq!(result.error_type, Some(jobbox::ErrorType::Cancelled));
    let message = last_message(
        &client,
        nats::EVENTS_STREAM,
        &format!("jobbox.events.{IDLE_QUEUE}.{cancelled}.cancelled"),
    )
    .await;
    assert_eq!(
        header(&message, "Nats-Msg-Id"),
        jobbox::final_event_id(&cancelled, result.start_time)
    );
    let event = same_bytes_as_rust!(JobEvent, &message.payload);
    assert_eq!(event.error_type, Some(jobbox::ErrorType::Cancelled));

    // A pending job with every field: the job message and its ENQUEUED event.
    let pending = id("pending");
    let message = last_message(
        &client,
        nats::JOBS_STREAM,
        &nats::job_subject(IDLE_QUEUE, 8),
    )
    .await;
    assert_eq!(header(&message, "Nats-Msg-Id"), pending);
    let job = same_bytes_as_rust!(Job, &message.payload);
    assert_eq!(job.id, pending);
    assert_eq!((job.priority, job.max_retries), (8, Some(1)));
    assert_eq!(job.tenant.as_deref(), Some("tenant-1"));
    assert_eq!(job.timeout_ms, Some(2500));
    assert_eq!(job.metadata.get("a").map(String::as_str), Some("é"));
    job.validate().expect("the Python job is valid for Rust");
    check_enqueue_event(&client, IDLE_QUEUE, &pending, "enqueued").await;
    let state = client
        .job_state(&pending)
        .await
        .expect("read")
        .expect("known");
    assert_eq!(state.status, JobStatus::Pending);

    // A delayed job: a message schedule, with SCHEDULED then ENQUEUED.
    let delayed = id("delayed");
    let message = last_message(
        &client,
        nats::JOBS_STREAM,
        &nats::scheduled_subject(IDLE_QUEUE, &delayed),
    )
    .await;
    let job = same_bytes_as_rust!(Job, &message.payload);
    let due = job.scheduled_at.expect("delayed");
    assert_eq!(header(&message, "Nats-Msg-Id"), delayed);
    assert_eq!(
        header(&message, "Nats-Schedule"),
        format!(
            "@at {}",
            due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )
    );
    assert_eq!(
        header(&message, "Nats-Schedule-Target"),
        nats::job_subject(IDLE_QUEUE, job.priority)
    );
    let scheduled = check_enqueue_event(&client, IDLE_QUEUE, &delayed, "scheduled").await;
    assert_eq!(
        scheduled.details.get("scheduled_at"),
        Some(&due.to_rfc3339())
    );
    check_enqueue_event(&client, IDLE_QUEUE, &delayed, "enqueued").await;
    let state = client
        .job_state(&delayed)
        .await
        .expect("read")
        .expect("known");
    assert_eq!(state.status, JobStatus::Scheduled);
    assert_eq!(state.scheduled_at, Some(due));
}
