//! Wire-format tests: every record round-trips, bad bytes never panic, enum and
//! timestamp encodings are pinned, and jobs written by other languages decode.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Debug;

use chrono::{DateTime, TimeZone, Utc};
use jobbox::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn ts(secs: i64, nanos: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_714_566_896 + secs, nanos).unwrap()
}

fn digest() -> String {
    format!("sha256:{}", "ab".repeat(32))
}

fn usage() -> Usage {
    Usage {
        fuel_consumed: 123_456,
        peak_memory_bytes: 1 << 20,
        wall_time_us: 789,
        output_bytes: 12,
        log_bytes: 34,
        peak_scratch_bytes: 56,
        scratch_files: 7,
    }
}

fn full_job() -> Job {
    Job::new("resize_image", vec![0, 1, 2, 255])
        .id("01HXYZABCDEFGHJKMNPQRSTVWX")
        .queue("images")
        .priority(MAX_PRIORITY)
        .max_retries(2)
        .scheduled_at(ts(60, 0))
        .metadata("trace", "abc")
        .metadata("user", "u-1")
        .limits(JobLimits {
            fuel: Some(1_000),
            memory_bytes: Some(1 << 22),
            timeout_ms: Some(500),
            output_bytes: Some(10),
            log_bytes: Some(20),
        })
        .timeout(std::time::Duration::from_millis(750))
        .tenant("acme")
        .created_by("tests")
        .handler(digest())
        .content_type(CONTENT_TYPE_MSGPACK)
}

fn minimal_job() -> Job {
    let mut j = Job::new("echo", Vec::new());
    j.created_at = ts(0, 0);
    j
}

/// The W3C trace context specification's example `traceparent`.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn full_event() -> JobEvent {
    let job = full_job().trace(TraceContext::parse(TRACEPARENT, None).expect("valid"));
    JobEvent::new(JobEventType::Progress, &job)
        .with_worker("w-1")
        .with_message("halfway")
        .with_detail("k", "v")
        .with_error(ErrorType::GuestError, "boom")
        .with_duration(std::time::Duration::from_millis(5))
        .with_nats("jobbox.jobs.images", 7)
        .with_handler_digest(digest())
        .with_usage(usage())
        .with_attempt(3)
        .with_delay(std::time::Duration::from_millis(250))
        .with_progress(JobProgress {
            percent: 50,
            step: Some("decode".into()),
            message: Some("half".into()),
        })
}

fn full_result() -> JobResult {
    JobResult::failed("01HXYZABCDEFGHJKMNPQRSTVWX", ErrorType::Trap, "trap")
        .with_output(b"{\"ok\":false}".to_vec())
        .with_retryable(true)
        .with_traceback("wasm backtrace:\n  0: handler::run")
        .with_times(ts(1, 1), ts(2, 999_999_999))
        .with_attempts(4)
        .with_worker("w-1")
        .with_handler_digest(Some(&digest()))
        .with_usage(usage())
        .with_trace_id(Some("4bf92f3577b34da6a3ce929d0e0e4736"))
        .with_logs(
            LogLevel::ALL
                .into_iter()
                .map(|level| LogEntry {
                    timestamp: ts(1, 500),
                    level,
                    message: format!("{level} line"),
                })
                .collect(),
            9,
        )
}

fn minimal_result() -> JobResult {
    let mut r = JobResult::completed("j", Vec::new())
        .with_times(ts(0, 0), ts(0, 0))
        .with_attempts(1)
        .with_worker("w");
    r.result = None;
    r
}

fn route() -> Route {
    Route {
        job_type: "echo".into(),
        digest: digest(),
        version: Some("v2".into()),
        limits: HandlerLimits::DEFAULT,
        deployed_at: ts(3, 0),
        deployed_by: Some("ci".into()),
        size_bytes: 4096,
    }
}

fn worker() -> WorkerStatus {
    WorkerStatus {
        worker_id: "w-1".into(),
        state: WorkerState::Busy,
        queues: vec!["default".into(), "images".into()],
        current_jobs: vec!["j1".into()],
        handlers: BTreeMap::from([("echo".into(), digest())]),
        started_at: ts(0, 0),
        heartbeat_at: ts(10, 0),
        jobs_done: 10,
        jobs_failed: 1,
        hostname: Some("box".into()),
        concurrency: 8,
        last_error: Some("nats: timeout".into()),
    }
}

