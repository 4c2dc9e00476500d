//! The `jobbox` command line: one module per command.

/// Like `println!`, but a failed write (a closed pipe: `jobbox result … | head`) is an
/// error returned with `?`, not a panic; `main` ends quietly on a broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod admin;
mod batch;
mod bench;
mod bench_transport;
mod dashboard;
mod dev;
mod enqueue;
mod events;
mod format;
mod handler;
mod jobs;
mod local_nats;
mod run;
mod schedule;
mod worker;
mod worker_processes;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The NATS server used when none is given.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// jobbox: run untrusted job handlers in a WebAssembly sandbox, fed by NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "jobbox", version, about, long_about = None)]
pub struct Cli {
    /// How to print results: text for people, json for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// More log output (repeat for more).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How to write logs (to stderr): text (coloured only on a terminal) or one JSON
    /// object per line, for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "JOBBOX_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// JSON, for scripts.
    Json,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event for people; ANSI colours only when stderr is a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the NATS server is.
#[derive(Debug, Args)]
pub struct NatsArgs {
    /// NATS server URL; several, comma-separated, for a cluster (any one of them is
    /// enough to connect; after a loss the client reconnects to any).
    #[arg(long, env = "JOBBOX_NATS_URL", default_value = DEFAULT_NATS_URL, global = true)]
    nats_url: String,
    /// Copies of each stream and bucket jobbox creates where missing: 1 on one server,
    /// 3 on a cluster. Existing ones keep theirs (`jobbox admin layout --replicas`
    /// changes them).
    /// (Default 1.)
    #[arg(long, env = "JOBBOX_REPLICAS", global = true,
          value_parser = clap::value_parser!(u8).range(1..=jobbox::layout::MAX_REPLICAS as i64))]
    replicas: Option<u8>,
}

impl NatsArgs {
    /// Connects and makes sure jobbox's streams and buckets exist.
    pub async fn connect(&self) -> anyhow::Result<jobbox::Client> {
        Ok(jobbox::Client::connect_with(&self.nats_url, &self.options()).await?)
    }

    /// The replicas asked for with `--replicas` / `JOBBOX_REPLICAS`, if any.
    pub fn replicas(&self) -> Option<usize> {
        self.replicas.map(usize::from)
    }

    /// The client options these arguments describe.
    pub fn options(&self) -> jobbox::ClientOptions {
        jobbox::ClientOptions {
            replicas: self.replicas.map_or(1, usize::from),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The demo: start a local NATS server, deploy the example handlers, run a worker.
    Dev(dev::DevArgs),
    /// Run jobs from one or more queues.
    Worker(worker::WorkerArgs),
    /// Deploy and list handler components.
    Handler(handler::HandlerArgs),
    /// Enqueue a job.
    Enqueue(enqueue::EnqueueArgs),
    /// Print a job's result.
    Result(enqueue::ResultArgs),
    /// Print job events.
    Events(events::EventsArgs),
    /// A job's status, attempts and timestamps.
    Status(jobs::StatusArgs),
    /// Cancel a job: a pending one never runs, a running one is stopped.
    Cancel(jobs::CancelArgs),
    /// Live workers (from their heartbeats).
    Workers(jobs::ListArgs),
    /// Pending, running, completed, failed and dead-letter counts per queue.
    Stats(jobs::ListArgs),
    /// The dead-letter queue: list and replay.
    Dlq(jobs::DlqArgs),
    /// Batches: enqueue many jobs as one, follow, wait for and cancel them.
    Batch(batch::BatchArgs),
    /// Recurring jobs: add, list, show, pause, resume, rm, trigger.
    Schedule(schedule::ScheduleArgs),
    /// Run a handler once, locally, without NATS: try a handler before deploying it.
    Run(run::RunArgs),
    /// Measure throughput and latency of echo jobs through a real worker.
    Bench(bench::BenchArgs),
    /// Serve the web dashboard: queues, workers, jobs, handlers, dead letters.
    Dashboard(dashboard::DashboardArgs),
    /// Operate a deployment: change the layout's replicas.
    Admin(admin::AdminArgs),
}

impl Cli {
    /// Runs the chosen command; the exit code says whether it succeeded.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let output = self.output;
        match self.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Handler(args) => handler::run(args, output).await,
            Command::Enqueue(args) => enqueue::enqueue(args, output).await,
            Command::Result(args) => enqueue::result(args, output).await,
            Command::Events(args) => events::run(args, output).await,
            Command::Status(args) => jobs::status(args, output).await,
            Command::Cancel(args) => jobs::cancel(args, output).await,
            Command::Workers(args) => jobs::workers(args, output).await,
            Command::Stats(args) => jobs::stats(args, output).await,
            Command::Dlq(args) => jobs::dlq(args, output).await,
            Command::Batch(args) => batch::run(args, output).await,
            Command::Schedule(args) => schedule::run(args, output).await,
            Command::Run(args) => run::run(args, output).await,
            Command::Bench(args) => bench::run(args, output).await,
            Command::Dashboard(args) => dashboard::run(args).await,
            Command::Admin(args) => admin::run(args, output).await,
        }
    }
}

/// Parses a size like `64MiB`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("expected a size like 64MiB: {e}"))
}

/// Parses fuel: a number (underscores allowed) or "unlimited".
pub(crate) fn parse_fuel(text: &str) -> Result<u64, String> {
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(u64::MAX);
    }
    text.replace('_', "")
        .parse()
        .map_err(|e| format!("expected a number or \"unlimited\": {e}"))
}

/// Sets up logging to stderr; `RUST_LOG` overrides the verbosity flags.
pub fn init_tracing(verbose: u8, format: LogFormat) {
    use std::io::IsTerminal as _;
    let default = match verbose {
        0 => "warn,jobbox_host=info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // A log line that cannot be written (stderr closed: `jobbox worker 2>&1 | head`)
    // is dropped; reporting it would panic on the same closed stream.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub use crate::causes::error_line;
