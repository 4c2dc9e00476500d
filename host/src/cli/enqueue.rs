//! `jobbox enqueue`, `jobbox result`: submit a job, read or wait for its result.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use jobbox::{Job, JobResult, JobStatus};

use super::{NatsArgs, Output, format};

/// Arguments of `jobbox enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// The job type, e.g. word-count.
    job_type: String,
    /// The payload as JSON.
    #[arg(long, default_value = "{}", conflicts_with = "file")]
    json: String,
    /// Enqueue one job per line of this file (newline-delimited JSON payloads; `-`
    /// reads standard input), pipelined; every line is checked before any is sent.
    #[arg(long, conflicts_with = "wait")]
    file: Option<std::path::PathBuf>,
    /// The queue to put the job on.
    #[arg(long, short = 'q', default_value = jobbox::DEFAULT_QUEUE)]
    queue: String,
    /// Priority 0 (lowest) to 9 (highest).
    #[arg(long, default_value_t = jobbox::DEFAULT_PRIORITY)]
    priority: u8,
    /// Run no earlier than this long from now, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
    /// Retries for a retryable failure (default: the handler's setting).
    #[arg(long)]
    max_retries: Option<u32>,
    /// Run exactly this handler version (digest or version label).
    #[arg(long)]
    handler: Option<String>,
    /// Metadata entries as key=value (repeatable).
    #[arg(long = "meta", value_parser = parse_key_value)]
    metadata: Vec<(String, String)>,
    /// The W3C trace context the job joins (`00-<trace id>-<parent id>-<flags>`): the
    /// worker's span is its child. One that is not valid is ignored, with a warning.
    #[arg(long, env = "TRACEPARENT")]
    traceparent: Option<String>,
    /// The W3C `tracestate` sent with --traceparent.
    #[arg(long, env = "TRACESTATE", requires = "traceparent")]
    tracestate: Option<String>,
    /// Wait for the result and print it.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    wait_timeout: Duration,
}

/// Arguments of `jobbox result`.
#[derive(Debug, Args)]
pub struct ResultArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// The job id.
    job_id: String,
    /// Wait for the result if there is none yet.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    wait_timeout: Duration,
}