fn state() -> JobState {
    JobState {
        job_id: "j1".into(),
        queue: "default".into(),
        job_type: "echo".into(),
        status: JobStatus::Retrying,
        attempts: 2,
        created_at: ts(0, 0),
        updated_at: ts(5, 0),
        scheduled_at: Some(ts(1, 0)),
        started_at: Some(ts(2, 0)),
        finished_at: Some(ts(4, 0)),
        cancel_requested: true,
        last_error: Some("boom".into()),
        worker_id: Some("w-1".into()),
    }
}

fn schedule() -> Schedule {
    Schedule {
        id: "nightly".into(),
        job: full_job(),
        cron: Some("0 3 * * *".into()),
        interval_seconds: None,
        repeat: Some(5),
        next_run_at: ts(86_400, 0),
        status: ScheduleStatus::Paused,
        last_enqueued_at: Some(ts(0, 0)),
        failure_count: 2,
        tz: Some("Europe/Berlin".into()),
        missed: MissedPolicy::CatchUp,
        catch_up_limit: 3,
        fired: 7,
        recent_fires: vec![ScheduleFire {
            tick: ts(80_000, 0),
            job_id: "nightly-80000".into(),
            fired_at: ts(80_000, 5),
            worker_id: Some("w-1".into()),
            manual: false,
        }],
        last_error: Some("stream full".into()),
        retry_at: Some(ts(80_002, 0)),
        created_at: Some(ts(0, 0)),
        updated_at: Some(ts(1, 0)),
    }
}

fn dead_letter() -> DeadLetter {
    DeadLetter {
        job: full_job(),
        error: Some("out of fuel".into()),
        error_type: Some(ErrorType::OutOfFuel),
        usage: usage(),
        attempts: 4,
        failed_at: ts(9, 0),
        worker_id: Some("w-2".into()),
    }
}

fn stats() -> QueueStats {
    QueueStats {
        queue: "default".into(),
        pending: 1,
        running: 2,
        completed: 3,
        failed: 4,
        dead_letter: 5,
    }
}

#[track_caller]
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: &T) -> Vec<u8> {
    let bytes = encode(v).expect("encode");
    let back: T = decode(&bytes).expect("decode");
    assert_eq!(&back, v);
    bytes
}

#[test]
fn every_record_round_trips() {
    round_trip(&full_job());
    round_trip(&minimal_job());
    round_trip(&Job::new("x", Vec::new()));
    round_trip(&full_event());
    round_trip(&JobEvent::new(JobEventType::Enqueued, &minimal_job()));
    round_trip(&JobEvent::handler(
        JobEventType::HandlerDeployed,
        "echo",
        digest(),
    ));
    round_trip(&full_result());
    round_trip(&minimal_result());
    round_trip(&usage());
    round_trip(&Usage::default());
    round_trip(&JobLimits::default());
    round_trip(&full_job().limits.unwrap());
    round_trip(&HandlerLimits::DEFAULT);
    round_trip(&route());
    round_trip(&worker());
    round_trip(&stats());
    round_trip(&QueueStats::new("q"));
    round_trip(&JobProgress::default());
    round_trip(&LogEntry::new(LogLevel::Warn, "careful"));
    round_trip(&state());
    round_trip(&JobState::new(&full_job()));
    round_trip(&schedule());
    round_trip(&dead_letter());
    for s in JobStatus::ALL {
        round_trip(&s);
    }
    for e in JobEventType::ALL {
        round_trip(&e);
    }
    for e in ErrorType::ALL {
        round_trip(&e);
    }
    for s in WorkerState::ALL {
        round_trip(&s);
    }
    for l in LogLevel::ALL {
        round_trip(&l);
    }
    round_trip(&ScheduleStatus::Active);
    round_trip(&ScheduleStatus::Paused);
}

/// `Utc::now()` has nanosecond precision on Linux; the wire keeps all of it.
#[test]
fn now_round_trips_exactly() {
    for _ in 0..100 {
        round_trip(&Job::new("echo", Vec::new()));
    }
}

