//! A three-node nats-server cluster: an R3 layout keeps three copies of everything,
//! `jobbox admin layout --replicas 3` moves a live single-copy deployment to three.

use std::time::Duration;

use jobbox::{Client, ClientOptions, Job, JobStatus, layout, nats};
use jobbox_tests::{
    KillOnDrop, NatsCluster, NatsServer, RunningWorker, brief, deploy_guest, guests, jobbox_bin,
    spawn_logged_worker_process, spawn_worker_process, wait_result,
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
    // A worker (connected to every node) runs jobs before, during and after the change.
    let _worker = KillOnDrop(spawn_worker_process(&urls, &["--queue", "scale"]));
    let before = echo_jobs(50, "scale");
    for outcome in client.enqueue_many(&before).await.expect("enqueue") {
        outcome.expect("stored");
    }
    for job in &before {
        let result = wait_result(&client, &job.id, Duration::from_secs(60)).await;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    }
    let during = echo_jobs(200, "scale");
    for outcome in client.enqueue_many(&during).await.expect("enqueue") {
        outcome.expect("stored");
    }

    let admin = std::process::Command::new(jobbox_bin())
        .args(["admin", "layout", "--replicas", "3", "--nats-url", &urls])
        .output()
        .expect("run jobbox admin layout");
    let stdout = String::from_utf8_lossy(&admin.stdout);
    assert!(admin.status.success(), "{admin:?}");
    let streams = layout::stream_names().len();
    assert!(
        stdout.contains(&format!(
            "{streams} of {streams} streams changed to 3 replicas"
        )),
        "{stdout}"
    );
    assert_replicas(&client, 3).await;
    // Asked again, nothing changes.
    let again = std::process::Command::new(jobbox_bin())
        .args(["admin", "layout", "--replicas", "3", "--nats-url", &urls])
        .output()
        .expect("run jobbox admin layout");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(&format!("0 of {streams} streams changed")),
        "{again:?}"
    );

    // The worker and this client opened the layout when results were read by direct
    // get, which the replicated bucket no longer answers: both follow the change
    // without a restart.
    let after = echo_jobs(50, "scale");
    for outcome in client.enqueue_many(&after).await.expect("enqueue") {
        outcome.expect("stored");
    }
    for job in during.iter().chain(&after) {
        let result = wait_result(&client, &job.id, Duration::from_secs(60)).await;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
        let read = client.result(&job.id).await.expect("read the result");
        assert_eq!(read.map(|r| r.status), Some(JobStatus::Completed));
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

/// The node leading the jobs stream, by its server name.
async fn jobs_leader(client: &Client) -> String {
    loop {
        let leader = async {
            let mut stream = client
                .jetstream()
                .get_stream(nats::JOBS_STREAM)
                .await
                .ok()?;
            stream.info().await.ok()?.cluster.clone()?.leader
        };
        if let Some(leader) = leader.await {
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when every jobbox stream has all its replicas current and online.
async fn all_replicas_current(client: &Client) -> bool {
    for name in layout::stream_names() {
        let current = async {
            let mut stream = client.jetstream().get_stream(&name).await.ok()?;
            let cluster = stream.info().await.ok()?.cluster.clone()?;
            Some(
                cluster.leader.is_some()
                    && cluster.replicas.len() == 2
                    && cluster.replicas.iter().all(|p| p.current && !p.offline),
            )
        };
        if current.await != Some(true) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_and_brought_back_leaves_one_result_per_job() {
    const JOBS: usize = 20_000;
    let mut cluster = NatsCluster::start().await;
    let setup = connect(&cluster.urls(), 3).await;
    let leader = jobs_leader(&setup).await;
    let victim = cluster.index_of(&leader).expect("the leader is a node");
    let other = (victim + 1) % 3;
    let third = (victim + 2) % 3;
    // The test's own client stays on a node that lives.
    let client = connect(&cluster.url(third), 3).await;
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "swap", guests::ECHO).await;
    let jobs = echo_jobs(JOBS, "loss");
    super::faults::enqueue_all(&client, &jobs).await;
    let worker_args = ["--queue", "loss", "--concurrency", "32", "--ack-wait", "5s"];
    // One worker on the node that will die, one on another.
    // Each worker knows only its own node's URL: the other nodes it learns from the
    // cluster (the server's INFO), as a worker given one URL of a cluster would.
    let logs = tempfile::tempdir().expect("log dir");
    let log_of = |name: &str| logs.path().join(format!("{name}.log"));
    let mut on_victim = KillOnDrop(spawn_logged_worker_process(
        &cluster.url(victim),
        &[&worker_args[..], &["--worker-id", "loss-on-victim"]].concat(),
        &log_of("loss-on-victim"),
    ));
    let mut on_other = KillOnDrop(spawn_logged_worker_process(
        &cluster.url(other),
        &[&worker_args[..], &["--worker-id", "loss-on-other"]].concat(),
        &log_of("loss-on-other"),
    ));
    // High priority: it runs ahead of the backlog, before the new version is deployed.
    let swap_before = Job::json("swap", &json!({"before": true}))
        .expect("job")
        .queue("loss")
        .priority(jobbox::MAX_PRIORITY);
    client.enqueue(&swap_before).await.expect("enqueue");

    let started = std::time::Instant::now();
    super::faults::until_results(&client, (JOBS / 2) as u64, Duration::from_secs(120)).await;
    let before = super::faults::results_stored(&client).await;
    let killed = std::time::Instant::now();
    let killed_at = chrono::Utc::now();
    cluster.kill(victim);
    super::faults::until_results(&client, before + 1, Duration::from_secs(60)).await;
    let kill_to_result = killed.elapsed();
    // Routes and hot swap while the node is down.
    deploy_guest(&client, "swap", guests::ECHO_V2).await;
    let swap_after = Job::json("swap", &json!({"after": true}))
        .expect("job")
        .queue("loss");
    // Right after the kill the jobs stream may be electing a leader: the client sends
    // the job again by itself until one answers (ENQUEUE_RETRY_FOR).
    client
        .enqueue(&swap_after)
        .await
        .expect("enqueue during the failover");

    super::faults::until_results(&client, (JOBS * 3 / 4) as u64, Duration::from_secs(120)).await;
    cluster.restart(victim);
    let restarted = std::time::Instant::now();
    super::faults::until_results(&client, JOBS as u64 + 2, Duration::from_secs(120)).await;
    let all_done = started.elapsed();
    let recovery = tokio::time::timeout(Duration::from_secs(60), async {
        while !all_replicas_current(&client).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(recovery.is_ok(), "the restarted node never caught up");
    let to_recovery = restarted.elapsed();
    wait_settled_loss(&client).await;
    // Both workers heartbeat again since the kill (the one on the killed node after
    // reconnecting to another), as read from the workers bucket's leader.
    let mut seen = Vec::new();
    let mut fresh = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fresh < 2 && tokio::time::Instant::now() < deadline {
        match client.workers().await {
            Ok(workers) => {
                seen = workers
                    .iter()
                    .map(|w| (w.worker_id.clone(), w.heartbeat_at))
                    .collect();
                fresh = workers
                    .iter()
                    .filter(|w| w.worker_id.starts_with("loss-") && w.heartbeat_at > killed_at)
                    .count();
            }
            Err(e) => println!("reading the workers: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if fresh < 2 {
        for name in ["loss-on-victim", "loss-on-other"] {
            let log = std::fs::read_to_string(log_of(name)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            println!("--- last lines of {name}'s log:");
            for line in tail.iter().rev() {
                println!("{line}");
            }
        }
    }
    assert_eq!(
        fresh, 2,
        "both workers heartbeat again after the kill at {killed_at}: {seen:?}"
    );
    for (name, process) in [
        ("on the killed node", &mut on_victim),
        ("on another", &mut on_other),
    ] {
        assert!(
            matches!(process.0.try_wait(), Ok(None)),
            "the worker {name} exited during the node loss"
        );
    }

    let swapped_before = wait_result(&client, &swap_before.id, Duration::from_secs(10)).await;
    assert_eq!(
        swapped_before.result.as_deref(),
        Some(swap_before.payload.as_slice())
    );
    let swapped_after = wait_result(&client, &swap_after.id, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(swapped_after.result.as_deref().unwrap_or_default());
    assert!(
        text.starts_with(r#"{"v":2,"#),
        "the new version ran: {text}"
    );

    let results = super::faults::results_of(&client, &jobs).await;
    for stored in results.values() {
        assert_eq!(
            stored.result.status,
            JobStatus::Completed,
            "{}",
            brief(&stored.result)
        );
    }
    let trails =
        super::faults::trails_once_ended(&client, &jobs, &results, Duration::from_secs(30)).await;
    let runs = super::faults::one_end_each(&trails, &jobs);
    let duplicates: usize = runs
        .iter()
        .filter(|(started, _)| **started > 1)
        .map(|(_, jobs)| jobs)
        .sum();
    println!(
        "R3, {JOBS} jobs, 2 worker processes, node {leader} (jobs stream leader) killed at \
         {before} results: {} results, {duplicates} jobs started more than once (none after \
         its result), jobs by STARTED count {runs:?}; kill to first result after it \
         {kill_to_result:?}; all done {all_done:?} after the start; restart to every \
         replica current {to_recovery:?}",
        results.len()
    );
}

/// Waits until the loss test's queue has nothing pending or unacknowledged.
async fn wait_settled_loss(client: &Client) {
    jobbox_tests::wait_settled(client, "loss", Duration::from_secs(60)).await;
}

#[test]
fn bench_runs_worker_processes_against_a_local_three_node_cluster() {
    let out = std::process::Command::new(jobbox_bin())
        .args([
            "bench",
            "--cluster",
            "--workers",
            "2",
            "-n",
            "300",
            "-c",
            "8",
        ])
        .args(["--echo-wasm", guests::ECHO, "-o", "json"])
        .env_remove("JOBBOX_NATS_URL")
        .output()
        .expect("run jobbox bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["completed"], 300, "{report}");
    assert_eq!(report["replicas"], 3, "{report}");
    assert_eq!(report["workers"], 2, "{report}");
    // Both the bench's processes (itself and its two workers) and the three nodes
    // were measured.
    for cpu in ["cpu_s_per_1000_bench", "cpu_s_per_1000_nats"] {
        assert!(
            report[cpu].as_f64().is_some_and(|s| s > 0.0),
            "{cpu}: {report}"
        );
    }
}
