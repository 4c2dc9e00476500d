//! Real guests in the sandbox, without NATS: outputs, every failure class, and that
//! one sandbox goes on running normal jobs after each failure.

use std::sync::Arc;
use std::time::Duration;

use jobbox::{ErrorType, HandlerLimits, Job};
use jobbox_host::sandbox::limits::EPOCH_TICK;
use jobbox_host::sandbox::{EngineConfig, Handler, JobControl, RunOutcome, Sandbox};
use jobbox_tests::guests;
use serde_json::{Value, json};

fn sandbox() -> Sandbox {
    Sandbox::new(EngineConfig {
        concurrency: 2,
        max_memory_bytes: 64 * 1024 * 1024,
        pooling: true,
    })
    .expect("sandbox builds")
}

async fn load(sandbox: &Sandbox, path: &str) -> Handler {
    let bytes = std::fs::read(path).expect("guest is built");
    sandbox
        .load(Arc::from(bytes), Duration::from_secs(60))
        .await
        .expect("guest loads")
}

async fn run(
    sandbox: &Sandbox,
    handler: &Handler,
    payload: Value,
    limits: HandlerLimits,
) -> RunOutcome {
    let job = Job::json("test", &payload).expect("payload encodes");
    sandbox
        .run(handler, &job, limits, JobControl::default())
        .await
}

fn output_json(outcome: &RunOutcome) -> Value {
    let bytes = outcome.result.as_ref().expect("job succeeds");
    serde_json::from_slice(bytes).expect("output is JSON")
}

/// Runs word-count and checks its answer: the "normal job after a failure".
async fn assert_still_works(sandbox: &Sandbox, word_count: &Handler) {
    let outcome = run(
        sandbox,
        word_count,
        json!({"text": "a b a"}),
        HandlerLimits::default(),
    )
    .await;
    assert_eq!(output_json(&outcome)["counts"], json!({"a": 2, "b": 1}));
}

#[tokio::test]
async fn echo_returns_its_input() {
    let sandbox = sandbox();
    let echo = load(&sandbox, guests::ECHO).await;
    let payload = json!({"hello": "world", "n": [1, 2, 3]});
    let outcome = run(&sandbox, &echo, payload.clone(), HandlerLimits::default()).await;
    assert_eq!(output_json(&outcome), payload);
    assert!(outcome.usage.fuel_consumed > 0);
    assert!(outcome.usage.peak_memory_bytes > 0);
}

#[tokio::test]
async fn word_count_counts_logs_and_reports_progress() {
    let sandbox = sandbox();
    let word_count = load(&sandbox, guests::WORD_COUNT).await;
    let (progress_tx, progress_rx) = tokio::sync::watch::channel(None);
    let control = JobControl {
        progress: progress_tx,
        ..JobControl::default()
    };
    let job =
        Job::json("word-count", &json!({"text": "The cat; the dog. THE end"})).expect("encodes");
    let outcome = sandbox
        .run(&word_count, &job, HandlerLimits::default(), control)
        .await;
    let output = output_json(&outcome);
    assert_eq!(output["words"], 6);
    assert_eq!(output["unique"], 4);
    assert_eq!(output["counts"]["the"], 3);
    assert!(!outcome.logs.is_empty(), "word-count logs");
    let last = progress_rx.borrow().clone().expect("progress was reported");
    assert_eq!(last.percent, 100);
    assert_eq!(
        outcome.usage.output_bytes as usize,
        outcome.result.as_ref().map(Vec::len).unwrap_or(0)
    );
}

#[tokio::test]
async fn markdown_renders_html() {
    let sandbox = sandbox();
    let markdown = load(&sandbox, guests::MARKDOWN).await;
    let outcome = run(
        &sandbox,
        &markdown,
        json!({"markdown": "# Hi\n\n*there*"}),
        HandlerLimits::default(),
    )
    .await;
    let html = output_json(&outcome)["html"]
        .as_str()
        .expect("html string")
        .to_string();
    assert!(html.contains("<h1>Hi</h1>"), "{html}");
    assert!(html.contains("<em>there</em>"), "{html}");
}

