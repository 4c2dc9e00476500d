//! `jobbox batch enqueue|status|list|cancel|wait`: many jobs followed as one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use jobbox::{BatchJob, BatchSpec, DependencyFailure, Job};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{NatsArgs, Output};

/// Arguments of `jobbox batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(subcommand)]
    command: BatchCommand,
}

#[derive(Debug, Subcommand)]
enum BatchCommand {
    /// Enqueue the jobs of an NDJSON file (one job per line) as one batch.
    Enqueue(EnqueueArgs),
    /// A batch's status, counts and progress.
    Status {
        /// The batch id.
        batch_id: String,
    },
    /// Every batch.
    List,
    /// Cancel a batch: pending jobs never run, running ones are stopped.
    Cancel {
        /// The batch id.
        batch_id: String,
    },
    /// Wait until a batch ended; the exit code is 0 only if every job completed.
    Wait {
        /// The batch id.
        batch_id: String,
        /// Give up after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// Arguments of `jobbox batch enqueue`.
#[derive(Debug, Args)]
struct EnqueueArgs {
    /// A label for the batch.
    #[arg(long)]
    name: String,
    /// The jobs: one JSON object per line, `{"job_type": "echo", "payload": {..}}`
    /// with optional `id`, `queue`, `priority`, `max_retries`, `depends_on` (ids of
    /// other lines or of existing jobs) and `on_dependency_failure` (CANCEL or FAIL).
    #[arg(long)]
    file: PathBuf,
    /// The batch id (default: generated). Enqueueing the same file again with the
    /// same id completes a batch whose first enqueue was cut short.
    #[arg(long)]
    id: Option<String>,
    /// The queue of lines that name none.
    #[arg(long, short = 'q', default_value = jobbox::DEFAULT_QUEUE)]
    queue: String,
    /// Job type to enqueue (with the batch summary as payload) when every job completed.
    #[arg(long)]
    on_success: Option<String>,
    /// Job type to enqueue when some job failed or was dead-lettered.
    #[arg(long)]
    on_failure: Option<String>,
    /// Job type to enqueue when the batch ended, however.
    #[arg(long)]
    on_complete: Option<String>,
}

/// One line of a batch file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    id: Option<String>,
    job_type: String,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    on_dependency_failure: Option<DependencyFailure>,
}

pub async fn run(args: BatchArgs, output: Output) -> anyhow::Result<ExitCode> {
    let nats = &args.nats;
    match args.command {
        BatchCommand::Enqueue(enqueue) => {
            let spec = spec(&enqueue)?;
            let client = nats.connect().await?;
            let enqueued = client.submit_batch(spec).await?;
            match output {
                Output::Json => outln!(
                    "{}",
                    json!({
                        "batch_id": enqueued.batch_id,
                        "jobs": enqueued.job_ids.len(),
                        "added": enqueued.added,
                    })
                ),
                Output::Text => outln!(
                    "batch {} enqueued: {} jobs ({} new)",
                    enqueued.batch_id,
                    enqueued.job_ids.len(),
                    enqueued.added
                ),
            }
        }
        BatchCommand::Status { batch_id } => {
            let batch = nats
                .connect()
                .await?
                .batch(&batch_id)
                .await?
                .with_context(|| format!("batch {batch_id} not found"))?;
            print_one(&batch, output)?;
        }
        BatchCommand::List => {
            let batches = nats.connect().await?.batches().await?;
            match output {
                Output::Json => {
                    let all: Vec<Value> = batches.iter().map(document).collect();
                    outln!("{}", Value::Array(all));
                }
                Output::Text => {
                    for batch in &batches {
                        outln!("{}", line(batch));
                    }
                }
            }
        }
        BatchCommand::Cancel { batch_id } => {
            let batch = nats.connect().await?.cancel_batch(&batch_id).await?;
            print_one(&batch, output)?;
        }
        BatchCommand::Wait { batch_id, timeout } => {
            let batch = nats.connect().await?.wait_batch(&batch_id, timeout).await?;
            print_one(&batch, output)?;
            if batch.counts.completed != batch.jobs {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The batch of an `enqueue` command, read from its file.
fn spec(args: &EnqueueArgs) -> anyhow::Result<BatchSpec> {
    let jobs = read_jobs(&args.file, &args.queue)?;
    let mut spec = BatchSpec::new(args.name.as_str(), jobs);
    if let Some(id) = &args.id {
        spec = spec.id(id.as_str());
    }
    let queue = args.queue.as_str();
    if let Some(job_type) = &args.on_success {
        spec = spec.on_success(Job::new(job_type.as_str(), Vec::new()).queue(queue));
    }
    if let Some(job_type) = &args.on_failure {
        spec = spec.on_failure(Job::new(job_type.as_str(), Vec::new()).queue(queue));
    }
    if let Some(job_type) = &args.on_complete {
        spec = spec.on_complete(Job::new(job_type.as_str(), Vec::new()).queue(queue));
    }
    Ok(spec)
}

/// Reads an NDJSON batch file (blank lines skipped).
fn read_jobs(path: &Path, queue: &str) -> anyhow::Result<Vec<Job>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the batch file {}", path.display()))?;
    let mut jobs = Vec::new();
    for (number, text) in text.lines().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(text)
            .with_context(|| format!("{}:{}: not a job line", path.display(), number + 1))?;
        let mut job =
            Job::json(line.job_type, &line.payload)?.queue(line.queue.as_deref().unwrap_or(queue));
        if let Some(id) = line.id {
            job = job.id(id);
        }
        if let Some(priority) = line.priority {
            job = job.priority(priority);
        }
        if let Some(retries) = line.max_retries {
            job = job.max_retries(retries);
        }
        if let Some(policy) = line.on_dependency_failure {
            job = job.on_dependency_failure(policy);
        }
        jobs.push(job.depends_on(line.depends_on));
    }
    Ok(jobs)
}

fn print_one(batch: &BatchJob, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => outln!("{}", document(batch)),
        Output::Text => outln!("{}", line(batch)),
    }
    Ok(())
}

/// The JSON form of a batch (its summary, with progress and flags).
fn document(batch: &BatchJob) -> Value {
    let mut doc = batch.summary();
    if let Value::Object(map) = &mut doc {
        map.insert("progress".into(), json!(batch.progress()));
        map.insert("active".into(), json!(batch.active));
        map.insert("cancel_requested".into(), json!(batch.cancel_requested));
    }
    doc
}

fn line(batch: &BatchJob) -> String {
    let c = &batch.counts;
    let status = if batch.abandoned {
        format!("{} (abandoned enqueue)", batch.status.as_str())
    } else {
        batch.status.as_str().to_string()
    };
    format!(
        "{}  {:<10} {:>5.1}%  {} jobs: {} completed, {} failed, {} dead-letter, {} cancelled  ({})",
        batch.batch_id,
        status,
        batch.progress() * 100.0,
        batch.jobs,
        c.completed,
        c.failed,
        c.dead_letter,
        c.cancelled,
        batch.batch_name
    )
}
