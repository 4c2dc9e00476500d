//! Handlers in Python and JavaScript, end to end: the `examples/python-word-count` and
//! `examples/js-word-count` components are built with their language's script
//! (componentize-py, componentize-js), deployed and run through a real worker next to
//! the Rust `word-count` example. Each gives the Rust example's output for the same
//! text, logs and reports progress through the host imports, and its reject and retry
//! end exactly as the Rust `reject` and `retry` test guests' do. A route's ceilings on
//! the component's shape (instances, memories, table elements) hold for them per job.

use std::sync::Arc;
use std::time::Duration;

use jobbox::{Client, ErrorType, HandlerLimits, Job, JobResult, JobStatus};
use jobbox_host::registry::DeployOptions;
use jobbox_host::sandbox::{EngineConfig, JobControl, Sandbox};
use jobbox_host::worker::WorkerConfig;
use jobbox_tests::{NatsServer, RunningWorker, brief, components, guests, wait_result};
use serde_json::{Value, json};

const QUEUE: &str = "languages";

/// Longest a deploy may compile one component. An interpreter's component is large
/// (about 19 MB for Python, 12 MB for JavaScript): a debug build of the tests, on a
/// loaded machine, can take well over the default 30 s to compile it.
const COMPILE_CAP: Duration = Duration::from_secs(600);

/// Longest a job may take to produce its result, the worker's first compile included.
const RESULT_WAIT: Duration = Duration::from_secs(300);

/// Deploys the component at `path` as `job_type` with default limits.
async fn deploy(client: &Client, job_type: &str, path: &str) {
    let wasm = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    DeployOptions::default()
        .deploy_with_compile_timeout(client, job_type, wasm, COMPILE_CAP)
        .await
        .unwrap_or_else(|e| panic!("deploy {job_type} ({path}): {e}"));
}

/// A worker on [`QUEUE`] with a compile cache beside the test binary, so that a
/// component is compiled by a worker once per build of the tests.
async fn start_worker(server: &NatsServer) -> RunningWorker {
    let mut config = WorkerConfig::new(vec![QUEUE.to_string()]);
    config.concurrency = 2;
    // Generous: a job that waits for its handler's first compile must not be
    // delivered twice.
    config.ack_wait = Duration::from_secs(120);
    config.shutdown_grace = Duration::from_secs(10);
    config.cache_dir = Some(jobbox_tests::test_compile_cache("languages-compile-cache"));
    RunningWorker::start(&server.url(), config).await
}

async fn run(client: &Client, job: Job) -> JobResult {
    let job = job.queue(QUEUE);
    client.enqueue(&job).await.expect("enqueue");
    wait_result(client, &job.id, RESULT_WAIT).await
}

fn json_job(job_type: &str, payload: &Value) -> Job {
    Job::json(job_type, payload).expect("encodes")
}

/// How a failed job ended, for comparing two handlers' failures.
fn ending(result: &JobResult) -> (JobStatus, Option<jobbox::ErrorType>, bool, u32) {
    (
        result.status,
        result.error_type,
        result.retryable,
        result.attempts,
    )
}

