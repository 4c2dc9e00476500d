//! Batches and dependencies against a real nats-server and real workers: exact counts
//! after a worker is killed, callbacks fired once, a dependency diamond in order,
//! cycles and unknown dependencies refused, cancellation, resumable enqueue.

use std::collections::HashMap;
use std::time::Duration;

use jobbox::{
    BatchJob, BatchSpec, BatchStatus, CallbackKind, Client, ClientError, DependencyFailure,
    ErrorType, Job, JobEvent, JobEventType, JobStatus, batch_job_id, callback_job_id, nats,
};
use jobbox_tests::{
    KillOnDrop, NatsServer, RunningWorker, brief, deploy_guest, guests, spawn_worker_process,
    wait_result,
};
use serde_json::{Value, json};

/// How long a batch may take to end before the test fails (generous: debug builds
/// on a busy machine).
const BATCH_TIMEOUT: Duration = Duration::from_secs(300);

fn echo(queue: &str, n: usize) -> Job {
    Job::json("echo", &json!({ "n": n }))
        .expect("encodes")
        .queue(queue)
}

fn sleepy(queue: &str, sleep_ms: u64) -> Job {
    Job::json("sleepy", &json!({ "sleep_ms": sleep_ms }))
        .expect("encodes")
        .queue(queue)
}

fn reject(queue: &str) -> Job {
    Job::json("reject", &json!({}))
        .expect("encodes")
        .queue(queue)
}

/// How many results the results bucket holds.
async fn results_stored(client: &Client) -> u64 {
    let stream = format!("KV_{}", nats::RESULTS_BUCKET);
    let mut results = client
        .jetstream()
        .get_stream(&stream)
        .await
        .expect("stream");
    results.info().await.expect("info").state.messages
}

fn count(events: &[JobEvent], kind: JobEventType) -> usize {
    events.iter().filter(|e| e.event_type == kind).count()
}

/// Statuses of the batch's jobs, read from their results.
async fn statuses(client: &Client, batch_id: &str, jobs: u64) -> HashMap<JobStatus, u64> {
    let mut by_status = HashMap::new();
    for n in 0..jobs {
        let id = batch_job_id(batch_id, n);
        let result = client
            .result(&id)
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("job {id} has no result"));
        *by_status.entry(result.status).or_insert(0) += 1;
    }
    by_status
}

