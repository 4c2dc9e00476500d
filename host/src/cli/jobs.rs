//! `jobbox status`, `jobbox cancel`, `jobbox workers`, `jobbox stats`, `jobbox dlq`:
//! the lifecycle commands.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use jobbox::CancelOutcome;
use serde_json::json;

use super::{NatsArgs, Output};

/// Arguments of `jobbox status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// The job id.
    job_id: String,
}

/// Arguments of `jobbox cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// The job id.
    job_id: String,
}

/// Arguments of `jobbox workers` and `jobbox stats`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    nats: NatsArgs,
}

/// Arguments of `jobbox dlq`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Dead-lettered jobs, oldest first.
    List {
        /// Only this queue.
        #[arg(long, short = 'q')]
        queue: Option<String>,
    },
    /// Run dead-lettered jobs again (attempts start over).
    Replay {
        /// The job id to replay.
        #[arg(required_unless_present = "all")]
        job_id: Option<String>,
        /// Replay every dead letter (of --queue, if given).
        #[arg(long, conflicts_with = "job_id")]
        all: bool,
        /// With --all: only this queue.
        #[arg(long, short = 'q')]
        queue: Option<String>,
    },
}

pub async fn status(args: StatusArgs, output: Output) -> anyhow::Result<ExitCode> {
    let client = args.nats.connect().await?;
    let state = client
        .job_state(&args.job_id)
        .await?
        .with_context(|| format!("job {} is not known", args.job_id))?;
    match output {
        Output::Json => outln!("{}", serde_json::to_string(&state)?),
        Output::Text => {
            outln!("{} {}", state.job_id, state.status);
            outln!(
                "  queue {} · type {} · attempts {}",
                state.queue,
                state.job_type,
                state.attempts
            );
            outln!("  created  {}", state.created_at.to_rfc3339());
            if let Some(at) = state.scheduled_at {
                outln!("  due      {}", at.to_rfc3339());
            }
            if let Some(at) = state.started_at {
                outln!("  started  {}", at.to_rfc3339());
            }
            if let Some(at) = state.finished_at {
                outln!("  finished {}", at.to_rfc3339());
            }
            outln!("  updated  {}", state.updated_at.to_rfc3339());
            if let Some(worker) = &state.worker_id {
                outln!("  worker   {worker}");
            }
            if let Some(error) = &state.last_error {
                outln!("  error    {error}");
            }
            if state.cancel_requested {
                outln!("  cancellation requested");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(args: CancelArgs, output: Output) -> anyhow::Result<ExitCode> {
    let client = args.nats.connect().await?;
    let outcome = client.cancel(&args.job_id).await?;
    let (word, code) = match outcome {
        CancelOutcome::Cancelled => ("cancelled: it will not run".to_string(), ExitCode::SUCCESS),
        CancelOutcome::Stopping => (
            "stopping: the running job is being stopped".to_string(),
            ExitCode::SUCCESS,
        ),
        CancelOutcome::AlreadyFinished(status) => {
            (format!("already finished ({status})"), ExitCode::FAILURE)
        }
    };
    match output {
        Output::Json => outln!("{}", json!({"job_id": args.job_id, "outcome": word})),
        Output::Text => outln!("{} {word}", args.job_id),
    }
    Ok(code)
}

pub async fn workers(args: ListArgs, output: Output) -> anyhow::Result<ExitCode> {
    let client = args.nats.connect().await?;
    let workers = client.workers().await?;
    match output {
        Output::Json => outln!("{}", serde_json::to_string(&workers)?),
        Output::Text if workers.is_empty() => outln!("no live workers"),
        Output::Text => {
            outln!(
                "{:<34} {:<9} {:<16} {:>7} {:>9} {:>7} heartbeat",
                "WORKER",
                "STATE",
                "QUEUES",
                "RUNNING",
                "DONE",
                "FAILED"
            );
            for worker in workers {
                outln!(
                    "{:<34} {:<9} {:<16} {:>7} {:>9} {:>7} {}",
                    worker.worker_id,
                    worker.state.as_str(),
                    worker.queues.join(","),
                    format!("{}/{}", worker.current_jobs.len(), worker.concurrency),
                    worker.jobs_done,
                    worker.jobs_failed,
                    worker.heartbeat_at.format("%H:%M:%S"),
                );
                for (job_type, digest) in &worker.handlers {
                    outln!("    {job_type} → {}", super::handler::short_digest(digest));
                }
                if let Some(error) = &worker.last_error {
                    outln!("    ! {error}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn stats(args: ListArgs, output: Output) -> anyhow::Result<ExitCode> {
    let client = args.nats.connect().await?;
    let mut all = Vec::new();
    for queue in client.queues().await? {
        all.push(client.queue_stats(&queue).await?);
    }
    match output {
        Output::Json => outln!("{}", serde_json::to_string(&all)?),
        Output::Text if all.is_empty() => outln!("no queues yet"),
        Output::Text => {
            outln!(
                "{:<20} {:>9} {:>9} {:>11} {:>9} {:>11}",
                "QUEUE",
                "PENDING",
                "RUNNING",
                "COMPLETED",
                "FAILED",
                "DEAD LETTER"
            );
            for s in all {
                outln!(
                    "{:<20} {:>9} {:>9} {:>11} {:>9} {:>11}",
                    s.queue,
                    s.pending,
                    s.running,
                    s.completed,
                    s.failed,
                    s.dead_letter
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn dlq(args: DlqArgs, output: Output) -> anyhow::Result<ExitCode> {
    let client = args.nats.connect().await?;
    match args.command {
        DlqCommand::List { queue } => {
            let letters = client.dead_letters(queue.as_deref()).await?;
            match output {
                Output::Json => {
                    let rows: Vec<_> = letters
                        .iter()
                        .map(|(seq, l)| json!({"sequence": seq, "dead_letter": l}))
                        .collect();
                    outln!("{}", serde_json::Value::Array(rows));
                }
                Output::Text if letters.is_empty() => outln!("no dead letters"),
                Output::Text => {
                    for (_, letter) in letters {
                        outln!(
                            "{} {:<12} {:<16} attempts={} {}: {}",
                            letter.job.id,
                            letter.job.queue,
                            letter.job.job_type,
                            letter.attempts,
                            letter.error_type.map(|t| t.as_str()).unwrap_or("error"),
                            letter.error.as_deref().unwrap_or("")
                        );
                    }
                }
            }
        }
        DlqCommand::Replay {
            job_id,
            all: _,
            queue,
        } => {
            let letters = client.dead_letters(queue.as_deref()).await?;
            let chosen: Vec<_> = letters
                .into_iter()
                .filter(|(_, letter)| job_id.as_deref().is_none_or(|id| letter.job.id == id))
                .collect();
            if chosen.is_empty() {
                anyhow::bail!("no matching dead letter");
            }
            for (sequence, letter) in &chosen {
                client.replay_dead_letter(*sequence, letter).await?;
                if output == Output::Text {
                    outln!("replayed {}", letter.job.id);
                }
            }
            if output == Output::Json {
                let ids: Vec<_> = chosen.iter().map(|(_, l)| l.job.id.clone()).collect();
                outln!("{}", json!({"replayed": ids}));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
