//! `jobbox schedule add|list|show|pause|resume|rm|trigger`: recurring jobs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use clap::{Args, Subcommand};
use jobbox::{Cadence, Job, Schedule, ScheduleSpec};
use serde_json::{Value, json};

use super::{NatsArgs, Output};

/// Ticks `schedule show` lists ahead.
const SHOWN_AHEAD: usize = 5;

/// Arguments of `jobbox schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// Add a schedule: enqueue a job on a cron expression or every interval.
    Add(Box<AddArgs>),
    /// Every schedule, with its next tick.
    List,
    /// One schedule: its template, its last fires and its next five ticks.
    Show {
        /// The schedule id.
        id: String,
    },
    /// Stop firing until resumed.
    Pause {
        /// The schedule id.
        id: String,
    },
    /// Fire again, from the first tick after now (ticks missed while paused are not fired).
    Resume {
        /// The schedule id.
        id: String,
    },
    /// Remove a schedule (jobs it enqueued are not touched).
    Rm {
        /// The schedule id.
        id: String,
    },
    /// Enqueue the schedule's job now, once, outside its grid.
    Trigger {
        /// The schedule id.
        id: String,
    },
}

/// Arguments of `jobbox schedule add`.
#[derive(Debug, Args)]
struct AddArgs {
    /// The job type, e.g. word-count.
    job_type: String,
    /// Cron expression: 5 fields, or 6 with seconds first, e.g. '0 */5 * * * *'.
    #[arg(long, required_unless_present = "every", conflicts_with = "every")]
    cron: Option<String>,
    /// Time zone of --cron (IANA name, e.g. Europe/Berlin); default UTC.
    #[arg(long, requires = "cron")]
    tz: Option<String>,
    /// Fire every this long (whole seconds, at least 1s), e.g. 30s or 1h, on a UTC
    /// grid (1h fires on the hour).
    #[arg(long, value_parser = humantime::parse_duration)]
    every: Option<Duration>,
    /// Fire this many times, then finish.
    #[arg(long)]
    repeat: Option<u32>,
    /// After downtime, enqueue up to this many missed ticks (oldest first) instead of
    /// one.
    #[arg(long, value_name = "N")]
    catch_up: Option<u32>,
    /// The payload as JSON.
    #[arg(long, conflicts_with = "payload_file")]
    json: Option<String>,
    /// The payload from this file (as is; with the default content type it must be JSON).
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// Media type of the payload.
    #[arg(long, default_value = jobbox::CONTENT_TYPE_JSON)]
    content_type: String,
    /// The queue its jobs go to.
    #[arg(long, short = 'q', default_value = jobbox::DEFAULT_QUEUE)]
    queue: String,
    /// Priority 0 (lowest) to 9 (highest) of its jobs.
    #[arg(long, default_value_t = jobbox::DEFAULT_PRIORITY)]
    priority: u8,
    /// Retries for a retryable failure (default: the handler's setting).
    #[arg(long)]
    max_retries: Option<u32>,
    /// The schedule id (letters, digits, '_', '-'; default: generated).
    #[arg(long)]
    id: Option<String>,
}

