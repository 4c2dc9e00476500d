//! The worker end to end against a real nats-server: many jobs across workers, the
//! event trail of each, nothing left unacked, and a SIGKILLed worker losing nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use jobbox::{Client, EventsFrom, Job, JobEventType, JobStatus};
use jobbox_tests::{
    NatsServer, RunningWorker, brief, deploy_guest, guests, spawn_worker_process, wait_result,
    wait_settled,
};
use serde_json::{Value, json};

/// Collects events of `queue` until `count` have arrived (or panics after `timeout`).
async fn collect_events(
    client: &Client,
    queue: &str,
    count: usize,
    timeout: Duration,
) -> Vec<(u64, jobbox::JobEvent)> {
    let events = client
        .events_with_sequence(Some(queue), None, EventsFrom::Start)
        .await
        .expect("follow events");
    futures::pin_mut!(events);
    let mut collected = Vec::with_capacity(count);
    let gather = async {
        while collected.len() < count {
            let event = events
                .next()
                .await
                .expect("events continue")
                .expect("event decodes");
            collected.push(event);
        }
    };
    tokio::time::timeout(timeout, gather)
        .await
        .unwrap_or_else(|_| panic!("only {} of {count} events arrived", collected.len()));
    collected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_across_two_workers() {
    const JOBS: usize = 1_000;
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let route = deploy_guest(&client, "echo", guests::ECHO).await;
    let workers = [
        RunningWorker::on(&server.url(), &["e2e"], 8).await,
        RunningWorker::on(&server.url(), &["e2e"], 8).await,
    ];

    let jobs: Vec<Job> = (0..JOBS)
        .map(|i| {
            Job::json("echo", &json!({"i": i}))
                .expect("encodes")
                .queue("e2e")
        })
        .collect();
    for outcome in client.enqueue_many(&jobs).await.expect("enqueue") {
        assert!(!outcome.expect("enqueued").duplicate);
    }

    let mut by_worker: HashMap<String, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let result = wait_result(&client, &job.id, Duration::from_secs(120)).await;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
        let output: Value = result.result_json().expect("json output");
        assert_eq!(output, json!({"i": i}));
        assert_eq!(
            result.handler_digest.as_deref(),
            Some(route.digest.as_str())
        );
        *by_worker.entry(result.worker_id).or_default() += 1;
    }
    println!("jobs per worker: {by_worker:?}");

    let events = collect_events(&client, "e2e", 3 * JOBS, Duration::from_secs(60)).await;
    let mut trail: BTreeMap<String, Vec<JobEventType>> = BTreeMap::new();
    for (_, event) in &events {
        trail
            .entry(event.job_id.clone())
            .or_default()
            .push(event.event_type);
    }
    assert_eq!(trail.len(), JOBS);
    for job in &jobs {
        assert_eq!(
            trail[&job.id],
            [
                JobEventType::Enqueued,
                JobEventType::Started,
                JobEventType::Completed
            ],
            "events of job {}",
            job.id
        );
    }
    wait_settled(&client, "e2e", Duration::from_secs(30)).await;
    for worker in workers {
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_loses_no_job() {
    const JOBS: usize = 200;
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "sleepy", guests::TIME_BOMB).await;

    let mut doomed = spawn_worker_process(
        &server.url(),
        &["--queue", "kill", "--concurrency", "4", "--ack-wait", "2s"],
    );

    let jobs: Vec<Job> = (0..JOBS)
        .map(|_| {
            Job::json("sleepy", &json!({"sleep_ms": 20}))
                .expect("encodes")
                .queue("kill")
        })
        .collect();
    for outcome in client.enqueue_many(&jobs).await.expect("enqueue") {
        outcome.expect("enqueued");
    }
    // Let the doomed worker get well into the batch, then kill it mid-flight.
    let first = wait_result(&client, &jobs[0].id, Duration::from_secs(60)).await;
    assert_eq!(first.status, JobStatus::Completed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    doomed.kill().expect("SIGKILL the worker");
    doomed.wait().expect("reap the worker");

    let survivor = RunningWorker::on(&server.url(), &["kill"], 8).await;
    let mut ran_on_doomed = 0;
    for job in &jobs {
        let result = wait_result(&client, &job.id, Duration::from_secs(120)).await;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
        let slept = result.result_json::<Value>().expect("json")["slept_ms"].as_u64();
        assert!(slept >= Some(20), "{}", brief(&result));
        if result.worker_id != survivor.id {
            ran_on_doomed += 1;
        }
    }
    assert!(
        ran_on_doomed > 0 && ran_on_doomed < JOBS,
        "kill was mid-batch: {ran_on_doomed}"
    );

    // Exactly one COMPLETED per job: no job ran to completion twice.
    let all = client
        .events(Some("kill"), None, EventsFrom::Start)
        .await
        .expect("events");
    futures::pin_mut!(all);
    let mut completed: HashMap<String, usize> = HashMap::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(2), all.next()).await {
        let event = event.expect("event decodes");
        if event.event_type == JobEventType::Completed {
            *completed.entry(event.job_id).or_default() += 1;
        }
    }
    for job in &jobs {
        assert_eq!(
            completed.get(&job.id),
            Some(&1),
            "job {} completions",
            job.id
        );
    }
    wait_settled(&client, "kill", Duration::from_secs(30)).await;
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_retried_with_the_same_id_is_one_job() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let job = Job::json("echo", &json!({"once": true}))
        .expect("encodes")
        .queue("dedupe");
    let first = client.enqueue(&job).await.expect("enqueue");
    let second = client.enqueue(&job).await.expect("enqueue again");
    assert!(!first.duplicate);
    assert!(second.duplicate);
    let worker = RunningWorker::on(&server.url(), &["dedupe"], 2).await;
    let result = wait_result(&client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed);
    assert_eq!(result.attempts, 1);
    wait_settled(&client, "dedupe", Duration::from_secs(30)).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_from_a_file_is_all_checked_first_then_pipelined() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let enqueue = |path: &std::path::Path| {
        std::process::Command::new(jobbox_tests::jobbox_bin())
            .args(["enqueue", "echo", "--queue", "file", "-o", "json", "--file"])
            .arg(path)
            .args(["--nats-url", &server.url()])
            .output()
            .expect("run jobbox enqueue")
    };

    // One bad line: nothing is sent.
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(&bad, "{\"n\": 1}\n{not json\n{\"n\": 3}\n").expect("write");
    let output = enqueue(&bad);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    let stats = client.queue_stats("file").await.expect("stats");
    assert_eq!(stats.pending, 0, "nothing was enqueued");

    let good = dir.path().join("jobs.ndjson");
    let lines: String = (0..50).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    std::fs::write(&good, lines).expect("write");
    let output = enqueue(&good);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(report["enqueued"], 50, "{report}");
    let ids: Vec<String> = report["job_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|id| id.as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 50);
    let worker = RunningWorker::on(&server.url(), &["file"], 4).await;
    for (n, id) in ids.iter().enumerate() {
        let result = wait_result(&client, id, Duration::from_secs(30)).await;
        assert_eq!(
            result.result_json::<Value>().expect("json"),
            json!({"n": n})
        );
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_measures_the_pipeline_and_the_transport_ceiling() {
    let server = NatsServer::start();
    for mode in [&["--handler", "native"][..], &["--transport"][..]] {
        let out = std::process::Command::new(jobbox_tests::jobbox_bin())
            .args(["bench", "-n", "300", "-c", "16", "-o", "json"])
            .args(mode)
            .args(["--nats-url", &server.url()])
            .output()
            .expect("run jobbox bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode:?}: {stderr}");
        let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(report["completed"], 300, "{mode:?}: {report}");
        let expected = if mode == ["--transport"] {
            "transport"
        } else {
            "pipeline"
        };
        assert_eq!(report["mode"], expected, "{report}");
        assert!(
            report["jobs_per_s"].as_f64().is_some_and(|r| r > 0.0),
            "{report}"
        );
        assert!(report["latency_ms"]["p99"].as_f64().is_some(), "{report}");
    }
}
