//! Every message ends: hostile ids, oversized guest errors and reused ids of finished
//! jobs each end in a bounded number of deliveries with a stored result (or dead
//! letter) and a clear reason, and the worker keeps serving other jobs.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use jobbox::{Client, ErrorType, Job, JobEvent, JobEventType, JobStatus, nats, wire};
use jobbox_tests::{NatsServer, RunningWorker, brief, deploy_guest, guests, wait_result};
use serde_json::json;

async fn lane(client: &Client, queue: &str) -> PullConsumer {
    client
        .jetstream()
        .get_stream(nats::JOBS_STREAM)
        .await
        .expect("jobs stream")
        .get_consumer(&nats::consumer_name(queue, nats::Lane::Normal))
        .await
        .expect("lane consumer")
}

/// Waits until the lane has nothing pending or unacked.
async fn drained(consumer: &mut PullConsumer) -> async_nats::jetstream::consumer::Info {
    let wait = async {
        loop {
            let info = consumer.info().await.expect("info").clone();
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the lane drains")
}

fn count(events: &[JobEvent], kind: JobEventType) -> usize {
    events.iter().filter(|e| e.event_type == kind).count()
}

async fn echo_works(client: &Client, queue: &str) {
    let job = Job::json("echo", &json!({"alive": true}))
        .expect("encodes")
        .queue(queue);
    client.enqueue(&job).await.expect("enqueue");
    let result = wait_result(client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_end_once_under_their_sequence() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let worker = RunningWorker::on(&server.url(), &["ids"], 2).await;
    let long = "x".repeat(10_000);
    let ids = ["a b", "a*", "a>", "", "a.b", "\u{0}", long.as_str()];
    let mut sequences = Vec::new();
    for id in ids {
        let job = Job::json("echo", &json!({}))
            .expect("encodes")
            .id(id)
            .queue("ids");
        let ack = client
            .jetstream()
            .publish(
                nats::job_subject("ids", job.priority),
                Bytes::from(wire::encode(&job).expect("encode")),
            )
            .await
            .expect("publish")
            .await
            .expect("stored");
        sequences.push(ack.sequence);
    }
    for (id, sequence) in ids.iter().zip(&sequences) {
        let key = format!("seq-{sequence}");
        let result = wait_result(&client, &key, Duration::from_secs(30)).await;
        assert_eq!(
            result.status,
            JobStatus::Failed,
            "{id:.20?}: {}",
            brief(&result)
        );
        assert_eq!(result.error_type, Some(ErrorType::BadJob), "{id:.20?}");
        assert!(result.error.as_deref().is_some_and(|e| e.len() < 1024));
    }
    let info = drained(&mut lane(&client, "ids").await).await;
    assert_eq!(info.num_redelivered, 0, "each ended on its first delivery");
    // The worker's connection survived every id: it still runs jobs.
    echo_works(&client, "ids").await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_guest_error_is_capped_and_the_job_ends() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "huge-error", guests::HUGE_ERROR).await;
    let worker = RunningWorker::on(&server.url(), &["errors"], 2).await;

    let rejected = Job::json("huge-error", &json!({"bytes": 900_000}))
        .expect("encodes")
        .queue("errors");
    client.enqueue(&rejected).await.expect("enqueue");
    let result = wait_result(&client, &rejected.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Failed, "{}", brief(&result));
    let error = result.error.as_deref().expect("error");
    assert!(
        error.len() <= jobbox_host::worker::MAX_ERROR_BYTES,
        "{}",
        error.len()
    );
    assert!(error.ends_with("(truncated)"));

    let retried = Job::json("huge-error", &json!({"bytes": 900_000, "retry": true}))
        .expect("encodes")
        .queue("errors")
        .max_retries(1);
    client.enqueue(&retried).await.expect("enqueue");
    let result = wait_result(&client, &retried.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::DeadLetter, "{}", brief(&result));
    assert_eq!(result.attempts, 2);
    drained(&mut lane(&client, "errors").await).await;
    let events = client.job_events(&retried.id).await.expect("events");
    assert_eq!(
        count(&events, JobEventType::Started),
        2,
        "max_retries + 1 runs"
    );
    let letters = client.dead_letters(Some("errors")).await.expect("dlq");
    assert_eq!(letters.len(), 1, "the dead letter is stored");
    assert_eq!(letters[0].1.job.id, retried.id);
    assert!(
        letters[0]
            .1
            .error
            .as_deref()
            .is_some_and(|e| e.len() <= jobbox_host::worker::MAX_ERROR_BYTES)
    );
    echo_works(&client, "errors").await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reusing_a_finished_jobs_id_runs_nothing() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let worker = RunningWorker::on(&server.url(), &["reuse"], 2).await;
    let job = Job::json("echo", &json!({"n": 1}))
        .expect("encodes")
        .queue("reuse");
    client.enqueue(&job).await.expect("enqueue");
    let first = wait_result(&client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(first.status, JobStatus::Completed);

    // The same job again, past the dedupe of its message id (another id), well
    // after its result was written.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client
        .jetstream()
        .send_publish(
            nats::job_subject("reuse", job.priority),
            async_nats::jetstream::message::PublishMessage::build()
                .payload(Bytes::from(wire::encode(&job).expect("encode")))
                .message_id(format!("{}-again", job.id)),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    drained(&mut lane(&client, "reuse").await).await;
    let events = client.job_events(&job.id).await.expect("events");
    assert_eq!(
        count(&events, JobEventType::Started),
        1,
        "it did not run again"
    );
    assert_eq!(
        count(&events, JobEventType::Completed),
        1,
        "one terminal event"
    );
    let result = client.result(&job.id).await.expect("read").expect("result");
    assert_eq!(result, first, "the first result stands");
    worker.stop().await;
}

/// Publishes `job` as is, around the client's checks (as a hostile or old client
/// would).
async fn publish_raw(client: &Client, job: &Job) {
    client
        .jetstream()
        .publish(
            nats::job_subject(&job.queue, job.priority),
            Bytes::from(wire::encode(job).expect("encode")),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_batch_and_dependency_fields_end_without_running() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let worker = RunningWorker::on(&server.url(), &["deps"], 2).await;
    let echo = || {
        Job::json("echo", &json!({}))
            .expect("encodes")
            .queue("deps")
    };
    let in_batch = |batch: &str| {
        let mut job = echo();
        job.batch_id = Some(batch.to_string());
        job
    };
    let too_many: Vec<String> = (0..=jobbox::MAX_DEPENDENCIES)
        .map(|n| format!("dep-{n}"))
        .collect();
    let huge = "x".repeat(10_000);
    let mut refused = vec![
        echo().depends_on(["a*"]),
        echo().depends_on([huge.as_str()]),
        echo().depends_on(too_many),
        in_batch("a>"),
    ];
    let itself = echo();
    let id = itself.id.clone();
    refused.push(itself.depends_on([id]));
    for job in &refused {
        publish_raw(&client, job).await;
    }
    // A dependency that never runs: the job ends by its policy once it has looked
    // often enough (here it claims to have looked every time already).
    let mut orphan = echo().depends_on(["never-enqueued"]);
    orphan.dependency_checks = u32::MAX;
    publish_raw(&client, &orphan).await;
    // A batch id naming no batch: the job runs like any other.
    let stray = in_batch("no-such-batch");
    publish_raw(&client, &stray).await;

    for job in &refused {
        let result = wait_result(&client, &job.id, Duration::from_secs(30)).await;
        assert_eq!(result.status, JobStatus::Failed, "{}", brief(&result));
        assert_eq!(
            result.error_type,
            Some(ErrorType::BadJob),
            "{}",
            brief(&result)
        );
    }
    let result = wait_result(&client, &orphan.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Cancelled, "{}", brief(&result));
    assert!(
        result
            .error
            .as_deref()
            .is_some_and(|e| e.contains("never-enqueued")),
        "{}",
        brief(&result)
    );
    let result = wait_result(&client, &stray.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    drained(&mut lane(&client, "deps").await).await;
    for job in refused.iter().chain([&orphan]) {
        let events = client.job_events(&job.id).await.expect("events");
        assert_eq!(count(&events, JobEventType::Started), 0, "{events:#?}");
    }
    worker.stop().await;
}
