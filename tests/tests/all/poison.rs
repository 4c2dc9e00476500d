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

/// Publishes `payload` to `subject` with `headers` as they are, over a plain TCP
/// connection: async-nats can neither send nor read a header value holding a bare
/// LF, which a hostile publisher can.
fn publish_unparseable(url: &str, subject: &str, headers: &[u8], payload: &[u8]) {
    use std::io::{BufRead as _, BufReader, Write as _};
    let address = url.trim_start_matches("nats://");
    let stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("INFO");
    assert!(line.starts_with("INFO"), "{line}");
    let mut out = stream;
    let mut frame = Vec::new();
    frame.extend_from_slice(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\n",
    );
    frame.extend_from_slice(
        format!(
            "HPUB {subject} {} {}\r\n",
            headers.len(),
            headers.len() + payload.len()
        )
        .as_bytes(),
    );
    frame.extend_from_slice(headers);
    frame.extend_from_slice(payload);
    frame.extend_from_slice(b"\r\nPING\r\n");
    out.write_all(&frame).expect("publish");
    loop {
        line.clear();
        reader.read_line(&mut line).expect("answer");
        assert!(!line.starts_with("-ERR"), "the server refused: {line}");
        if line.starts_with("PONG") {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_no_client_can_read_is_dead_lettered_after_bounded_deliveries() {
    const QUEUE: &str = "unreadable";
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let mut config = jobbox_host::worker::WorkerConfig::new(vec![QUEUE.to_string()]);
    config.concurrency = 2;
    config.ack_wait = Duration::from_secs(1);
    config.max_deliveries = 4;
    let worker = RunningWorker::start(&server.url(), config).await;
    echo_works(&client, QUEUE).await;

    // A valid job, and a message that is not one, each with a header value that holds
    // a bare LF: the client drops its connection on each delivery of them.
    let job = Job::json("echo", &json!({"hostile": "header"}))
        .expect("encodes")
        .queue(QUEUE);
    let subject = nats::job_subject(QUEUE, job.priority);
    let headers = format!(
        "NATS/1.0\r\nNats-Msg-Id: {}\r\nX-Poison: a\nb\r\n\r\n",
        job.id
    );
    publish_unparseable(
        &server.url(),
        &subject,
        headers.as_bytes(),
        &wire::encode(&job).expect("encode"),
    );
    publish_unparseable(
        &server.url(),
        &subject,
        b"NATS/1.0\r\nX-Poison: x\ny\r\n\r\n",
        b"not a job",
    );
    let mut jobs = client
        .jetstream()
        .get_stream(nats::JOBS_STREAM)
        .await
        .expect("jobs stream");
    let garbage = format!(
        "seq-{}",
        jobs.info().await.expect("info").state.last_sequence
    );
    // Other jobs keep flowing meanwhile.
    let mut others = Vec::new();
    for n in 0..20 {
        let other = Job::json("echo", &json!({ "n": n }))
            .expect("encodes")
            .queue(QUEUE);
        client.enqueue(&other).await.expect("enqueue");
        others.push(other);
    }
    // Each delivery of an unreadable message drops the connection of the worker that
    // fetched it, and what that worker had in flight is delivered again: with the
    // test's bound of 4 a job can be caught in four drops and be dead-lettered the
    // same way (with the default of 100, practically never). Every job ends.
    let mut completed = 0;
    for other in &others {
        let result = wait_result(&client, &other.id, Duration::from_secs(60)).await;
        match result.status {
            JobStatus::Completed => completed += 1,
            JobStatus::DeadLetter => assert!(
                result
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("stopped delivering")),
                "{}",
                brief(&result)
            ),
            _ => panic!("{}", brief(&result)),
        }
    }
    println!(
        "{completed} of {} other jobs completed during the storm",
        others.len()
    );

    for (id, payload) in [
        (job.id.as_str(), Some(job.payload.clone())),
        (garbage.as_str(), None),
    ] {
        let result = wait_result(&client, id, Duration::from_secs(60)).await;
        assert_eq!(result.status, JobStatus::DeadLetter, "{}", brief(&result));
        assert_eq!(result.error_type, Some(ErrorType::BadJob));
        let error = result.error.clone().unwrap_or_default();
        assert!(
            error.contains("stopped delivering this job after 4 deliveries"),
            "{error}"
        );
        let letters = client.dead_letters(Some(QUEUE)).await.expect("dlq");
        let letter = letters
            .iter()
            .find(|(_, letter)| letter.job.id == id)
            .unwrap_or_else(|| panic!("no dead letter for {id}: {letters:?}"));
        if let Some(payload) = payload {
            assert_eq!(letter.1.job.payload, payload, "the job can be replayed");
        }
        let events = client.job_events(id).await.expect("events");
        assert_eq!(count(&events, JobEventType::DeadLettered), 1, "{events:?}");
    }
    // Both messages are gone from the stream, and nothing is left unacked.
    drained(&mut lane(&client, QUEUE).await).await;
    let left = jobs.info().await.expect("info").state.messages;
    assert_eq!(left, 0, "messages left in the jobs stream");
    echo_works(&client, QUEUE).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_consumer_made_without_a_delivery_bound_gets_one() {
    const QUEUE: &str = "upgraded";
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    // As an older jobbox made it: no bound, a longer ack_wait than this worker's.
    let stream = client
        .jetstream()
        .get_stream(nats::JOBS_STREAM)
        .await
        .expect("jobs stream");
    let name = nats::consumer_name(QUEUE, nats::Lane::Normal);
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: nats::lane_subject(QUEUE, nats::Lane::Normal),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(42),
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .expect("old consumer");
    let worker = RunningWorker::on(&server.url(), &[QUEUE], 2).await;
    echo_works(&client, QUEUE).await;
    let info = lane(&client, QUEUE)
        .await
        .info()
        .await
        .expect("info")
        .clone();
    assert_eq!(
        info.config.max_deliver,
        i64::from(jobbox_host::worker::DEFAULT_MAX_DELIVERIES)
    );
    assert_eq!(
        info.config.ack_wait,
        Duration::from_secs(42),
        "nothing else changed"
    );
    worker.stop().await;
}
