//! A three-node nats-server cluster: an R3 layout keeps three copies of everything,
//! `jobbox admin layout --replicas 3` moves a live single-copy deployment to three.

use std::time::Duration;

use jobbox::{Client, ClientOptions, Job, JobStatus, layout, nats};
use jobbox_tests::{
    KillOnDrop, NatsCluster, NatsServer, RunningWorker, brief, deploy_guest, guests, jobbox_bin,
    spawn_worker_process, wait_result,
};
use serde_json::json;

/// Connects to `urls` creating what is missing with `replicas` copies.
async fn connect(urls: &str, replicas: usize) -> Client {
    Client::connect_with(urls, &ClientOptions { replicas })
        .await
        .expect("connect to the cluster")
}

/// Every jobbox stream's (replicas, followers, allow_direct).
async fn replicas_of(client: &Client) -> Vec<(String, usize, usize, bool)> {
    let mut found = Vec::new();
    for name in layout::stream_names() {
        let mut stream = client
            .jetstream()
            .get_stream(&name)
            .await
            .unwrap_or_else(|e| panic!("stream {name}: {e}"));
        let info = stream.info().await.expect("stream info");
        let followers = info
            .cluster
            .as_ref()
            .map_or(0, |cluster| cluster.replicas.len());
        found.push((
            name,
            info.config.num_replicas,
            followers,
            info.config.allow_direct,
        ));
    }
    found
}

/// Asserts every stream has `replicas` copies and results are read from the leader
/// when there is more than one.
async fn assert_replicas(client: &Client, replicas: usize) {
    let results = format!("KV_{}", nats::RESULTS_BUCKET);
    // Followers join a scaled-up stream in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = replicas_of(client).await;
        let settled = found.iter().all(|(name, copies, followers, direct)| {
            *copies == replicas
                && *followers == replicas - 1
                && (name != &results || *direct == (replicas == 1))
        });
        if settled {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every stream has {replicas} replicas: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn echo_jobs(count: usize, queue: &str) -> Vec<Job> {
    (0..count)
        .map(|i| {
            Job::json("echo", &json!({ "i": i }))
                .expect("encodes")
                .queue(queue)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_layout_keeps_three_copies_of_everything_and_runs_jobs_through_any_node() {
    let cluster = NatsCluster::start().await;
    let client = connect(&cluster.url(0), 3).await;
    assert_replicas(&client, 3).await;
    deploy_guest(&client, "echo", guests::ECHO).await;
    // The worker is on another node than the client.
    let worker = RunningWorker::on(&cluster.url(1), &["r3"], 8).await;
    let jobs = echo_jobs(200, "r3");
    for outcome in client.enqueue_many(&jobs).await.expect("enqueue") {
        outcome.expect("stored");
    }
    for job in &jobs {
        let result = wait_result(&client, &job.id, Duration::from_secs(60)).await;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
        assert_eq!(result.result.as_deref(), Some(job.payload.as_slice()));
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_layout_moves_a_live_single_copy_deployment_to_three_replicas() {
    let cluster = NatsCluster::start().await;
    let urls = cluster.urls();
    let client = connect(&urls, 1).await;
    assert_replicas(&client, 1).await;
    deploy_guest(&client, "echo", guests::ECHO).await;
    let before = echo_jobs(50, "scale");
    for outcome in client.enqueue_many(&before).await.expect("enqueue") {
        outcome.expect("stored");
    }

    let admin = std::process::Command::new(jobbox_bin())
        .args(["admin", "layout", "--replicas", "3", "--nats-url", &urls])
        .output()
        .expect("run jobbox admin layout");
    let stdout = String::from_utf8_lossy(&admin.stdout);
    assert!(admin.status.success(), "{admin:?}");
    assert!(
        stdout.contains("11 of 11 streams changed to 3 replicas"),
        "{stdout}"
    );
    assert_replicas(&client, 3).await;
    // Processes opened before the change read results by direct get, which the
    // results bucket no longer answers: they reconnect (docs/operations.md).
    let client = connect(&urls, 1).await;
    // Asked again, nothing changes.
    let again = std::process::Command::new(jobbox_bin())
        .args(["admin", "layout", "--replicas", "3", "--nats-url", &urls])
        .output()
        .expect("run jobbox admin layout");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 of 11 streams changed"),
        "{again:?}"
    );

    // The jobs enqueued before the change, and one after, run on a worker started
    // now (connected to every node).
    let _worker = KillOnDrop(spawn_worker_process(&urls, &["--queue", "scale"]));
    let after = echo_jobs(1, "scale");
    client.enqueue(&after[0]).await.expect("enqueue after");
    for job in before.iter().chain(&after) {
        let result = wait_result(&client, &job.id, Duration::from_secs(60)).await;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    }
}

#[tokio::test]
async fn replicas_out_of_range_or_beyond_a_single_server_are_refused_with_the_reason() {
    for bad in ["0", "6", "-1", "999999999999"] {
        let out = std::process::Command::new(jobbox_bin())
            .args(["admin", "layout", "--replicas", bad])
            .args(["--nats-url", "nats://127.0.0.1:1"])
            .output()
            .expect("run jobbox");
        assert_eq!(out.status.code(), Some(2), "--replicas {bad}: {out:?}");
    }
    assert!(
        Client::connect_with("", &ClientOptions { replicas: 1 })
            .await
            .is_err()
    );
    let server = NatsServer::start();
    let refused = Client::connect_with(&server.url(), &ClientOptions { replicas: 3 }).await;
    let error = refused.expect_err("a single server cannot keep three copies");
    println!("{error}");
    assert!(!jobbox::is_store_full(&error), "not a full store: {error}");
}
