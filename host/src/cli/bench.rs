//! `jobbox bench`: enqueue N echo jobs, run them through an in-process worker (or
//! `--workers N` worker processes) over a real NATS server or cluster, and report
//! throughput and enqueue → result latency (`--transport`: the same writes without a
//! worker, the ceiling).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt;
use jobbox::{Job, JobResult, JobStatus, wire};
use tokio_util::sync::CancellationToken;

use super::Output;
use super::bench_transport as transport;
use super::local_nats::LocalServers;
use super::worker_processes::WorkerProcesses;
use crate::registry::{DeployOptions, deploy};
use crate::worker::{NativeHandlers, Worker, WorkerConfig, native_echo};

/// Jobs enqueued per pipelined batch in throughput mode.
const ENQUEUE_BATCH: usize = 500;

/// Arguments of `jobbox bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Use this NATS server instead of starting a local one (several, comma-separated,
    /// for a cluster).
    #[arg(long, env = "JOBBOX_NATS_URL")]
    nats_url: Option<String>,
    /// Start a local three-node cluster instead of one server.
    #[arg(long, conflicts_with = "nats_url")]
    cluster: bool,
    /// Copies of each stream and bucket to create (default: 3 with --cluster, else 1;
    /// an existing layout keeps its own). R1 against R3 is the cost of replication.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=jobbox::layout::MAX_REPLICAS as i64))]
    replicas: Option<u8>,
    /// Run the jobs on this many `jobbox worker` processes (each with --concurrency,
    /// spread over the cluster's nodes) instead of a worker inside the bench process.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64),
          conflicts_with_all = ["transport", "handler", "metrics_addr", "otlp_endpoint"])]
    workers: Option<u16>,
    /// The echo handler to run (default: target/wasm32-wasip2/release/example_echo.wasm).
    #[arg(long)]
    echo_wasm: Option<PathBuf>,
    /// Jobs to run.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    jobs: usize,
    /// Worker concurrency.
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: u32,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Enqueue at this many jobs/s (one job per tick, sent whether or not the ones
    /// before are stored yet) instead of as fast as possible;
    /// use about half the measured throughput to measure latency at half load.
    #[arg(long)]
    rate: Option<u32>,
    /// Run the echo component (`wasm`) or a native no-op echo through the same
    /// pipeline (`native`), so the sandbox's share is a ratio of two runs.
    #[arg(long, value_enum, default_value_t = HandlerKind::Wasm)]
    handler: HandlerKind,
    /// Messages each lane fetches ahead of free slots (default: the concurrency).
    #[arg(long)]
    prefetch: Option<u32>,
    /// Measure the raw NATS ceiling instead: the same enqueue, then a bare consumer
    /// making a job's stored writes (STARTED, result, terminal event, ack) with
    /// `--concurrency` jobs in flight, and no worker.
    #[arg(long, conflicts_with_all = ["rate", "handler"])]
    transport: bool,
    /// Enqueue all jobs as one batch (`Client::submit_batch`) and also report when
    /// the batch record ended: the batch machinery's cost is the ratio to a run
    /// without it.
    #[arg(long, conflicts_with_all = ["rate", "transport"])]
    batch: bool,
    /// Give up waiting for results after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    timeout: Duration,
    /// Keep and serve the worker's Prometheus metrics here while benchmarking
    /// (their cost is the ratio to a run without).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Export the worker's job spans to this OTLP/HTTP collector while benchmarking.
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Send every job with a `traceparent` (its own trace), as a traced enqueuer does.
    #[arg(long)]
    traced: bool,
}

/// Which handler a bench run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum HandlerKind {
    /// The echo example component, in the sandbox.
    Wasm,
    /// A native echo function, no sandbox.
    Native,
}

