//! Results say their encoding: the output's content type is what the handler set, else
//! the job's; a value that is not a media type is ignored with a warning; `jobbox
//! result` decodes MessagePack output.

use std::time::Duration;

use jobbox::{Client, Job, JobResult, JobStatus, LogLevel};
use jobbox_tests::{
    NatsServer, RunningWorker, brief, deploy_guest, guests, jobbox_bin, wait_result,
};

async fn run(client: &Client, job: &Job) -> JobResult {
    client.enqueue(job).await.expect("enqueue");
    let result = wait_result(client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_records_the_content_type_its_handler_set_and_ignores_what_is_not_one() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "ctype", guests::CONTENT_TYPE).await;
    let worker = RunningWorker::on(&server.url(), &["ctype"], 4).await;

    for good in ["text/html; charset=utf-8", "application/vnd.example+json"] {
        let job = Job::new("ctype", good.as_bytes().to_vec()).queue("ctype");
        let result = run(&client, &job).await;
        assert_eq!(result.content_type.as_deref(), Some(good));
        assert_eq!(result.result.as_deref(), Some(&b"<b>plain</b>"[..]));
    }

    // What a hostile handler may pass: nothing, far too much, header injection,
    // no subtype, control and non-ASCII characters.
    let huge = format!("text/{}", "x".repeat(10_000));
    let hostile = [
        "",
        huge.as_str(),
        "text/plain\r\nX-Injected: 1",
        "plain",
        "text/",
        "text/pl\u{0}ain",
        "tëxt/plain",
    ];
    for bad in hostile {
        let job = Job::new("ctype", bad.as_bytes().to_vec())
            .queue("ctype")
            .content_type("application/octet-stream");
        let result = run(&client, &job).await;
        assert_eq!(
            result.content_type.as_deref(),
            Some("application/octet-stream"),
            "{bad:?} is ignored: the job's own type"
        );
        let warning = result
            .logs
            .iter()
            .find(|entry| entry.level == LogLevel::Warn)
            .unwrap_or_else(|| panic!("a warning for {bad:?}: {:?}", result.logs));
        assert!(warning.message.contains("ignored"), "{}", warning.message);
        assert!(warning.message.len() < 300, "the warning is bounded");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobbox_result_decodes_messagepack_output_by_its_content_type() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "word-count", guests::WORD_COUNT).await;
    let worker = RunningWorker::on(&server.url(), &["words"], 4).await;

    // A typed handler answers in the job's content type, and the result says so.
    let payload = jobbox::wire::encode(&serde_json::json!({"text": "a b a"})).expect("msgpack");
    let job = Job::new("word-count", payload)
        .queue("words")
        .content_type("application/msgpack");
    let result = run(&client, &job).await;
    assert_eq!(result.content_type.as_deref(), Some("application/msgpack"));
    let json_job = Job::json("word-count", &serde_json::json!({"text": "a"}))
        .expect("json")
        .queue("words");
    let json_result = run(&client, &json_job).await;
    assert_eq!(
        json_result.content_type.as_deref(),
        Some("application/json")
    );
    worker.stop().await;

    for output in ["text", "json"] {
        let out = std::process::Command::new(jobbox_bin())
            .args(["result", &job.id, "-o", output, "--nats-url", &server.url()])
            .output()
            .expect("run jobbox result");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(!stdout.contains("binary bytes"), "{stdout}");
        let document: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
        let counts = if output == "json" {
            &document["result"]
        } else {
            &document
        };
        assert_eq!(counts["counts"]["a"], 2, "{stdout}");
        assert_eq!(counts["words"], 3, "{stdout}");
    }
}
