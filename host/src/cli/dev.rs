//! `jobbox dev`: the one-command demo. Starts a local nats-server (or, with
//! `--cluster`, a three-node cluster) unless given a URL, deploys the example
//! handlers, runs a worker, and says how to enqueue a job.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use clap::Args;

use super::local_nats::LocalServers;
use super::worker::shutdown_on_signal;
use crate::dashboard::Dashboard;
use crate::registry::{DeployOptions, deploy};
use crate::worker::{Worker, WorkerConfig};

/// The example handlers `jobbox dev` deploys: (job type, cargo package, wasm file).
const EXAMPLES: [(&str, &str, &str); 3] = [
    ("echo", "example-echo", "example_echo.wasm"),
    (
        "word-count",
        "example-word-count",
        "example_word_count.wasm",
    ),
    ("markdown", "example-markdown", "example_markdown.wasm"),
];

/// Arguments of `jobbox dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Use this NATS server instead of starting one.
    #[arg(long, env = "JOBBOX_NATS_URL")]
    nats_url: Option<String>,
    /// Port for the local nats-server (0 picks a free one); with --cluster, the first
    /// node's (the others take free ports).
    #[arg(long, default_value_t = 4222)]
    port: u16,
    /// Start a local three-node NATS cluster instead of one server, with three copies
    /// of every stream and bucket (the worker connects to all three nodes).
    #[arg(long, conflicts_with = "nats_url")]
    cluster: bool,
    /// Where the example .wasm files are (default: build them with cargo).
    #[arg(long)]
    examples_dir: Option<PathBuf>,
    /// Jobs the worker runs at the same time.
    #[arg(long, short = 'c', default_value_t = 4)]
    concurrency: u32,
    /// Serve the worker's Prometheus metrics at http://<addr>/metrics.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the web dashboard here too, e.g. 127.0.0.1:8080.
    #[arg(long)]
    dashboard: Option<std::net::SocketAddr>,
    /// The token the dashboard's actions (replay, cancel, rollback) need
    /// (default: a fresh random one, printed).
    #[arg(long, env = "JOBBOX_DASHBOARD_TOKEN")]
    dashboard_token: Option<String>,
}

pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    let examples = match &args.examples_dir {
        Some(dir) => dir.clone(),
        None => build_examples()?,
    };
    let (local, url) = match &args.nats_url {
        Some(url) => (None, url.clone()),
        None => {
            let local = LocalServers::start(args.port, args.cluster).await?;
            let url = local.urls();
            (Some(local), url)
        }
    };
    let options = jobbox::ClientOptions {
        replicas: local.as_ref().map_or(1, LocalServers::replicas),
    };
    let client = jobbox::Client::connect_with(&url, &options).await?;
    let mut deployed = Vec::new();
    for (job_type, _, file) in EXAMPLES {
        let path = examples.join(file);
        let wasm = std::fs::read(&path)
            .with_context(|| format!("failed to read example handler {}", path.display()))?;
        deploy(&client, job_type, wasm, DeployOptions::default())
            .await
            .with_context(|| format!("failed to deploy {job_type}"))?;
        deployed.push(job_type);
    }
    let mut config = WorkerConfig::new(vec![jobbox::DEFAULT_QUEUE.to_string()]);
    config.concurrency = args.concurrency.max(1);
    config.metrics_addr = args.metrics_addr;
    // Its own fleet key, in memory only: the demo's worker shares compiled handlers
    // as a fleet would.
    config.fleet_key = Some(crate::registry::FleetKey::generate()?);
    let dashboard = match args.dashboard {
        Some(addr) => {
            let token = super::dashboard::token_of(args.dashboard_token.as_deref())?;
            let dashboard = Dashboard::bind(client.clone(), addr, token.clone()).await?;
            Some((dashboard, token))
        }
        None => None,
    };
    let worker = Worker::new(client, config).await?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "jobbox".into());
    // Any one server of a cluster is enough to connect to.
    let first_url = url.split(',').next().unwrap_or(&url).trim();
    let url_flag = if args.nats_url.is_none() && args.port == 4222 {
        String::new()
    } else {
        format!(" --nats-url {first_url}")
    };
    outln!("jobbox dev is running");
    outln!(
        "  NATS      {url}{}",
        local
            .as_ref()
            .map(|local| format!(" ({})", local.describe()))
            .unwrap_or_default()
    );
    outln!("  handlers  {}", deployed.join(", "));
    outln!(
        "  worker    {} on queue default, {} at a time",
        worker.id(),
        args.concurrency.max(1)
    );
    let stop_dashboard = tokio_util::sync::CancellationToken::new();
    if let Some((dashboard, token)) = dashboard {
        outln!("  dashboard http://{}/", dashboard.local_addr()?);
        if args.dashboard_token.is_none() {
            outln!(
                "  token     {} (for the dashboard's actions)",
                token.expose()
            );
        }
        let stop = stop_dashboard.clone();
        tokio::spawn(async move {
            if let Err(e) = dashboard.serve(stop).await {
                tracing::warn!(error = %e, "the dashboard stopped");
            }
        });
    }
    if let Some(addr) = args.metrics_addr {
        outln!("  metrics   http://{addr}/metrics");
    }
    outln!();
    outln!("Try, in another terminal:");
    outln!("  {exe} enqueue word-count --json '{{\"text\":\"a b a\"}}' --wait{url_flag}");
    outln!("  {exe} events{url_flag}");
    outln!("Ctrl-C stops everything.");
    outln!("ready");
    worker.run(shutdown_on_signal()).await?;
    stop_dashboard.cancel();
    drop(local);
    Ok(ExitCode::SUCCESS)
}

/// Builds the example handlers with cargo and returns the directory of the .wasm
/// files. Works from a checkout of the jobbox repository.
fn build_examples() -> anyhow::Result<PathBuf> {
    let root = find_repo_root().context(
        "can't find the jobbox repository to build the examples from: run `jobbox dev` inside \
         the checkout, or pass --examples-dir",
    )?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(&target_dir);
    for (_, package, _) in EXAMPLES {
        cargo.args(["-p", package]);
    }
    eprintln!("building the example handlers (cargo build --target wasm32-wasip2)…");
    let status = cargo.status().context("failed to run cargo")?;
    if !status.success() {
        bail!(
            "building the examples failed; is the target installed? `rustup target add wasm32-wasip2`"
        );
    }
    Ok(target_dir.join("wasm32-wasip2").join("release"))
}

fn find_repo_root() -> Option<PathBuf> {
    let start = std::env::current_dir().ok()?;
    start
        .ancestors()
        .find(|dir| is_repo_root(dir))
        .map(Path::to_path_buf)
}

fn is_repo_root(dir: &Path) -> bool {
    dir.join("Cargo.toml").is_file()
        && dir.join("wit/handler.wit").is_file()
        && dir.join("examples").is_dir()
}
