//! Handler versions and hot swap against a real nats-server and real guests: swaps,
//! rollbacks and refused deploys under continuous load across two workers, the race
//! of two quick deploys, pinning, history/rollback/rm (library and CLI), the compile
//! cache (restart readiness, corrupt entries).
//!
//! v1 is `examples/echo` (returns its payload), v2 is `tests/guests/echo-v2` (returns
//! `{"v":2,"input":<payload>}`), so every result shows which version produced it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use jobbox::{
    Client, ErrorType, EventsFrom, HandlerLimits, Job, JobEvent, JobEventType, JobStatus, Route,
};
use jobbox_host::registry::{
    self, DeployError, DeployOptions, HandlerLoader, RollbackOptions, RouteTable, VersionError,
    deploy,
};
use jobbox_host::sandbox::{EngineConfig, JobControl, Sandbox};
use jobbox_tests::{
    NatsServer, RunningWorker, brief, components, deploy_guest_with, guests, jobbox_bin,
    wait_result,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Jobs of the deploy-under-load test (at least; the swap happens after a fifth).
const LOAD_JOBS: usize = 5_000;
/// Jobs of the lighter rollback and broken-version tests.
const LIGHT_LOAD_JOBS: usize = 2_000;
/// Jobs per `enqueue_many` call.
const BATCH: usize = 250;
/// Concurrency of each of the two workers.
const CONCURRENCY: u32 = 8;

fn version(label: &str) -> DeployOptions {
    DeployOptions {
        version: Some(label.to_string()),
        deployed_by: Some("hot-swap-test".to_string()),
        ..DeployOptions::default()
    }
}

/// Routes `job_type` to the guest at `path` as a deploy would, minus the validation
/// compile (these guests are known good, deploys are tested elsewhere, and every
/// compile costs seconds in a debug build): stores the component and writes a route
/// copied from `template`.
async fn route_unvalidated(
    client: &Client,
    template: &Route,
    job_type: &str,
    path: &str,
    label: &str,
) -> Route {
    let wasm = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let route = Route {
        job_type: job_type.to_string(),
        digest: client
            .put_handler(&wasm)
            .await
            .expect("store the component"),
        version: Some(label.to_string()),
        size_bytes: wasm.len() as u64,
        ..template.clone()
    };
    client.set_route(&route).await.expect("write the route");
    route
}

/// What a job's output must be on each version.
fn expected_output(payload: &Value, digest: &str, v1: &str, v2: &str) -> Value {
    if digest == v1 {
        payload.clone()
    } else if digest == v2 {
        json!({"v": 2, "input": payload})
    } else {
        panic!("unexpected digest {digest}")
    }
}

/// Every event published while a test runs, collected in the background.
struct Events {
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Seen {
    events: Vec<(u64, JobEvent)>,
    /// Jobs finished (COMPLETED, FAILED, …).
    finished: usize,
    /// Digest → workers that started a job on it.
    started_on: HashMap<String, HashSet<String>>,
}

impl Events {
    async fn follow(client: &Client) -> Self {
        let stream = client
            .events_with_sequence(None, None, EventsFrom::Start)
            .await
            .expect("follow events");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let (sequence, event) = event.expect("event decodes");
                let mut seen = sink.lock().unwrap_or_else(PoisonError::into_inner);
                if is_final(&event) {
                    seen.finished += 1;
                }
                if event.event_type == JobEventType::Started
                    && let (Some(digest), Some(worker)) = (&event.handler_digest, &event.worker_id)
                {
                    seen.started_on
                        .entry(digest.clone())
                        .or_default()
                        .insert(worker.clone());
                }
                seen.events.push((sequence, event));
            }
        });
        Self { seen, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self) -> Vec<(u64, JobEvent)> {
        self.lock().events.clone()
    }

    fn finished(&self) -> usize {
        self.lock().finished
    }

    /// Whether every one of `workers` has started a job on `digest`.
    fn all_started_on(&self, digest: &str, workers: &[RunningWorker]) -> bool {
        let seen = self.lock();
        let started = seen.started_on.get(digest);
        workers
            .iter()
            .all(|worker| started.is_some_and(|ids| ids.contains(&worker.id)))
    }

    fn count(&self, pick: impl Fn(&JobEvent) -> bool) -> usize {
        self.lock()
            .events
            .iter()
            .filter(|(_, event)| pick(event))
            .count()
    }

    /// Waits (polling, bounded by `timeout`) until `pick` matches `count` events.
    async fn wait_for(
        &self,
        what: &str,
        count: usize,
        timeout: Duration,
        pick: impl Fn(&JobEvent) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.count(&pick);
            if seen >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {count} {what}; saw {seen}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_final(event: &JobEvent) -> bool {
    matches!(
        event.event_type,
        JobEventType::Completed
            | JobEventType::Failed
            | JobEventType::DeadLettered
            | JobEventType::Cancelled
    )
}

/// Signed milliseconds from `from` to `to`.
fn millis_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(after) => after.as_secs_f64() * 1e3,
        Err(before) => -before.duration().as_secs_f64() * 1e3,
    }
}

