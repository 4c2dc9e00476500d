//! Compiling once per fleet: workers holding one fleet key share compiled handlers
//! through the `jobbox_artifacts` object store, sealed with HMAC-SHA256 under the key.
//! A deploy asks the fleet to compile before it switches the route; several workers
//! loading one new digest compile it once; a tampered, foreign, moved or unsealed
//! artifact is refused and replaced; without a key nothing is shared.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use jobbox::{Client, HandlerLimits, Job, JobStatus, nats};
use jobbox_host::registry::fleet::seal;
use jobbox_host::registry::{FleetArtifacts, FleetKey, HandlerLoader, deploy};
use jobbox_host::sandbox::{EngineConfig, Handler, JobControl, Sandbox};
use jobbox_host::worker::WorkerConfig;
use jobbox_tests::http::{get, parse_metrics, sum};
use jobbox_tests::{NatsServer, RunningWorker, brief, free_port, guests, wait_result};
use serde_json::json;
use tokio::io::AsyncReadExt as _;

fn key(byte: u8) -> FleetKey {
    FleetKey::from_bytes(vec![byte; 32]).expect("key")
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn small_sandbox() -> Sandbox {
    Sandbox::new(EngineConfig {
        concurrency: 2,
        max_memory_bytes: HandlerLimits::default().memory_bytes,
        pooling: false,
    })
    .expect("sandbox")
}

/// A worker's loader on its own sandbox, sharing under `key` as `id`.
fn fleet_loader(client: &Client, key: &FleetKey, id: &str) -> HandlerLoader {
    let sandbox = small_sandbox();
    let fleet = FleetArtifacts::new(client.clone(), key.clone(), sandbox.engine(), id.into());
    HandlerLoader::new(client.clone(), sandbox).with_fleet(fleet)
}

/// The artifact name of `digest` for the engine every `small_sandbox` has.
fn artifact_name(digest: &str) -> String {
    let id = jobbox_host::registry::fleet::engine_id(small_sandbox().engine());
    nats::artifact_name(digest, &id).expect("valid name")
}

async fn read_artifact(client: &Client, name: &str) -> Option<Vec<u8>> {
    let mut object = client.layout().artifacts.get(name).await.ok()?;
    let mut bytes = Vec::new();
    object.read_to_end(&mut bytes).await.expect("read artifact");
    Some(bytes)
}

async fn write_artifact(client: &Client, name: &str, bytes: &[u8]) {
    let mut reader = bytes;
    client
        .layout()
        .artifacts
        .put(name, &mut reader)
        .await
        .expect("write artifact");
}

async fn artifact_names(client: &Client) -> Vec<String> {
    let mut list = client.layout().artifacts.list().await.expect("list");
    let mut names = Vec::new();
    while let Some(info) = list.next().await {
        names.push(info.expect("object info").name);
    }
    names
}

async fn run_echo(loader: &HandlerLoader, handler: &Handler) -> Vec<u8> {
    let job = Job::json("echo", &json!({"shared": true})).expect("encodes");
    let outcome = loader
        .sandbox()
        .run(
            handler,
            &job,
            HandlerLimits::default(),
            JobControl::default(),
        )
        .await;
    outcome.result.expect("the job runs")
}

/// Scrapes `addr` until `jobbox_handlers_loaded` is `loaded`, or panics after 60 s.
async fn scrape_loaded(addr: &str, loaded: f64) -> Vec<jobbox_tests::http::Sample> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let samples = parse_metrics(&get(addr, "/metrics").body);
        if sum(&samples, "jobbox_handlers_loaded", &[]) == loaded {
            return samples;
        }
        assert!(Instant::now() < deadline, "worker at {addr} never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn loads(samples: &[jobbox_tests::http::Sample], source: &str) -> f64 {
    sum(samples, "jobbox_handler_loads_total", &[("source", source)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_is_compiled_once_by_the_fleet_before_its_route_changes() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let fleet_key = key(7);
    let mut addrs = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = WorkerConfig::new(vec!["shared".to_string()]);
        config.concurrency = 2;
        config.ack_wait = Duration::from_secs(5);
        config.shutdown_grace = Duration::from_secs(10);
        config.metrics_addr = Some(addr.parse().expect("socket address"));
        config.fleet_key = Some(fleet_key.clone());
        workers.push(RunningWorker::start(&server.url(), config).await);
        addrs.push(addr);
    }

    // The deploy asks as many workers to preload as there are heartbeats.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.workers().await.expect("workers").len() < 2 {
        assert!(Instant::now() < deadline, "the workers never heartbeat");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let wasm = read(guests::ECHO);
    let route = deploy(&client, "echo", wasm.clone(), Default::default())
        .await
        .expect("deploys");
    // Before the route changed, both workers held the handler: one compiled it for
    // the deploy, the other preloaded the artifact.
    let held: f64 = addrs
        .iter()
        .map(|addr| {
            let samples = parse_metrics(&get(addr, "/metrics").body);
            loads(&samples, "compiled") + loads(&samples, "fleet")
        })
        .sum();
    assert_eq!(held, 2.0);
    // By the time the route changed, the fleet had stored the sealed artifact.
    let name = artifact_name(&route.digest);
    let sealed = read_artifact(&client, &name)
        .await
        .expect("the fleet compiled before the route changed");
    let (wasm_size, _) = seal::open(&fleet_key, &name, &sealed).expect("sealed under the key");
    assert_eq!(wasm_size, wasm.len() as u64);

    // Both workers load it; one compiled it (for the deploy), the other read it.
    let mut compiled = 0.0;
    let mut from_fleet = 0.0;
    for addr in &addrs {
        let samples = scrape_loaded(addr, 1.0).await;
        compiled += loads(&samples, "compiled");
        from_fleet += loads(&samples, "fleet");
        assert_eq!(
            sum(&samples, "jobbox_fleet_artifacts_refused_total", &[]),
            0.0
        );
    }
    assert_eq!((compiled, from_fleet), (1.0, 1.0));

    let job = Job::json("echo", &json!({"i": 1}))
        .expect("encodes")
        .queue("shared");
    client.enqueue(&job).await.expect("enqueue");
    let result = wait_result(&client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    for worker in workers {
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_loading_one_new_digest_at_once_compile_it_once() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let digest = client
        .put_handler(&read(guests::WORD_COUNT))
        .await
        .expect("store");
    let fleet_key = key(1);
    let loaders: Vec<HandlerLoader> = (0..3)
        .map(|i| fleet_loader(&client, &fleet_key, &format!("worker-{i}")))
        .collect();
    let loaded = futures::future::join_all(loaders.iter().map(|l| l.load(&digest))).await;
    for handler in loaded {
        handler.expect("loads");
    }
    let compiled: u64 = loaders.iter().map(HandlerLoader::compiled).sum();
    let hits: u64 = loaders.iter().map(|l| l.fleet_stats().hits).sum();
    let published: u64 = loaders.iter().map(|l| l.fleet_stats().published).sum();
    assert_eq!(
        (compiled, hits, published),
        (1, 2, 1),
        "{:?}",
        loaders
            .iter()
            .map(HandlerLoader::fleet_stats)
            .collect::<Vec<_>>()
    );
}

/// Stores a good artifact of echo under `fleet_key`, replaces it with what `bad`
/// makes of it, and checks that the next worker refuses it, compiles, runs the
/// handler and stores a good one, which the worker after that loads.
async fn refused_and_replaced(case: &str, bad: impl AsyncFnOnce(&Client, &[u8]) -> Vec<u8>) {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let digest = client
        .put_handler(&read(guests::ECHO))
        .await
        .expect("store");
    let fleet_key = key(1);
    let name = artifact_name(&digest);
    let first = fleet_loader(&client, &fleet_key, "first");
    first.load(&digest).await.expect("compiles");
    assert_eq!(first.fleet_stats().published, 1, "{case}");
    let good = read_artifact(&client, &name).await.expect("stored");

    write_artifact(&client, &name, &bad(&client, &good).await).await;

    let second = fleet_loader(&client, &fleet_key, "second");
    let handler = second.load(&digest).await.expect("compiles instead");
    let stats = second.fleet_stats();
    assert_eq!(
        (
            stats.refused,
            stats.hits,
            second.compiled(),
            stats.published
        ),
        (1, 0, 1, 1),
        "{case}: {stats:?}"
    );
    assert_eq!(run_echo(&second, &handler).await, br#"{"shared":true}"#);
    let replaced = read_artifact(&client, &name).await.expect("stored again");
    assert!(
        seal::open(&fleet_key, &name, &replaced).is_ok(),
        "{case}: replaced by a good one"
    );

    let third = fleet_loader(&client, &fleet_key, "third");
    let handler = third.load(&digest).await.expect("loads");
    let stats = third.fleet_stats();
    assert_eq!(
        (stats.refused, stats.hits, third.compiled()),
        (0, 1, 0),
        "{case}: {stats:?}"
    );
    assert_eq!(run_echo(&third, &handler).await, br#"{"shared":true}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_artifact_is_refused_and_replaced() {
    refused_and_replaced("payload byte flipped", async |_, good: &[u8]| {
        let mut bad = good.to_vec();
        let middle = seal::HEADER_LEN + (bad.len() - seal::HEADER_LEN) / 2;
        bad[middle] ^= 0x40;
        bad
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_sealed_under_a_foreign_key_is_refused_and_replaced() {
    refused_and_replaced("foreign key", async |client: &Client, good: &[u8]| {
        // The same native code, sealed under the right name but another key.
        let digest = jobbox::digest_of(&read(guests::ECHO));
        let name = artifact_name(&digest);
        assert!(read_artifact(client, &name).await.is_some());
        let (wasm_size, payload) = seal::open(&key(1), &name, good).expect("opens");
        seal::seal(&key(2), &name, wasm_size, payload)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_of_another_handler_moved_under_this_name_is_refused_and_replaced() {
    refused_and_replaced("moved", async |client: &Client, _: &[u8]| {
        // A good artifact of echo-v2, copied to echo's name.
        let digest = client
            .put_handler(&read(guests::ECHO_V2))
            .await
            .expect("store");
        fleet_loader(client, &key(1), "other")
            .load(&digest)
            .await
            .expect("compiles");
        read_artifact(client, &artifact_name(&digest))
            .await
            .expect("stored")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_wasm_in_the_artifact_bucket_is_refused_and_replaced() {
    refused_and_replaced("plain wasm", async |_, _: &[u8]| read(guests::ECHO)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsealed_native_code_in_the_artifact_bucket_is_refused_and_replaced() {
    refused_and_replaced("raw .cwasm", async |_, _: &[u8]| {
        // What an attacker would most like a worker to deserialize: real wasmtime
        // output for this very engine, without a seal.
        let handler = Handler::compile(&small_sandbox(), &read(guests::ECHO)).expect("compiles");
        handler.component().serialize().expect("serializes")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_never_finishes_is_waited_for_a_bounded_time_only() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let digest = client
        .put_handler(&read(guests::ECHO))
        .await
        .expect("store");
    let name = artifact_name(&digest);
    // Anyone on the account can write a claim; one that says "compiling" forever
    // must not keep a worker from loading.
    let claim = jobbox::wire::encode(&json!({"worker_id": "ghost", "state": "compiling"}))
        .expect("encodes");
    client
        .layout()
        .compiles
        .create(&name, claim.into())
        .await
        .expect("claim");
    let sandbox = small_sandbox();
    let fleet = FleetArtifacts::new(client.clone(), key(1), sandbox.engine(), "late".into())
        .with_claim_bound(Duration::from_secs(2));
    let loader = HandlerLoader::new(client.clone(), sandbox).with_fleet(fleet);
    let handler = loader.load(&digest).await.expect("loads after the bound");
    assert_eq!((loader.compiled(), loader.fleet_stats().published), (1, 1));
    assert_eq!(run_echo(&loader, &handler).await, br#"{"shared":true}"#);

    // A claim marked done with no artifact behind it is taken over at once.
    let digest = client
        .put_handler(&read(guests::ECHO_V2))
        .await
        .expect("store");
    let done =
        jobbox::wire::encode(&json!({"worker_id": "ghost", "state": "done"})).expect("encodes");
    client
        .layout()
        .compiles
        .create(artifact_name(&digest), done.into())
        .await
        .expect("claim");
    loader.load(&digest).await.expect("loads");
    assert_eq!((loader.compiled(), loader.fleet_stats().published), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fleet_key_nothing_is_shared() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let worker = RunningWorker::on(&server.url(), &["alone"], 2).await;
    // No worker holds a key: the deploy's compile request has no responder, and
    // the deploying process never writes an artifact itself.
    let route = deploy(&client, "echo", read(guests::ECHO), Default::default())
        .await
        .expect("deploys");
    let job = Job::json("echo", &json!({"i": 1}))
        .expect("encodes")
        .queue("alone");
    client.enqueue(&job).await.expect("enqueue");
    let result = wait_result(&client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    assert_eq!(
        result.handler_digest.as_deref(),
        Some(route.digest.as_str())
    );
    assert!(artifact_names(&client).await.is_empty());
    let claims: Vec<String> = client
        .layout()
        .compiles
        .keys()
        .await
        .expect("list claims")
        .map(|key| key.expect("a key"))
        .collect()
        .await;
    assert!(claims.is_empty(), "{claims:?}");
    worker.stop().await;
}

/// Anyone who may publish on the fleet's request subjects is hostile until checked:
/// a request that is not one, a digest that is not a digest (a path, a wildcard, a
/// huge one) or names no stored handler gets a refusal, nothing is compiled, claimed
/// or stored, and the worker goes on serving jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_hostile_fleet_requests_are_refused_and_write_nothing() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let mut config = WorkerConfig::new(vec!["hostile".to_string()]);
    config.concurrency = 2;
    config.ack_wait = Duration::from_secs(5);
    config.fleet_key = Some(key(3));
    let worker = RunningWorker::start(&server.url(), config).await;
    let huge = format!(r#"{{"digest":"sha256:{}"}}"#, "a".repeat(100_000));
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json".to_vec(),
        br#"{"digest": 42}"#.to_vec(),
        br#"{"digest":"../../etc/passwd"}"#.to_vec(),
        br#"{"digest":"sha256:*.>"}"#.to_vec(),
        format!(r#"{{"digest":"sha256:{}"}}"#, "0".repeat(64)).into_bytes(),
        huge.into_bytes(),
    ];
    // The worker subscribes to fleet requests as it starts serving.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .nats()
        .request(nats::PRELOAD_SUBJECT, "".into())
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "no worker answers fleet requests"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for subject in [nats::COMPILE_SUBJECT, nats::PRELOAD_SUBJECT] {
        for body in &bodies {
            let reply = tokio::time::timeout(
                Duration::from_secs(30),
                client.nats().request(subject, body.clone().into()),
            )
            .await
            .expect("answered in time")
            .expect("answered");
            let reply: serde_json::Value =
                serde_json::from_slice(&reply.payload).expect("a JSON reply");
            assert!(reply["artifact"].is_null(), "{subject}: {reply}");
            assert!(
                reply["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{subject}: {reply}"
            );
        }
    }
    assert!(artifact_names(&client).await.is_empty());
    let claims: Vec<String> = client
        .layout()
        .compiles
        .keys()
        .await
        .expect("list claims")
        .map(|key| key.expect("a key"))
        .collect()
        .await;
    assert!(claims.is_empty(), "{claims:?}");
    // The worker still serves jobs.
    deploy(&client, "echo", read(guests::ECHO), Default::default())
        .await
        .expect("deploys");
    let job = Job::json("echo", &json!({"after": "hostile requests"}))
        .expect("encodes")
        .queue("hostile");
    client.enqueue(&job).await.expect("enqueue");
    let result = wait_result(&client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    worker.stop().await;
}