#[test]
fn enum_wire_names() {
    #[track_caller]
    fn wire_name<T: Serialize>(v: T, name: &str) {
        assert_eq!(encode(&v).unwrap(), encode(name).unwrap(), "{name}");
    }
    wire_name(JobStatus::DeadLetter, "DEAD_LETTER");
    wire_name(JobEventType::RetryScheduled, "RETRY_SCHEDULED");
    wire_name(ErrorType::OutOfFuel, "out_of_fuel");
    wire_name(ErrorType::UnknownJobType, "unknown_job_type");
    wire_name(WorkerState::Idle, "IDLE");
    wire_name(ScheduleStatus::Paused, "PAUSED");
    wire_name(LogLevel::Warn, "warn");
    // `as_str` agrees with serde for every variant.
    for v in JobStatus::ALL {
        wire_name(v, v.as_str());
        assert_eq!(v.to_string(), v.as_str());
    }
    for v in JobEventType::ALL {
        wire_name(v, v.as_str());
    }
    for v in ErrorType::ALL {
        wire_name(v, v.as_str());
    }
    for v in WorkerState::ALL {
        wire_name(v, v.as_str());
    }
    for v in LogLevel::ALL {
        wire_name(v, v.as_str());
    }
    for v in ScheduleStatus::ALL {
        wire_name(v, v.as_str());
    }
    for v in MissedPolicy::ALL {
        wire_name(v, v.as_str());
    }
    // Case matters: another case is another (unknown) spelling, not the known one.
    assert_eq!(
        decode::<JobStatus>(&encode("dead_letter").unwrap()).unwrap(),
        JobStatus::Other("dead_letter")
    );
    assert!(
        !decode::<ErrorType>(&encode("OUT_OF_FUEL").unwrap())
            .unwrap()
            .is_known()
    );
}

#[test]
fn unknown_enum_spellings_are_kept_and_written_back() {
    #[track_caller]
    fn survives<T: Serialize + DeserializeOwned + Debug + PartialEq>(spelling: &str) -> T {
        let v: T = decode(&encode(spelling).unwrap()).unwrap();
        assert_eq!(encode(&v).unwrap(), encode(spelling).unwrap(), "{spelling}");
        v
    }
    assert_eq!(
        survives::<ErrorType>("quota_exceeded"),
        ErrorType::Other("quota_exceeded")
    );
    assert_eq!(
        survives::<JobEventType>("TENANT_PAUSED"),
        JobEventType::Other("TENANT_PAUSED")
    );
    survives::<JobStatus>("THROTTLED");
    survives::<WorkerState>("DRAINING");
    survives::<ScheduleStatus>("EXPIRED");
    survives::<LogLevel>("fatal");
    // A known spelling read back is the known variant, never `Other`.
    for v in ErrorType::ALL {
        assert_eq!(ErrorType::from_wire(v.as_str()), v);
        assert!(v.is_known());
    }
    // What an unknown case means where a reader must decide.
    assert!(!ErrorType::from_wire("quota_exceeded").is_deterministic());
    assert!(!JobStatus::from_wire("THROTTLED").is_terminal());
    let e = JobEventType::from_wire("Odd.Kind *");
    assert_eq!(e.as_token(), "odd_kind__");
    assert_eq!(
        JobEventType::from_token("retry_scheduled"),
        Some(JobEventType::RetryScheduled)
    );
    // Not a string at all is still an error.
    assert!(decode::<ErrorType>(&encode(&7u8).unwrap()).is_err());
    assert!(decode::<JobStatus>(&encode(&serde_json::json!({"a": 1})).unwrap()).is_err());
}

#[test]
fn records_from_a_newer_writer_decode() {
    // A newer writer: a higher `v`, new keys of every MessagePack kind, new spellings.
    let mut event = serde_json::to_value(full_event()).unwrap();
    let extra = serde_json::json!({
        "v": 7,
        "tenant_quota": {"nested": [1, {"deep": null}], "f": 1.5},
        "flags": [true, false],
        "note": "from the future",
    });
    let obj = event.as_object_mut().unwrap();
    obj.extend(extra.as_object().unwrap().clone());
    obj.insert("event_type".into(), "QUOTA_WARNING".into());
    obj.insert("error_type".into(), "quota_exceeded".into());
    let bytes = encode(&event).unwrap();
    assert_eq!(version_of(&bytes).unwrap(), 7);
    let read: JobEvent = decode(&bytes).unwrap();
    assert_eq!(read.event_type, JobEventType::Other("QUOTA_WARNING"));
    assert_eq!(read.error_type, Some(ErrorType::Other("quota_exceeded")));
    assert_eq!(read.job_id, full_event().job_id);

    // Unknown keys holding bin and ext values are skipped too.
    let mut result = encode(&minimal_result()).unwrap();
    result[0] += 2; // fixmap: two more entries
    result.extend(msgpack_str("blob"));
    result.extend([0xc4, 2, 0xde, 0xad]);
    result.extend(msgpack_str("stamp"));
    result.extend([0xd6, 0xff, 0x66, 0x32, 0x35, 0xf0]);
    assert_eq!(decode::<JobResult>(&result).unwrap(), minimal_result());

    // Every record this version writes is version 1 and carries no `v` key.
    assert_eq!(
        version_of(&encode(&full_result()).unwrap()).unwrap(),
        WIRE_VERSION
    );
    assert!(!contains(&encode(&full_job()).unwrap(), &msgpack_str("v")));
    assert!(version_of(&encode(&serde_json::json!({"v": "two"})).unwrap()).is_err());
    assert!(version_of(b"\x01").is_err());
}

