//! Bad input through the worker: messages that are not jobs, unknown job types,
//! broken routes and hostile guests all end as final results with their error type
//! (unknown job types retry first, then are dead-lettered), and the same worker then
//! completes a normal job.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use jobbox::{Client, ErrorType, EventsFrom, HandlerLimits, Job, JobEventType, JobStatus, Route};
use jobbox_host::registry::DeployOptions;
use jobbox_tests::{
    NatsServer, RunningWorker, brief, deploy_guest, deploy_guest_with, guests, wait_result,
};
use serde_json::{Value, json};

const QUEUE: &str = "bad";

async fn assert_echo_still_works(client: &Client) {
    let job = Job::json("echo", &json!({"still": "alive"}))
        .expect("encodes")
        .queue(QUEUE);
    client.enqueue(&job).await.expect("enqueue");
    let result = wait_result(client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert_eq!(
        result.result_json::<Value>().expect("json"),
        json!({"still": "alive"})
    );
}

async fn enqueue_and_wait(client: &Client, job: &Job) -> jobbox::JobResult {
    client.enqueue(job).await.expect("enqueue");
    wait_result(client, &job.id, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_are_not_jobs_are_failed_and_terminated() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let worker = RunningWorker::on(&server.url(), &[QUEUE], 2).await;
    let subject = jobbox::nats::job_subject(QUEUE, jobbox::DEFAULT_PRIORITY);

    // With a message id: the result is filed under it.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, "garbage-1");
    client
        .jetstream()
        .publish_with_headers(
            subject.clone(),
            headers,
            Bytes::from_static(b"\xc1\xc1 not msgpack"),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    let result = wait_result(&client, "garbage-1", Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Failed);
    assert_eq!(result.error_type, Some(ErrorType::BadJob));

    // Without one: under its stream sequence.
    let ack = client
        .jetstream()
        .publish(subject, Bytes::from_static(b"{\"json\": \"is not a job\"}"))
        .await
        .expect("publish")
        .await
        .expect("stored");
    let result = wait_result(
        &client,
        &format!("seq-{}", ack.sequence),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(result.error_type, Some(ErrorType::BadJob));

    // A job whose timestamp has no UTC offset (Python's `utcnow().isoformat()`): the
    // error says so, under its message id.
    let mut naive = serde_json::to_value(Job::new("echo", Vec::new())).expect("to json");
    naive["created_at"] = json!("2026-12-02T10:00:00");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, "naive-1");
    let bytes = jobbox::wire::encode(&naive).expect("encode");
    client
        .jetstream()
        .publish_with_headers(
            jobbox::nats::job_subject(QUEUE, jobbox::DEFAULT_PRIORITY),
            headers,
            Bytes::from(bytes),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    let result = wait_result(&client, "naive-1", Duration::from_secs(30)).await;
    assert_eq!(
        result.error_type,
        Some(ErrorType::BadJob),
        "{}",
        brief(&result)
    );
    let error = result.error.as_deref().unwrap_or_default();
    assert!(error.contains("has no UTC offset"), "{error}");

    assert_echo_still_works(&client).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_before_its_handler_is_deployed_runs_once_it_is() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let worker = RunningWorker::on(&server.url(), &[QUEUE], 2).await;

    // Retries left: the job waits with backoff until the route exists.
    let early = Job::json("late", &json!({"early": true}))
        .expect("encodes")
        .queue(QUEUE)
        .max_retries(8);
    let events = client
        .events(None, Some(&early.id), EventsFrom::Start)
        .await
        .expect("follow events");
    let mut events = std::pin::pin!(events);
    client.enqueue(&early).await.expect("enqueue");
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .expect("a retry is scheduled")
            .expect("the stream goes on")
            .expect("an event");
        assert_ne!(event.event_type, JobEventType::DeadLettered);
        if event.event_type == JobEventType::RetryScheduled {
            assert_eq!(event.error_type, Some(ErrorType::UnknownJobType));
            break;
        }
    }

    // No retries left: a dead letter, replayable once the route exists.
    let lost = Job::json("late", &json!({"lost": true}))
        .expect("encodes")
        .queue(QUEUE)
        .max_retries(0);
    let result = enqueue_and_wait(&client, &lost).await;
    assert_eq!(result.status, JobStatus::DeadLetter, "{}", brief(&result));
    assert_eq!(result.error_type, Some(ErrorType::UnknownJobType));
    assert!(result.retryable, "{}", brief(&result));

    deploy_guest(&client, "late", guests::ECHO).await;
    let result = wait_result(&client, &early.id, Duration::from_secs(60)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert_eq!(
        result.result_json::<Value>().expect("json"),
        json!({"early": true})
    );

    let letters = client.dead_letters(Some(QUEUE)).await.expect("dlq");
    let (sequence, letter) = letters
        .iter()
        .find(|(_, l)| l.job.id == lost.id)
        .expect("the dead letter is stored");
    assert_eq!(letter.error_type, Some(ErrorType::UnknownJobType));
    client
        .replay_dead_letter(*sequence, letter)
        .await
        .expect("replay");
    let replayed = wait_result(&client, &lost.id, Duration::from_secs(60)).await;
    assert_eq!(
        replayed.status,
        JobStatus::Completed,
        "{}",
        brief(&replayed)
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_job_types_and_broken_routes_fail_cleanly() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let echo = deploy_guest(&client, "echo", guests::ECHO).await;
    let worker = RunningWorker::on(&server.url(), &[QUEUE], 2).await;

    // Unknown job types are retryable: with no retries left, a dead letter.
    let job = Job::json("no-such-type", &json!({}))
        .expect("encodes")
        .queue(QUEUE)
        .max_retries(0);
    let result = enqueue_and_wait(&client, &job).await;
    assert_eq!(result.status, JobStatus::DeadLetter, "{}", brief(&result));
    assert_eq!(result.error_type, Some(ErrorType::UnknownJobType));

    // A route whose object does not exist.
    let missing = Route {
        job_type: "missing-object".into(),
        digest: format!("sha256:{}", "0".repeat(64)),
        ..echo.clone()
    };
    client.set_route(&missing).await.expect("set route");
    let job = Job::json("missing-object", &json!({}))
        .expect("encodes")
        .queue(QUEUE);
    let result = enqueue_and_wait(&client, &job).await;
    assert_eq!(
        result.error_type,
        Some(ErrorType::HandlerUnavailable),
        "{}",
        brief(&result)
    );

    // A route whose object's bytes do not match its digest.
    let fake_digest = format!("sha256:{}", "1".repeat(64));
    let mut tampered: &[u8] = b"\0asm\x0d\0\x01\0 tampered";
    client
        .layout()
        .handlers
        .put(
            jobbox::nats::handler_object(&fake_digest).as_str(),
            &mut tampered,
        )
        .await
        .expect("put object");
    let tampered_route = Route {
        job_type: "tampered".into(),
        digest: fake_digest,
        ..echo
    };
    client.set_route(&tampered_route).await.expect("set route");
    let job = Job::json("tampered", &json!({}))
        .expect("encodes")
        .queue(QUEUE);
    let result = enqueue_and_wait(&client, &job).await;
    assert_eq!(
        result.error_type,
        Some(ErrorType::HandlerUnavailable),
        "{}",
        brief(&result)
    );
    assert!(
        result.error.as_deref().unwrap_or("").contains("digest"),
        "{}",
        brief(&result)
    );

    assert_echo_still_works(&client).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_end_as_classified_failures() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let tight = HandlerLimits {
        fuel: 200_000_000,
        memory_bytes: 32 * 1024 * 1024,
        timeout_ms: 2_000,
        output_bytes: 64 * 1024,
        ..HandlerLimits::default()
    };
    let cases = [
        ("spin", guests::SPIN, json!({}), ErrorType::OutOfFuel),
        (
            "hostcall-loop",
            guests::HOSTCALL_LOOP,
            json!({}),
            // Time spent inside host calls burns no fuel: the deadline stops it.
            ErrorType::Timeout,
        ),
        (
            "memory-bomb",
            guests::MEMORY_BOMB,
            json!({}),
            ErrorType::MemoryLimit,
        ),
        (
            "recursion",
            guests::RECURSION,
            json!({}),
            ErrorType::StackOverflow,
        ),
        ("panic", guests::PANIC, json!({}), ErrorType::Trap),
        (
            "huge-output",
            guests::HUGE_OUTPUT,
            json!({"bytes": 1_000_000}),
            ErrorType::OutputTooLarge,
        ),
        (
            "time-bomb",
            guests::TIME_BOMB,
            json!({"sleep_ms": 3_600_000}),
            ErrorType::Timeout,
        ),
        ("reject", guests::REJECT, json!({}), ErrorType::GuestError),
    ];
    for (job_type, path, _, _) in &cases {
        let options = DeployOptions {
            limits: tight,
            ..DeployOptions::default()
        };
        deploy_guest_with(&client, job_type, path, options).await;
    }
    let worker = RunningWorker::on(&server.url(), &[QUEUE], 2).await;
    for (job_type, _, payload, expected) in cases {
        let job = Job::json(job_type, &payload).expect("encodes").queue(QUEUE);
        let result = enqueue_and_wait(&client, &job).await;
        assert_eq!(
            result.status,
            JobStatus::Failed,
            "{job_type}: {}",
            brief(&result)
        );
        assert_eq!(
            result.error_type,
            Some(expected),
            "{job_type}: {}",
            brief(&result)
        );
        assert_eq!(
            result.attempts, 1,
            "{job_type}: deterministic failures are not retried"
        );
        assert_echo_still_works(&client).await;
    }

    // A retryable guest error with no retries left is dead-lettered.
    deploy_guest(&client, "retry", guests::RETRY).await;
    let job = Job::json("retry", &json!({}))
        .expect("encodes")
        .queue(QUEUE)
        .max_retries(0);
    let result = enqueue_and_wait(&client, &job).await;
    assert_eq!(result.status, JobStatus::DeadLetter, "{}", brief(&result));
    assert_eq!(result.error_type, Some(ErrorType::GuestError));
    assert!(result.retryable);
    assert_echo_still_works(&client).await;
    worker.stop().await;
}
