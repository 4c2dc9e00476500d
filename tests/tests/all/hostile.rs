//! The hostile-guest suite: what a tenant's handler could try, end to end through a
//! real worker and nats-server. Every hostile job ends in its classified result, and
//! the same worker completes a normal job right after it. Also: 1,000 hostile jobs
//! in a row leave the worker's memory bounded, deploys refuse what a worker must not
//! run without touching the route, and how far past its deadline a job can run.
//! Python guests (`tests/guests-py/`) that loop, allocate and raise are classified as
//! their Rust counterparts are.
//!
//! Complements `bad_input` (the basic failure classes through the worker) and
//! `sandbox` (the same guests without NATS).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use jobbox::{
    Client, ErrorType, EventsFrom, HandlerLimits, Job, JobEventType, JobLimits, JobResult,
    JobStatus, Route,
};
use jobbox_host::registry::{DeployError, DeployOptions, deploy};
use jobbox_host::sandbox::limits::{HOSTCALL_BYTES, MAX_LOG_LINE_BYTES, PROGRESS_INTERVAL};
use jobbox_host::sandbox::{EngineConfig, JobControl, MAX_COMPONENT_BYTES, Sandbox};
use jobbox_host::worker::WorkerConfig;
use jobbox_tests::{
    NatsServer, RunningWorker, brief, components, deploy_guest_with, guests, wait_result,
};
use serde_json::{Value, json};

const QUEUE: &str = "hostile";

/// Longest any single job of this module may take to produce its result.
const RESULT_WAIT: Duration = Duration::from_secs(60);

/// Deploys `path` as `job_type` with `limits` as the route's ceilings.
async fn deploy_limited(
    client: &Client,
    job_type: &str,
    path: &str,
    limits: HandlerLimits,
) -> Route {
    let options = DeployOptions {
        limits,
        ..DeployOptions::default()
    };
    deploy_guest_with(client, job_type, path, options).await
}

/// A route to deploy: job type, guest, ceilings.
type RouteSpec<'a> = (&'a str, &'a str, HandlerLimits);