/// The results of `jobs`, which have all finished. (Plain reads: a watch per job, as
/// `wait_result` makes, would hit the server's consumer limit.)
async fn read_results(client: &Client, jobs: &[Job]) -> Vec<jobbox::JobResult> {
    futures::stream::iter(jobs)
        .map(|job| async move {
            client
                .result(&job.id)
                .await
                .expect("read result")
                .unwrap_or_else(|| panic!("job {} has no result", job.id))
        })
        .buffered(32)
        .collect()
        .await
}

/// What a swap under load measured.
struct SwapReport {
    /// Worker id → ms from the swap call returning to its first job STARTED on the new
    /// version.
    first_new_start_ms: BTreeMap<String, f64>,
    /// Worker id → ms from the swap call returning to its HANDLER_SWAPPED event.
    swapped_event_ms: BTreeMap<String, f64>,
    /// Digest → jobs that ran on it.
    jobs_by_digest: BTreeMap<String, usize>,
    jobs: usize,
    elapsed: Duration,
}

impl SwapReport {
    fn print(&self, what: &str) {
        println!(
            "{what}: {} jobs in {:.2?} across 2 workers × {CONCURRENCY}; jobs per digest {:?}",
            self.jobs, self.elapsed, self.jobs_by_digest
        );
        for (worker, ms) in &self.first_new_start_ms {
            println!(
                "  {worker}: HANDLER_SWAPPED {:+.1} ms, first job on the new version {ms:+.1} ms after the call returned",
                self.swapped_event_ms
                    .get(worker)
                    .copied()
                    .unwrap_or(f64::NAN)
            );
        }
    }
}

