//! `jobbox events`: print job events, optionally following new ones.

use std::process::ExitCode;

use clap::Args;
use futures::StreamExt;
use jobbox::{EventsFrom, JobEvent};

use super::{NatsArgs, Output, format};

/// Arguments of `jobbox events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Only this job's events.
    #[arg(long)]
    job: Option<String>,
    /// Only this queue's events.
    #[arg(long, short = 'q')]
    queue: Option<String>,
    /// Keep printing new events as they happen.
    #[arg(long, short = 'f')]
    follow: bool,
    /// With --follow: only events from now on.
    #[arg(long)]
    new_only: bool,
}

pub async fn run(args: EventsArgs, output: Output) -> anyhow::Result<ExitCode> {
    let client = args.nats.connect().await?;
    let from = if args.follow && args.new_only {
        EventsFrom::Now
    } else {
        EventsFrom::Start
    };
    // Without --follow, print what is there now: up to the stream's last sequence.
    let last = if args.follow {
        u64::MAX
    } else {
        let mut stream = client
            .jetstream()
            .get_stream(jobbox::nats::EVENTS_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("failed to open the events stream: {e}"))?;
        let info = stream
            .info()
            .await
            .map_err(|e| anyhow::anyhow!("failed to read the events stream: {e}"))?;
        if info.state.messages == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        info.state.last_sequence
    };
    let events = client
        .events_with_sequence(args.queue.as_deref(), args.job.as_deref(), from)
        .await?;
    futures::pin_mut!(events);
    loop {
        let next = if args.follow {
            events.next().await
        } else {
            // Filtered views may end before `last`; stop when nothing more comes.
            tokio::time::timeout(std::time::Duration::from_millis(500), events.next())
                .await
                .unwrap_or_default()
        };
        let Some(next) = next else { break };
        let (sequence, event) = next?;
        print_event(&event, output)?;
        if sequence >= last {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_event(event: &JobEvent, output: Output) -> std::io::Result<()> {
    match output {
        Output::Json => {
            outln!("{}", serde_json::to_string(event).unwrap_or_default());
        }
        Output::Text => {
            let mut line = format!(
                "{} {:<16} {:<10} {} {}",
                event.timestamp.format("%H:%M:%S%.3f"),
                event.event_type.as_str(),
                event.queue,
                event.job_id,
                event.job_type
            );
            if let Some(attempt) = event.attempt {
                line.push_str(&format!(" attempt={attempt}"));
            }
            if let Some(worker) = &event.worker_id {
                line.push_str(&format!(" worker={worker}"));
            }
            if let Some(error_type) = event.error_type {
                line.push_str(&format!(
                    " error={}: {}",
                    error_type.as_str(),
                    event.error_message.as_deref().unwrap_or("")
                ));
            }
            if let Some(delay) = event.delay_ms {
                line.push_str(&format!(" delay={delay}ms"));
            }
            if let Some(progress) = &event.progress {
                line.push_str(&format!(" progress={}%", progress.percent));
            }
            if let Some(usage) = &event.usage {
                line.push_str(&format!(" [{}]", format::usage(usage)));
            }
            outln!("{line}");
        }
    }
    Ok(())
}
