//! The job lifecycle end to end: retries and dead letters, exactly one result under
//! redelivery, priorities, delayed jobs, cancellation, heartbeats, stats and a
//! graceful shutdown.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{self, PullConsumer};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use jobbox::nats::{self, Lane};
use jobbox::{
    CancelOutcome, Client, ErrorType, EventsFrom, Job, JobEvent, JobEventType, JobResult,
    JobStatus, wire,
};
use jobbox_tests::{
    NatsServer, RunningWorker, brief, deploy_guest, guests, spawn_worker_process, wait_result,
};
use serde_json::{Value, json};

/// Every event of `job_id` stored so far.
async fn events_of(client: &Client, job_id: &str) -> Vec<JobEvent> {
    let events = client
        .events(None, Some(job_id), EventsFrom::Start)
        .await
        .expect("events");
    futures::pin_mut!(events);
    let mut collected = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(700), events.next()).await
    {
        collected.push(event.expect("event decodes"));
    }
    collected
}

fn count(events: &[JobEvent], kind: JobEventType) -> usize {
    events.iter().filter(|e| e.event_type == kind).count()
}

/// Creates the lane consumer of `queue` with a short ack wait before any worker does,
/// and returns it (to play a worker that takes a job and then dies or stalls).
async fn lane_consumer(client: &Client, queue: &str, ack_wait: Duration) -> PullConsumer {
    let stream = client
        .jetstream()
        .get_stream(nats::JOBS_STREAM)
        .await
        .expect("jobs stream");
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(nats::consumer_name(queue, Lane::Normal)),
            filter_subject: nats::lane_subject(queue, Lane::Normal),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .expect("create the lane consumer")
}