#[tokio::test]
async fn an_infinite_loop_runs_out_of_fuel() {
    let sandbox = sandbox();
    let spin = load(&sandbox, guests::SPIN).await;
    let word_count = load(&sandbox, guests::WORD_COUNT).await;
    let limits = HandlerLimits {
        fuel: 50_000_000,
        ..HandlerLimits::default()
    };
    let outcome = run(&sandbox, &spin, json!({}), limits).await;
    let failure = outcome.result.expect_err("spin never finishes");
    assert_eq!(failure.error_type, ErrorType::OutOfFuel);
    assert!(!failure.retryable);
    assert_eq!(outcome.usage.fuel_consumed, 50_000_000);
    assert_still_works(&sandbox, &word_count).await;
}

#[tokio::test]
async fn with_unlimited_fuel_an_infinite_loop_times_out_within_two_ticks() {
    let sandbox = sandbox();
    let spin = load(&sandbox, guests::SPIN).await;
    let word_count = load(&sandbox, guests::WORD_COUNT).await;
    let timeout = Duration::from_millis(200);
    let limits = HandlerLimits {
        fuel: u64::MAX,
        timeout_ms: timeout.as_millis() as u64,
        ..HandlerLimits::default()
    };
    let outcome = run(&sandbox, &spin, json!({}), limits).await;
    let failure = outcome.result.expect_err("spin never finishes");
    assert_eq!(failure.error_type, ErrorType::Timeout);
    let wall = Duration::from_micros(outcome.usage.wall_time_us);
    assert!(wall >= timeout, "stopped early: {wall:?}");
    assert!(
        wall <= timeout + 2 * EPOCH_TICK,
        "stopped {:?} after its deadline, more than two epoch ticks ({EPOCH_TICK:?} each)",
        wall - timeout
    );
    assert_still_works(&sandbox, &word_count).await;
}

#[tokio::test]
async fn a_loop_of_host_calls_is_stopped_at_its_deadline() {
    let sandbox = sandbox();
    let hostcall_loop = load(&sandbox, guests::HOSTCALL_LOOP).await;
    let word_count = load(&sandbox, guests::WORD_COUNT).await;
    let limits = HandlerLimits {
        fuel: u64::MAX,
        timeout_ms: 200,
        ..HandlerLimits::default()
    };
    let outcome = run(&sandbox, &hostcall_loop, json!({}), limits).await;
    assert_eq!(
        outcome.result.expect_err("never ends").error_type,
        ErrorType::Timeout
    );
    assert!(
        outcome.logs.len() as u64 <= limits.log_lines,
        "logs stay bounded"
    );
    assert!(outcome.logs_dropped > 0, "the flood was counted");
    assert_still_works(&sandbox, &word_count).await;
}

#[tokio::test]
async fn a_memory_bomb_hits_the_memory_limit() {
    let sandbox = sandbox();
    let bomb = load(&sandbox, guests::MEMORY_BOMB).await;
    let word_count = load(&sandbox, guests::WORD_COUNT).await;
    let limits = HandlerLimits {
        memory_bytes: 16 * 1024 * 1024,
        ..HandlerLimits::default()
    };
    let outcome = run(&sandbox, &bomb, json!({}), limits).await;
    let failure = outcome.result.expect_err("the bomb is stopped");
    assert_eq!(failure.error_type, ErrorType::MemoryLimit);
    assert!(outcome.usage.peak_memory_bytes <= 16 * 1024 * 1024);
    assert_still_works(&sandbox, &word_count).await;
}

#[tokio::test]
async fn a_panic_is_a_trap_with_its_message() {
    let sandbox = sandbox();
    let panic = load(&sandbox, guests::PANIC).await;
    let word_count = load(&sandbox, guests::WORD_COUNT).await;
    let outcome = run(&sandbox, &panic, json!({}), HandlerLimits::default()).await;
    let failure = outcome.result.expect_err("panics");
    assert_eq!(failure.error_type, ErrorType::Trap);
    assert_eq!(
        failure.trap_code.as_deref(),
        Some("unreachable_code_reached")
    );
    assert!(
        failure.message.contains("deliberate panic"),
        "{}",
        failure.message
    );
    assert_still_works(&sandbox, &word_count).await;
}