pub async fn run(args: ScheduleArgs, output: Output) -> anyhow::Result<ExitCode> {
    let nats = &args.nats;
    match args.command {
        ScheduleCommand::Add(add) => {
            // Everything that can be refused without the server is refused first.
            let spec = spec(&add)?;
            spec.build(Utc::now())?;
            let schedule = nats.connect().await?.add_schedule(&spec).await?;
            print_one(&schedule, output, false)?;
        }
        ScheduleCommand::List => {
            let schedules = nats.connect().await?.schedules().await?;
            match output {
                Output::Json => {
                    let all: Vec<Value> = schedules.iter().map(|s| document(s, false)).collect();
                    outln!("{}", Value::Array(all));
                }
                Output::Text if schedules.is_empty() => outln!("no schedules"),
                Output::Text => print_table(&schedules)?,
            }
        }
        ScheduleCommand::Show { id } => {
            let schedule = nats
                .connect()
                .await?
                .schedule(&id)
                .await?
                .with_context(|| format!("schedule {id} does not exist"))?;
            print_one(&schedule, output, true)?;
        }
        ScheduleCommand::Pause { id } => {
            let schedule = nats.connect().await?.pause_schedule(&id).await?;
            print_one(&schedule, output, false)?;
        }
        ScheduleCommand::Resume { id } => {
            let schedule = nats.connect().await?.resume_schedule(&id).await?;
            print_one(&schedule, output, false)?;
        }
        ScheduleCommand::Rm { id } => {
            nats.connect().await?.delete_schedule(&id).await?;
            match output {
                Output::Json => outln!("{}", json!({"id": id, "removed": true})),
                Output::Text => outln!("{id} removed"),
            }
        }
        ScheduleCommand::Trigger { id } => {
            let enqueued = nats.connect().await?.trigger_schedule(&id).await?;
            match output {
                Output::Json => outln!(
                    "{}",
                    json!({"id": id, "job_id": enqueued.job_id, "sequence": enqueued.sequence})
                ),
                Output::Text => outln!("{}", enqueued.job_id),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The spec `schedule add` describes.
fn spec(args: &AddArgs) -> anyhow::Result<ScheduleSpec> {
    let payload = match (&args.json, &args.payload_file) {
        (Some(text), _) => {
            serde_json::from_str::<Value>(text).context("--json is not valid JSON")?;
            text.clone().into_bytes()
        }
        (None, Some(path)) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            if args.content_type == jobbox::CONTENT_TYPE_JSON {
                serde_json::from_slice::<Value>(&bytes).with_context(|| {
                    format!(
                        "{} is not valid JSON (set --content-type for other payloads)",
                        path.display()
                    )
                })?;
            }
            bytes
        }
        (None, None) => b"{}".to_vec(),
    };
    let mut job = Job::new(args.job_type.as_str(), payload)
        .queue(args.queue.as_str())
        .priority(args.priority)
        .content_type(args.content_type.as_str());
    if let Some(max_retries) = args.max_retries {
        job = job.max_retries(max_retries);
    }
    let mut spec = match (&args.cron, args.every) {
        (Some(cron), _) => ScheduleSpec::cron(cron.as_str(), job),
        (None, Some(every)) => ScheduleSpec::every(every, job),
        (None, None) => anyhow::bail!("give --cron or --every"),
    };
    if let Some(tz) = &args.tz {
        spec = spec.tz(tz.as_str());
    }
    if let Some(id) = &args.id {
        spec = spec.id(id.as_str());
    }
    if let Some(repeat) = args.repeat {
        spec = spec.repeat(repeat);
    }
    if let Some(limit) = args.catch_up {
        spec = spec.catch_up(limit);
    }
    Ok(spec)
}

/// How a schedule fires, in words: `cron '…' Europe/Berlin` or `every 30s`.
fn cadence_text(schedule: &Schedule) -> String {
    match (&schedule.cron, schedule.interval_seconds) {
        (Some(cron), _) => format!("cron '{cron}' {}", schedule.tz.as_deref().unwrap_or("UTC")),
        (None, Some(seconds)) => format!(
            "every {}",
            humantime::format_duration(Duration::from_secs(seconds))
        ),
        (None, None) => "?".to_string(),
    }
}

/// The next ticks (for `show`): from the stored next tick when active, from now
/// when paused (what resuming now would give), none when finished.
fn ahead(schedule: &Schedule) -> Vec<chrono::DateTime<Utc>> {
    let Ok(cadence) = Cadence::of(schedule) else {
        return Vec::new();
    };
    match schedule.status {
        jobbox::ScheduleStatus::Active => {
            let mut ticks = vec![schedule.next_run_at];
            ticks.extend(cadence.upcoming(schedule.next_run_at, SHOWN_AHEAD - 1));
            ticks
        }
        jobbox::ScheduleStatus::Paused => cadence.upcoming(Utc::now(), SHOWN_AHEAD),
        _ => Vec::new(),
    }
}

/// A schedule as JSON: the record, with a JSON payload shown as JSON, plus (`show`)
/// the next ticks.
fn document(schedule: &Schedule, with_ahead: bool) -> Value {
    let mut document = serde_json::to_value(schedule).unwrap_or_default();
    if let Ok(payload) = serde_json::from_slice::<Value>(&schedule.job.payload) {
        document["job"]["payload"] = payload;
    }
    if with_ahead {
        document["next"] = ahead(schedule)
            .iter()
            .map(|t| Value::String(t.to_rfc3339()))
            .collect();
    }
    document
}

fn print_one(schedule: &Schedule, output: Output, detailed: bool) -> std::io::Result<()> {
    if output == Output::Json {
        outln!("{}", document(schedule, detailed));
        return Ok(());
    }
    outln!(
        "{} {} · {}",
        schedule.id,
        schedule.status,
        cadence_text(schedule)
    );
    outln!(
        "  job      {} on queue {} (priority {})",
        schedule.job.job_type,
        schedule.job.queue,
        schedule.job.priority
    );
    if schedule.status == jobbox::ScheduleStatus::Active {
        outln!("  next     {}", schedule.next_run_at.to_rfc3339());
    }
    if let Some(repeat) = schedule.repeat {
        outln!("  left     {repeat} fire(s)");
    }
    outln!(
        "  missed   {}",
        if schedule.missed == jobbox::MissedPolicy::CatchUp {
            format!("catch up (at most {})", schedule.catch_up_limit)
        } else {
            "skip".to_string()
        }
    );
    outln!("  fired    {} job(s)", schedule.fired);
    if schedule.failure_count > 0 {
        outln!(
            "  failing  {} time(s): {}",
            schedule.failure_count,
            schedule.last_error.as_deref().unwrap_or("")
        );
    }
    if !detailed {
        return Ok(());
    }
    if !schedule.recent_fires.is_empty() {
        outln!("  last fires:");
        for fire in schedule.recent_fires.iter().rev() {
            outln!(
                "    {}  {}{}{}",
                fire.tick.to_rfc3339(),
                fire.job_id,
                fire.worker_id
                    .as_deref()
                    .map(|w| format!("  by {w}"))
                    .unwrap_or_default(),
                if fire.manual { "  (trigger)" } else { "" }
            );
        }
    }
    let ahead = ahead(schedule);
    if !ahead.is_empty() {
        outln!("  next {}:", ahead.len());
        for tick in ahead {
            outln!("    {}", tick.to_rfc3339());
        }
    }
    Ok(())
}

fn print_table(schedules: &[Schedule]) -> std::io::Result<()> {
    outln!(
        "{:<24} {:<8} {:<32} {:<20} {:<26} {:>7}",
        "ID",
        "STATUS",
        "CADENCE",
        "JOB",
        "NEXT",
        "FIRED"
    );
    for schedule in schedules {
        let next = if schedule.status == jobbox::ScheduleStatus::Active {
            schedule.next_run_at.to_rfc3339()
        } else {
            "-".to_string()
        };
        outln!(
            "{:<24} {:<8} {:<32} {:<20} {:<26} {:>7}",
            schedule.id,
            schedule.status,
            cadence_text(schedule),
            format!("{}@{}", schedule.job.job_type, schedule.job.queue),
            next,
            schedule.fired
        );
    }
    Ok(())
}