/// Runs `total` echo jobs (and more, if a worker has not swapped by then) through
/// two workers under continuous load, calling `swap` once a fifth have finished; `swap` returns the digest
/// jobs must move to. Asserts that no job failed, that every job ran on `old` or
/// `new` with the matching output, and that on each worker no job started on `old`
/// after its first start on `new`.
async fn swap_under_load<F, Fut>(
    server: &NatsServer,
    client: &Client,
    queue: &str,
    (v1, v2): (&str, &str),
    old: &str,
    total: usize,
    swap: F,
) -> SwapReport
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = String>,
{
    let events = Events::follow(client).await;
    let workers = [
        RunningWorker::on(&server.url(), &[queue], CONCURRENCY).await,
        RunningWorker::on(&server.url(), &[queue], CONCURRENCY).await,
    ];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut jobs: Vec<Job> = Vec::new();
    let enqueue_batch = async |jobs: &mut Vec<Job>| {
        let batch: Vec<Job> = (jobs.len()..jobs.len() + BATCH)
            .map(|i| {
                Job::json("echo", &json!({"i": i}))
                    .expect("encodes")
                    .queue(queue)
            })
            .collect();
        for outcome in client.enqueue_many(&batch).await.expect("enqueue") {
            outcome.expect("enqueued");
        }
        jobs.extend(batch);
    };
    // Continuous load: the backlog (enqueued, not finished) is topped up to about two
    // batches, so the workers never run dry and the queue never grows without bound.
    let top_up = async |jobs: &mut Vec<Job>| {
        assert!(Instant::now() < deadline, "the load took over 2 minutes");
        if jobs.len() - events.finished() < 2 * BATCH {
            enqueue_batch(jobs).await;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    while events.finished() < total / 5 {
        top_up(&mut jobs).await;
    }
    let backlog = jobs.len() - events.finished();
    let new = swap().await;
    let swapped_at = SystemTime::now();
    println!("swap called with {backlog} jobs queued or running");
    // Go on until `total` jobs are enqueued and both workers run the new version.
    while jobs.len() < total || !events.all_started_on(&new, &workers) {
        top_up(&mut jobs).await;
    }
    let on_new = |event: &JobEvent| {
        event.event_type == JobEventType::Started && event.handler_digest.as_deref() == Some(&new)
    };
    events
        .wait_for(
            "finished jobs",
            jobs.len(),
            Duration::from_secs(60),
            is_final,
        )
        .await;
    let elapsed = started.elapsed();
    let seen = events.snapshot();

    let failed: Vec<&JobEvent> = seen
        .iter()
        .map(|(_, event)| event)
        .filter(|event| is_final(event) && event.event_type != JobEventType::Completed)
        .collect();
    assert!(
        failed.is_empty(),
        "{} jobs failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );

    // Every result: completed, on one of the two versions, with that version's output.
    let results = read_results(client, &jobs).await;
    let mut jobs_by_digest = BTreeMap::new();
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(result));
        let digest = result
            .handler_digest
            .as_deref()
            .expect("result names its digest");
        assert!(
            digest == old || digest == new,
            "{}: ran on {digest}",
            brief(result)
        );
        assert_eq!(
            result.result_json::<Value>().expect("json output"),
            expected_output(&json!({"i": i}), digest, v1, v2),
            "{}",
            brief(result)
        );
        *jobs_by_digest.entry(digest.to_string()).or_insert(0) += 1;
    }

    // Per worker: no job starts on the old version after the first start on the new.
    let mut first_new_start_ms = BTreeMap::new();
    let mut swapped_event_ms = BTreeMap::new();
    for worker in &workers {
        let mut starts: Vec<&JobEvent> = seen
            .iter()
            .map(|(_, event)| event)
            .filter(|event| {
                event.event_type == JobEventType::Started
                    && event.worker_id.as_deref() == Some(&worker.id)
            })
            .collect();
        starts.sort_by_key(|event| event.timestamp);
        let first_new = starts
            .iter()
            .find(|event| on_new(event))
            .unwrap_or_else(|| panic!("worker {} never started a job on {new}", worker.id));
        let late_old: Vec<&&JobEvent> = starts
            .iter()
            .filter(|event| {
                event.handler_digest.as_deref() == Some(old)
                    && event.timestamp > first_new.timestamp
            })
            .collect();
        assert!(
            late_old.is_empty(),
            "worker {}: {} jobs started on the old version after its first start on the new one at {}, e.g. {:?}",
            worker.id,
            late_old.len(),
            first_new.timestamp,
            late_old.first()
        );
        first_new_start_ms.insert(
            worker.id.clone(),
            millis_between(swapped_at, SystemTime::from(first_new.timestamp)),
        );
        if let Some(swapped) = seen.iter().map(|(_, event)| event).find(|event| {
            event.event_type == JobEventType::HandlerSwapped
                && event.worker_id.as_deref() == Some(&worker.id)
                && event.handler_digest.as_deref() == Some(&new)
                && event.error_type.is_none()
        }) {
            swapped_event_ms.insert(
                worker.id.clone(),
                millis_between(swapped_at, SystemTime::from(swapped.timestamp)),
            );
        }
    }
    for worker in workers {
        worker.stop().await;
    }
    SwapReport {
        first_new_start_ms,
        swapped_event_ms,
        jobs_by_digest,
        jobs: jobs.len(),
        elapsed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_under_load_swaps_with_no_failed_job() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let v1 = deploy_guest_with(&client, "echo", guests::ECHO, version("v1")).await;
    let v2_wasm = std::fs::read(guests::ECHO_V2).expect("read echo-v2");
    let v2_digest = jobbox::digest_of(&v2_wasm);
    let report = swap_under_load(
        &server,
        &client,
        "swap",
        (&v1.digest, &v2_digest),
        &v1.digest,
        LOAD_JOBS,
        || async {
            let route = deploy(&client, "echo", v2_wasm, version("v2"))
                .await
                .expect("deploy v2");
            route.digest
        },
    )
    .await;
    report.print("deploy v2 under load");
    assert!(
        report
            .jobs_by_digest
            .get(&v1.digest)
            .is_some_and(|n| *n > 0)
    );
    assert!(
        report
            .jobs_by_digest
            .get(&v2_digest)
            .is_some_and(|n| *n > 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_under_load_swaps_back_with_no_failed_job() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let v1 = deploy_guest_with(&client, "echo", guests::ECHO, version("v1")).await;
    let v2 = route_unvalidated(&client, &v1, "echo", guests::ECHO_V2, "v2").await;
    let report = swap_under_load(
        &server,
        &client,
        "rollback",
        (&v1.digest, &v2.digest),
        &v2.digest,
        LIGHT_LOAD_JOBS,
        || async {
            let done = registry::rollback(&client, "echo", RollbackOptions::default())
                .await
                .expect("roll back");
            assert_eq!(
                done.previous.as_ref().map(|r| r.digest.as_str()),
                Some(v2.digest.as_str())
            );
            assert_eq!(done.route.version.as_deref(), Some("v1"));
            done.route.digest
        },
    )
    .await;
    report.print("rollback to v1 under load");
    assert!(
        report
            .jobs_by_digest
            .get(&v1.digest)
            .is_some_and(|n| *n > 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_version_under_load_never_replaces_the_working_one() {
    const JOBS: usize = LIGHT_LOAD_JOBS / 2;
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let v1 = deploy_guest_with(&client, "echo", guests::ECHO, version("v1")).await;
    let events = Events::follow(&client).await;
    let workers = [
        RunningWorker::on(&server.url(), &["broken"], CONCURRENCY).await,
        RunningWorker::on(&server.url(), &["broken"], CONCURRENCY).await,
    ];
    let jobs: Vec<Job> = (0..JOBS)
        .map(|i| {
            Job::json("echo", &json!({"i": i}))
                .expect("encodes")
                .queue("broken")
        })
        .collect();
    let (first_half, second_half) = jobs.split_at(JOBS / 2);
    for outcome in client.enqueue_many(first_half).await.expect("enqueue") {
        outcome.expect("enqueued");
    }
    events
        .wait_for("finished jobs", 200, Duration::from_secs(60), is_final)
        .await;

    // 1. A deploy of bytes that are no component is refused; the route is untouched.
    let mut broken = b"\0asm\x0d\0\x01\0".to_vec();
    broken.extend_from_slice(&[0xff; 64]);
    let refused = deploy(&client, "echo", broken.clone(), version("v2-broken")).await;
    assert!(
        matches!(refused, Err(DeployError::Invalid(_))),
        "{refused:?}"
    );
    let route = client
        .route("echo")
        .await
        .expect("read route")
        .expect("route");
    assert_eq!(route.digest, v1.digest);

    // 2. A route that bypassed validation (written straight to the bucket) fails to
    //    load on every worker, which keep serving v1 and report the failure.
    let broken_digest = client
        .put_handler(&broken)
        .await
        .expect("store broken bytes");
    client
        .set_route(&Route {
            digest: broken_digest.clone(),
            version: Some("v2-broken".into()),
            ..v1.clone()
        })
        .await
        .expect("set a broken route");
    for outcome in client.enqueue_many(second_half).await.expect("enqueue") {
        outcome.expect("enqueued");
    }
    let failed_load = |event: &JobEvent| {
        event.event_type == JobEventType::HandlerSwapped
            && event.handler_digest.as_deref() == Some(&broken_digest)
            && event.error_type.is_some()
    };
    events
        .wait_for(
            "failed-load reports",
            workers.len(),
            Duration::from_secs(60),
            failed_load,
        )
        .await;
    events
        .wait_for("finished jobs", JOBS, Duration::from_secs(120), is_final)
        .await;
    for (_, event) in events.snapshot() {
        if failed_load(&event) {
            assert_eq!(
                event.error_type,
                Some(ErrorType::InvalidHandler),
                "{event:?}"
            );
        }
        assert!(
            !is_final(&event) || event.event_type == JobEventType::Completed,
            "a job did not complete: {event:?}"
        );
    }
    for result in read_results(&client, &jobs).await {
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
        assert_eq!(result.handler_digest.as_deref(), Some(v1.digest.as_str()));
    }
    for worker in workers {
        worker.stop().await;
    }
}

/// A worker-like route table on its own sandbox (no pool: this test runs no jobs at
/// scale), following the routes bucket.
async fn watched_table(
    client: &Client,
    loader: HandlerLoader,
    shutdown: &CancellationToken,
) -> RouteTable {
    let table = RouteTable::new(client.clone(), loader);
    registry::watch_routes(
        client.clone(),
        table.clone(),
        "test-worker".into(),
        shutdown.clone(),
    )
    .await
    .expect("watch routes");
    table
}

fn small_sandbox() -> Sandbox {
    Sandbox::new(EngineConfig {
        concurrency: 2,
        max_memory_bytes: HandlerLimits::default().memory_bytes,
        pooling: false,
    })
    .expect("sandbox")
}

/// Polls `check` every 20 ms for up to `timeout`.
async fn eventually(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_quick_deploys_end_on_the_newest_even_if_the_older_loads_slower() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let v1 = deploy_guest_with(&client, "echo", guests::ECHO, version("v1")).await;
    let shutdown = CancellationToken::new();
    let loader = HandlerLoader::new(client.clone(), small_sandbox());
    let table = watched_table(&client, loader.clone(), &shutdown).await;
    assert_eq!(
        table.get("echo").expect("v1 active").route.digest,
        v1.digest
    );

    // v2 is word-count (a compile of a second or more); v3 is echo-v2, compiled in
    // advance, so its load is instant and v2's finishes long after v3 is installed.
    let v2_wasm = std::fs::read(guests::WORD_COUNT).expect("read word-count");
    let v3_wasm = std::fs::read(guests::ECHO_V2).expect("read echo-v2");
    let v2 = client.put_handler(&v2_wasm).await.expect("store v2");
    let v3 = client.put_handler(&v3_wasm).await.expect("store v3");
    loader.load(&v3).await.expect("precompile v3");
    let route = |digest: &str, label: &str| Route {
        digest: digest.to_string(),
        version: Some(label.to_string()),
        deployed_at: v1.deployed_at,
        ..v1.clone()
    };
    client.set_route(&route(&v2, "v2")).await.expect("route v2");
    client.set_route(&route(&v3, "v3")).await.expect("route v3");

    eventually("v3 to be installed", Duration::from_secs(30), || {
        table
            .get("echo")
            .is_some_and(|active| active.route.digest == v3)
    })
    .await;
    // Wait for v2's (shared) load to finish, then give its install a moment.
    loader.load(&v2).await.expect("v2 compiles");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let active = table.get("echo").expect("a route");
    assert_eq!(
        active.route.digest, v3,
        "the older v2 overwrote the newer v3"
    );
    assert_eq!(active.route.version.as_deref(), Some("v3"));
    let resolved = table.resolve("echo", None).await.expect("resolve");
    assert_eq!(resolved.route.digest, v3);

    // A version that fails to load never replaces the working one, and is reported.
    let broken = client
        .put_handler(b"\0asm\x0d\0\x01\0 definitely not a component")
        .await
        .expect("store broken bytes");
    client
        .set_route(&route(&broken, "v4"))
        .await
        .expect("route v4");
    eventually(
        "the failed load to be recorded",
        Duration::from_secs(30),
        || table.load_failures().contains_key("echo"),
    )
    .await;
    let failure = &table.load_failures()["echo"];
    assert_eq!(failure.digest, broken);
    assert_eq!(failure.version.as_deref(), Some("v4"));
    assert_eq!(failure.error_type, ErrorType::InvalidHandler);
    assert_eq!(failure.serving.as_deref(), Some(v3.as_str()));
    println!("load failure as `jobbox workers` would show it: {failure}");
    assert_eq!(table.get("echo").expect("a route").route.digest, v3);

    // The next good version clears it.
    client
        .set_route(&route(&v1.digest, "v5"))
        .await
        .expect("route v5");
    eventually("v5 to be installed", Duration::from_secs(30), || {
        table
            .get("echo")
            .is_some_and(|active| active.route.version.as_deref() == Some("v5"))
    })
    .await;
    assert!(
        table.load_failures().is_empty(),
        "{:?}",
        table.load_failures()
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_jobs_run_on_their_version_and_rm_and_rollback_work() {
    const QUEUE: &str = "pin";
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let v1 = deploy_guest_with(&client, "echo", guests::ECHO, version("v1")).await;
    let v2 = route_unvalidated(&client, &v1, "echo", guests::ECHO_V2, "v2").await;
    let worker = RunningWorker::on(&server.url(), &[QUEUE], 4).await;
    let run = async |pin: Option<&str>| {
        // No retries: an unknown job type is retryable, and would wait out backoff.
        let mut job = Job::json("echo", &json!({"pin": pin}))
            .expect("encodes")
            .queue(QUEUE)
            .max_retries(0);
        if let Some(pin) = pin {
            job = job.handler(pin);
        }
        client.enqueue(&job).await.expect("enqueue");
        wait_result(&client, &job.id, Duration::from_secs(60)).await
    };

    for (pin, digest) in [
        (Some("v1"), &v1.digest),
        (Some(v1.digest.as_str()), &v1.digest),
        (Some("v2"), &v2.digest),
        (None, &v2.digest),
    ] {
        let result = run(pin).await;
        assert_eq!(
            result.status,
            JobStatus::Completed,
            "pin {pin:?}: {}",
            brief(&result)
        );
        assert_eq!(
            result.handler_digest.as_deref(),
            Some(digest.as_str()),
            "pin {pin:?}"
        );
        assert_eq!(
            result.result_json::<Value>().expect("json"),
            expected_output(&json!({"pin": pin}), digest, &v1.digest, &v2.digest)
        );
    }
    let unknown = run(Some("v9")).await;
    assert_eq!(unknown.status, JobStatus::Failed, "{}", brief(&unknown));
    assert_eq!(unknown.error_type, Some(ErrorType::HandlerUnavailable));
    let message = unknown.error.clone().unwrap_or_default();
    assert!(
        message.contains("no deployed version \"v9\"")
            && message.contains("v1")
            && message.contains("v2"),
        "{message}"
    );
    assert!(unknown.handler_digest.is_none(), "{}", brief(&unknown));

    // History: newest first, the current one marked.
    let history = registry::history(&client, "echo").await.expect("history");
    let labels: Vec<(Option<&str>, bool)> = history
        .iter()
        .map(|v| {
            (
                v.route.as_ref().and_then(|r| r.version.as_deref()),
                v.current,
            )
        })
        .collect();
    assert_eq!(labels, [(Some("v2"), true), (Some("v1"), false)]);

    // Rollback to an unknown version or one whose object is gone is refused.
    let refused = registry::rollback(
        &client,
        "echo",
        RollbackOptions {
            to: Some("v7".into()),
            ..RollbackOptions::default()
        },
    )
    .await;
    assert!(
        matches!(refused, Err(VersionError::UnknownVersion { .. })),
        "{refused:?}"
    );

    // rm: jobs of the type end as unknown_job_type (pinned ones too), once the
    // worker has seen the removal; it is retryable, so with no retries left they are
    // dead-lettered (replayable once a route is back).
    let removed = registry::remove(&client, "echo").await.expect("rm");
    assert_eq!(removed.digest, v2.digest);
    assert!(client.route("echo").await.expect("read").is_none());
    let mut after_rm = None;
    for _ in 0..50 {
        let result = run(None).await;
        if result.status != JobStatus::Completed {
            after_rm = Some(result);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after_rm = after_rm.expect("jobs still completed 50 times after rm");
    assert_eq!(
        after_rm.status,
        JobStatus::DeadLetter,
        "{}",
        brief(&after_rm)
    );
    assert_eq!(
        after_rm.error_type,
        Some(ErrorType::UnknownJobType),
        "{}",
        brief(&after_rm)
    );
    let pinned = run(Some("v1")).await;
    assert_eq!(
        pinned.error_type,
        Some(ErrorType::UnknownJobType),
        "{}",
        brief(&pinned)
    );
    assert!(matches!(
        registry::remove(&client, "echo").await,
        Err(VersionError::NoRoute(_))
    ));

    // Rollback after rm brings back the last deploy; --to picks any earlier one.
    let back = registry::rollback(&client, "echo", RollbackOptions::default())
        .await
        .expect("rollback after rm");
    assert!(back.previous.is_none());
    assert_eq!(back.route.digest, v2.digest);
    let short = &v1.digest["sha256:".len().."sha256:".len() + 10];
    let to_v1 = registry::rollback(
        &client,
        "echo",
        RollbackOptions {
            to: Some(short.to_string()),
            deployed_by: Some("rollbacker".into()),
        },
    )
    .await
    .expect("rollback --to a digest prefix");
    assert_eq!(to_v1.route.digest, v1.digest);
    assert_eq!(to_v1.route.deployed_by.as_deref(), Some("rollbacker"));
    assert!(to_v1.route.deployed_at > v2.deployed_at);
    let mut result = run(None).await;
    for _ in 0..50 {
        if result.handler_digest.as_deref() == Some(v1.digest.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        result = run(None).await;
    }
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert_eq!(result.handler_digest.as_deref(), Some(v1.digest.as_str()));
    let history = registry::history(&client, "echo").await.expect("history");
    let kinds: Vec<(Option<&str>, bool)> = history
        .iter()
        .map(|v| {
            (
                v.route.as_ref().and_then(|r| r.version.as_deref()),
                v.current,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (Some("v1"), true),
            (Some("v2"), false),
            (None, false),
            (Some("v2"), false),
            (Some("v1"), false)
        ]
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_history_rolls_back_and_removes() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let v1 = deploy_guest_with(&client, "echo", guests::ECHO, version("v1")).await;
    let v2 = route_unvalidated(&client, &v1, "echo", guests::ECHO_V2, "v2").await;
    let jobbox = |args: &[&str]| {
        let output = std::process::Command::new(jobbox_bin())
            .args(args)
            .args(["--nats-url", &server.url()])
            .output()
            .expect("run jobbox");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (ok, text, err) = jobbox(&["handler", "history", "echo"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].starts_with('*') && lines[1].contains("v2"),
        "{text}"
    );
    assert!(
        lines[2].starts_with(' ') && lines[2].contains("v1"),
        "{text}"
    );

    let (ok, json_text, err) = jobbox(&["handler", "rollback", "echo", "-o", "json"]);
    assert!(ok, "{err}");
    let done: Value = serde_json::from_str(&json_text).expect("json");
    assert_eq!(done["route"]["digest"], json!(v1.digest));
    assert_eq!(done["previous"]["digest"], json!(v2.digest));

    let (ok, json_text, err) = jobbox(&["handler", "history", "echo", "-o", "json"]);
    assert!(ok, "{err}");
    let history: Value = serde_json::from_str(&json_text).expect("json");
    assert_eq!(history[0]["current"], json!(true));
    assert_eq!(history[0]["route"]["version"], json!("v1"));
    assert_eq!(history.as_array().map(Vec::len), Some(3));

    let (ok, text, err) = jobbox(&["handler", "rollback", "echo", "--to", "v2"]);
    assert!(ok, "{err}");
    assert!(
        text.contains("rolled back echo") && text.contains("[v2]"),
        "{text}"
    );

    let (ok, _, err) = jobbox(&["handler", "rollback", "echo", "--to", "nope"]);
    assert!(!ok);
    assert!(err.contains("no deployed version \"nope\""), "{err}");

    let (ok, text, err) = jobbox(&["handler", "rm", "echo"]);
    assert!(ok, "{err}");
    assert!(text.contains("removed the route of echo"), "{text}");
    assert!(client.route("echo").await.expect("read").is_none());
    let (ok, text, err) = jobbox(&["handler", "history", "echo"]);
    assert!(ok, "{err}");
    assert!(
        text.contains("(removed)") && text.contains("no current route"),
        "{text}"
    );
    let (ok, _, err) = jobbox(&["handler", "rm", "echo"]);
    assert!(!ok);
    assert!(err.contains("no handler deployed"), "{err}");
}

/// Files in the cache directory tree, by name.
fn cache_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list cache dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(cache_files(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

async fn run_echo(sandbox: &Sandbox, handler: &jobbox_host::sandbox::Handler) -> Vec<u8> {
    let job = Job::json("echo", &json!({"cached": true})).expect("encodes");
    let outcome = sandbox
        .run(
            handler,
            &job,
            HandlerLimits::default(),
            JobControl::default(),
        )
        .await;
    outcome.result.expect("the job runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_truncated_cache_entry_is_rebuilt() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let v1 = deploy_guest_with(&client, "echo", guests::ECHO, version("v1")).await;
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let restart = || {
        HandlerLoader::new(client.clone(), small_sandbox())
            .with_cache_dir(cache_dir.path())
            .expect("open the cache")
    };

    let first = restart();
    first.load(&v1.digest).await.expect("compile");
    assert_eq!(first.cache_stats().stored, 1);
    let files = cache_files(cache_dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let entry = files[0].clone();
    assert!(entry.to_string_lossy().ends_with(".cwasm"));

    // A cached start: a hit, no compile.
    let second = restart();
    let handler = second.load(&v1.digest).await.expect("from cache");
    assert_eq!(
        (second.cache_stats().hits, second.cache_stats().misses),
        (1, 0)
    );
    assert_eq!(
        run_echo(second.sandbox(), &handler).await,
        br#"{"cached":true}"#
    );

    // One flipped byte in the code: detected, deleted, recompiled, the job runs.
    let mut bytes = std::fs::read(&entry).expect("read entry");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&entry, &bytes).expect("corrupt the entry");
    let third = restart();
    let handler = third.load(&v1.digest).await.expect("recompiled");
    let stats = third.cache_stats();
    assert_eq!(
        (stats.hits, stats.corrupt, stats.stored),
        (0, 1, 1),
        "{stats:?}"
    );
    assert_eq!(
        run_echo(third.sandbox(), &handler).await,
        br#"{"cached":true}"#
    );

    // Truncated (as by a crash mid-write without the atomic rename): same.
    let bytes = std::fs::read(&entry).expect("read entry");
    std::fs::write(&entry, &bytes[..bytes.len() / 3]).expect("truncate the entry");
    let fourth = restart();
    let handler = fourth.load(&v1.digest).await.expect("recompiled");
    let stats = fourth.cache_stats();
    assert_eq!(
        (stats.hits, stats.corrupt, stats.stored),
        (0, 1, 1),
        "{stats:?}"
    );
    assert_eq!(
        run_echo(fourth.sandbox(), &handler).await,
        br#"{"cached":true}"#
    );

    // And the rebuilt entry is good again; no temporary file is left behind.
    let fifth = restart();
    fifth.load(&v1.digest).await.expect("from cache");
    assert_eq!(fifth.cache_stats().hits, 1);
    assert_eq!(cache_files(cache_dir.path()), [entry]);

    // A cache directory other users can write to is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let shared = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let refused =
            HandlerLoader::new(client.clone(), small_sandbox()).with_cache_dir(shared.path());
        assert!(
            matches!(refused, Err(registry::CacheError::Insecure(..))),
            "{:?}",
            refused.err()
        );
    }
}

/// The distinct guests the restart test deploys (cycled over 20 job types).
/// The handlers of the restart test, in three languages: Rust (echo, echo-v2,
/// word-count, markdown), Python and JavaScript (word-count each).
fn restart_guests() -> Vec<String> {
    let mut paths: Vec<String> = [
        guests::ECHO,
        guests::ECHO_V2,
        guests::WORD_COUNT,
        guests::MARKDOWN,
    ]
    .map(str::to_string)
    .into();
    paths.push(components::python_example("word-count"));
    paths.push(components::js_example("word-count"));
    paths
}

/// What a worker does before it takes jobs: build its sandbox, load every route
/// (all `routes` of them: a worker's start waits a bounded time for loads, and
/// compiling two interpreters in a debug build beside other tests can take longer).
/// How long that took, and the table. (A function of its own, boxed by the caller:
/// inline in a test's body its future overflowed the test thread's stack in a debug
/// build.)
async fn start_worker(client: &Client, cache_dir: &Path, routes: usize) -> (Duration, RouteTable) {
    let started = Instant::now();
    let sandbox = Sandbox::new(EngineConfig {
        concurrency: CONCURRENCY,
        max_memory_bytes: 256 * 1024 * 1024,
        pooling: true,
    })
    .expect("sandbox");
    let loader = HandlerLoader::new(client.clone(), sandbox)
        .with_cache_dir(cache_dir)
        .expect("open the cache");
    let shutdown = CancellationToken::new();
    let table = watched_table(client, loader, &shutdown).await;
    eventually("every route loaded", Duration::from_secs(300), || {
        table.digests().len() == routes
    })
    .await;
    let ready = started.elapsed();
    shutdown.cancel();
    (ready, table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_with_20_handlers_is_ready_sooner_with_the_compile_cache() {
    const JOB_TYPES: usize = 20;
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let mut digests = HashSet::new();
    let mut template: Option<Route> = None;
    let restart_guests = restart_guests();
    for i in 0..JOB_TYPES {
        let guest = restart_guests[i % restart_guests.len()].as_str();
        let job_type = format!("handler-{i}");
        let route = match &template {
            None => deploy_guest_with(&client, &job_type, guest, version("v1")).await,
            Some(template) => route_unvalidated(&client, template, &job_type, guest, "v1").await,
        };
        digests.insert(route.digest.clone());
        template.get_or_insert(route);
    }
    let distinct = digests.len() as u64;
    let cache_dir = tempfile::tempdir().expect("temp dir");

    let (cold, cold_table) = Box::pin(start_worker(&client, cache_dir.path(), JOB_TYPES)).await;
    assert_eq!(cold_table.digests().len(), JOB_TYPES);
    let stats = cold_table.loader().cache_stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.stored),
        (0, distinct, distinct),
        "{stats:?}"
    );

    let (warm, warm_table) = Box::pin(start_worker(&client, cache_dir.path(), JOB_TYPES)).await;
    assert_eq!(warm_table.digests().len(), JOB_TYPES);
    let stats = warm_table.loader().cache_stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.corrupt, stats.stored),
        (distinct, 0, 0, 0),
        "the restarted worker compiled instead of using the cache: {stats:?}"
    );
    // The cached handlers run.
    let echo = warm_table.get("handler-0").expect("handler-0");
    assert_eq!(
        run_echo(warm_table.loader().sandbox(), &echo.handler).await,
        br#"{"cached":true}"#
    );
    let word_count = warm_table.get("handler-2").expect("handler-2");
    let job = Job::json("handler-2", &json!({"text": "a b a"})).expect("encodes");
    let outcome = warm_table
        .loader()
        .sandbox()
        .run(
            &word_count.handler,
            &job,
            HandlerLimits::default(),
            JobControl::default(),
        )
        .await;
    let output: Value =
        serde_json::from_slice(&outcome.result.expect("word-count runs")).expect("json");
    assert_eq!(output["words"], json!(3));

    let cache_bytes: u64 = cache_files(cache_dir.path())
        .iter()
        .map(|path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "worker ready with {JOB_TYPES} handlers ({distinct} distinct components): \
         {:.0} ms compiling (empty cache), {:.0} ms from the compile cache ({:.1}× faster; cache {:.1} MiB)",
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        cold.as_secs_f64() / warm.as_secs_f64(),
        cache_bytes as f64 / (1024.0 * 1024.0)
    );
}