#[tokio::test]
async fn deep_recursion_is_a_stack_overflow() {
    let sandbox = sandbox();
    let recursion = load(&sandbox, guests::RECURSION).await;
    let word_count = load(&sandbox, guests::WORD_COUNT).await;
    let outcome = run(&sandbox, &recursion, json!({}), HandlerLimits::default()).await;
    assert_eq!(
        outcome.result.expect_err("overflows").error_type,
        ErrorType::StackOverflow
    );
    assert_still_works(&sandbox, &word_count).await;
}

#[tokio::test]
async fn guest_errors_say_whether_a_retry_may_help() {
    let sandbox = sandbox();
    let retry = load(&sandbox, guests::RETRY).await;
    let reject = load(&sandbox, guests::REJECT).await;
    let word_count = load(&sandbox, guests::WORD_COUNT).await;

    let failure = run(&sandbox, &retry, json!({}), HandlerLimits::default())
        .await
        .result
        .expect_err("retry guest fails");
    assert_eq!(failure.error_type, ErrorType::GuestError);
    assert!(failure.retryable);
    assert_eq!(failure.message, "upstream unavailable");

    let failure = run(&sandbox, &reject, json!({}), HandlerLimits::default())
        .await
        .result
        .expect_err("reject guest fails");
    assert_eq!(failure.error_type, ErrorType::GuestError);
    assert!(!failure.retryable);
    assert_still_works(&sandbox, &word_count).await;
}

#[tokio::test]
async fn output_over_the_limit_is_refused() {
    let sandbox = sandbox();
    let huge = load(&sandbox, guests::HUGE_OUTPUT).await;
    let word_count = load(&sandbox, guests::WORD_COUNT).await;
    let limits = HandlerLimits {
        output_bytes: 1024,
        ..HandlerLimits::default()
    };
    let outcome = run(&sandbox, &huge, json!({"bytes": 4096}), limits).await;
    assert_eq!(
        outcome.result.expect_err("too big").error_type,
        ErrorType::OutputTooLarge
    );
    assert_eq!(outcome.usage.output_bytes, 4096);
    assert_still_works(&sandbox, &word_count).await;
}

#[tokio::test]
async fn stdout_floods_are_truncated_not_fatal() {
    let sandbox = sandbox();
    let flood = load(&sandbox, guests::STDOUT_FLOOD).await;
    let limits = HandlerLimits {
        fuel: u64::MAX,
        timeout_ms: 20_000,
        ..HandlerLimits::default()
    };
    let outcome = run(&sandbox, &flood, json!({"bytes": 8 * 1024 * 1024}), limits).await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert_eq!(
        outcome.stdout.len(),
        jobbox_host::sandbox::limits::STDIO_CAPTURE_BYTES
    );
}

#[tokio::test]
async fn guests_reach_no_files_and_no_network() {
    let sandbox = sandbox();
    for path in [guests::FS_ESCAPE, guests::NET_ESCAPE] {
        let guest = load(&sandbox, path).await;
        let outcome = run(&sandbox, &guest, json!({}), HandlerLimits::default()).await;
        let report = output_json(&outcome);
        assert_eq!(report["succeeded"], 0, "{path} escaped: {report}");
        assert!(!report["attempts"].as_object().expect("attempts").is_empty());
    }
}

#[tokio::test]
async fn guests_see_no_environment() {
    let sandbox = sandbox();
    let probe = load(&sandbox, guests::ENV_PROBE).await;
    let outcome = run(&sandbox, &probe, json!({}), HandlerLimits::default()).await;
    let report = output_json(&outcome);
    assert_eq!(report["vars"], json!([]), "{report}");
    assert_eq!(report["args"], json!([]), "{report}");
}