pub async fn enqueue(args: EnqueueArgs, output: Output) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.file {
        return enqueue_file(&args, path, output).await;
    }
    let payload: serde_json::Value =
        serde_json::from_str(&args.json).context("--json is not valid JSON")?;
    let job = build_job(&args, &payload)?;
    let client = args.nats.connect().await?;
    let enqueued = client.enqueue(&job).await?;
    if !args.wait {
        match output {
            Output::Json => outln!(
                "{}",
                serde_json::json!({"job_id": enqueued.job_id, "sequence": enqueued.sequence, "duplicate": enqueued.duplicate})
            ),
            Output::Text => outln!("{}", enqueued.job_id),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let spinner = spinner(&format!("waiting for job {}", enqueued.job_id));
    let result = client
        .wait_result(&enqueued.job_id, args.wait_timeout)
        .await;
    spinner.finish_and_clear();
    print_result(&result?, output)
}

/// `--file`: one job per line, all checked first, then enqueued pipelined.
async fn enqueue_file(
    args: &EnqueueArgs,
    path: &std::path::Path,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("failed to read standard input")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("failed to read {}", path.display()))?
    };
    let mut jobs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        let payload: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("line {number} is not valid JSON"))?;
        let job = build_job(args, &payload).with_context(|| format!("line {number}"))?;
        job.validate()
            .with_context(|| format!("line {number} is not a valid job"))?;
        jobs.push(job);
    }
    let client = args.nats.connect().await?;
    let outcomes = client.enqueue_many(&jobs).await?;
    let (mut enqueued, mut duplicates, mut failed) = (0usize, 0usize, 0usize);
    for (job, outcome) in jobs.iter().zip(&outcomes) {
        match outcome {
            Ok(done) if done.duplicate => duplicates += 1,
            Ok(_) => enqueued += 1,
            Err(e) => {
                failed += 1;
                eprintln!("job {}: {e}", job.id);
            }
        }
        if output == Output::Text
            && let Ok(done) = outcome
        {
            outln!("{}", done.job_id);
        }
    }
    match output {
        Output::Json => outln!(
            "{}",
            serde_json::json!({
                "enqueued": enqueued,
                "duplicates": duplicates,
                "failed": failed,
                "job_ids": outcomes.iter().filter_map(|o| o.as_ref().ok()).map(|e| e.job_id.as_str()).collect::<Vec<_>>(),
            })
        ),
        Output::Text => eprintln!("{enqueued} enqueued, {duplicates} duplicates, {failed} failed"),
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The job the options describe, with `payload` as its JSON payload.
fn build_job(args: &EnqueueArgs, payload: &serde_json::Value) -> anyhow::Result<Job> {
    let mut job = Job::json(args.job_type.as_str(), payload)?
        .queue(args.queue.as_str())
        .priority(args.priority)
        .created_by(std::env::var("USER").unwrap_or_else(|_| "cli".into()));
    if let Some(delay) = args.delay {
        job = job.delay(delay);
    }
    if let Some(max_retries) = args.max_retries {
        job = job.max_retries(max_retries);
    }
    if let Some(handler) = &args.handler {
        job = job.handler(handler.as_str());
    }
    for (key, value) in &args.metadata {
        job = job.metadata(key.as_str(), value.as_str());
    }
    if let Some(traceparent) = &args.traceparent {
        match jobbox::TraceContext::parse(traceparent, args.tracestate.as_deref()) {
            Ok(context) => job = job.trace(context),
            Err(e) => eprintln!("warning: --traceparent ignored: {e}"),
        }
    }
    Ok(job)
}

pub async fn result(args: ResultArgs, output: Output) -> anyhow::Result<ExitCode> {
    let client = args.nats.connect().await?;
    let result = if args.wait {
        let spinner = spinner(&format!("waiting for job {}", args.job_id));
        let result = client.wait_result(&args.job_id, args.wait_timeout).await;
        spinner.finish_and_clear();
        result?
    } else {
        client
            .result(&args.job_id)
            .await?
            .with_context(|| format!("job {} has no result (yet)", args.job_id))?
    };
    print_result(&result, output)
}

/// Prints a result; the exit code is 0 for COMPLETED, 1 otherwise.
fn print_result(result: &JobResult, output: Output) -> anyhow::Result<ExitCode> {
    match output {
        Output::Json => {
            let mut document = serde_json::to_value(result).unwrap_or_default();
            if let Some(bytes) = &result.result {
                if let Some(value) = format::output_value(bytes, result.content_type.as_deref()) {
                    document["result"] = value;
                } else if let Ok(text) = std::str::from_utf8(bytes) {
                    document["result"] = text.into();
                }
            }
            outln!("{document}");
        }
        Output::Text => {
            if let Some(bytes) = &result.result {
                match format::output_value(bytes, result.content_type.as_deref()) {
                    Some(value) => outln!(
                        "{}",
                        serde_json::to_string_pretty(&value)
                            .unwrap_or_else(|_| format::payload(bytes))
                    ),
                    None => outln!("{}", format::payload(bytes)),
                }
            }
            if result.status != JobStatus::Completed {
                outln!(
                    "{}: {}: {}",
                    result.status,
                    result.error_type.map(|t| t.as_str()).unwrap_or("error"),
                    result.error.as_deref().unwrap_or("")
                );
            }
            for entry in &result.logs {
                eprintln!("  {}", format::log_line(entry));
            }
            eprintln!(
                "{} after {} attempt(s) on {} · {}",
                result.status,
                result.attempts,
                result.worker_id,
                format::usage(&result.usage)
            );
        }
    }
    Ok(if result.status == JobStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A spinner on stderr while waiting, only when stderr is a terminal.
fn spinner(message: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner().with_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "expected key=value".to_string())
}
