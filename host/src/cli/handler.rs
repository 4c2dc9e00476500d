//! `jobbox handler deploy|list|history|rollback|rm`: put handler components into the
//! registry, and manage their versions.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use jobbox::HandlerLimits;

use super::{NatsArgs, Output, format, parse_fuel, parse_size};
use crate::registry::{self, DeployOptions, RollbackOptions};

/// `jobbox handler …`
#[derive(Debug, Args)]
pub struct HandlerArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(subcommand)]
    command: HandlerCommand,
}

#[derive(Debug, Subcommand)]
enum HandlerCommand {
    /// Validate a component and route a job type to it.
    Deploy(DeployArgs),
    /// The current route of every job type.
    List,
    /// Every deploy of a job type still kept (the last 64 writes), newest first.
    History(HistoryArgs),
    /// Point a job type back at an earlier deploy (default: the previous digest).
    Rollback(RollbackArgs),
    /// Remove a job type's route: workers then retry its jobs as unknown_job_type until
    /// they are dead-lettered.
    /// (Its history stays: `rollback` brings it back.)
    #[command(alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
struct HistoryArgs {
    /// The job type, e.g. word-count.
    job_type: String,
}

#[derive(Debug, Args)]
struct RollbackArgs {
    /// The job type, e.g. word-count.
    job_type: String,
    /// The version to go back to: a digest, a unique digest prefix (8+ hex digits) or
    /// a version label. Default: the most recent deploy with a different digest.
    #[arg(long)]
    to: Option<String>,
    /// Who is rolling back (default: $USER).
    #[arg(long)]
    deployed_by: Option<String>,
}

#[derive(Debug, Args)]
struct RmArgs {
    /// The job type, e.g. word-count.
    job_type: String,
}

#[derive(Debug, Args)]
struct DeployArgs {
    /// The job type to route to this handler, e.g. word-count.
    job_type: String,
    /// The handler component (.wasm built for wasm32-wasip2).
    wasm: PathBuf,
    /// A version label, e.g. v2.
    #[arg(long = "version-label", alias = "label")]
    version: Option<String>,
    /// Most fuel a job of this type may burn ("unlimited" for no limit).
    #[arg(long, value_parser = parse_fuel)]
    fuel: Option<u64>,
    /// Most linear memory a job of this type may use, e.g. 64MiB.
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Longest a job of this type may run, e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Largest output a job of this type may return, e.g. 512KiB.
    #[arg(long, value_parser = parse_size)]
    max_output: Option<u64>,
    /// Retries for a retryable failure, unless a job asks for fewer.
    #[arg(long)]
    max_retries: Option<u32>,
    /// Give each job a fresh scratch directory (`/tmp` in the guest) of this size,
    /// e.g. 64MiB: bytes a job may add to files there. Off by default. Workers cap
    /// it (`jobbox worker --max-scratch`).
    #[arg(long, value_parser = parse_size)]
    scratch: Option<u64>,
    /// Files, directories and symlinks a job may create in its scratch directory
    /// (default 1024; needs --scratch).
    #[arg(long, requires = "scratch")]
    scratch_files: Option<u64>,
    /// Most core WebAssembly instances a job's component may create (default 32;
    /// Python with native extension modules may need more; workers allow up to 128).
    #[arg(long)]
    max_instances: Option<u32>,
    /// Most linear memories a job may have (default 4; workers allow up to 4).
    #[arg(long)]
    max_memories: Option<u32>,
    /// Most tables a job may have (default 16; workers allow up to 16).
    #[arg(long)]
    max_tables: Option<u32>,
    /// Most elements any one table may have (default 20000; workers allow up to 100000).
    #[arg(long)]
    max_table_elements: Option<u64>,
    /// Largest component this route may run, e.g. 100MiB (default 64MiB; workers
    /// allow up to 128MiB).
    #[arg(long, value_parser = parse_size)]
    max_component: Option<u64>,
    /// Who is deploying (default: $USER).
    #[arg(long)]
    deployed_by: Option<String>,
    /// Longest the component may take to compile before the deploy is refused
    /// (default: 30 s plus 4 s per MiB of the component).
    #[arg(long, value_parser = humantime::parse_duration)]
    compile_timeout: Option<Duration>,
}

pub async fn run(args: HandlerArgs, output: Output) -> anyhow::Result<ExitCode> {
    let client = args.nats.connect().await?;
    match args.command {
        HandlerCommand::Deploy(deploy_args) => {
            let wasm = std::fs::read(&deploy_args.wasm)
                .with_context(|| format!("failed to read {}", deploy_args.wasm.display()))?;
            let mut limits = HandlerLimits::default();
            if let Some(fuel) = deploy_args.fuel {
                limits.fuel = fuel;
            }
            if let Some(memory) = deploy_args.memory {
                limits.memory_bytes = memory;
            }
            if let Some(timeout) = deploy_args.timeout {
                limits.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            }
            if let Some(max_output) = deploy_args.max_output {
                limits.output_bytes = max_output;
            }
            if let Some(max_retries) = deploy_args.max_retries {
                limits.max_retries = max_retries;
            }
            if let Some(scratch) = deploy_args.scratch {
                limits.scratch_bytes = scratch;
            }
            if let Some(files) = deploy_args.scratch_files {
                limits.scratch_files = files;
            }
            if let Some(instances) = deploy_args.max_instances {
                limits.instances = instances;
            }
            if let Some(memories) = deploy_args.max_memories {
                limits.memories = memories;
            }
            if let Some(tables) = deploy_args.max_tables {
                limits.tables = tables;
            }
            if let Some(elements) = deploy_args.max_table_elements {
                limits.table_elements = elements;
            }
            if let Some(bytes) = deploy_args.max_component {
                limits.component_bytes = bytes;
            }
            let options = DeployOptions {
                version: deploy_args.version,
                limits,
                deployed_by: deploy_args
                    .deployed_by
                    .or_else(|| std::env::var("USER").ok()),
            };
            let compile_timeout = deploy_args
                .compile_timeout
                .unwrap_or_else(|| registry::compile_cap(wasm.len()));
            let deployed = Box::pin(options.deploy_confirmed(
                &client,
                &deploy_args.job_type,
                wasm,
                compile_timeout,
            ))
            .await
            .with_context(|| format!("failed to deploy {}", deploy_args.wasm.display()))?;
            let route = &deployed.route;
            match output {
                Output::Json => outln!("{}", serde_json::to_string(&deployed)?),
                Output::Text => outln!(
                    "deployed {} → {}{} ({}); {}",
                    route.job_type,
                    route.digest,
                    route
                        .version
                        .as_deref()
                        .map(|v| format!(" [{v}]"))
                        .unwrap_or_default(),
                    format::size(route.size_bytes),
                    deployed.fleet.describe()
                ),
            }
        }
        HandlerCommand::List => {
            let routes = client.routes().await?;
            match output {
                Output::Json => outln!("{}", serde_json::to_string(&routes)?),
                Output::Text if routes.is_empty() => outln!("no handlers deployed"),
                Output::Text => {
                    outln!(
                        "{:<24} {:<20} {:<10} {:<9} deployed",
                        "JOB TYPE",
                        "DIGEST",
                        "VERSION",
                        "SIZE"
                    );
                    for route in routes {
                        outln!(
                            "{:<24} {:<20} {:<10} {:<9} {}",
                            route.job_type,
                            short_digest(&route.digest),
                            route.version.as_deref().unwrap_or("-"),
                            format::size(route.size_bytes),
                            route.deployed_at.format("%Y-%m-%d %H:%M:%S")
                        );
                    }
                }
            }
        }
        HandlerCommand::History(history_args) => {
            let versions = registry::history(&client, &history_args.job_type).await?;
            print_history(&history_args.job_type, &versions, output)?;
        }
        HandlerCommand::Rollback(rollback_args) => {
            let options = RollbackOptions {
                to: rollback_args.to,
                deployed_by: rollback_args
                    .deployed_by
                    .or_else(|| std::env::var("USER").ok()),
            };
            let done = registry::rollback(&client, &rollback_args.job_type, options)
                .await
                .with_context(|| format!("failed to roll back {}", rollback_args.job_type))?;
            match output {
                Output::Json => outln!("{}", serde_json::to_string(&done)?),
                Output::Text => outln!(
                    "rolled back {}: {} → {}; {}",
                    done.route.job_type,
                    done.previous
                        .as_ref()
                        .map_or_else(|| "(removed)".to_string(), describe),
                    describe(&done.route),
                    done.fleet.describe()
                ),
            }
        }
        HandlerCommand::Rm(rm_args) => {
            let removed = registry::remove(&client, &rm_args.job_type)
                .await
                .with_context(|| format!("failed to remove {}", rm_args.job_type))?;
            match output {
                Output::Json => outln!(
                    "{}",
                    serde_json::json!({ "job_type": removed.job_type, "removed": removed })
                ),
                Output::Text => outln!(
                    "removed the route of {} (was {}); its jobs now retry as unknown_job_type, \
                     then are dead-lettered (`jobbox handler rollback {}` brings it back)",
                    removed.job_type,
                    describe(&removed),
                    removed.job_type
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_history(
    job_type: &str,
    versions: &[registry::RouteVersion],
    output: Output,
) -> anyhow::Result<()> {
    match output {
        Output::Json => outln!("{}", serde_json::to_string(versions)?),
        Output::Text if versions.is_empty() => outln!("no deploys of {job_type}"),
        Output::Text => {
            outln!(
                "  {:<9} {:<20} {:<10} {:<9} {:<20} by",
                "REVISION",
                "DIGEST",
                "VERSION",
                "SIZE",
                "WRITTEN"
            );
            for version in versions {
                let mark = if version.current { "*" } else { " " };
                let written = version.written_at.format("%Y-%m-%d %H:%M:%S");
                match &version.route {
                    Some(route) => outln!(
                        "{mark} {:<9} {:<20} {:<10} {:<9} {:<20} {}",
                        version.revision,
                        short_digest(&route.digest),
                        route.version.as_deref().unwrap_or("-"),
                        format::size(route.size_bytes),
                        written,
                        route.deployed_by.as_deref().unwrap_or("-"),
                    ),
                    None => outln!(
                        "{mark} {:<9} {:<20} {:<10} {:<9} {}",
                        version.revision,
                        "(removed)",
                        "-",
                        "-",
                        written
                    ),
                }
            }
            if !versions.iter().any(|version| version.current) {
                outln!("(no current route: removed)");
            }
        }
    }
    Ok(())
}

/// `sha256:0123456789ab [v2]`.
fn describe(route: &jobbox::Route) -> String {
    match &route.version {
        Some(version) => format!("{} [{version}]", short_digest(&route.digest)),
        None => short_digest(&route.digest),
    }
}

/// `sha256:` and the first 12 hex digits.
pub fn short_digest(digest: &str) -> String {
    digest.chars().take(7 + 12).collect()
}