/// Enqueues `spec` as one batch and waits until it ended: its id and final record.
async fn run_batch(client: &Client, spec: BatchSpec) -> (String, BatchJob) {
    let batch_id = client.submit_batch(spec).await.expect("enqueue").batch_id;
    let batch = client
        .wait_batch(&batch_id, BATCH_TIMEOUT)
        .await
        .expect("ends");
    (batch_id, batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_jobs_on_two_workers_one_killed_end_with_exact_counts_and_one_callback() {
    const JOBS: usize = 10_000;
    let server = NatsServer::start();
    let url = server.url();
    let client = Client::connect(&url).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let args = ["--queue", "big", "--concurrency", "8", "--ack-wait", "2s"];
    let mut doomed = KillOnDrop(spawn_worker_process(&url, &args));
    let _survivor = KillOnDrop(spawn_worker_process(&url, &args));
    let jobs: Vec<Job> = (0..JOBS).map(|n| echo("big", n)).collect();
    let spec = BatchSpec::new("ten thousand", jobs).on_complete(echo("big", 0));
    let enqueued = client.submit_batch(spec).await.expect("enqueue the batch");
    assert_eq!(enqueued.added, JOBS);
    let batch_id = enqueued.batch_id;

    // Kill one worker midway: some results stored, many jobs left.
    while results_stored(&client).await < (JOBS / 5) as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.0.kill().expect("kill -9 a worker");
    let _ = doomed.0.wait();
    let stored_at_kill = results_stored(&client).await;
    assert!(
        stored_at_kill < JOBS as u64,
        "the kill came too late to test anything"
    );

    let batch = client
        .wait_batch(&batch_id, BATCH_TIMEOUT)
        .await
        .expect("the batch ends");
    assert_eq!(batch.status, BatchStatus::Completed, "{batch:?}");
    assert!(!batch.active);
    assert_eq!(batch.counts.completed, JOBS as u64, "{batch:?}");
    assert_eq!(batch.counts.ended(), JOBS as u64, "{batch:?}");
    let by_status = statuses(&client, &batch_id, JOBS as u64).await;
    assert_eq!(by_status.get(&JobStatus::Completed), Some(&(JOBS as u64)));

    // The callback: one job, one run, the summary as its input.
    let callback = callback_job_id(&batch_id, CallbackKind::OnComplete);
    let result = wait_result(&client, &callback, BATCH_TIMEOUT).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    let summary: Value = serde_json::from_slice(result.result.as_deref().unwrap_or_default())
        .expect("summary is JSON");
    assert_eq!(summary["completed"], json!(JOBS));
    assert_eq!(summary["batch_id"], json!(batch_id));
    let events = client.job_events(&callback).await.expect("events");
    assert_eq!(count(&events, JobEventType::Started), 1, "{events:#?}");
    assert_eq!(count(&events, JobEventType::Completed), 1, "{events:#?}");
    let batch_events = client.job_events(&batch_id).await.expect("batch events");
    assert_eq!(count(&batch_events, JobEventType::BatchCompleted), 1);
    assert_eq!(count(&batch_events, JobEventType::BatchFailed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_three_failing_jobs_fires_on_failure_once_and_not_on_success() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "reject", guests::REJECT).await;
    let first = RunningWorker::on(&server.url(), &["bf"], 4).await;
    let second = RunningWorker::on(&server.url(), &["bf"], 4).await;
    let mut jobs: Vec<Job> = (0..7).map(|n| echo("bf", n)).collect();
    jobs.extend((0..3).map(|_| reject("bf")));
    let spec = BatchSpec::new("three fail", jobs)
        .on_success(echo("bf", 100))
        .on_failure(echo("bf", 101))
        .on_complete(echo("bf", 102));
    let (batch_id, batch) = run_batch(&client, spec).await;
    assert_eq!(batch.status, BatchStatus::Failed, "{batch:?}");
    assert_eq!((batch.counts.completed, batch.counts.failed), (7, 3));

    let on_failure = callback_job_id(&batch_id, CallbackKind::OnFailure);
    let on_complete = callback_job_id(&batch_id, CallbackKind::OnComplete);
    let on_success = callback_job_id(&batch_id, CallbackKind::OnSuccess);
    for id in [&on_failure, &on_complete] {
        let result = wait_result(&client, id, BATCH_TIMEOUT).await;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
        let events = client.job_events(id).await.expect("events");
        assert_eq!(count(&events, JobEventType::Started), 1, "{events:#?}");
    }
    assert!(client.result(&on_success).await.expect("read").is_none());
    assert!(
        client
            .job_events(&on_success)
            .await
            .expect("events")
            .is_empty(),
        "on_success was enqueued"
    );
    let batch_events = client.job_events(&batch_id).await.expect("batch events");
    assert_eq!(count(&batch_events, JobEventType::BatchFailed), 1);
    assert_eq!(count(&batch_events, JobEventType::BatchCompleted), 0);
    first.stop().await;
    second.stop().await;
}

/// A → B, A → C, B + C → D, as a batch: indices 0..=3.
fn diamond(queue: &str, b: Job, policy: DependencyFailure) -> Vec<Job> {
    let a = sleepy(queue, 100).id("A");
    let b = b.id("B").depends_on(["A"]);
    let c = sleepy(queue, 300).id("C").depends_on(["A"]);
    let d = echo(queue, 4)
        .id("D")
        .depends_on(["B", "C"])
        .on_dependency_failure(policy);
    vec![d, c, b, a]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_diamond_runs_in_order_and_a_failure_cancels_or_fails_what_depends_on_it() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "sleepy", guests::TIME_BOMB).await;
    deploy_guest(&client, "reject", guests::REJECT).await;
    let worker = RunningWorker::on(&server.url(), &["dia"], 4).await;

    // All succeed: D (published first) starts only after B and C completed.
    let jobs = diamond("dia", sleepy("dia", 200), DependencyFailure::Cancel);
    let (batch_id, batch) = run_batch(&client, BatchSpec::new("diamond", jobs)).await;
    assert_eq!(batch.status, BatchStatus::Completed, "{batch:?}");
    let [d, c, b, a] = [0, 1, 2, 3].map(|n| batch_job_id(&batch_id, n));
    let mut results = HashMap::new();
    for id in [&a, &b, &c, &d] {
        let result = client.result(id).await.expect("read").expect("result");
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
        results.insert(id.clone(), result);
    }
    assert!(results[&b].start_time >= results[&a].finish_time);
    assert!(results[&c].start_time >= results[&a].finish_time);
    assert!(results[&d].start_time >= results[&b].finish_time);
    assert!(results[&d].start_time >= results[&c].finish_time);
    // Waiting is not a delivery: D ran at its first attempt.
    let d_events = client.job_events(&d).await.expect("events");
    assert_eq!(results[&d].attempts, 1, "{d_events:#?}");

    // B fails: D is cancelled without running (default policy); C still runs.
    for (policy, expected, error_type) in [
        (
            DependencyFailure::Cancel,
            JobStatus::Cancelled,
            ErrorType::Cancelled,
        ),
        (
            DependencyFailure::Fail,
            JobStatus::Failed,
            ErrorType::DependencyFailed,
        ),
    ] {
        let jobs = diamond("dia", reject("dia"), policy);
        let (batch_id, batch) = run_batch(&client, BatchSpec::new("broken diamond", jobs)).await;
        assert_eq!(batch.status, BatchStatus::Failed, "{batch:?}");
        let d = batch_job_id(&batch_id, 0);
        let result = client.result(&d).await.expect("read").expect("result");
        assert_eq!(result.status, expected, "{}", brief(&result));
        assert_eq!(result.error_type, Some(error_type), "{}", brief(&result));
        let events = client.job_events(&d).await.expect("events");
        assert_eq!(count(&events, JobEventType::Started), 0, "{events:#?}");
        let c = client
            .result(&batch_job_id(&batch_id, 1))
            .await
            .expect("read")
            .expect("result");
        assert_eq!(c.status, JobStatus::Completed);
    }
    worker.stop().await;
}

#[tokio::test]
async fn cycles_unknown_dependencies_and_bad_names_are_refused_at_enqueue() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let cycle = vec![
        echo("q", 0).id("A").depends_on(["C"]),
        echo("q", 1).id("B").depends_on(["A"]),
        echo("q", 2).id("C").depends_on(["B"]),
    ];
    let err = client
        .submit_batch(BatchSpec::new("cycle", cycle).id("cyc"))
        .await
        .expect_err("a cycle is refused");
    assert!(
        matches!(&err, ClientError::InvalidBatch(m) if m.contains("cycle")),
        "{err}"
    );
    assert!(client.batch("cyc").await.expect("read").is_none());

    let unknown = vec![echo("q", 0).depends_on(["no-such-job"])];
    let err = client
        .submit_batch(BatchSpec::new("unknown", unknown).id("unk"))
        .await
        .expect_err("an unknown dependency is refused");
    assert!(
        matches!(&err, ClientError::InvalidBatch(m) if m.contains("no-such-job")),
        "{err}"
    );
    assert!(client.batch("unk").await.expect("read").is_none());
    let err = client
        .enqueue(&echo("q", 0).depends_on(["no-such-job"]))
        .await
        .expect_err("a single job with an unknown dependency is refused");
    assert!(matches!(err, ClientError::InvalidBatch(_)), "{err}");

    let huge = "x".repeat(10_000);
    for id in ["*", ">", "a b", "a.b", "", huge.as_str()] {
        let err = client
            .submit_batch(BatchSpec::new("bad", vec![echo("q", 0)]).id(id))
            .await
            .expect_err("a bad batch id is refused");
        assert!(matches!(err, ClientError::InvalidBatch(_)), "{id:?}: {err}");
    }
    let err = client
        .submit_batch(BatchSpec::new(huge.as_str(), vec![echo("q", 0)]))
        .await
        .expect_err("a huge name is refused");
    assert!(matches!(err, ClientError::InvalidBatch(_)), "{err}");
    for id in ["status", "*"] {
        assert!(client.batch(id).await.map_or(true, |b| b.is_none()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_runs_no_pending_job_stops_running_ones_and_fires_on_complete_once() {
    const JOBS: usize = 20;
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "spin", guests::SPIN).await;
    let worker = RunningWorker::on(&server.url(), &["cx"], 2).await;
    // Infinite loops with unlimited fuel: only the cancellation ends the running ones.
    let jobs: Vec<Job> = (0..JOBS)
        .map(|_| {
            let mut spin = Job::json("spin", &json!({})).expect("encodes").queue("cx");
            spin.limits = Some(jobbox::JobLimits {
                fuel: Some(u64::MAX),
                ..Default::default()
            });
            spin
        })
        .collect();
    let spec = BatchSpec::new("cancel me", jobs)
        .on_success(echo("cx", 1))
        .on_complete(echo("cx", 2));
    let batch_id = client.submit_batch(spec).await.expect("enqueue").batch_id;
    let first = batch_job_id(&batch_id, 0);
    while count(
        &client.job_events(&first).await.expect("events"),
        JobEventType::Started,
    ) == 0
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let requested = client.cancel_batch(&batch_id).await.expect("cancel");
    assert!(requested.cancel_requested);
    let batch = client
        .wait_batch(&batch_id, BATCH_TIMEOUT)
        .await
        .expect("ends");
    assert_eq!(batch.status, BatchStatus::Cancelled, "{batch:?}");
    assert_eq!(batch.counts.cancelled, JOBS as u64, "{batch:?}");
    let by_status = statuses(&client, &batch_id, JOBS as u64).await;
    assert_eq!(by_status.get(&JobStatus::Cancelled), Some(&(JOBS as u64)));
    let mut started = 0;
    for n in 0..JOBS as u64 {
        let events = client
            .job_events(&batch_job_id(&batch_id, n))
            .await
            .expect("events");
        started += count(&events, JobEventType::Started);
    }
    assert!(
        started <= 2,
        "{started} jobs started, only 2 slots were running"
    );
    let on_complete = callback_job_id(&batch_id, CallbackKind::OnComplete);
    let result = wait_result(&client, &on_complete, BATCH_TIMEOUT).await;
    assert_eq!(result.status, JobStatus::Completed);
    let events = client.job_events(&on_complete).await.expect("events");
    assert_eq!(count(&events, JobEventType::Started), 1);
    let on_success = callback_job_id(&batch_id, CallbackKind::OnSuccess);
    assert!(
        client
            .job_events(&on_success)
            .await
            .expect("events")
            .is_empty()
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_enqueued_batch_retried_ends_exactly_complete_and_a_failing_callback_fails_alone() {
    const JOBS: usize = 50;
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "reject", guests::REJECT).await;
    let jobs: Vec<Job> = (0..JOBS).map(|n| echo("half", n)).collect();
    // The first try got half the jobs out, as a client dying midway would.
    let half: Vec<Job> = jobs[..JOBS / 2]
        .iter()
        .enumerate()
        .map(|(n, job)| {
            let mut job = job.clone().id(batch_job_id("half-batch", n as u64));
            job.batch_id = Some("half-batch".into());
            job
        })
        .collect();
    for outcome in client.enqueue_many(&half).await.expect("enqueue half") {
        outcome.expect("enqueued");
    }
    let spec = || {
        BatchSpec::new("half", jobs.clone())
            .id("half-batch")
            .on_complete(reject("half"))
    };
    let enqueued = client.submit_batch(spec()).await.expect("retry");
    assert_eq!(enqueued.added, JOBS / 2, "only the missing half is added");
    let again = client.submit_batch(spec()).await.expect("retry again");
    assert_eq!(again.added, 0);
    let worker = RunningWorker::on(&server.url(), &["half"], 4).await;
    let batch = client
        .wait_batch("half-batch", BATCH_TIMEOUT)
        .await
        .expect("ends");
    assert_eq!(batch.status, BatchStatus::Completed, "{batch:?}");
    assert_eq!(batch.counts.completed, JOBS as u64);
    let on_complete = callback_job_id("half-batch", CallbackKind::OnComplete);
    let result = wait_result(&client, &on_complete, BATCH_TIMEOUT).await;
    assert_eq!(results_stored(&client).await, JOBS as u64 + 1);
    assert_eq!(
        result.status,
        JobStatus::Failed,
        "the callback fails as any job"
    );
    let batch = client
        .batch("half-batch")
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(
        batch.status,
        BatchStatus::Completed,
        "its batch stays ended"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_enqueuer_died_long_ago_ends_cancelled_with_one_result_per_job_and_a_late_retry_is_refused()
 {
    const JOBS: u64 = 6;
    const STORED: u64 = 3;
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let jobs: Vec<Job> = (0..JOBS as usize).map(|n| echo("stuck", n)).collect();
    // A client wrote the record and stored half the jobs, then died, longer ago than
    // a worker waits for it.
    let on_complete = callback_job_id("stuck", CallbackKind::OnComplete);
    let mut record = BatchJob::new("stuck", "stuck", JOBS);
    record.on_complete = Some(echo("stuck", 99).id(on_complete.as_str()));
    let long_ago = chrono::Utc::now()
        - chrono::Duration::from_std(jobbox::ENQUEUE_ABANDONED_AFTER).expect("fits")
        - chrono::Duration::seconds(5);
    record.created_at = long_ago;
    record.updated_at = long_ago;
    client
        .layout()
        .batches
        .create("stuck", jobbox::encode(&record).expect("encodes").into())
        .await
        .expect("record");
    let stored: Vec<Job> = jobs[..STORED as usize]
        .iter()
        .enumerate()
        .map(|(n, job)| {
            let mut job = job.clone().id(batch_job_id("stuck", n as u64));
            job.batch_id = Some("stuck".into());
            job
        })
        .collect();
    for outcome in client.enqueue_many(&stored).await.expect("enqueue") {
        outcome.expect("enqueued");
    }
    let worker = RunningWorker::on(&server.url(), &["stuck"], 4).await;
    let batch = client
        .wait_batch("stuck", BATCH_TIMEOUT)
        .await
        .expect("ends");
    assert_eq!(batch.status, BatchStatus::Cancelled, "{batch:?}");
    assert!(batch.abandoned, "{batch:?}");
    assert_eq!(batch.counts.ended(), JOBS, "{batch:?}");
    let by_status = statuses(&client, "stuck", JOBS).await;
    assert!(
        by_status.get(&JobStatus::Cancelled).copied().unwrap_or(0) >= JOBS - STORED,
        "the jobs never stored are cancelled: {by_status:?}"
    );
    assert_eq!(
        by_status.values().sum::<u64>(),
        JOBS,
        "one result per job: {by_status:?}"
    );
    let callback = wait_result(&client, &on_complete, BATCH_TIMEOUT).await;
    assert_eq!(
        callback.status,
        JobStatus::Completed,
        "{}",
        brief(&callback)
    );
    // The enqueuer comes back, too late: refused, and what it stores now never runs.
    let late = client
        .submit_batch(BatchSpec::new("stuck", jobs.clone()).id("stuck"))
        .await
        .expect_err("refused");
    assert!(
        matches!(late, ClientError::Conflict(ref why) if why.contains("abandoned")),
        "{late}"
    );
    let mut straggler = jobs[JOBS as usize - 1]
        .clone()
        .id(batch_job_id("stuck", JOBS - 1));
    straggler.batch_id = Some("stuck".into());
    client.enqueue(&straggler).await.expect("enqueue");
    jobbox_tests::wait_settled(&client, "stuck", BATCH_TIMEOUT).await;
    let events = client.job_events(&straggler.id).await.expect("events");
    assert_eq!(count(&events, JobEventType::Started), 0, "{events:?}");
    assert_eq!(results_stored(&client).await, JOBS + 1, "no second result");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_server_refuses_stores_none_of_its_jobs_and_a_fixed_retry_completes_it() {
    const JOBS: usize = 10;
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    // An operator caps the size of a job message below what one job of the batch needs.
    let mut jobs_stream = client
        .jetstream()
        .get_stream(nats::JOBS_STREAM)
        .await
        .expect("stream");
    let mut config = jobs_stream.info().await.expect("info").config.clone();
    config.max_message_size = 4096;
    client
        .jetstream()
        .update_stream(config)
        .await
        .expect("update");
    let mut jobs: Vec<Job> = (0..JOBS).map(|n| echo("refused", n)).collect();
    jobs[7] = Job::json("echo", &json!({ "big": "x".repeat(8192) }))
        .expect("encodes")
        .queue("refused");
    let spec = |jobs: Vec<Job>| BatchSpec::new("refused", jobs).id("refused-batch");
    let refused = client
        .submit_batch(spec(jobs.clone()))
        .await
        .expect_err("refused");
    let stored = jobs_stream.info().await.expect("info").state.messages;
    assert_eq!(stored, 0, "all or nothing: {refused}");
    jobs[7] = echo("refused", 7);
    let enqueued = client.submit_batch(spec(jobs)).await.expect("retry");
    assert_eq!(enqueued.added, JOBS);
    let worker = RunningWorker::on(&server.url(), &["refused"], 4).await;
    let batch = client
        .wait_batch("refused-batch", BATCH_TIMEOUT)
        .await
        .expect("ends");
    assert_eq!(batch.status, BatchStatus::Completed, "{batch:?}");
    assert_eq!(batch.counts.completed, JOBS as u64);
    worker.stop().await;
}