/// A server, a client, echo and `routes` deployed, and a worker on [`QUEUE`].
///
/// Everything is deployed before the worker starts, so the worker compiles it all
/// before taking jobs: a job that had to wait for its handler to compile could
/// outlive the tests' short ack wait and be delivered twice.
async fn start(concurrency: u32, routes: &[RouteSpec<'_>]) -> (NatsServer, Client, RunningWorker) {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_limited(&client, "echo", guests::ECHO, HandlerLimits::default()).await;
    for (job_type, path, limits) in routes {
        deploy_limited(&client, job_type, path, *limits).await;
    }
    let worker = start_worker(&server, concurrency).await;
    (server, client, worker)
}

/// A worker on [`QUEUE`] like [`RunningWorker::on`]'s, with a compile cache shared
/// by this module's tests (under the test binary's target directory): each guest is
/// compiled by a worker once per build of the tests, not once per test.
async fn start_worker(server: &NatsServer, concurrency: u32) -> RunningWorker {
    RunningWorker::start(&server.url(), worker_config(concurrency)).await
}

/// The configuration [`start_worker`] starts a worker with.
fn worker_config(concurrency: u32) -> WorkerConfig {
    let exe = std::env::current_exe().expect("current exe");
    let target_profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let mut config = WorkerConfig::new(vec![QUEUE.to_string()]);
    config.concurrency = concurrency;
    config.ack_wait = Duration::from_secs(5);
    config.shutdown_grace = Duration::from_secs(10);
    config.cache_dir = Some(target_profile_dir.join("hostile-compile-cache"));
    config
}

async fn run_job(client: &Client, job: &Job) -> JobResult {
    run_job_within(client, job, RESULT_WAIT).await
}

async fn run_job_within(client: &Client, job: &Job, wait: Duration) -> JobResult {
    client.enqueue(job).await.expect("enqueue");
    wait_result(client, &job.id, wait).await
}

fn job(job_type: &str, payload: &Value) -> Job {
    Job::json(job_type, payload).expect("encodes").queue(QUEUE)
}

/// Runs `job_type` with `payload` and checks it ends FAILED as `expected`, for good.
async fn expect_failure(
    client: &Client,
    job_type: &str,
    payload: &Value,
    expected: ErrorType,
) -> JobResult {
    let result = run_job(client, &job(job_type, payload)).await;
    assert_failed(&result, job_type, expected);
    result
}

fn assert_failed(result: &JobResult, what: &str, expected: ErrorType) {
    assert_eq!(
        result.status,
        JobStatus::Failed,
        "{what}: {}",
        brief(result)
    );
    assert_eq!(
        result.error_type,
        Some(expected),
        "{what}: {}",
        brief(result)
    );
    assert!(!result.retryable, "{what}: {}", brief(result));
    assert_eq!(result.attempts, 1, "{what}: final at once, never retried");
    assert!(
        result.result.is_none(),
        "{what}: a failure stores no output"
    );
}

/// Runs `job_type` with `payload` and checks it COMPLETED; returns its JSON output.
async fn expect_completed(client: &Client, job_type: &str, payload: &Value) -> (JobResult, Value) {
    let result = run_job(client, &job(job_type, payload)).await;
    assert_eq!(
        result.status,
        JobStatus::Completed,
        "{job_type}: {}",
        brief(&result)
    );
    let output = result.result_json::<Value>().expect("output is JSON");
    (result, output)
}

/// The worker is still healthy: an echo job completes with its input.
async fn assert_echo_still_works(client: &Client) {
    let (_, output) = expect_completed(client, "echo", &json!({"still": "alive"})).await;
    assert_eq!(output, json!({"still": "alive"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_complete_within_their_caps() {
    let log_caps = HandlerLimits {
        log_lines: 50,
        log_bytes: 2048,
        ..HandlerLimits::default()
    };
    let defaults = HandlerLimits::default();
    let (_server, client, worker) = start(
        2,
        &[
            ("log-flood", guests::LOG_FLOOD, log_caps),
            ("stdout-flood", guests::STDOUT_FLOOD, defaults),
            ("stderr-flood", guests::STDERR_FLOOD, defaults),
            ("progress-flood", guests::PROGRESS_FLOOD, defaults),
        ],
    )
    .await;

    // Logs: kept up to the route's line and byte caps, the rest counted; completed.
    let lines = 5_000_u64;
    let (result, output) = expect_completed(&client, "log-flood", &json!({"lines": lines})).await;
    assert_eq!(output, json!({"logged": lines}));
    let kept_bytes: usize = result.logs.iter().map(|l| l.message.len()).sum();
    assert!(
        result.logs.len() as u64 <= log_caps.log_lines,
        "{}",
        result.logs.len()
    );
    assert!(kept_bytes as u64 <= log_caps.log_bytes, "{kept_bytes}");
    assert!(result.usage.log_bytes <= log_caps.log_bytes);
    assert!(result.logs_dropped > 0, "the flood was counted");
    assert_eq!(result.logs.len() as u64 + result.logs_dropped, lines);
    assert_echo_still_works(&client).await;

    // stdout and stderr: 8 MiB each are accepted, kept up to the capture cap (which
    // `sandbox::stdout_floods_are_truncated_not_fatal` checks byte for byte), never
    // stored with the result, and never a failure.
    let bytes = 8_u64 << 20;
    let (result, output) =
        expect_completed(&client, "stdout-flood", &json!({"bytes": bytes})).await;
    assert_eq!(output, json!({"printed": bytes}));
    assert!(result.result.as_ref().map_or(0, Vec::len) < 64);
    assert_echo_still_works(&client).await;
    let (_, output) = expect_completed(&client, "stderr-flood", &json!({"bytes": bytes})).await;
    assert_eq!(output, json!({"written": bytes}));
    assert_echo_still_works(&client).await;

    // stderr forever: an endless loop like any other, ended by its fuel (the job asks
    // for less than its route's: that it may); what is kept of stderr stays small.
    let fuel = 50_000_000;
    let forever = job("stderr-flood", &json!({})).limits(JobLimits {
        fuel: Some(fuel),
        ..JobLimits::default()
    });
    let result = run_job(&client, &forever).await;
    assert_failed(&result, "stderr-flood", ErrorType::OutOfFuel);
    assert_eq!(result.usage.fuel_consumed, fuel);
    assert!(result.traceback.as_ref().map_or(0, String::len) < 16 * 1024);
    assert_echo_still_works(&client).await;

    // Progress in a tight loop: at most one PROGRESS event per interval, plus the last.
    let flood = job("progress-flood", &json!({"ms": 1000}));
    let result = run_job(&client, &flood).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    let reports = result.result_json::<Value>().expect("json")["reports"]
        .as_u64()
        .expect("reports");
    let progress = progress_events(&client, &flood.id).await;
    let events = progress.len() as u64;
    let wall_ms = result.usage.wall_time_us / 1000;
    let allowed = wall_ms / PROGRESS_INTERVAL.as_millis() as u64 + 2;
    println!(
        "progress-flood: {reports} reports in {wall_ms} ms became {events} PROGRESS events \
         (at most {allowed} allowed)"
    );
    assert!(reports > 1_000, "the guest did flood: {reports} reports");
    let last = progress
        .last()
        .expect("the last report is always passed on");
    assert_eq!((last.percent, last.step.as_deref()), (100, Some("done")));
    assert!(
        events <= allowed,
        "{events} PROGRESS events for {reports} reports"
    );
    // A job too short for the keep-alive to look: its one report is still an event.
    let once = job("progress-flood", &json!({"ms": 0}));
    let result = run_job(&client, &once).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    let progress = progress_events(&client, &once.id).await;
    assert_eq!(progress.len(), 1, "{progress:?}");
    assert_eq!(progress[0].percent, 100);
    assert_echo_still_works(&client).await;
    worker.stop().await;
}

/// The PROGRESS events of a finished job, in order (read until its final event).
async fn progress_events(client: &Client, job_id: &str) -> Vec<jobbox::JobProgress> {
    let events = client
        .events(Some(QUEUE), Some(job_id), EventsFrom::Start)
        .await
        .expect("follow events");
    let mut events = std::pin::pin!(events);
    let mut progress = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.next())
            .await
            .expect("the final event arrives")
            .expect("the stream goes on")
            .expect("an event");
        match event.event_type {
            JobEventType::Progress => progress.push(event.progress.expect("a report")),
            JobEventType::Completed | JobEventType::Failed => return progress,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_reach_nothing() {
    let defaults = HandlerLimits::default();
    let (_server, client, worker) = start(
        2,
        &[
            ("fs-escape", guests::FS_ESCAPE, defaults),
            ("net-escape", guests::NET_ESCAPE, defaults),
            ("env-probe", guests::ENV_PROBE, defaults),
        ],
    )
    .await;
    for job_type in ["fs-escape", "net-escape"] {
        let (_, report) = expect_completed(&client, job_type, &json!({})).await;
        println!("{job_type}: {report}");
        assert_eq!(report["succeeded"], 0, "{job_type} escaped: {report}");
        let attempts = report["attempts"].as_object().expect("attempts");
        assert!(attempts.len() >= 4, "{report}");
        for (name, attempt) in attempts {
            assert_eq!(attempt["ok"], false, "{job_type}: {name}: {attempt}");
            // Refused by the sandbox itself, not by whatever was (not) listening:
            // an answer from the network would mean a socket got out.
            let detail = attempt["detail"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase();
            for sign_of_a_network in ["refused", "reset", "timed out", "unreachable"] {
                assert!(
                    !detail.contains(sign_of_a_network),
                    "{job_type}: {name} reached a network stack: {detail}"
                );
            }
        }
        assert_echo_still_works(&client).await;
    }
    let (_, report) = expect_completed(&client, "env-probe", &json!({})).await;
    assert_eq!(report["vars"], json!([]), "{report}");
    assert_eq!(report["args"], json!([]), "{report}");
    assert_echo_still_works(&client).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_never_sees_an_earlier_jobs_memory() {
    // One job at a time, so consecutive jobs of one module reuse one pool slot.
    let limits = HandlerLimits::default();
    let (_server, client, worker) = start(
        1,
        &[
            ("secret-writer", guests::SECRET_WRITER, limits),
            ("secret-scanner", guests::SECRET_SCANNER, limits),
            ("secret-twin", guests::SECRET_TWIN, limits),
        ],
    )
    .await;
    let secret = "jobbox-hostile-secret-5d81c0b2e9";
    let reversed: String = secret.chars().rev().collect();

    // The scanners find a copy they plant themselves: a negative result means something.
    let plant = json!({"needle_reversed": reversed, "plant": true});
    let (_, report) = expect_completed(&client, "secret-scanner", &plant).await;
    assert_eq!(report["found"], true, "{report}");
    let (_, report) = expect_completed(&client, "secret-twin", &json!({"scan": plant})).await;
    assert_eq!(report["found"], true, "{report}");

    let scan = json!({"needle_reversed": reversed});
    for round in 0..4 {
        // Two modules: the writer spreads the secret, the scanner looks for it.
        expect_completed(&client, "secret-writer", &json!({"secret": secret})).await;
        let (_, report) = expect_completed(&client, "secret-scanner", &scan).await;
        assert_eq!(report["found"], false, "round {round}: leaked: {report}");
        assert!(
            report["scanned_bytes"].as_u64().unwrap_or(0) > 16 << 20,
            "{report}"
        );

        // One module: the scan gets the very pool slot the write just filled.
        let (_, written) = expect_completed(
            &client,
            "secret-twin",
            &json!({"write": {"secret": secret}}),
        )
        .await;
        assert!(
            written["written"].as_u64().unwrap_or(0) > 8 << 20,
            "{written}"
        );
        let (_, report) = expect_completed(&client, "secret-twin", &json!({"scan": scan})).await;
        assert_eq!(report["found"], false, "round {round}: leaked: {report}");
        assert!(
            report["scanned_bytes"].as_u64().unwrap_or(0) > 16 << 20,
            "{report}"
        );
    }
    assert_echo_still_works(&client).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_at_and_over_the_ceiling() {
    let ceiling = 64 * 1024;
    let limits = HandlerLimits {
        output_bytes: ceiling,
        memory_bytes: 128 << 20,
        ..HandlerLimits::default()
    };
    let defaults = HandlerLimits::default();
    // The largest output ceiling a deploy accepts on a default server: 1 MiB minus
    // the 16 KiB result envelope (`registry::deploy`'s `max_output_bytes`).
    let largest = (jobbox::NATS_MAX_PAYLOAD - 16 * 1024) as u64;
    let widest = HandlerLimits {
        output_bytes: largest,
        ..defaults
    };
    let (_server, client, worker) = start(
        2,
        &[
            ("huge-output", guests::HUGE_OUTPUT, limits),
            ("max-out", guests::MAX_OUT, widest),
        ],
    )
    .await;

    // Exactly the ceiling is fine; one byte more is not.
    let result = run_job(&client, &job("huge-output", &json!({"bytes": ceiling}))).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert_eq!(result.result.as_ref().map(Vec::len), Some(ceiling as usize));
    assert_eq!(result.usage.output_bytes, ceiling);
    let result = expect_failure(
        &client,
        "huge-output",
        &json!({"bytes": ceiling + 1}),
        ErrorType::OutputTooLarge,
    )
    .await;
    assert_eq!(result.usage.output_bytes, ceiling + 1);
    assert_echo_still_works(&client).await;

    // Far over the ceiling, and over what one host call may copy out of the guest
    // (HOSTCALL_BYTES). KNOWN GAP: past that cap wasmtime refuses to lift the return
    // value at all ("fuel allocated for hostcalls has been exhausted"), before the
    // worker can measure it, and the failure is reported as a `trap`. It should read
    // `output_too_large`; until the sandbox maps it, accept either — it is final,
    // stores nothing, and the worker goes on either way.
    for bytes in [4_u64 << 20, 64 << 20] {
        let result = run_job(&client, &job("huge-output", &json!({"bytes": bytes}))).await;
        let lifted_too_much = result.error_type == Some(ErrorType::Trap)
            && result
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("hostcalls");
        let expected = if lifted_too_much {
            ErrorType::Trap
        } else {
            ErrorType::OutputTooLarge
        };
        assert_failed(&result, "huge-output", expected);
        assert_echo_still_works(&client).await;
    }

    // Everything at once, at the default ceilings (the job asks for the default
    // output ceiling): the most output a route allows by default plus a full log
    // still makes a result NATS can carry.
    let line_bytes = defaults.log_bytes / defaults.log_lines;
    let all_in = |output_bytes: u64| {
        json!({
            "output_bytes": output_bytes,
            "log_lines": defaults.log_lines,
            "log_line_bytes": line_bytes,
        })
    };
    let at_defaults = job("max-out", &all_in(defaults.output_bytes)).limits(JobLimits {
        output_bytes: Some(defaults.output_bytes),
        ..JobLimits::default()
    });
    let result = run_job(&client, &at_defaults).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert_eq!(
        result.result.as_ref().map(Vec::len),
        Some(defaults.output_bytes as usize)
    );
    assert_eq!(result.logs.len() as u64, defaults.log_lines);
    assert_echo_still_works(&client).await;

    // The largest output ceiling a deploy accepts: still stored, logs dropped if
    // they no longer fit.
    let result = run_job(&client, &job("max-out", &all_in(largest))).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert_eq!(result.result.as_ref().map(Vec::len), Some(largest as usize));
    assert_eq!(
        result.logs.len() as u64 + result.logs_dropped,
        defaults.log_lines
    );
    assert_echo_still_works(&client).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_cannot_raise_their_routes_ceilings() {
    let ceiling = HandlerLimits {
        fuel: 20_000_000,
        memory_bytes: 16 << 20,
        timeout_ms: 500,
        output_bytes: 1024,
        log_bytes: 1024,
        log_lines: 1000,
        max_retries: 1,
        ..HandlerLimits::DEFAULT
    };
    let (_server, client, worker) = start(
        2,
        &[
            ("spin", guests::SPIN, ceiling),
            ("memory-bomb", guests::MEMORY_BOMB, ceiling),
            ("time-bomb", guests::TIME_BOMB, ceiling),
            ("huge-output", guests::HUGE_OUTPUT, ceiling),
            ("log-flood", guests::LOG_FLOOD, ceiling),
            ("retry", guests::RETRY, ceiling),
        ],
    )
    .await;
    let greedy = JobLimits {
        fuel: Some(u64::MAX),
        memory_bytes: Some(u64::MAX),
        timeout_ms: Some(u64::MAX),
        output_bytes: Some(u64::MAX),
        log_bytes: Some(u64::MAX),
    };
    let greedy_job = |job_type: &str, payload: Value| {
        job(job_type, &payload)
            .limits(greedy)
            .timeout(Duration::from_secs(24 * 3600))
            .max_retries(100)
    };

    // Unlimited fuel asked for: the route's fuel, to the unit.
    let result = run_job(&client, &greedy_job("spin", json!({}))).await;
    assert_failed(&result, "spin", ErrorType::OutOfFuel);
    assert_eq!(result.usage.fuel_consumed, ceiling.fuel);
    assert_echo_still_works(&client).await;

    // Unlimited memory asked for: the route's memory.
    let result = run_job(&client, &greedy_job("memory-bomb", json!({}))).await;
    assert_failed(&result, "memory-bomb", ErrorType::MemoryLimit);
    assert!(result.usage.peak_memory_bytes <= ceiling.memory_bytes);
    assert_echo_still_works(&client).await;

    // A day asked for: the route's half second (else this would hang for an hour).
    let sleep = json!({"sleep_ms": 3_600_000});
    let result = run_job(&client, &greedy_job("time-bomb", sleep)).await;
    assert_failed(&result, "time-bomb", ErrorType::Timeout);
    assert_echo_still_works(&client).await;

    // Unlimited output and logs asked for: the route's.
    let result = run_job(&client, &greedy_job("huge-output", json!({"bytes": 1025}))).await;
    assert_failed(&result, "huge-output", ErrorType::OutputTooLarge);
    let lines = json!({"lines": 500});
    let result = run_job(&client, &greedy_job("log-flood", lines)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert!(result.usage.log_bytes <= ceiling.log_bytes);
    assert!(result.logs_dropped > 0);
    assert_echo_still_works(&client).await;

    // 100 retries asked for: the route's one.
    let result = run_job(&client, &greedy_job("retry", json!({}))).await;
    assert_eq!(result.status, JobStatus::DeadLetter, "{}", brief(&result));
    assert_eq!(result.attempts, ceiling.max_retries + 1);
    assert_echo_still_works(&client).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_step_allocations_and_host_call_bombs_are_contained() {
    let limits = HandlerLimits {
        memory_bytes: 32 << 20,
        ..HandlerLimits::default()
    };
    let (_server, client, worker) = start(
        2,
        &[
            ("big-alloc", guests::BIG_ALLOC, limits),
            ("host-bomb", guests::HOST_BOMB, limits),
        ],
    )
    .await;

    // One allocation of twice the limit, then of 1 GiB: one memory.grow each,
    // refused by the limiter. (Near 2 GiB the guest's own allocator gives up before
    // asking the host, and aborts: a plain `trap`.)
    for bytes in [2 * limits.memory_bytes, 1 << 30] {
        let result = expect_failure(
            &client,
            "big-alloc",
            &json!({"bytes": bytes}),
            ErrorType::MemoryLimit,
        )
        .await;
        assert!(result.usage.peak_memory_bytes <= limits.memory_bytes);
        assert_echo_still_works(&client).await;
    }
    let (_, output) = expect_completed(&client, "big-alloc", &json!({"bytes": 8 << 20})).await;
    assert_eq!(output, json!({"allocated": 8 << 20}));

    // 8 MiB in one host call, past the SDK's own cut: refused before the host copies
    // it, a final trap.
    for import in ["log", "progress"] {
        let payload = json!({"bytes": 8 << 20, "import": import});
        let result = expect_failure(&client, "host-bomb", &payload, ErrorType::Trap).await;
        let traceback = result.traceback.as_deref().unwrap_or_default();
        assert!(traceback.starts_with("trap code: host"), "{traceback}");
        // The message says what went wrong first; the backtrace is in the traceback.
        let error = result.error.as_deref().unwrap_or_default();
        assert!(error.contains("hostcall"), "{}", brief(&result));
        assert!(!error.contains("backtrace"), "{error}");
        assert!(traceback.contains("wasm backtrace"), "{traceback}");
        assert_echo_still_works(&client).await;
    }
    // Under the host-call cap the call goes through and the line is cut.
    let under = HOSTCALL_BYTES / 2;
    let (result, _) = expect_completed(&client, "host-bomb", &json!({"bytes": under})).await;
    assert_eq!(result.logs.len(), 1);
    assert!(result.logs[0].message.len() <= MAX_LOG_LINE_BYTES + '…'.len_utf8());
    worker.stop().await;
}

/// Resident memory of this process, in bytes (`VmRSS` in `/proc/self/status`).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// Enqueues `jobs` and waits until every one has a result; returns the results.
async fn run_batch(client: &Client, jobs: &[Job]) -> HashMap<String, JobResult> {
    let mut watch = client
        .layout()
        .results
        .watch_all()
        .await
        .expect("watch results");
    for outcome in client.enqueue_many(jobs).await.expect("enqueue") {
        outcome.expect("enqueued");
    }
    let wanted: std::collections::HashSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let mut results = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while results.len() < jobs.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let entry = tokio::time::timeout(left, watch.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {} results", results.len(), jobs.len()))
            .expect("watch goes on")
            .expect("an entry");
        if wanted.contains(entry.key.as_str()) {
            let result: JobResult = jobbox::wire::decode(&entry.value).expect("a result");
            results.insert(entry.key.clone(), result);
        }
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_hostile_jobs_leave_resident_memory_bounded() {
    /// Growth of resident memory allowed between job 100 and job 1,000.
    ///
    /// Every job gets a fresh store and a pool slot that is decommitted when it ends,
    /// so steady state should not grow at all. 64 MiB is four memory bombs' worth
    /// (16 MiB each) and ~73 KiB per job over the 900 measured jobs: a store, an
    /// instance or a bomb's pages kept per job would blow well past it, while
    /// allocator noise and NATS client buffers stay far below.
    const MAX_GROWTH: u64 = 64 << 20;
    let cases = [
        (
            "memory-bomb",
            guests::MEMORY_BOMB,
            HandlerLimits {
                memory_bytes: 16 << 20,
                ..HandlerLimits::default()
            },
            ErrorType::MemoryLimit,
        ),
        (
            "panic",
            guests::PANIC,
            HandlerLimits::default(),
            ErrorType::Trap,
        ),
        (
            "spin",
            guests::SPIN,
            HandlerLimits {
                fuel: 1_000_000,
                ..HandlerLimits::default()
            },
            ErrorType::OutOfFuel,
        ),
        (
            "recursion",
            guests::RECURSION,
            HandlerLimits::default(),
            ErrorType::StackOverflow,
        ),
    ];
    let routes: Vec<RouteSpec<'_>> = cases.iter().map(|c| (c.0, c.1, c.2)).collect();
    let (_server, client, worker) = start(2, &routes).await;
    let expected: HashMap<&str, ErrorType> = cases.iter().map(|c| (c.0, c.3)).collect();
    let make = |n: usize| -> Vec<Job> {
        (0..n)
            .map(|i| job(cases[i % cases.len()].0, &json!({})))
            .collect()
    };
    let check = |jobs: &[Job], results: &HashMap<String, JobResult>| {
        for job in jobs {
            let result = &results[&job.id];
            assert_failed(result, &job.job_type, expected[job.job_type.as_str()]);
        }
    };

    assert_echo_still_works(&client).await;
    let before = rss_bytes();
    let started = Instant::now();
    let first = make(100);
    check(&first, &run_batch(&client, &first).await);
    let after_100 = rss_bytes();
    let rest = make(900);
    check(&rest, &run_batch(&client, &rest).await);
    let after_1000 = rss_bytes();
    let took = started.elapsed();
    assert_echo_still_works(&client).await;

    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let growth = after_1000.saturating_sub(after_100);
    println!(
        "resident memory: {:.1} MiB before, {:.1} MiB after 100 hostile jobs, {:.1} MiB \
         after 1,000 ({:+.1} MiB over the last 900; bound {:.0} MiB); 1,000 jobs in {took:.1?}",
        mib(before),
        mib(after_100),
        mib(after_1000),
        mib(after_1000) - mib(after_100),
        mib(MAX_GROWTH),
    );
    assert!(
        growth < MAX_GROWTH,
        "resident memory grew by {:.1} MiB over 900 hostile jobs",
        mib(growth)
    );
    worker.stop().await;
}

/// What a refused deploy must leave as it was.
struct Victim {
    client: Client,
    route: Route,
}

impl Victim {
    const JOB_TYPE: &str = "victim";

    /// The route is the one deployed first, no revision was added, and a job still
    /// completes on it.
    async fn assert_untouched(&self, case: &str) {
        let route = self
            .client
            .route(Self::JOB_TYPE)
            .await
            .expect("read the route")
            .expect("the route exists");
        assert_eq!(route.digest, self.route.digest, "{case}");
        assert_eq!(route.version, self.route.version, "{case}");
        assert_eq!(route.deployed_at, self.route.deployed_at, "{case}");
        let history = self
            .client
            .route_history(Self::JOB_TYPE)
            .await
            .expect("route history");
        assert_eq!(history.len(), 1, "{case}: the route was written");
        let result = run_job(&self.client, &job(Self::JOB_TYPE, &json!({"case": case}))).await;
        assert_eq!(
            result.status,
            JobStatus::Completed,
            "{case}: {}",
            brief(&result)
        );
        assert_eq!(
            result.handler_digest.as_deref(),
            Some(self.route.digest.as_str())
        );
        assert_eq!(
            result.result_json::<Value>().expect("json"),
            json!({"case": case})
        );
    }

    /// Deploys `wasm` over the victim and checks it is refused with `expected` in its
    /// message and nothing stored.
    async fn refuse(&self, case: &str, wasm: Vec<u8>, options: DeployOptions, expected: &[&str]) {
        self.refuse_within(case, wasm, options, None, expected)
            .await;
    }

    async fn refuse_within(
        &self,
        case: &str,
        wasm: Vec<u8>,
        options: DeployOptions,
        compile_timeout: Option<Duration>,
        expected: &[&str],
    ) {
        let digest = jobbox::digest_of(&wasm);
        let deployed = match compile_timeout {
            Some(cap) => {
                options
                    .deploy_with_compile_timeout(&self.client, Self::JOB_TYPE, wasm, cap)
                    .await
            }
            None => deploy(&self.client, Self::JOB_TYPE, wasm, options).await,
        };
        let error = deployed.expect_err(case);
        let message = error.to_string();
        println!("{case}: {message}");
        assert!(
            matches!(
                error,
                DeployError::Invalid(_)
                    | DeployError::BadLimits(_)
                    | DeployError::MemoryMinimum { .. }
                    | DeployError::ComponentTooLarge { .. }
            ),
            "{case}: {error:?}"
        );
        for part in expected {
            assert!(message.contains(part), "{case}: {message:?} lacks {part:?}");
        }
        if digest != self.route.digest {
            assert!(
                self.client.get_handler(&digest).await.is_err(),
                "{case}: refused bytes were stored"
            );
        }
        self.assert_untouched(case).await;
    }
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_deploys_leave_the_route_untouched() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let first = DeployOptions {
        version: Some("v1".into()),
        ..DeployOptions::default()
    };
    let route = deploy_guest_with(&client, Victim::JOB_TYPE, guests::ECHO, first).await;
    let worker = start_worker(&server, 2).await;
    let victim = Victim { client, route };
    victim.assert_untouched("before any refusal").await;
    let v2 = || DeployOptions {
        version: Some("v2".into()),
        ..DeployOptions::default()
    };

    victim
        .refuse(
            "not wasm",
            b"#!/bin/sh\nrm -rf /\n".to_vec(),
            v2(),
            &["not a WebAssembly file"],
        )
        .await;
    victim
        .refuse(
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            v2(),
            &["core WebAssembly module"],
        )
        .await;
    victim
        .refuse(
            "native code",
            b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec(),
            v2(),
            &["precompiled native code"],
        )
        .await;
    // A real `.cwasm` of a real handler, made by the worker's own engine.
    let engine = Sandbox::new(EngineConfig {
        pooling: false,
        ..EngineConfig::default()
    })
    .expect("sandbox");
    let cwasm = engine
        .engine()
        .precompile_component(&read(guests::ECHO))
        .expect("precompiles");
    victim
        .refuse(
            "precompiled echo",
            cwasm,
            v2(),
            &["precompiled native code"],
        )
        .await;
    let mut oversized = b"\0asm\x0d\0\x01\0".to_vec();
    oversized.resize(MAX_COMPONENT_BYTES + 1, 0);
    victim
        .refuse(
            "oversized",
            oversized,
            v2(),
            &["over the", &MAX_COMPONENT_BYTES.to_string()],
        )
        .await;
    let echo = read(guests::ECHO);
    // Over the route's own ceiling, far under the workers' bound.
    let small_ceiling = DeployOptions {
        limits: HandlerLimits {
            component_bytes: echo.len() as u64 - 1,
            ..HandlerLimits::default()
        },
        ..v2()
    };
    victim
        .refuse(
            "over the route's component ceiling",
            echo.clone(),
            small_ceiling,
            &["over the route's ceiling", "--max-component"],
        )
        .await;
    // A route ceiling past what workers allow.
    let too_wide = DeployOptions {
        limits: HandlerLimits {
            instances: 10_000,
            ..HandlerLimits::default()
        },
        ..v2()
    };
    victim
        .refuse(
            "more instances than workers allow",
            echo.clone(),
            too_wide,
            &["10000 core instances", "workers allow"],
        )
        .await;
    victim
        .refuse(
            "truncated component",
            echo[..echo.len() / 2].to_vec(),
            v2(),
            &["does not compile"],
        )
        .await;
    victim
        .refuse(
            "not a handler",
            read(guests::NOT_A_HANDLER),
            v2(),
            &[
                "does not export `jobbox:handler/handler@0.1.0`",
                "example:greeter/greet",
            ],
        )
        .await;
    victim
        .refuse(
            "another interface version",
            read(guests::HANDLER_V2),
            v2(),
            &["does not export", "jobbox:handler/handler@0.2.0"],
        )
        .await;
    victim
        .refuse(
            "wrong signature",
            read(guests::WRONG_SIGNATURE),
            v2(),
            &["does not export `jobbox:handler/handler@0.1.0`"],
        )
        .await;
    victim
        .refuse(
            "unsupported import",
            read(guests::BAD_IMPORT),
            v2(),
            &["imports something jobbox does not provide", "backdoor"],
        )
        .await;
    victim
        .refuse_within(
            "compile timeout",
            read(guests::WORD_COUNT),
            v2(),
            Some(Duration::from_micros(1)),
            &["did not compile within"],
        )
        .await;
    victim
        .refuse(
            "memory minimum over the ceiling",
            read(guests::BIG_MEMORY_MIN),
            v2(),
            &[
                "needs 97.1 MiB",
                "memory ceiling of 64.0 MiB",
                "--memory 98MiB",
            ],
        )
        .await;
    let unstorable = DeployOptions {
        limits: HandlerLimits {
            output_bytes: 2 << 20,
            ..HandlerLimits::default()
        },
        ..v2()
    };
    victim
        .refuse(
            "output ceiling over a message",
            read(guests::ECHO),
            unstorable,
            &["max_payload"],
        )
        .await;

    // Not a refusal of the bytes but of the name: nothing is written either.
    let error = deploy(&victim.client, "no spaces!", read(guests::ECHO), v2())
        .await
        .expect_err("bad job type");
    assert!(matches!(error, DeployError::BadJobType(_)), "{error:?}");
    victim.assert_untouched("bad job type").await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_minimum_under_the_ceiling_deploys_and_runs() {
    let wasm = read(guests::BIG_MEMORY_MIN);
    let needs = jobbox_host::registry::memory_minimum(&wasm)
        .expect("parses")
        .expect("has a memory");
    assert!(needs > 96 << 20 && needs < 128 << 20, "{needs}");

    // What deploy refuses is what the sandbox cannot run, and the other way round.
    let sandbox = Sandbox::new(EngineConfig {
        concurrency: 1,
        max_memory_bytes: 128 << 20,
        pooling: true,
    })
    .expect("sandbox");
    let handler = sandbox
        .load(Arc::from(wasm.clone()), Duration::from_secs(60))
        .await
        .expect("loads");
    let job = Job::new("big", Vec::new());
    for (ceiling, runs) in [(64 << 20, false), (128 << 20, true)] {
        let limits = HandlerLimits {
            memory_bytes: ceiling,
            ..HandlerLimits::default()
        };
        let outcome = sandbox
            .run(&handler, &job, limits, JobControl::default())
            .await;
        assert_eq!(
            outcome.result.is_ok(),
            runs,
            "{ceiling}: {:?}",
            outcome.result
        );
        if let Ok(output) = outcome.result {
            assert_eq!(output, (96u64 << 20).to_string().into_bytes());
        }
    }

    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let roomy = DeployOptions {
        limits: HandlerLimits {
            memory_bytes: 128 << 20,
            ..HandlerLimits::default()
        },
        ..DeployOptions::default()
    };
    let route = deploy(&client, "big", wasm, roomy).await.expect("deploys");
    assert_eq!(route.limits.memory_bytes, 128 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_command_ends_at_its_compile_cap() {
    let server = NatsServer::start();
    // The process must exit with the refusal, not once the abandoned compile ends.
    let out = std::process::Command::new(jobbox_tests::jobbox_bin())
        .args(["handler", "deploy", "wc", guests::WORD_COUNT])
        .args(["--compile-timeout", "1us", "--nats-url", &server.url()])
        .output()
        .expect("run jobbox");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("did not compile within 1µs"), "{stderr}");
    let client = Client::connect(&server.url()).await.expect("connect");
    assert!(client.route("wc").await.expect("read").is_none());
}

/// Per-run figures, sorted: min, median, max.
fn spread(overshoots: &mut [Duration]) -> (Duration, Duration, Duration) {
    overshoots.sort();
    (
        overshoots[0],
        overshoots[overshoots.len() / 2],
        overshoots[overshoots.len() - 1],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_overshoot_is_measured() {
    let sandbox = Sandbox::new(EngineConfig {
        concurrency: 2,
        max_memory_bytes: 64 << 20,
        pooling: true,
    })
    .expect("sandbox");
    let timeout = Duration::from_millis(200);
    let limits = HandlerLimits {
        fuel: u64::MAX,
        timeout_ms: timeout.as_millis() as u64,
        ..HandlerLimits::default()
    };
    let cases = [
        ("spin (pure wasm loop)", guests::SPIN, json!({}), 20),
        (
            "hostcall-loop (log calls)",
            guests::HOSTCALL_LOOP,
            json!({}),
            10,
        ),
        (
            "time-bomb (blocked in a host sleep)",
            guests::TIME_BOMB,
            json!({"sleep_ms": 3_600_000}),
            10,
        ),
    ];
    for (name, path, payload, runs) in cases {
        let handler = sandbox
            .load(Arc::from(read(path)), Duration::from_secs(60))
            .await
            .expect("loads");
        let job = Job::json("overshoot", &payload).expect("encodes");
        let mut overshoots = Vec::with_capacity(runs);
        for _ in 0..runs {
            let outcome = sandbox
                .run(&handler, &job, limits, JobControl::default())
                .await;
            let failure = outcome.result.expect_err("never finishes");
            assert_eq!(failure.error_type, ErrorType::Timeout, "{name}");
            let wall = Duration::from_micros(outcome.usage.wall_time_us);
            overshoots.push(wall.saturating_sub(timeout));
        }
        let (min, median, max) = spread(&mut overshoots);
        println!(
            "deadline overshoot, {name}, timeout {timeout:?}, {runs} runs: \
             min {min:.1?}, median {median:.1?}, max {max:.1?}"
        );
    }
}

/// Longest a deploy may compile a Python guest: about 19 MB of interpreter, which a
/// debug build on a loaded machine compiles far slower than the default 30 s cap.
const PYTHON_COMPILE_CAP: Duration = Duration::from_secs(600);

/// Python guests that loop, allocate without bound and raise end exactly as the Rust
/// `spin`, `memory-bomb` and `panic` guests do: out of fuel, over the memory limit, a
/// trap; each final at once. The raise is named in the message and the job's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_guests_fail_as_rust_ones_do() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_limited(&client, "echo", guests::ECHO, HandlerLimits::default()).await;
    let cases = [
        ("spin", guests::SPIN, ErrorType::OutOfFuel),
        ("memory-bomb", guests::MEMORY_BOMB, ErrorType::MemoryLimit),
        ("raise", guests::PANIC, ErrorType::Trap),
    ];
    for (name, rust_guest, _) in cases {
        let wasm = read(&components::python_guest(name));
        DeployOptions::default()
            .deploy_with_compile_timeout(&client, &format!("py-{name}"), wasm, PYTHON_COMPILE_CAP)
            .await
            .unwrap_or_else(|e| panic!("deploy py-{name}: {e}"));
        deploy_limited(
            &client,
            &format!("rust-{name}"),
            rust_guest,
            HandlerLimits::default(),
        )
        .await;
    }
    // The module's worker, with time for three interpreters' first compile: a job
    // waiting for its handler must be neither delivered twice nor given up on.
    let mut config = worker_config(2);
    config.ack_wait = Duration::from_secs(120);
    // Each interpreter is compiled by a worker once per build of the tests.
    config.cache_dir = Some(jobbox_tests::test_compile_cache(
        "hostile-python-compile-cache",
    ));
    let worker = RunningWorker::start(&server.url(), config).await;
    // Fuel for a few seconds of looping, not the default's minutes in a debug build.
    let fuel = JobLimits {
        fuel: Some(200_000_000),
        ..JobLimits::default()
    };
    for (name, _, expected) in cases {
        let ours = run_job_within(
            &client,
            &job(&format!("py-{name}"), &json!({})).limits(fuel),
            PYTHON_COMPILE_CAP,
        )
        .await;
        let rust = run_job_within(
            &client,
            &job(&format!("rust-{name}"), &json!({})).limits(fuel),
            PYTHON_COMPILE_CAP,
        )
        .await;
        assert_failed(&ours, &format!("py-{name}"), expected);
        assert_failed(&rust, &format!("rust-{name}"), expected);
        assert_echo_still_works(&client).await;
        if name == "raise" {
            let message = "uncaught exception: ValueError: guest-raise: deliberate";
            assert_eq!(ours.error.as_deref(), Some(message), "{}", brief(&ours));
            let logged = ours
                .logs
                .iter()
                .any(|l| l.level == jobbox::LogLevel::Error && l.message.starts_with(message));
            assert!(logged, "the helper logs the exception: {:?}", ours.logs);
            let traceback = ours.traceback.as_deref().unwrap_or_default();
            assert!(
                traceback.contains("Traceback (most recent call last):"),
                "{traceback}"
            );
            let rust_error = rust.error.as_deref().unwrap_or_default();
            assert!(rust_error.starts_with("guest panicked: "), "{rust_error}");
        }
    }
    worker.stop().await;
}
