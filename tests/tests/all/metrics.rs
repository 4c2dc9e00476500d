//! `jobbox worker --metrics-addr`: the Prometheus text after known jobs, checked
//! against the jobs' results.

use std::time::{Duration, Instant};

use jobbox::{Client, Job, JobStatus};
use jobbox_host::worker::WorkerConfig;
use jobbox_tests::http::{get, parse_metrics, sum};
use jobbox_tests::{
    NatsServer, RunningWorker, brief, deploy_guest, free_port, guests, wait_result,
};
use serde_json::json;

const QUEUE: &str = "metrics";

/// Scrapes until `jobbox_jobs_finished_total` reaches `finished` (the result is
/// visible a moment before the worker counts it), or panics after 10 s.
fn scrape_after(addr: &str, finished: f64) -> Vec<jobbox_tests::http::Sample> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = get(addr, "/metrics");
        assert_eq!(response.status, 200, "{}", response.body);
        let samples = parse_metrics(&response.body);
        let seen = sum(&samples, "jobbox_jobs_finished_total", &[]);
        if seen >= finished || Instant::now() > deadline {
            assert_eq!(seen, finished, "{}", response.body);
            return samples;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_jobs_and_their_receipts() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "reject", guests::REJECT).await;
    deploy_guest(&client, "retry", guests::RETRY).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut config = WorkerConfig::new(vec![QUEUE.to_string()]);
    config.concurrency = 4;
    config.ack_wait = Duration::from_secs(5);
    config.shutdown_grace = Duration::from_secs(10);
    config.metrics_addr = Some(addr.parse().expect("socket address"));
    let worker = RunningWorker::start(&server.url(), config).await;

    // Before any job: every slot free, the three handlers loaded, no reconnect.
    let samples = parse_metrics(&get(&addr, "/metrics").body);
    assert_eq!(sum(&samples, "jobbox_free_slots", &[]), 4.0);
    assert_eq!(sum(&samples, "jobbox_handlers_loaded", &[]), 3.0);
    assert_eq!(sum(&samples, "jobbox_running_jobs", &[]), 0.0);
    assert_eq!(sum(&samples, "jobbox_nats_reconnects_total", &[]), 0.0);

    let mut jobs = Vec::new();
    for i in 0..5 {
        jobs.push(
            Job::json("echo", &json!({ "i": i }))
                .expect("json")
                .queue(QUEUE),
        );
    }
    for _ in 0..2 {
        jobs.push(Job::json("reject", &json!({})).expect("json").queue(QUEUE));
    }
    // One retry, then the dead-letter queue.
    jobs.push(
        Job::json("retry", &json!({}))
            .expect("json")
            .queue(QUEUE)
            .max_retries(1),
    );
    // No route: a job type is tenant input, so it is not a label value.
    jobs.push(
        Job::json("no-such-type-1234", &json!({}))
            .expect("json")
            .queue(QUEUE)
            .max_retries(0),
    );
    for job in &jobs {
        client.enqueue(job).await.expect("enqueue");
    }
    let mut results = Vec::new();
    for job in &jobs {
        results.push(wait_result(&client, &job.id, Duration::from_secs(30)).await);
    }
    for result in &results[..5] {
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(result));
    }
    assert_eq!(
        results[7].status,
        JobStatus::DeadLetter,
        "{}",
        brief(&results[7])
    );

    let samples = scrape_after(&addr, jobs.len() as f64);
    let finished = |job_type: &str, status: &str| {
        sum(
            &samples,
            "jobbox_jobs_finished_total",
            &[("queue", QUEUE), ("job_type", job_type), ("status", status)],
        )
    };
    assert_eq!(finished("echo", "COMPLETED"), 5.0);
    assert_eq!(
        sum(
            &samples,
            "jobbox_jobs_finished_total",
            &[
                ("job_type", "reject"),
                ("status", "FAILED"),
                ("error_type", "guest_error")
            ]
        ),
        2.0
    );
    assert_eq!(finished("retry", "DEAD_LETTER"), 1.0);
    assert_eq!(finished("other", results[8].status.as_str()), 1.0);
    assert!(
        samples
            .iter()
            .all(|s| s.labels.iter().all(|(_, v)| !v.contains("no-such-type"))),
        "an unrouted job type became a label value"
    );
    assert_eq!(
        sum(
            &samples,
            "jobbox_job_retries_total",
            &[("job_type", "retry")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &samples,
            "jobbox_dead_letters_total",
            &[("job_type", "retry")]
        ),
        1.0
    );

    // Histograms: one observation per handler run, totals equal to the receipts.
    let runs = |job_type: &str| {
        sum(
            &samples,
            "jobbox_job_run_seconds_count",
            &[("job_type", job_type)],
        )
    };
    assert_eq!(runs("echo"), 5.0);
    assert_eq!(runs("reject"), 2.0);
    assert_eq!(runs("retry"), 2.0);
    assert_eq!(runs("other"), 0.0, "the unrouted job ran no handler");
    // Queue wait: one per start of a handler (the retry started twice).
    assert_eq!(
        sum(&samples, "jobbox_job_queue_wait_seconds_count", &[]),
        9.0
    );
    let echo_results = &results[..5];
    let fuel: u64 = echo_results.iter().map(|r| r.usage.fuel_consumed).sum();
    assert!(fuel > 0);
    assert_eq!(
        sum(&samples, "jobbox_job_fuel_sum", &[("job_type", "echo")]),
        fuel as f64
    );
    let memory: u64 = echo_results.iter().map(|r| r.usage.peak_memory_bytes).sum();
    assert_eq!(
        sum(
            &samples,
            "jobbox_job_peak_memory_bytes_sum",
            &[("job_type", "echo")]
        ),
        memory as f64
    );
    let wall: f64 = echo_results
        .iter()
        .map(|r| r.usage.wall_time_us as f64 / 1e6)
        .sum();
    let measured = sum(
        &samples,
        "jobbox_job_run_seconds_sum",
        &[("job_type", "echo")],
    );
    assert!((measured - wall).abs() < 1e-9, "{measured} vs {wall}");
    // Every bucket series ends in +Inf holding every observation.
    assert_eq!(
        sum(
            &samples,
            "jobbox_job_run_seconds_bucket",
            &[("job_type", "echo"), ("le", "+Inf")]
        ),
        5.0
    );
    assert_eq!(sum(&samples, "jobbox_running_jobs", &[]), 0.0);
    assert_eq!(sum(&samples, "jobbox_free_slots", &[]), 4.0);
    worker.stop().await;
}