#[test]
fn deterministic_error_types() {
    use ErrorType::*;
    let det: Vec<_> = ErrorType::ALL
        .into_iter()
        .filter(|e| e.is_deterministic())
        .collect();
    assert_eq!(
        det,
        [
            OutOfFuel,
            MemoryLimit,
            StackOverflow,
            Trap,
            OutputTooLarge,
            InvalidHandler,
            BadJob,
            DependencyFailed
        ]
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// MessagePack str header for a string shorter than 256 bytes.
fn msgpack_str(s: &str) -> Vec<u8> {
    let mut out = if s.len() < 32 {
        vec![0xa0 | s.len() as u8]
    } else {
        vec![0xd9, s.len() as u8]
    };
    out.extend_from_slice(s.as_bytes());
    out
}

#[test]
fn timestamps_are_rfc3339_strings_in_utc() {
    let cases = [
        (ts(0, 0), "2024-05-01T12:34:56Z"),
        (ts(0, 120_000_000), "2024-05-01T12:34:56.120Z"),
        (ts(0, 123_456_000), "2024-05-01T12:34:56.123456Z"),
        (ts(0, 123_456_789), "2024-05-01T12:34:56.123456789Z"),
    ];
    for (t, want) in cases {
        let mut j = minimal_job();
        j.created_at = t;
        let bytes = encode(&j).unwrap();
        assert!(contains(&bytes, &msgpack_str(want)), "{want}");
    }
}

#[test]
fn bytes_are_msgpack_bin() {
    let j = Job::new("echo", b"abc".to_vec());
    assert!(contains(&encode(&j).unwrap(), &[0xc4, 3, b'a', b'b', b'c']));
    let mut r = minimal_result();
    r.result = Some(b"xyz".to_vec());
    assert!(contains(&encode(&r).unwrap(), &[0xc4, 3, b'x', b'y', b'z']));
}

#[test]
fn absent_options_are_not_written() {
    let bytes = encode(&minimal_job()).unwrap();
    for key in [
        "scheduled_at",
        "max_retries",
        "metadata",
        "limits",
        "handler",
    ] {
        assert!(!contains(&bytes, &msgpack_str(key)), "{key}");
    }
    for key in ["id", "queue", "job_type", "payload", "priority", "attempt"] {
        assert!(contains(&bytes, &msgpack_str(key)), "{key}");
    }
}

/// `trace_id` is a plain string key on results and events, left out when absent; the
/// trace context itself is never part of an encoded job (it travels in headers).
#[test]
fn trace_ids_are_optional_string_keys() {
    let trace_id = msgpack_str("trace_id");
    let id = msgpack_str("4bf92f3577b34da6a3ce929d0e0e4736");
    for bytes in [
        encode(&full_event()).unwrap(),
        encode(&full_result()).unwrap(),
    ] {
        assert!(contains(&bytes, &trace_id));
        assert!(contains(&bytes, &id));
    }
    let untraced = JobEvent::new(JobEventType::Started, &minimal_job());
    assert_eq!(untraced.trace_id, None);
    for bytes in [
        encode(&untraced).unwrap(),
        encode(&minimal_result()).unwrap(),
    ] {
        assert!(!contains(&bytes, &trace_id));
    }
    let plain = minimal_job();
    let traced = plain
        .clone()
        .trace(TraceContext::parse(TRACEPARENT, Some("a=b")).unwrap());
    assert_eq!(traced.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(
        JobEvent::new(JobEventType::Enqueued, &traced)
            .trace_id
            .as_deref(),
        traced.trace_id()
    );
    let bytes = encode(&traced).unwrap();
    assert_eq!(bytes, encode(&plain).unwrap());
    for key in ["trace", "traceparent", "tracestate"] {
        assert!(!contains(&bytes, &msgpack_str(key)), "{key}");
    }
    // A reader of this version gets None from a record written before trace ids.
    let old: JobResult = decode(&encode(&minimal_result()).unwrap()).unwrap();
    assert_eq!(old.trace_id, None);
}

/// A tiny deterministic generator so the garbage is reproducible without a rand crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn decode_all_kinds(bytes: &[u8]) -> [bool; 14] {
    [
        decode::<Job>(bytes).is_ok(),
        decode::<JobEvent>(bytes).is_ok(),
        decode::<JobResult>(bytes).is_ok(),
        decode::<JobState>(bytes).is_ok(),
        decode::<Route>(bytes).is_ok(),
        decode::<WorkerStatus>(bytes).is_ok(),
        decode::<Schedule>(bytes).is_ok(),
        decode::<DeadLetter>(bytes).is_ok(),
        decode::<QueueStats>(bytes).is_ok(),
        decode::<LogEntry>(bytes).is_ok(),
        decode::<JobProgress>(bytes).is_ok(),
        decode::<Usage>(bytes).is_ok(),
        decode::<JobLimits>(bytes).is_ok(),
        decode::<HandlerLimits>(bytes).is_ok(),
    ]
}

#[test]
fn empty_and_garbage_bytes_are_errors() {
    assert_eq!(decode_all_kinds(&[]), [false; 14]);
    for bad in [
        &[0xc1][..],
        &[0xff],
        &[0x00],
        &[0xc0],
        b"hello",
        &[0x80 | 0x0f],
    ] {
        assert_eq!(decode_all_kinds(bad)[..8], [false; 8], "{bad:?}");
    }
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for len in 0..2_000 {
        let bytes: Vec<u8> = (0..len % 300).map(|_| rng.next() as u8).collect();
        // Random bytes are (almost) never a valid Job; the point is no panic.
        let _ = decode_all_kinds(&bytes);
        assert!(decode::<Job>(&bytes).is_err());
    }
}

#[test]
fn every_truncation_of_a_job_is_an_error() {
    for job in [full_job(), minimal_job()] {
        let bytes = encode(&job).unwrap();
        for end in 0..bytes.len() {
            let err = decode::<Job>(&bytes[..end]).expect_err("truncated");
            assert!(err.to_string().starts_with("failed to decode Job: "));
        }
    }
    for bytes in [
        encode(&full_result()).unwrap(),
        encode(&full_event()).unwrap(),
        encode(&dead_letter()).unwrap(),
        encode(&schedule()).unwrap(),
    ] {
        for end in 0..bytes.len() {
            let _ = decode_all_kinds(&bytes[..end]);
        }
    }
}

#[test]
fn corrupted_jobs_never_panic() {
    let bytes = encode(&full_job()).unwrap();
    let mut rng = XorShift(42);
    for i in 0..bytes.len() {
        for v in [0x00, 0xff, 0xc1, 0xdb, 0xdd, 0xc6, rng.next() as u8] {
            let mut b = bytes.clone();
            b[i] = v;
            let _ = decode_all_kinds(&b);
        }
    }
    // A bin header claiming 4 GiB of payload on a tiny buffer.
    let mut huge = bytes.clone();
    if let Some(pos) = huge.windows(2).position(|w| w == [0xc4, 4]) {
        huge.splice(pos..pos + 2, [0xc6, 0xff, 0xff, 0xff, 0xff]);
        assert!(decode::<Job>(&huge).is_err());
    }
}

#[test]
fn wrong_record_types_are_errors() {
    let encoded = [
        encode(&full_job()).unwrap(),
        encode(&full_event()).unwrap(),
        encode(&full_result()).unwrap(),
        encode(&state()).unwrap(),
        encode(&route()).unwrap(),
        encode(&worker()).unwrap(),
        encode(&schedule()).unwrap(),
        encode(&dead_letter()).unwrap(),
    ];
    for (i, bytes) in encoded.iter().enumerate() {
        let ok = decode_all_kinds(bytes);
        for (j, &decoded) in ok[..8].iter().enumerate() {
            assert_eq!(decoded, i == j, "record {i} decoded as record {j}");
        }
    }
    // Scalars are never records.
    for bytes in [
        encode(&42u64).unwrap(),
        encode("job").unwrap(),
        encode(&true).unwrap(),
        encode(&()).unwrap(),
    ] {
        assert_eq!(decode_all_kinds(&bytes), [false; 14], "{bytes:?}");
    }
    // rmp_serde also reads a struct from an array, positionally (not part of the
    // format); an array of the wrong shape is still an error for every record with
    // required fields.
    let bytes = encode(&vec![1u8, 2, 3]).unwrap();
    assert_eq!(decode_all_kinds(&bytes)[..11], [false; 11]);
    // A map with a field of the wrong type.
    let bad = encode(&BTreeMap::from([("fuel_consumed", "lots")])).unwrap();
    assert!(decode::<Usage>(&bad).is_err());
    let bad = encode(&serde_json::json!({
        "id": "a", "job_type": "b", "created_at": "2024-05-01T00:00:00Z", "priority": -1
    }))
    .unwrap();
    assert!(decode::<Job>(&bad).is_err());
}

/// What a Python client writes with `msgpack.packb({...}, use_bin_type=True)`:
/// only the required keys, payload as `bin`.
#[derive(Serialize)]
struct ForeignJob<'a> {
    id: &'a str,
    job_type: &'a str,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
    created_at: &'a str,
}

#[test]
fn a_job_with_only_required_fields_decodes_with_defaults() {
    let bytes = rmp_serde::to_vec_named(&ForeignJob {
        id: "01HXYZABCDEFGHJKMNPQRSTVWX",
        job_type: "echo",
        payload: b"{\"x\":1}",
        created_at: "2024-05-01T12:34:56.123456+00:00",
    })
    .unwrap();
    let job: Job = decode(&bytes).unwrap();
    assert_eq!(job.id, "01HXYZABCDEFGHJKMNPQRSTVWX");
    assert_eq!(job.job_type, "echo");
    assert_eq!(job.payload, b"{\"x\":1}");
    assert_eq!(job.queue, DEFAULT_QUEUE);
    assert_eq!(job.content_type, CONTENT_TYPE_JSON);
    assert_eq!(job.priority, DEFAULT_PRIORITY);
    assert_eq!(job.attempt, 1);
    assert_eq!(job.max_retries, None);
    assert_eq!(job.scheduled_at, None);
    assert_eq!(job.created_at, ts(0, 123_456_000));
    assert!(job.metadata.is_empty());
    assert_eq!(job.limits, None);
    assert_eq!(job.timeout_ms, None);
    assert_eq!(job.handler, None);
    assert_eq!(job.validate(), Ok(()));
}

#[test]
fn foreign_jobs_from_a_json_shaped_map() {
    // No payload at all; nil for optional fields; unknown keys; an offset timestamp.
    let v = serde_json::json!({
        "id": "0190b7e2-8c5a-7cc0-9d4e-1a2b3c4d5e6f",
        "job_type": "echo",
        "created_at": "2024-05-01T14:34:56+02:00",
        "queue": "q",
        "priority": 0,
        "max_retries": null,
        "scheduled_at": null,
        "metadata": {"a": "b"},
        "limits": {"fuel": 10},
        "from_the_future": [1, 2, 3],
    });
    let job: Job = decode(&encode(&v).unwrap()).unwrap();
    assert!(job.payload.is_empty());
    assert_eq!(job.created_at, ts(0, 0));
    assert_eq!(job.queue, "q");
    assert_eq!(job.priority, 0);
    assert_eq!(job.max_retries, None);
    assert_eq!(job.metadata["a"], "b");
    assert_eq!(job.limits.unwrap().fuel, Some(10));
    assert_eq!(job.limits.unwrap().memory_bytes, None);

    // Older msgpack libraries write bytes as str; that is accepted too.
    let v = serde_json::json!({
        "id": "a", "job_type": "b", "created_at": "2024-05-01T12:34:56Z", "payload": "hi"
    });
    assert_eq!(decode::<Job>(&encode(&v).unwrap()).unwrap().payload, b"hi");

    // Each required key is required.
    for missing in ["id", "job_type", "created_at"] {
        let mut v = serde_json::json!({
            "id": "a", "job_type": "b", "created_at": "2024-05-01T12:34:56Z"
        });
        v.as_object_mut().unwrap().remove(missing);
        let err = decode::<Job>(&encode(&v).unwrap()).expect_err(missing);
        assert!(err.to_string().contains(missing), "{err}");
    }

    // Other spellings the format promises to read.
    for (payload, created_at) in [
        (serde_json::json!([104, 105]), "2024-05-01 14:34:56+0200"),
        (serde_json::json!("hi"), "2024-05-01T12:34:56.000Z"),
    ] {
        let v = serde_json::json!({
            "id": "a", "job_type": "b", "created_at": created_at, "payload": payload
        });
        let job: Job = decode(&encode(&v).unwrap()).expect(created_at);
        assert_eq!(job.payload, b"hi");
        assert_eq!(job.created_at, ts(0, 0));
    }
    // An integer written wider than needed (0xcf = uint64) still reads as a u8.
    let mut wide = encode(&serde_json::json!({
        "id": "a", "job_type": "b", "created_at": "2024-05-01T12:34:56Z", "priority": "P"
    }))
    .unwrap();
    let pos = wide.windows(2).position(|w| w == [0xa1, b'P']).unwrap();
    wide.splice(pos..pos + 2, [0xcf, 0, 0, 0, 0, 0, 0, 0, 7]);
    assert_eq!(decode::<Job>(&wide).unwrap().priority, 7);

    // The MessagePack timestamp extension (fixext4, type -1) is not a timestamp here.
    let mut ext = vec![0x83];
    for (k, v) in [("id", "a"), ("job_type", "b")] {
        ext.extend(msgpack_str(k));
        ext.extend(msgpack_str(v));
    }
    ext.extend(msgpack_str("created_at"));
    ext.extend([0xd6, 0xff, 0x66, 0x32, 0x35, 0xf0]);
    assert!(decode::<Job>(&ext).is_err());

    // A timestamp without an offset is ambiguous and rejected.
    let v = serde_json::json!({"id": "a", "job_type": "b", "created_at": "2024-05-01T12:34:56"});
    assert!(decode::<Job>(&encode(&v).unwrap()).is_err());
}

#[test]
fn largest_valid_records_fit_in_a_nats_message() {
    // Headers (Nats-Msg-Id etc.) travel outside the payload but count against
    // max_payload; leave them 1 KiB.
    let budget = NATS_MAX_PAYLOAD - 1024;

    let mut job = Job::new("x".repeat(MAX_NAME_LEN), vec![0xaa; MAX_PAYLOAD_BYTES])
        .id("i".repeat(MAX_NAME_LEN))
        .queue("q".repeat(MAX_NAME_LEN))
        .content_type("c".repeat(MAX_FIELD_LEN))
        .tenant("t".repeat(MAX_FIELD_LEN))
        .created_by("b".repeat(MAX_FIELD_LEN))
        .handler("h".repeat(MAX_FIELD_LEN))
        .max_retries(u32::MAX)
        .delay(std::time::Duration::from_secs(1))
        .timeout(std::time::Duration::from_secs(1))
        .limits(JobLimits {
            fuel: Some(u64::MAX),
            memory_bytes: Some(u64::MAX),
            timeout_ms: Some(u64::MAX),
            output_bytes: Some(u64::MAX),
            log_bytes: Some(u64::MAX),
        });
    // Metadata made of many tiny entries is the worst case for key overhead.
    let mut i = 0;
    while job
        .metadata
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>()
        + 8
        <= MAX_METADATA_BYTES
    {
        job.metadata.insert(format!("{i:07}"), "v".into());
        i += 1;
    }
    job.validate().unwrap();
    let size = encode(&job).unwrap().len();
    assert!(size <= budget, "job encodes to {size} bytes");

    let limits = HandlerLimits::DEFAULT;
    let line_len = usize::try_from(limits.log_bytes / limits.log_lines).unwrap();
    let mut result = full_result();
    result.result = Some(vec![0xbb; usize::try_from(limits.output_bytes).unwrap()]);
    result.error = Some("e".repeat(4096));
    result.traceback = Some("t".repeat(16 * 1024));
    result.logs = (0..limits.log_lines)
        .map(|_| LogEntry {
            timestamp: ts(0, 123_456_789),
            level: LogLevel::Error,
            message: "m".repeat(line_len),
        })
        .collect();
    let size = encode(&result).unwrap().len();
    assert!(size <= budget, "result encodes to {size} bytes");
}