async fn take_one(consumer: &PullConsumer) -> async_nats::jetstream::Message {
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .expect("fetch");
    batch.next().await.expect("a message").expect("message ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_is_dead_lettered_after_its_retries_and_can_be_replayed() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "flaky", guests::RETRY).await;
    let worker = RunningWorker::on(&server.url(), &["poison"], 2).await;

    let job = Job::json("flaky", &json!({}))
        .expect("encodes")
        .queue("poison")
        .max_retries(2);
    client.enqueue(&job).await.expect("enqueue");
    let result = wait_result(&client, &job.id, Duration::from_secs(60)).await;
    assert_eq!(result.status, JobStatus::DeadLetter, "{}", brief(&result));
    assert_eq!(result.attempts, 3, "max_retries + 1 attempts");
    let events = events_of(&client, &job.id).await;
    assert_eq!(count(&events, JobEventType::Started), 3);
    assert_eq!(count(&events, JobEventType::RetryScheduled), 2);
    assert_eq!(count(&events, JobEventType::DeadLettered), 1);
    for retry in events
        .iter()
        .filter(|e| e.event_type == JobEventType::RetryScheduled)
    {
        assert!(
            retry.delay_ms.unwrap_or(0) >= 500,
            "retries wait: {:?}",
            retry.delay_ms
        );
    }
    let letters = client.dead_letters(Some("poison")).await.expect("dlq");
    assert_eq!(letters.len(), 1);
    let (sequence, letter) = &letters[0];
    assert_eq!(letter.job.id, job.id);
    assert_eq!(letter.error_type, Some(ErrorType::GuestError));
    assert_eq!(letter.attempts, 3);
    let state = client
        .job_state(&job.id)
        .await
        .expect("state")
        .expect("known");
    assert_eq!(state.status, JobStatus::DeadLetter);

    // Replay: it runs again from attempt 1 and, still failing, is dead-lettered again.
    client
        .replay_dead_letter(*sequence, letter)
        .await
        .expect("replay");
    assert!(
        client
            .dead_letters(Some("poison"))
            .await
            .expect("dlq")
            .is_empty()
    );
    let replayed = wait_result(&client, &job.id, Duration::from_secs(60)).await;
    assert_eq!(replayed.status, JobStatus::DeadLetter);
    assert!(replayed.start_time > result.finish_time, "a new result");
    let events = events_of(&client, &job.id).await;
    assert_eq!(
        count(&events, JobEventType::Started),
        6,
        "the replay ran three more attempts"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_died_after_writing_its_result_is_not_run_again() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let doomed = lane_consumer(&client, "fence", Duration::from_secs(2)).await;
    let job = Job::json("echo", &json!({"n": 1}))
        .expect("encodes")
        .queue("fence");
    client.enqueue(&job).await.expect("enqueue");

    // The "dead worker" took the message and wrote the result, but never acked.
    let _taken = take_one(&doomed).await;
    let first = JobResult::completed(job.id.as_str(), br#"{"n":1}"#.to_vec())
        .with_attempts(1)
        .with_worker("dead-worker");
    client
        .layout()
        .results
        .create(&job.id, Bytes::from(wire::encode(&first).expect("encode")))
        .await
        .expect("write the first result");

    let worker = RunningWorker::on(&server.url(), &["fence"], 2).await;
    // After ack_wait the message comes back; the worker must ack it without running.
    let mut consumer_info = doomed.clone();
    let acked = async {
        loop {
            let info = consumer_info.info().await.expect("info");
            if info.num_ack_pending == 0
                && info.num_pending == 0
                && info.delivered.consumer_sequence >= 2
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), acked)
        .await
        .expect("redelivery acked");
    let result = client.result(&job.id).await.expect("read").expect("result");
    assert_eq!(result.worker_id, "dead-worker", "the first result stands");
    let events = events_of(&client, &job.id).await;
    assert_eq!(
        count(&events, JobEventType::Started),
        0,
        "the job did not run again"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_cannot_write_a_second_result() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let stalled = lane_consumer(&client, "stall", Duration::from_secs(2)).await;
    let job = Job::json("echo", &json!({"n": 2}))
        .expect("encodes")
        .queue("stall");
    client.enqueue(&job).await.expect("enqueue");
    let late_message = take_one(&stalled).await;

    // Past ack_wait another worker takes the job and finishes it.
    let worker = RunningWorker::on(&server.url(), &["stall"], 2).await;
    let result = wait_result(&client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));

    // The stalled worker wakes up: its result is fenced off, its late ack harmless.
    let mut late = result.clone();
    late.worker_id = "stalled-worker".into();
    let second = client
        .layout()
        .results
        .create(&job.id, Bytes::from(wire::encode(&late).expect("encode")))
        .await;
    assert!(second.is_err(), "a second result must be refused");
    late_message.ack().await.expect("late ack");
    let kept = client.result(&job.id).await.expect("read").expect("result");
    assert_eq!(kept.worker_id, worker.id);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_is_kept_alive_by_its_consumers_ack_wait_not_the_workers() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "sleepy", guests::TIME_BOMB).await;
    // The consumer exists with a 2 s ack_wait (made by another worker, say); this
    // worker is configured with 60 s and must extend the message every 2/3 s anyway.
    let mut consumer = lane_consumer(&client, "keep", Duration::from_secs(2)).await;
    let mut config = jobbox_host::worker::WorkerConfig::new(vec!["keep".into()]);
    config.concurrency = 2;
    config.ack_wait = Duration::from_secs(60);
    let worker = RunningWorker::start(&server.url(), config).await;
    let job = Job::json("sleepy", &json!({"sleep_ms": 5000}))
        .expect("encodes")
        .queue("keep");
    client.enqueue(&job).await.expect("enqueue");
    let result = wait_result(&client, &job.id, Duration::from_secs(60)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert_eq!(result.attempts, 1, "redelivered while it ran");
    let info = consumer.info().await.expect("consumer info");
    // One delivery in all: it was never redelivered while it ran.
    assert_eq!(
        info.config.ack_wait,
        Duration::from_secs(2),
        "the consumer kept its settings"
    );
    assert_eq!(info.delivered.consumer_sequence, 1, "{info:?}");
    worker.stop().await;
    let events = events_of(&client, &job.id).await;
    assert_eq!(count(&events, JobEventType::Started), 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_jobs_start_first_under_a_backlog() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let mut jobs = Vec::new();
    for (priority, n) in [(0u8, 8), (5, 8), (9, 8)] {
        for i in 0..n {
            jobs.push(
                Job::json("echo", &json!({"p": priority, "i": i}))
                    .expect("encodes")
                    .queue("prio")
                    .priority(priority),
            );
        }
    }
    for outcome in client.enqueue_many(&jobs).await.expect("enqueue") {
        outcome.expect("enqueued");
    }
    // Prefetch holds the whole backlog, so the order is the inbox's pick alone, not
    // also how fast each lane's refill comes back under load (a less urgent job may
    // run when a more urgent lane's refill takes over 20 ms: the bounded wait).
    let mut config = jobbox_host::worker::WorkerConfig::new(vec!["prio".into()]);
    config.concurrency = 1;
    config.prefetch = Some(32);
    let worker = RunningWorker::start(&server.url(), config).await;
    let mut started: Vec<(chrono::DateTime<Utc>, u8)> = Vec::new();
    for job in &jobs {
        let result = wait_result(&client, &job.id, Duration::from_secs(60)).await;
        started.push((result.start_time, job.priority));
    }
    started.sort();
    let order: Vec<u8> = started.iter().map(|(_, p)| *p).collect();
    let mut expected = order.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, expected, "start order by priority");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_never_runs_early_and_survives_a_server_restart() {
    let mut server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let job = Job::json("echo", &json!({"later": true}))
        .expect("encodes")
        .queue("delayed")
        .delay(Duration::from_secs(4));
    let due = job.scheduled_at.expect("delayed");
    client.enqueue(&job).await.expect("enqueue");
    assert_eq!(
        client
            .job_state(&job.id)
            .await
            .expect("state")
            .expect("known")
            .status,
        JobStatus::Scheduled
    );
    server.restart();
    let client = Client::connect(&server.url()).await.expect("reconnect");
    let worker = RunningWorker::on(&server.url(), &["delayed"], 2).await;
    let result = wait_result(&client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert_eq!(result.attempts, 1);
    assert!(
        result.start_time >= due,
        "ran {:?} early",
        due - result.start_time
    );
    println!(
        "delayed job started {} ms after it was due",
        (result.start_time - due).num_milliseconds()
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_jobs_end_cancelled_whether_pending_delayed_or_running() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "spin", guests::SPIN).await;

    // Pending: cancelled before any worker exists, it never runs.
    let pending = Job::json("echo", &json!({}))
        .expect("encodes")
        .queue("cancel");
    client.enqueue(&pending).await.expect("enqueue");
    assert_eq!(
        client.cancel(&pending.id).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    // Delayed: cancelled while waiting.
    let delayed = Job::json("echo", &json!({}))
        .expect("encodes")
        .queue("cancel")
        .delay(Duration::from_secs(2));
    client.enqueue(&delayed).await.expect("enqueue");
    assert_eq!(
        client.cancel(&delayed.id).await.expect("cancel"),
        CancelOutcome::Cancelled
    );

    let worker = RunningWorker::on(&server.url(), &["cancel"], 2).await;
    for job in [&pending, &delayed] {
        let result = wait_result(&client, &job.id, Duration::from_secs(30)).await;
        assert_eq!(result.status, JobStatus::Cancelled, "{}", brief(&result));
        let events = events_of(&client, &job.id).await;
        assert_eq!(
            count(&events, JobEventType::Started),
            0,
            "a cancelled job never runs"
        );
        assert_eq!(count(&events, JobEventType::Cancelled), 1);
    }

    // Running: an infinite loop with unlimited fuel and a long deadline.
    let mut spin = Job::json("spin", &json!({}))
        .expect("encodes")
        .queue("cancel");
    spin.limits = Some(jobbox::JobLimits {
        fuel: Some(u64::MAX),
        ..Default::default()
    });
    client.enqueue(&spin).await.expect("enqueue");
    let running = async {
        loop {
            if let Ok(Some(state)) = client.job_state(&spin.id).await
                && state.status == JobStatus::Running
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("spin starts");
    assert_eq!(
        client.cancel(&spin.id).await.expect("cancel"),
        CancelOutcome::Stopping
    );
    let result = wait_result(&client, &spin.id, Duration::from_secs(10)).await;
    assert_eq!(result.status, JobStatus::Cancelled, "{}", brief(&result));
    assert_eq!(result.error_type, Some(ErrorType::Cancelled));
    let events = events_of(&client, &spin.id).await;
    assert_eq!(count(&events, JobEventType::Cancelled), 1);
    assert!(matches!(
        client.cancel(&spin.id).await.expect("cancel again"),
        CancelOutcome::AlreadyFinished(JobStatus::Cancelled)
    ));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_no_worker_serves_shows_its_pending_jobs() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let mut jobs: Vec<Job> = (0..3)
        .map(|i| Job::new("echo", vec![i]).queue("unserved"))
        .collect();
    jobs.push(Job::new("echo", Vec::new()).queue("unserved").priority(9));
    jobs.push(
        Job::new("echo", Vec::new())
            .queue("unserved")
            .delay(Duration::from_secs(3600)),
    );
    for outcome in client.enqueue_many(&jobs).await.expect("enqueue") {
        outcome.expect("enqueued");
    }
    let queues = client.queues().await.expect("queues");
    assert_eq!(queues, vec!["unserved".to_string()]);
    let stats = client.queue_stats("unserved").await.expect("stats");
    assert_eq!((stats.pending, stats.running), (5, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printing_into_a_closed_pipe_ends_quietly() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let worker = RunningWorker::on(&server.url(), &["pipe"], 2).await;
    // A result of many lines, read by a reader that is gone (`… | head -0`).
    let lines: Vec<u32> = (0..20_000).collect();
    let job = Job::json("echo", &json!({ "lines": lines }))
        .expect("encodes")
        .queue("pipe");
    client.enqueue(&job).await.expect("enqueue");
    wait_result(&client, &job.id, Duration::from_secs(30)).await;
    let mut child = Command::new(jobbox_tests::jobbox_bin())
        .args(["result", &job.id, "--nats-url", &server.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run jobbox result");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("jobbox result ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_file_have_no_colour_codes_and_can_be_json() {
    use std::io::BufRead as _;
    let server = NatsServer::start();
    for (format, json) in [("text", false), ("json", true)] {
        let mut child = jobbox_tests::KillOnDrop(
            Command::new(jobbox_tests::jobbox_bin())
                .args(["worker", "--queue", "logs", "--log-format", format])
                .args(["--nats-url", &server.url()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start a worker"),
        );
        let stderr = child.0.stderr.take().expect("stderr");
        let first = std::io::BufReader::new(stderr)
            .lines()
            .next()
            .expect("the worker logs a line")
            .expect("readable");
        // Its stderr is closed now: the logs of its shutdown go nowhere, and it
        // still stops.
        let _ = Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status();
        let exit = jobbox_tests::wait_exit(&mut child.0, Duration::from_secs(30));
        assert!(
            exit.is_some_and(|status| status.success()),
            "{format}: a worker whose stderr is closed stops on SIGTERM: {exit:?}"
        );
        assert!(
            !first.contains('\u{1b}'),
            "{format}: colour codes: {first:?}"
        );
        let parsed = serde_json::from_str::<Value>(&first);
        assert_eq!(parsed.is_ok(), json, "{format}: {first}");
        if let Ok(line) = parsed {
            assert!(
                line["level"].is_string() && line["fields"].is_object(),
                "{line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reports_busy_and_idle_within_a_heartbeat() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "sleepy", guests::TIME_BOMB).await;
    let worker = RunningWorker::on(&server.url(), &["beat"], 2).await;
    let job = Job::json("sleepy", &json!({"sleep_ms": 6000}))
        .expect("encodes")
        .queue("beat");
    // Whether the worker's heartbeat lists the job as running (`None`: not listed).
    let running = || async {
        let live = client.workers().await.expect("workers");
        live.iter()
            .find(|w| w.worker_id == worker.id)
            .map(|w| w.current_jobs.contains(&job.id))
    };
    let until = |busy: bool| async move {
        while running().await != Some(busy) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), until(false))
        .await
        .expect("the worker heartbeats");
    // Each change shows in less than one heartbeat interval (5 s).
    let within = jobbox_host::worker::HEARTBEAT_INTERVAL - Duration::from_secs(1);
    let enqueued = Instant::now();
    client.enqueue(&job).await.expect("enqueue");
    tokio::time::timeout(within, until(true))
        .await
        .expect("the worker shows the job it runs");
    let busy_after = enqueued.elapsed();
    let result = wait_result(&client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    let finished = Instant::now();
    tokio::time::timeout(within, until(false))
        .await
        .expect("the worker shows itself idle again");
    println!(
        "busy shown {busy_after:?} after the enqueue, idle {:?} after the result",
        finished.elapsed()
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_heartbeat_and_queues_have_stats() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "reject", guests::REJECT).await;
    let worker = RunningWorker::on(&server.url(), &["stats"], 2).await;
    let heartbeat = async {
        loop {
            let live = client.workers().await.expect("workers");
            if let Some(me) = live
                .into_iter()
                .find(|w| w.worker_id == worker.id && !w.handlers.is_empty())
            {
                return me;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let me = tokio::time::timeout(Duration::from_secs(15), heartbeat)
        .await
        .expect("the worker heartbeats");
    assert_eq!(me.queues, vec!["stats".to_string()]);
    assert!(me.handlers.contains_key("echo"));

    let mut jobs = Vec::new();
    for i in 0..5 {
        jobs.push(
            Job::json("echo", &json!({"i": i}))
                .expect("encodes")
                .queue("stats"),
        );
    }
    for _ in 0..2 {
        jobs.push(
            Job::json("reject", &json!({}))
                .expect("encodes")
                .queue("stats"),
        );
    }
    for job in &jobs {
        client.enqueue(job).await.expect("enqueue");
    }
    for job in &jobs {
        wait_result(&client, &job.id, Duration::from_secs(30)).await;
    }
    let stats = async {
        loop {
            let stats = client.queue_stats("stats").await.expect("stats");
            if stats.completed == 5 && stats.failed == 2 {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let stats = tokio::time::timeout(Duration::from_secs(10), stats)
        .await
        .expect("counters add up");
    assert_eq!(stats.pending, 0);
    assert!(
        client
            .queues()
            .await
            .expect("queues")
            .contains(&"stats".to_string())
    );

    let worker_id = worker.id.clone();
    worker.stop().await;
    let live = client.workers().await.expect("workers");
    assert!(
        live.iter().all(|w| w.worker_id != worker_id),
        "a stopped worker leaves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_heartbeat_expires() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let mut doomed = spawn_worker_process(
        &server.url(),
        &["--queue", "hb", "--worker-id", "doomed-worker"],
    );
    let seen = async {
        loop {
            if client
                .workers()
                .await
                .expect("workers")
                .iter()
                .any(|w| w.worker_id == "doomed-worker")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), seen)
        .await
        .expect("worker shows up");
    doomed.kill().expect("SIGKILL");
    doomed.wait().expect("reap");
    let gone = async {
        loop {
            if client
                .workers()
                .await
                .expect("workers")
                .iter()
                .all(|w| w.worker_id != "doomed-worker")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::time::timeout(jobbox::layout::WORKER_TTL + Duration::from_secs(15), gone)
        .await
        .expect("a dead worker drops out when its heartbeat expires");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_batch_loses_nothing() {
    const JOBS: usize = 120;
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "sleepy", guests::TIME_BOMB).await;
    let mut worker = spawn_worker_process(
        &server.url(),
        &[
            "--queue",
            "term",
            "--concurrency",
            "4",
            "--shutdown-grace",
            "10s",
        ],
    );
    let jobs: Vec<Job> = (0..JOBS)
        .map(|_| {
            Job::json("sleepy", &json!({"sleep_ms": 50}))
                .expect("encodes")
                .queue("term")
        })
        .collect();
    for outcome in client.enqueue_many(&jobs).await.expect("enqueue") {
        outcome.expect("enqueued");
    }
    wait_result(&client, &jobs[0].id, Duration::from_secs(60)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let exited = tokio::task::spawn_blocking(move || worker.wait())
        .await
        .expect("join");
    assert!(
        exited.expect("wait").success(),
        "the worker exits cleanly on SIGTERM"
    );

    let survivor = RunningWorker::on(&server.url(), &["term"], 8).await;
    let mut completions: HashMap<String, usize> = HashMap::new();
    for job in &jobs {
        let result = wait_result(&client, &job.id, Duration::from_secs(60)).await;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
        let slept = result.result_json::<Value>().expect("json")["slept_ms"].as_u64();
        assert!(slept >= Some(50));
        *completions.entry(job.id.clone()).or_default() += 1;
    }
    assert_eq!(completions.len(), JOBS);
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_reaches_its_lane_early_waits_until_it_is_due() {
    // A client that publishes straight to the lane (no message schedule) with a
    // future `scheduled_at`: the worker must hand it back until it is due, and the
    // hand-backs must not count as attempts.
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let worker = RunningWorker::on(&server.url(), &["early"], 2).await;
    let job = Job::json("echo", &json!({"early": true}))
        .expect("encodes")
        .queue("early")
        .delay(Duration::from_secs(2));
    let due = job.scheduled_at.expect("delayed");
    client
        .jetstream()
        .publish(
            nats::job_subject("early", job.priority),
            Bytes::from(wire::encode(&job).expect("encode")),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    let result = wait_result(&client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert!(
        result.start_time >= due,
        "ran {:?} early",
        due - result.start_time
    );
    assert_eq!(result.attempts, 1, "hand-backs are not attempts");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_due_while_its_hand_back_ends_runs_at_its_first_attempt() {
    // Jobs published straight to the lane, due within a few milliseconds: each is
    // handed back, and its copy can arrive while the worker still terminates the old
    // message. The copy must be taken then, not left for redelivery (a whole
    // ack_wait later, counted as a second attempt).
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let worker = RunningWorker::on(&server.url(), &["soon"], 16).await;
    let mut ids = Vec::new();
    for n in 0..200u32 {
        let mut job = Job::json("echo", &json!({ "n": n }))
            .expect("encodes")
            .queue("soon");
        job.scheduled_at = Some(Utc::now() + Duration::from_micros(u64::from(n % 40) * 100));
        client
            .jetstream()
            .publish(
                nats::job_subject("soon", job.priority),
                Bytes::from(wire::encode(&job).expect("encode")),
            )
            .await
            .expect("publish")
            .await
            .expect("stored");
        ids.push(job.id);
    }
    let mut second_attempts = Vec::new();
    for id in &ids {
        let result = wait_result(&client, id, Duration::from_secs(60)).await;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
        if result.attempts != 1 {
            second_attempts.push(brief(&result));
        }
    }
    assert!(second_attempts.is_empty(), "{second_attempts:#?}");
    worker.stop().await;
}