#[tokio::test]
async fn a_blocking_sleep_in_the_host_ends_at_the_deadline() {
    let sandbox = sandbox();
    let bomb = load(&sandbox, guests::TIME_BOMB).await;
    let limits = HandlerLimits {
        timeout_ms: 300,
        ..HandlerLimits::default()
    };
    let outcome = run(&sandbox, &bomb, json!({"sleep_ms": 3_600_000}), limits).await;
    assert_eq!(
        outcome.result.expect_err("never wakes").error_type,
        ErrorType::Timeout
    );
}

/// One module, one slot: with one job at a time, the pool hands the twin the slot
/// its previous job used and resets it in place (kept-resident pages are reset by
/// `memset` or copied back from the image, not unmapped). Nothing written survives.
#[tokio::test]
async fn a_slot_reset_in_place_keeps_nothing_of_the_previous_job() {
    let sandbox = Sandbox::new(EngineConfig {
        concurrency: 1,
        max_memory_bytes: 64 * 1024 * 1024,
        pooling: true,
    })
    .expect("sandbox builds");
    let twin = load(&sandbox, guests::SECRET_TWIN).await;
    let secret = "jobbox-slot-secret-0c4e8a21b7";
    let reversed: String = secret.chars().rev().collect();
    let planted = run(
        &sandbox,
        &twin,
        json!({"scan": {"needle_reversed": reversed, "plant": true}}),
        HandlerLimits::default(),
    )
    .await;
    assert_eq!(output_json(&planted)["found"], true);
    for _ in 0..5 {
        let written = run(
            &sandbox,
            &twin,
            json!({"write": {"secret": secret}}),
            HandlerLimits::default(),
        )
        .await;
        assert!(written.result.is_ok(), "{:?}", written.result);
        let scanned = run(
            &sandbox,
            &twin,
            json!({"scan": {"needle_reversed": reversed}}),
            HandlerLimits::default(),
        )
        .await;
        let report = output_json(&scanned);
        assert_eq!(report["found"], false, "{report}");
    }
}

#[tokio::test]
async fn a_job_cannot_read_a_previous_jobs_memory() {
    let sandbox = sandbox();
    let writer = load(&sandbox, guests::SECRET_WRITER).await;
    let scanner = load(&sandbox, guests::SECRET_SCANNER).await;
    let secret = "jobbox-secret-7f3a9c1e";
    let reversed: String = secret.chars().rev().collect();
    // The scanner finds a copy it plants itself: a negative result means something.
    let planted = run(
        &sandbox,
        &scanner,
        json!({"needle_reversed": reversed, "plant": true}),
        HandlerLimits::default(),
    )
    .await;
    assert_eq!(output_json(&planted)["found"], true);
    for _ in 0..5 {
        let outcome = run(
            &sandbox,
            &writer,
            json!({"secret": secret}),
            HandlerLimits::default(),
        )
        .await;
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        let outcome = run(
            &sandbox,
            &scanner,
            json!({"needle_reversed": reversed}),
            HandlerLimits::default(),
        )
        .await;
        let report = output_json(&outcome);
        assert_eq!(report["found"], false, "{report}");
        assert!(
            report["scanned_bytes"].as_u64().unwrap_or(0) > 16 * 1024 * 1024,
            "{report}"
        );
    }
}

#[tokio::test]
async fn invalid_components_are_refused_with_a_reason() {
    let sandbox = sandbox();
    let cases: [(&[u8], &str); 4] = [
        (b"definitely not wasm", "not a WebAssembly file"),
        (b"\0asm\x01\0\0\0", "core WebAssembly module"),
        (b"\x7fELF\x02\x01\x01\0", "precompiled"),
        (b"\0asm\x0d\0\x01\0\xff\xff", "does not compile"),
    ];
    for (bytes, expected) in cases {
        let error = sandbox
            .load(Arc::from(bytes), Duration::from_secs(10))
            .await
            .expect_err("refused");
        assert!(error.to_string().contains(expected), "{error}");
    }
}
