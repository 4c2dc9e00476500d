//! Faults outside the job: nats-server killed under load, a worker stopped past
//! `ack_wait`, a full JetStream store. Every job ends with exactly one result and one
//! terminal event, and no handler starts once its job has a result.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jobbox::{Client, EventsFrom, Job, JobEvent, JobEventType, JobResult, JobStatus, nats};
use jobbox_host::worker::{NativeHandlers, WorkerConfig};
use jobbox_tests::{
    KillOnDrop, NatsServer, RunningWorker, brief, deploy_guest, guests, spawn_worker_process,
    wait_exit, wait_result, wait_settled,
};
use serde_json::json;

/// How many results the results bucket holds.
pub(crate) async fn results_stored(client: &Client) -> u64 {
    let stream = format!("KV_{}", nats::RESULTS_BUCKET);
    loop {
        let info = async {
            let mut results = client.jetstream().get_stream(&stream).await.ok()?;
            results.info().await.ok().map(|info| info.state.messages)
        };
        match info.await {
            Some(messages) => return messages,
            // Reconnecting after a server restart.
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits until at least `count` results are stored (panics after `timeout`).
pub(crate) async fn until_results(client: &Client, count: u64, timeout: Duration) {
    let wait = async {
        while results_stored(client).await < count {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(timeout, wait).await.is_err() {
        panic!(
            "only {} of {count} results after {timeout:?}",
            results_stored(client).await
        );
    }
}

/// Every stored job event, read up to the events stream's last sequence.
pub(crate) async fn all_events(client: &Client) -> Vec<JobEvent> {
    let mut stream = client
        .jetstream()
        .get_stream(nats::EVENTS_STREAM)
        .await
        .expect("events stream");
    let last = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let events = client
        .events_with_sequence(None, None, EventsFrom::Start)
        .await
        .expect("follow events");
    futures::pin_mut!(events);
    let mut collected = Vec::new();
    let read = async {
        while let Some(event) = events.next().await {
            let (sequence, event) = event.expect("event decodes");
            collected.push(event);
            if sequence >= last {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("events up to the last sequence arrive");
    collected
}

/// A job's result and when the server stored it (ns since the epoch).
pub(crate) struct Stored {
    pub(crate) result: JobResult,
    pub(crate) at_ns: i128,
}

/// The results of `jobs`, read one by one (no watch: the server may have restarted).
pub(crate) async fn results_of(client: &Client, jobs: &[Job]) -> HashMap<String, Stored> {
    let mut results = HashMap::new();
    for job in jobs {
        let entry = client
            .layout()
            .results
            .entry(&job.id)
            .await
            .expect("read a result")
            .unwrap_or_else(|| panic!("job {} has no result", job.id));
        let result = jobbox::wire::decode(&entry.value).expect("result decodes");
        let at_ns = entry.created.unix_timestamp_nanos();
        results.insert(job.id.clone(), Stored { result, at_ns });
    }
    results
}

/// The trails of `jobs` once every one of them has a terminal event, or as they are
/// after `patience`. A terminal event is published after the job's result is stored
/// (the result is the fence; the event follows it), and one whose publish failed in a
/// failover is sent again from the job's redelivery, an ack wait later: reading the
/// events the moment the last result appears can be too early for those.
pub(crate) async fn trails_once_ended(
    client: &Client,
    jobs: &[Job],
    results: &HashMap<String, Stored>,
    patience: Duration,
) -> HashMap<String, Trail> {
    let deadline = Instant::now() + patience;
    loop {
        let trails = trails(&all_events(client).await, results);
        let ended = jobs
            .iter()
            .all(|job| trails.get(&job.id).is_some_and(|trail| trail.terminal > 0));
        if ended || Instant::now() >= deadline {
            return trails;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Per job: STARTED events, terminal events, and STARTED events stamped after the
/// server stored the job's result (a handler that ran again: must be none).
#[derive(Debug, Default)]
pub(crate) struct Trail {
    pub(crate) started: usize,
    pub(crate) terminal: usize,
    pub(crate) started_after_result: usize,
}

/// Asserts that every job of `jobs` has events, exactly one terminal event, and no
/// STARTED after its result was stored; returns how many jobs were started how many
/// times (STARTED count → jobs).
pub(crate) fn one_end_each(trails: &HashMap<String, Trail>, jobs: &[Job]) -> HashMap<usize, usize> {
    let mut runs: HashMap<usize, usize> = HashMap::new();
    for job in jobs {
        let trail = trails
            .get(&job.id)
            .unwrap_or_else(|| panic!("no events for {}", job.id));
        assert_eq!(
            trail.terminal, 1,
            "terminal events of {}: {trail:?}",
            job.id
        );
        assert_eq!(
            trail.started_after_result, 0,
            "job {} ran after its result was stored: {trail:?}",
            job.id
        );
        *runs.entry(trail.started).or_default() += 1;
    }
    runs
}

pub(crate) fn trails(
    events: &[JobEvent],
    results: &HashMap<String, Stored>,
) -> HashMap<String, Trail> {
    let mut trails: HashMap<String, Trail> = HashMap::new();
    for event in events {
        let Some(result) = results.get(&event.job_id) else {
            continue;
        };
        let trail = trails.entry(event.job_id.clone()).or_default();
        match event.event_type {
            JobEventType::Started => {
                trail.started += 1;
                let started_ns = event.timestamp.timestamp_nanos_opt().map(i128::from);
                if started_ns.is_some_and(|ns| ns > result.at_ns) {
                    trail.started_after_result += 1;
                }
            }
            JobEventType::Completed
            | JobEventType::DeadLettered
            | JobEventType::Cancelled
            | JobEventType::Failed => trail.terminal += 1,
            _ => {}
        }
    }
    trails
}

/// Enqueues `jobs`, sending again those whose acks timed out (a sync-always server on
/// a busy machine can be slow): enqueue is idempotent by job id, so a repeat of a job
/// that was stored after all adds nothing.
pub(crate) async fn enqueue_all(client: &Client, jobs: &[Job]) {
    let mut left: Vec<Job> = jobs.to_vec();
    for _ in 0..5 {
        let outcomes = client.enqueue_many(&left).await.expect("enqueue");
        left = left
            .into_iter()
            .zip(outcomes)
            .filter_map(|(job, outcome)| outcome.is_err().then_some(job))
            .collect();
        if left.is_empty() {
            return;
        }
    }
    panic!("{} jobs not enqueued after 5 tries", left.len());
}

fn sleepy_jobs(count: usize, queue: &str, sleep_ms: u64) -> Vec<Job> {
    (0..count)
        .map(|_| {
            Job::json("sleepy", &json!({ "sleep_ms": sleep_ms }))
                .expect("encodes")
                .queue(queue)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_server_crashes_under_load_leave_one_result_and_one_end_per_job() {
    const JOBS: usize = 2_000;
    // Acked writes are on disk: by default nats-server may lose the last
    // acknowledged writes in a kill -9, which no client can make up for.
    let mut server = NatsServer::with_sync_always();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "sleepy", guests::TIME_BOMB).await;
    let jobs = sleepy_jobs(JOBS, "crash", 2);
    enqueue_all(&client, &jobs).await;
    let mut config = WorkerConfig::new(vec!["crash".into()]);
    config.concurrency = 16;
    config.ack_wait = Duration::from_secs(3);
    let worker = RunningWorker::start(&server.url(), config).await;

    let started = Instant::now();
    let mut recoveries = Vec::new();
    for at in [JOBS / 5, JOBS / 2, JOBS * 4 / 5] {
        until_results(&client, at as u64, Duration::from_secs(180)).await;
        let before = results_stored(&client).await;
        let killed = Instant::now();
        server.restart();
        // Recovery: from the kill to the first result stored after the restart.
        until_results(&client, before + 1, Duration::from_secs(120)).await;
        recoveries.push(killed.elapsed());
    }
    until_results(&client, JOBS as u64, Duration::from_secs(300)).await;
    let total = started.elapsed();
    // A job's terminal event follows its result: read events once every message ended.
    wait_settled(&client, "crash", Duration::from_secs(60)).await;

    let results = results_of(&client, &jobs).await;
    for stored in results.values() {
        let result = &stored.result;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(result));
    }
    let trails = trails_once_ended(&client, &jobs, &results, Duration::from_secs(30)).await;
    let runs = one_end_each(&trails, &jobs);
    println!(
        "{JOBS} jobs, nats-server killed 3 times: done in {total:?}; recovery (kill to \
         next result) {recoveries:?}; jobs by STARTED count {runs:?} (a STARTED event \
         published as the server died is not sent again: it is not the record of truth)"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_past_ack_wait_and_resumed_counts_each_job_once() {
    const JOBS: usize = 200;
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "sleepy", guests::TIME_BOMB).await;
    let mut stalled = KillOnDrop(spawn_worker_process(
        &server.url(),
        &["--queue", "stop", "--concurrency", "4", "--ack-wait", "2s"],
    ));
    let jobs = sleepy_jobs(JOBS, "stop", 50);
    enqueue_all(&client, &jobs).await;
    until_results(&client, 8, Duration::from_secs(60)).await;
    let pid = stalled.0.id().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {name} {pid}");
    };
    signal("-STOP");
    let stopped = Instant::now();
    // Another worker takes over what the stalled one held once ack_wait (2 s) passes.
    let survivor = RunningWorker::on(&server.url(), &["stop"], 4).await;
    // All done while it is stopped: what it held was redelivered after ack_wait.
    until_results(&client, JOBS as u64, Duration::from_secs(120)).await;
    let stopped_for = stopped.elapsed();
    signal("-CONT");
    signal("-TERM");
    let exit = wait_exit(&mut stalled.0, Duration::from_secs(30));
    assert!(
        exit.is_some_and(|status| status.success()),
        "the resumed worker stops cleanly on SIGTERM: {exit:?}"
    );
    let survivor_id = survivor.id.clone();
    survivor.stop().await;

    let results = results_of(&client, &jobs).await;
    let stalled_won = results
        .values()
        .filter(|r| r.result.worker_id != survivor_id)
        .count();
    let events = all_events(&client).await;
    let trails = trails(&events, &results);
    let mut completed_events = 0;
    for job in &jobs {
        let trail = &trails[&job.id];
        assert_eq!(
            trail.terminal, 1,
            "terminal events of {}: {trail:?}",
            job.id
        );
        assert_eq!(trail.started_after_result, 0, "{}: {trail:?}", job.id);
        completed_events += trail.terminal;
    }
    let stats = client.queue_stats("stop").await.expect("stats");
    assert_eq!(stats.completed, JOBS as u64, "{stats:?}");
    assert_eq!(completed_events, JOBS);
    assert_eq!((stats.pending, stats.running), (0, 0), "{stats:?}");
    println!(
        "SIGSTOP for {stopped_for:?} (ack_wait 2 s): {stalled_won} results by the stalled \
         worker, {} by the survivor; completed = {}",
        JOBS - stalled_won,
        stats.completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_holds_jobs_without_rerunning_them_and_they_finish_when_space_returns() {
    const JOBS: usize = 40;
    const SLOTS: u32 = 4;
    let server = NatsServer::with_max_store(8 << 20);
    let client = Client::connect(&server.url()).await.expect("connect");
    let jobs: Vec<Job> = (0..JOBS)
        .map(|i| Job::new("count", format!("{i}").into_bytes()).queue("full"))
        .collect();
    enqueue_all(&client, &jobs).await;

    // Fill what is left of the store.
    let js = client.jetstream();
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "FILLER".into(),
        subjects: vec!["filler".into()],
        ..Default::default()
    })
    .await
    .expect("filler stream");
    let chunk = bytes::Bytes::from(vec![7u8; 256 << 10]);
    let mut refusal = None;
    for _ in 0..200 {
        let stored = match js.publish("filler", chunk.clone()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            refusal = Some(e);
            break;
        }
    }
    let refusal = refusal.expect("the store fills up");
    println!("store full: {refusal}");

    // What a user enqueueing now reads: the cause, said once.
    let enqueue = std::process::Command::new(jobbox_tests::jobbox_bin())
        .args([
            "enqueue",
            "echo",
            "--json",
            "{}",
            "--nats-url",
            &server.url(),
        ])
        .output()
        .expect("run jobbox enqueue");
    let stderr = String::from_utf8_lossy(&enqueue.stderr);
    assert_eq!(enqueue.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the JetStream store is full"), "{stderr}");
    assert!(
        stderr.matches("insufficient resources").count() <= 1,
        "{stderr}"
    );

    // Runs per job, counted by the handler itself (events cannot be stored either).
    let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..JOBS).map(|_| AtomicUsize::new(0)).collect());
    let counted = Arc::clone(&runs);
    let handler = Arc::new(move |job: &Job| {
        let index: usize = std::str::from_utf8(&job.payload)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(0);
        counted[index].fetch_add(1, Ordering::SeqCst);
        Ok(job.payload.clone())
    });
    let mut config = WorkerConfig::new(vec!["full".into()]);
    config.concurrency = SLOTS;
    config.ack_wait = Duration::from_secs(2);
    config.native = NativeHandlers::default().with("count", handler);
    let worker = RunningWorker::start(&server.url(), config).await;

    // Several ack_waits pass while the store is full.
    let total_runs = || runs.iter().map(|r| r.load(Ordering::SeqCst)).sum::<usize>();
    let full_since = Instant::now();
    while total_runs() < SLOTS as usize && full_since.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let while_full = total_runs();
    let most = runs
        .iter()
        .map(|r| r.load(Ordering::SeqCst))
        .max()
        .unwrap_or(0);
    assert!(
        while_full <= 2 * SLOTS as usize && most <= 2,
        "jobs ran again while the store was full: {while_full} runs, {most} for one job"
    );
    assert_eq!(results_stored(&client).await, 0);

    // Space returns: every job finishes, once.
    js.delete_stream("FILLER").await.expect("free the store");
    let freed = Instant::now();
    for job in &jobs {
        let result = wait_result(&client, &job.id, Duration::from_secs(60)).await;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
        assert_eq!(result.result.as_deref(), Some(job.payload.as_slice()));
    }
    let recovered = freed.elapsed();
    let per_job: Vec<usize> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    assert!(
        per_job.iter().all(|n| (1..=2).contains(n)),
        "runs per job: {per_job:?}"
    );
    println!(
        "store full for {:?}: {while_full} runs of {SLOTS} slots; all {JOBS} done {recovered:?} \
         after space returned; {} runs in all",
        freed - full_since,
        per_job.iter().sum::<usize>()
    );
    worker.stop().await;
}

/// The first job directory under `root` (`<root>/<worker>/<job>/`) with a marker
/// file in it, waiting up to `timeout` for one.
fn job_dir_with_marker(root: &std::path::Path, timeout: Duration) -> std::path::PathBuf {
    let deadline = Instant::now() + timeout;
    let dirs = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    loop {
        for job in dirs(root).iter().flat_map(|worker| dirs(worker)) {
            let marked = std::fs::read_dir(&job).is_ok_and(|mut entries| {
                entries.any(|e| {
                    e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("marker-"))
                })
            });
            if marked {
                return job;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no job wrote its marker under {}",
            root.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_leaves_scratch_that_the_next_start_removes() {
    let server = NatsServer::start();
    let url = server.url();
    let client = Client::connect(&url).await.expect("connect");
    // Deployed through the CLI, as an operator would: `--scratch` grants it.
    let deployed = std::process::Command::new(jobbox_tests::jobbox_bin())
        .args(["handler", "deploy", "scratch-peek", guests::SCRATCH_PEEK])
        .args([
            "--scratch",
            "1MiB",
            "--scratch-files",
            "10",
            "--timeout",
            "2s",
        ])
        .args(["--nats-url", &url])
        .output()
        .expect("run jobbox handler deploy");
    assert!(deployed.status.success(), "{deployed:?}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("scratch");
    let root_arg = root.to_str().expect("utf-8 path");
    let args = [
        "--queue",
        "kill9",
        "--ack-wait",
        "2s",
        "--scratch-dir",
        root_arg,
    ];
    let mut first = KillOnDrop(spawn_worker_process(&url, &args));
    let job = Job::json("scratch-peek", &json!({"mode": "spin"}))
        .expect("job")
        .queue("kill9");
    client.enqueue(&job).await.expect("enqueue");
    let leftover = job_dir_with_marker(&root, Duration::from_secs(60));
    let worker_dir = leftover.parent().expect("worker dir").to_path_buf();

    first.0.kill().expect("kill -9 the worker");
    first.0.wait().expect("reap the worker");
    assert!(
        leftover.is_dir(),
        "a killed worker cannot clean up after itself"
    );

    let _second = KillOnDrop(spawn_worker_process(&url, &args));
    // The sweep removes the dead worker's directory, then its lock file.
    let lock = std::path::PathBuf::from(format!("{}.lock", worker_dir.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while worker_dir.exists() || lock.exists() {
        assert!(
            Instant::now() < deadline,
            "{} or its lock is still there after the restart",
            worker_dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_connection_is_not_a_reconnect_and_a_server_restart_is() {
    // Workers pull again when `reconnects` changes, dropping the pulls they had open.
    // The initial connection is reported asynchronously too: taken for a reconnect, it
    // made a worker drop its first pull and the messages already on their way, which
    // came back only after ack_wait, as second attempts.
    let mut server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let mut reconnects = client.reconnects();
    let changed = tokio::time::timeout(Duration::from_millis(500), reconnects.changed()).await;
    assert!(
        changed.is_err(),
        "the first connection counted as a reconnect"
    );
    assert_eq!(*reconnects.borrow(), 0);
    server.restart();
    tokio::time::timeout(Duration::from_secs(30), reconnects.changed())
        .await
        .expect("a restart is a reconnect")
        .expect("the client is alive");
    assert_eq!(*reconnects.borrow_and_update(), 1);
}

/// Issue 9's reliability bar for the per-job path: 20,000 jobs on two worker
/// processes, one killed with SIGKILL midway, end with exactly 20,000 results, one
/// terminal event each, and no handler started after its job's result was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_jobs_on_two_workers_one_killed_midway_end_once_each() {
    const JOBS: usize = 20_000;
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let args = [
        "--queue",
        "kill9",
        "--concurrency",
        "64",
        "--ack-wait",
        "2s",
    ];
    let mut doomed = KillOnDrop(spawn_worker_process(&server.url(), &args));
    let _other = KillOnDrop(spawn_worker_process(&server.url(), &args));
    let jobs: Vec<Job> = (0..JOBS)
        .map(|n| {
            Job::json("echo", &json!({ "n": n }))
                .expect("encodes")
                .queue("kill9")
        })
        .collect();
    let started = Instant::now();
    enqueue_all(&client, &jobs).await;
    until_results(&client, JOBS as u64 / 2, Duration::from_secs(240)).await;
    let at_kill = results_stored(&client).await;
    doomed.0.kill().expect("SIGKILL a worker");
    doomed.0.wait().expect("reap the killed worker");
    until_results(&client, JOBS as u64, Duration::from_secs(240)).await;
    let took = started.elapsed();
    wait_settled(&client, "kill9", Duration::from_secs(60)).await;

    assert_eq!(
        results_stored(&client).await,
        JOBS as u64,
        "one result per job"
    );
    let results = results_of(&client, &jobs).await;
    let mut by_worker: HashMap<&str, usize> = HashMap::new();
    for stored in results.values() {
        let result = &stored.result;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(result));
        *by_worker.entry(result.worker_id.as_str()).or_default() += 1;
    }
    assert_eq!(by_worker.len(), 2, "both workers ran jobs: {by_worker:?}");
    let trails = trails_once_ended(&client, &jobs, &results, Duration::from_secs(30)).await;
    let runs = one_end_each(&trails, &jobs);
    println!(
        "{JOBS} jobs in {took:?}, SIGKILL at {at_kill} results; results by worker \
         {by_worker:?}; jobs by STARTED count {runs:?} (a job started twice was held by \
         the killed worker and redelivered after ack_wait, none after its result)"
    );
}