/// CPU time a process used, from `/proc/<pid>/stat` (utime + stime).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// What a bench run measured.
#[derive(Debug, serde::Serialize)]
struct Report {
    jobs: usize,
    completed: usize,
    failed: usize,
    concurrency: u32,
    elapsed_s: f64,
    jobs_per_s: f64,
    latency_ms: Percentiles,
    rate: Option<u32>,
    handler: HandlerKind,
    mode: &'static str,
    /// Jobs enqueued as one batch.
    batch: bool,
    /// From the start to the batch record marked ended (with `--batch`).
    batch_ended_s: Option<f64>,
    /// Copies of each stream the jobs went through.
    replicas: usize,
    /// Worker processes (with `--workers`; none: the worker ran in the bench process).
    workers: Option<u16>,
    /// CPU-seconds per 1,000 jobs of this process (worker, enqueuer and watcher) and
    /// of the worker processes.
    cpu_s_per_1000_bench: Option<f64>,
    /// CPU-seconds per 1,000 jobs of the local nats-server(s) (when started here).
    cpu_s_per_1000_nats: Option<f64>,
}

#[derive(Debug, serde::Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

pub async fn run(args: BenchArgs, output: Output) -> anyhow::Result<ExitCode> {
    // Only a wasm pipeline run needs the component (read before anything starts).
    let wasm = if args.handler == HandlerKind::Wasm && !args.transport {
        let echo = args.echo_wasm.clone().unwrap_or_else(default_echo_path);
        Some(std::fs::read(&echo).with_context(|| {
            format!(
                "failed to read the echo handler {} (build it: cargo build --release --target wasm32-wasip2 -p example-echo, or pass --echo-wasm)",
                echo.display()
            )
        })?)
    } else {
        None
    };
    let (local, url) = match &args.nats_url {
        Some(url) => (None, url.clone()),
        None => {
            let local = LocalServers::start(0, args.cluster).await?;
            let url = local.urls();
            (Some(local), url)
        }
    };
    let replicas = args.replicas.map_or_else(
        || local.as_ref().map_or(1, LocalServers::replicas),
        usize::from,
    );
    let client = jobbox::Client::connect_with(&url, &jobbox::ClientOptions { replicas }).await?;
    let queue = format!("bench-{}", ulid::Ulid::new().to_string().to_lowercase());
    if let Some(wasm) = wasm {
        deploy(&client, "bench-echo", wasm, DeployOptions::default()).await?;
    }

    let mut config = WorkerConfig::new(vec![queue.clone()]);
    config.concurrency = args.concurrency.max(1);
    config.prefetch = args.prefetch;
    config.metrics_addr = args.metrics_addr;
    config.otlp_endpoint.clone_from(&args.otlp_endpoint);
    if args.handler == HandlerKind::Native {
        config.native = NativeHandlers::default().with("bench-echo", native_echo());
    }
    let shutdown = CancellationToken::new();
    let mut processes = None;
    let worker_task = if args.transport {
        None
    } else if let Some(count) = args.workers {
        let spawned = WorkerProcesses::spawn(count.into(), &url, &queue, &config)?;
        spawned.wait_ready(&client, args.timeout).await?;
        processes = Some(spawned);
        None
    } else {
        let worker = Worker::new(client.clone(), config).await?;
        Some(tokio::spawn(worker.run(shutdown.clone())))
    };

    let payload = serde_json::to_vec(
        &serde_json::json!({ "data": "x".repeat(args.payload_bytes.saturating_sub(12)) }),
    )?;
    if !args.transport {
        // Enough jobs at once to reach every worker process.
        let warm_jobs = usize::from(args.workers.unwrap_or(1)) * args.concurrency.max(1) as usize;
        warm_up(&client, &queue, &payload, warm_jobs, args.timeout).await?;
    }

    // Results are seen through a watch; a transport run times its own acks.
    let mut results = if args.transport {
        None
    } else {
        Some(
            client
                .layout()
                .results
                .watch_all()
                .await
                .map_err(|e| anyhow::anyhow!("failed to watch results: {e}"))?,
        )
    };
    let jobs: Vec<Job> = (0..args.jobs)
        .map(|_| Job::new("bench-echo", payload.clone()).queue(queue.as_str()))
        .map(|job| if args.traced { traced(job) } else { job })
        .collect();

    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let enqueue_client = client.clone();
    let rate = args.rate;
    let batch_id = args.batch.then(jobbox::new_id);
    let enqueue_batch_id = batch_id.clone();
    let mut bench_pids = vec![std::process::id()];
    bench_pids.extend(
        processes
            .as_ref()
            .map(WorkerProcesses::pids)
            .unwrap_or_default(),
    );
    let nats_pids = local.as_ref().map(LocalServers::pids).unwrap_or_default();
    let cpu_before = (cpu_of(&bench_pids), cpu_of(&nats_pids));
    let start = Instant::now();
    let enqueuer = tokio::spawn(async move {
        if let Some(batch_id) = enqueue_batch_id {
            let now = Instant::now();
            for n in 0..jobs.len() as u64 {
                let _ = sent_tx.send((jobbox::batch_job_id(&batch_id, n), now));
            }
            let spec = jobbox::BatchSpec::new("bench", jobs).id(batch_id);
            enqueue_client.submit_batch(spec).await?;
            return anyhow::Ok(());
        }
        match rate {
            // Open loop: a job is sent at each tick whether or not the ones before
            // it are stored yet, as independent users would send them. Waiting for
            // each enqueue in turn would cap the rate at one per round trip and hide
            // the queueing a loaded server adds (coordinated omission).
            Some(rate) => {
                let mut ticker =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
                let mut in_flight = futures::stream::FuturesUnordered::new();
                for job in jobs {
                    loop {
                        tokio::select! {
                            _ = ticker.tick() => break,
                            Some(stored) = in_flight.next() => stored?,
                        }
                    }
                    let _ = sent_tx.send((job.id.clone(), Instant::now()));
                    let client = enqueue_client.clone();
                    in_flight.push(async move { client.enqueue(&job).await.map(drop) });
                }
                while let Some(stored) = in_flight.next().await {
                    stored?;
                }
            }
            None => {
                for batch in jobs.chunks(ENQUEUE_BATCH) {
                    let now = Instant::now();
                    for job in batch {
                        let _ = sent_tx.send((job.id.clone(), now));
                    }
                    for outcome in enqueue_client.enqueue_many(batch).await? {
                        outcome?;
                    }
                }
            }
        }
        anyhow::Ok(())
    });

    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(args.jobs);
    let mut latencies = Vec::with_capacity(args.jobs);
    let (mut completed, mut failed) = (0, 0);
    let deadline = tokio::time::Instant::now() + args.timeout;
    if args.transport {
        let in_flight = args.concurrency.max(1) as usize;
        let template = Job::new("bench-echo", payload.clone()).queue(queue.as_str());
        let consume = transport::consume(&client, &queue, args.jobs, in_flight, &template);
        let done = tokio::time::timeout(args.timeout, consume)
            .await
            .map_err(|_| anyhow::anyhow!("the transport run took over {:?}", args.timeout))??;
        while let Ok((id, at)) = sent_rx.try_recv() {
            sent.insert(id, at);
        }
        for (id, at) in done {
            if let Some(sent_at) = sent.remove(&id) {
                latencies.push(at.duration_since(sent_at));
            }
            completed += 1;
        }
    }
    while let Some(results) = results.as_mut()
        && completed + failed < args.jobs
    {
        let entry = tokio::select! {
            entry = results.next() => entry,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let Some(entry) = entry else { break };
        let entry = entry.map_err(|e| anyhow::anyhow!("results watch failed: {e}"))?;
        let received = Instant::now();
        while let Ok((id, at)) = sent_rx.try_recv() {
            sent.insert(id, at);
        }
        let Some(at) = sent.remove(&entry.key) else {
            continue;
        };
        let result: JobResult = wire::decode(&entry.value)?;
        if result.status == JobStatus::Completed {
            completed += 1;
        } else {
            failed += 1;
        }
        latencies.push(received.duration_since(at));
    }
    let elapsed = start.elapsed();
    let per_1000 = |before: Option<f64>, after: Option<f64>| {
        Some((after? - before?) * 1000.0 / (completed + failed).max(1) as f64)
    };
    let cpu_bench = per_1000(cpu_before.0, cpu_of(&bench_pids));
    let cpu_nats = per_1000(cpu_before.1, cpu_of(&nats_pids));
    enqueuer.await.context("enqueuer panicked")??;
    let batch_ended_s = match &batch_id {
        Some(batch_id) => {
            client.wait_batch(batch_id, args.timeout).await?;
            Some(start.elapsed().as_secs_f64())
        }
        None => None,
    };
    shutdown.cancel();
    if let Some(worker_task) = worker_task {
        let _ = worker_task.await;
    }
    if let Some(processes) = processes {
        processes.stop().await;
    }

    latencies.sort();
    let report = Report {
        jobs: args.jobs,
        completed,
        failed,
        concurrency: args.concurrency,
        elapsed_s: elapsed.as_secs_f64(),
        jobs_per_s: (completed + failed) as f64 / elapsed.as_secs_f64(),
        latency_ms: Percentiles {
            p50: percentile(&latencies, 0.50),
            p90: percentile(&latencies, 0.90),
            p99: percentile(&latencies, 0.99),
            max: percentile(&latencies, 1.0),
        },
        rate: args.rate,
        handler: args.handler,
        mode: if args.transport {
            "transport"
        } else {
            "pipeline"
        },
        replicas,
        workers: args.workers,
        cpu_s_per_1000_bench: cpu_bench,
        cpu_s_per_1000_nats: cpu_nats,
        batch: args.batch,
        batch_ended_s,
    };
    match output {
        Output::Json => outln!("{}", serde_json::to_string(&report)?),
        Output::Text => {
            outln!(
                "{}{} jobs ({} completed, {} failed) in {:.2} s with concurrency {}{}, R{}: {:.0} jobs/s",
                if args.transport {
                    "transport ceiling: "
                } else {
                    ""
                },
                report.jobs,
                report.completed,
                report.failed,
                report.elapsed_s,
                report.concurrency,
                args.workers
                    .map(|n| format!(" on each of {n} worker processes"))
                    .unwrap_or_default(),
                report.replicas,
                report.jobs_per_s
            );
            outln!(
                "enqueue → result latency: p50 {:.2} ms · p90 {:.2} ms · p99 {:.2} ms · max {:.2} ms",
                report.latency_ms.p50,
                report.latency_ms.p90,
                report.latency_ms.p99,
                report.latency_ms.max
            );
            if let Some(ended) = report.batch_ended_s {
                outln!("as one batch: the batch record ended {ended:.2} s after the start");
            }
            if let (Some(bench), Some(nats)) = (cpu_bench, cpu_nats) {
                outln!(
                    "CPU per 1,000 jobs: {bench:.3} s jobbox (worker + enqueuer + watcher) + {nats:.3} s nats-server{} = {:.3} s",
                    if nats_pids.len() > 1 { "s" } else { "" },
                    bench + nats
                );
            }
        }
    }
    Ok(if completed == args.jobs {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `count` jobs before the clock starts, so that the figures leave out what
/// happens once per worker: the handler's load and compile, the first pull,
/// connection set-up.
async fn warm_up(
    client: &jobbox::Client,
    queue: &str,
    payload: &[u8],
    count: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let jobs: Vec<Job> = (0..count.max(1))
        .map(|_| Job::new("bench-echo", payload.to_vec()).queue(queue))
        .collect();
    for outcome in client.enqueue_many(&jobs).await? {
        outcome?;
    }
    for job in &jobs {
        let result = client
            .wait_result(&job.id, timeout)
            .await
            .context("a warm-up job did not finish")?;
        anyhow::ensure!(
            result.status == JobStatus::Completed,
            "a warm-up job ended {:?}: {}",
            result.status,
            result.error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// CPU-seconds used so far by all of `pids` (None when one cannot be read, or none
/// is given).
fn cpu_of(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| cpu_seconds(*pid)).sum()
}

/// `job` in a trace of its own: trace id = its ULID's 128 bits, sampled.
fn traced(job: Job) -> Job {
    let id = job.id.parse::<ulid::Ulid>().map_or(1, u128::from).max(1);
    match jobbox::TraceContext::new(id.to_be_bytes(), [0x6a; 8], true) {
        Some(context) => job.trace(context),
        None => job,
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn default_echo_path() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("wasm32-wasip2/release/example_echo.wasm")
}
