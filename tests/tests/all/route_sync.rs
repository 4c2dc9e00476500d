//! Route sync against a real nats-server and real guests: a deploy returns once every
//! live worker runs the new version, even when their routes watches are lost; a
//! route write no watch delivered is still picked up; hostile sync requests change
//! nothing.
//!
//! A watch is lost the way a node loss loses it: its consumer on the routes bucket's
//! stream is deleted on the server, so the worker hears nothing until it notices.

use std::time::{Duration, Instant};

use jobbox::{Client, Job, Route, nats};
use jobbox_host::registry::DeployOptions;
use jobbox_tests::{NatsServer, RunningWorker, deploy_guest, guests, jobbox_bin, wait_result};
use serde_json::{Value, json};

const QUEUE: &str = "sync";

/// Waits until the heartbeats name every one of `ids`.
async fn wait_heartbeats(client: &Client, ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen: Vec<String> = client
            .workers()
            .await
            .map(|workers| workers.into_iter().map(|w| w.worker_id).collect())
            .unwrap_or_default();
        if ids.iter().all(|id| seen.iter().any(|s| s == id)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat from {ids:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes every consumer of the routes bucket's stream (the workers' watches);
/// returns how many there were.
async fn lose_route_watches(client: &Client) -> usize {
    use futures::StreamExt as _;
    let name = format!("KV_{}", nats::ROUTES_BUCKET);
    let stream = client.jetstream().get_stream(&name).await.expect("stream");
    let names: Vec<String> = stream
        .consumer_names()
        .filter_map(|name| async move { name.ok() })
        .collect()
        .await;
    for consumer in &names {
        stream
            .delete_consumer(consumer)
            .await
            .unwrap_or_else(|e| panic!("delete consumer {consumer}: {e}"));
    }
    names.len()
}

/// Runs `count` echo jobs and returns their outputs.
async fn outputs(client: &Client, count: usize, tag: &str) -> Vec<String> {
    let jobs: Vec<Job> = (0..count)
        .map(|i| {
            Job::json("echo", &json!({ tag: i }))
                .expect("job")
                .queue(QUEUE)
        })
        .collect();
    for outcome in client.enqueue_many(&jobs).await.expect("enqueue") {
        outcome.expect("enqueued");
    }
    let mut texts = Vec::new();
    for job in &jobs {
        let result = wait_result(client, &job.id, Duration::from_secs(30)).await;
        texts.push(String::from_utf8_lossy(result.result.as_deref().unwrap_or_default()).into());
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_returns_once_every_live_worker_runs_it_though_their_watches_are_lost() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let workers = [
        RunningWorker::on(&server.url(), &[QUEUE], 4).await,
        RunningWorker::on(&server.url(), &[QUEUE], 4).await,
    ];
    let ids = [workers[0].id.as_str(), workers[1].id.as_str()];
    wait_heartbeats(&client, &ids).await;
    assert!(
        outputs(&client, 4, "before")
            .await
            .iter()
            .all(|t| t.starts_with(r#"{"before""#)),
        "v1 runs first"
    );

    let lost = lose_route_watches(&client).await;
    assert!(
        lost >= 2,
        "each worker watches the routes: {lost} consumers"
    );
    // The CLI, as a user deploys: it says which workers run the new version.
    let output = std::process::Command::new(jobbox_bin())
        .args(["handler", "deploy", "echo", guests::ECHO_V2, "-o", "json"])
        .args(["--nats-url", &server.url()])
        .output()
        .expect("run jobbox");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deployed: Value = serde_json::from_str(&stdout).expect("json");
    let mut expected: Vec<&str> = ids.to_vec();
    expected.sort_unstable();
    assert_eq!(deployed["fleet"]["current"], json!(expected), "{stdout}");
    assert_eq!(deployed["fleet"]["silent"], json!([]), "{stdout}");
    assert_eq!(deployed["fleet"]["behind"], json!([]), "{stdout}");

    // Right away, with the watches still blind: every job runs the new version.
    let texts = outputs(&client, 40, "after").await;
    let old: Vec<&String> = texts
        .iter()
        .filter(|t| !t.starts_with(r#"{"v":2,"#))
        .collect();
    assert!(old.is_empty(), "jobs ran on the replaced version: {old:?}");

    // A deploy with a silent live worker names it, and returns within its bound.
    let silent_id = format!("silent-{}", uuid_like());
    let status = jobbox::WorkerStatus {
        worker_id: silent_id.clone(),
        state: jobbox::WorkerState::Idle,
        queues: vec![QUEUE.into()],
        current_jobs: Vec::new(),
        handlers: Default::default(),
        started_at: chrono::Utc::now(),
        heartbeat_at: chrono::Utc::now(),
        jobs_done: 0,
        jobs_failed: 0,
        hostname: None,
        concurrency: 1,
        last_error: None,
    };
    client
        .layout()
        .workers
        .put(
            &silent_id,
            jobbox::wire::encode(&status).expect("encode").into(),
        )
        .await
        .expect("a heartbeat of a worker that never answers");
    let wasm = std::fs::read(guests::ECHO).expect("read v1");
    let started = Instant::now();
    let back = DeployOptions::default()
        .deploy_confirmed(&client, "echo", wasm, Duration::from_secs(60))
        .await
        .expect("deploy v1 again");
    let took = started.elapsed();
    assert_eq!(
        back.fleet.silent,
        vec![silent_id.clone()],
        "{:?}",
        back.fleet
    );
    assert_eq!(back.fleet.current.len(), 2, "{:?}", back.fleet);
    assert!(back.fleet.describe().contains(&silent_id));
    assert!(
        took < jobbox_host::registry::ROUTE_SYNC_WAIT + Duration::from_secs(20),
        "the deploy waited for the silent worker without bound: {took:?}"
    );
    for worker in workers {
        worker.stop().await;
    }
}

/// A short unique suffix.
fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_write_no_watch_delivered_is_still_picked_up() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let v1 = deploy_guest(&client, "echo", guests::ECHO).await;
    let worker = RunningWorker::on(&server.url(), &[QUEUE], 2).await;
    wait_heartbeats(&client, &[worker.id.as_str()]).await;
    assert!(lose_route_watches(&client).await >= 1);
    // Written as an older jobbox (or a tool) would: no sync request.
    let wasm = std::fs::read(guests::ECHO_V2).expect("read v2");
    let digest = client.put_handler(&wasm).await.expect("store v2");
    let route = Route {
        digest: digest.clone(),
        size_bytes: wasm.len() as u64,
        deployed_at: chrono::Utc::now(),
        ..v1
    };
    client.set_route(&route).await.expect("route");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut tries = 0;
    loop {
        tries += 1;
        let text = outputs(&client, 1, "probe").await.remove(0);
        if text.starts_with(r#"{"v":2,"#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {tries} jobs the worker still runs the replaced version: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("the missed route write was picked up after {tries} probe jobs");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_route_sync_requests_are_answered_and_change_nothing() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let v1 = deploy_guest(&client, "echo", guests::ECHO).await;
    let worker = RunningWorker::on(&server.url(), &[QUEUE], 2).await;
    wait_heartbeats(&client, &[worker.id.as_str()]).await;
    let long_name = "a".repeat(100_000);
    let requests: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"\xff\x00 not json".to_vec()),
        (
            "wrong types",
            br#"{"job_type": 7, "revision": "x"}"#.to_vec(),
        ),
        (
            "a path",
            br#"{"job_type": "../echo", "revision": 1}"#.to_vec(),
        ),
        (
            "a wildcard",
            br#"{"job_type": "echo.>", "revision": 1}"#.to_vec(),
        ),
        (
            "a 100 KB name",
            serde_json::to_vec(&json!({"job_type": long_name, "revision": 1})).expect("json"),
        ),
        (
            "a revision never written",
            serde_json::to_vec(&json!({"job_type": "echo", "revision": u64::MAX})).expect("json"),
        ),
        (
            "a job type never deployed",
            serde_json::to_vec(&json!({"job_type": "nothing-here", "revision": 1})).expect("json"),
        ),
    ];
    for (what, payload) in requests {
        let started = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            client
                .nats()
                .request(nats::ROUTE_SYNC_SUBJECT, payload.into()),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in 5 s"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let answer: Value = serde_json::from_slice(&answer.payload).expect("a JSON answer");
        assert!(answer["error"].is_string(), "{what}: {answer}");
        assert_eq!(answer["worker_id"], json!(worker.id), "{what}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what} held an answer slot for {:?}",
            started.elapsed()
        );
    }
    let route = client.route("echo").await.expect("read").expect("route");
    assert_eq!(route.digest, v1.digest);
    let text = outputs(&client, 1, "still").await.remove(0);
    assert!(text.starts_with(r#"{"still""#), "{text}");
    worker.stop().await;
}