/// Deploys `path` (a word-count handler in another language) beside the Rust
/// word-count example and the Rust `reject` and `retry` guests, and checks that it
/// runs like them.
async fn runs_like_rust(language: &str, path: &str) {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let job_type = format!("{language}-word-count");
    deploy(&client, &job_type, path).await;
    deploy(&client, "word-count", guests::WORD_COUNT).await;
    deploy(&client, "reject", guests::REJECT).await;
    deploy(&client, "retry", guests::RETRY).await;
    let worker = start_worker(&server).await;

    // The same text, the same output as the Rust example.
    let text = json!({"text": "The cat, the hat.\n  -- and THE bat!\tcat"});
    let ours = run(&client, json_job(&job_type, &text)).await;
    assert_eq!(ours.status, JobStatus::Completed, "{}", brief(&ours));
    let rust = run(&client, json_job("word-count", &text)).await;
    assert_eq!(rust.status, JobStatus::Completed, "{}", brief(&rust));
    let output: Value = ours.result_json().expect("JSON output");
    assert_eq!(output, rust.result_json::<Value>().expect("JSON output"));
    assert_eq!(output["words"], json!(8), "{output}");
    assert_eq!(output["counts"]["the"], json!(3), "{output}");
    assert_eq!(ours.content_type.as_deref(), Some("application/json"));
    // Its log lines came through the host import, in order.
    let logs: Vec<&str> = ours.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        logs,
        [
            "counting words in 39 bytes of text",
            "counted 8 words, 5 unique"
        ],
        "{language}"
    );
    assert!(ours.usage.fuel_consumed > 0 && ours.usage.peak_memory_bytes > 0);
    println!(
        "{language} word-count: fuel {} (Rust {}), peak memory {} B (Rust {}), wall {} us",
        ours.usage.fuel_consumed,
        rust.usage.fuel_consumed,
        ours.usage.peak_memory_bytes,
        rust.usage.peak_memory_bytes,
        ours.usage.wall_time_us,
    );

    // A rejection: final at once, as the Rust `reject` guest's, with its message.
    let ours = run(
        &client,
        json_job(&job_type, &json!({"reject": "bad input"})),
    )
    .await;
    let rust = run(&client, json_job("reject", &json!({}))).await;
    assert_eq!(ours.status, JobStatus::Failed, "{}", brief(&ours));
    assert_eq!(
        ending(&ours),
        ending(&rust),
        "{} vs {}",
        brief(&ours),
        brief(&rust)
    );
    assert_eq!(ours.error, rust.error, "the same message, as given");

    // A retry: run again while retries are left, then dead-lettered, as the Rust
    // `retry` guest's.
    let retry = |job_type: &str, payload: Value| json_job(job_type, &payload).max_retries(1);
    let ours = run(
        &client,
        retry(&job_type, json!({"retry": "upstream unavailable"})),
    )
    .await;
    let rust = run(&client, retry("retry", json!({}))).await;
    assert_eq!(ours.status, JobStatus::DeadLetter, "{}", brief(&ours));
    assert_eq!(ours.attempts, 2, "retried once: {}", brief(&ours));
    assert_eq!(
        ending(&ours),
        ending(&rust),
        "{} vs {}",
        brief(&ours),
        brief(&rust)
    );
    assert_eq!(ours.error, rust.error);

    // Input the helper cannot decode is a rejection, not a crash.
    let garbage = Job::new(&job_type, b"{not json".to_vec());
    let ours = run(&client, garbage).await;
    assert_eq!(ours.status, JobStatus::Failed, "{}", brief(&ours));
    assert_eq!(ending(&ours).1, ending(&rust).1, "{}", brief(&ours));
    assert!(!ours.retryable);
    let error = ours.error.unwrap_or_default();
    assert!(error.starts_with("invalid input: "), "{error}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_runs_like_a_rust_one() {
    let path = components::python_example("word-count");
    runs_like_rust("python", &path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_handler_runs_like_a_rust_one() {
    let path = components::js_example("word-count");
    runs_like_rust("js", &path).await;
}

/// A route's ceilings on the component's shape are enforced per job, in the job's own
/// store: the Python example (about 14 core instances, one memory, a table of about
/// 5,700 elements) completes under the defaults and fails, as a trap, under a route
/// that allows fewer instances, no memory or fewer table elements; the same sandbox then
/// runs it again under the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shape_ceilings_are_enforced_per_job() {
    let path = components::python_example("word-count");
    let sandbox = Sandbox::new(EngineConfig {
        concurrency: 2,
        max_memory_bytes: jobbox::DEFAULT_MEMORY_BYTES,
        pooling: true,
    })
    .expect("sandbox builds");
    let bytes = std::fs::read(&path).expect("built");
    let handler = sandbox
        .load(Arc::from(bytes), COMPILE_CAP)
        .await
        .expect("the Python example loads");
    let job = json_job("python-word-count", &json!({"text": "a b a"}));
    let run = |limits: HandlerLimits| sandbox.run(&handler, &job, limits, JobControl::default());

    let fits = run(HandlerLimits::default()).await;
    assert!(fits.result.is_ok(), "{:?}", fits.result);
    let tight = [
        (
            "instances",
            HandlerLimits {
                instances: 4,
                ..HandlerLimits::default()
            },
        ),
        (
            "memories",
            HandlerLimits {
                memories: 0,
                ..HandlerLimits::default()
            },
        ),
        (
            "table elements",
            HandlerLimits {
                table_elements: 1_000,
                ..HandlerLimits::default()
            },
        ),
    ];
    for (what, limits) in tight {
        let outcome = run(limits).await;
        let failure = outcome.result.expect_err(what);
        assert_eq!(failure.error_type, ErrorType::Trap, "{what}: {failure:?}");
        println!(
            "python-word-count under too few {what}: {}",
            failure.message
        );
        let again = run(HandlerLimits::default()).await;
        assert!(again.result.is_ok(), "after {what}: {:?}", again.result);
    }
}

/// An exception a JavaScript handler does not catch is a trap named after it, as a
/// Python one's is (`hostile::python_guests_fail_as_rust_ones_do`), with the same line
/// in the job's log; the sandbox goes on running jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncaught_javascript_exception_is_a_named_trap() {
    let path = components::js_guest("raise");
    let sandbox = Sandbox::new(EngineConfig {
        concurrency: 1,
        max_memory_bytes: jobbox::DEFAULT_MEMORY_BYTES,
        pooling: true,
    })
    .expect("sandbox builds");
    let bytes = std::fs::read(&path).expect("built");
    let handler = sandbox
        .load(Arc::from(bytes), COMPILE_CAP)
        .await
        .expect("the JavaScript guest loads");
    let job = json_job("js-raise", &json!({}));
    for _ in 0..2 {
        let outcome = sandbox
            .run(
                &handler,
                &job,
                HandlerLimits::default(),
                JobControl::default(),
            )
            .await;
        let failure = outcome.result.expect_err("the guest throws");
        assert_eq!(failure.error_type, ErrorType::Trap, "{failure:?}");
        assert!(!failure.retryable);
        let message = "uncaught exception: TypeError: guest-raise: deliberate";
        assert_eq!(failure.message, message);
        let logged = outcome
            .logs
            .iter()
            .any(|l| l.level == jobbox::LogLevel::Error && l.message == message);
        assert!(logged, "{:?}", outcome.logs);
    }
}
