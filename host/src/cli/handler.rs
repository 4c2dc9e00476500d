//! `jobbox handler deploy|list`: put handler components into the registry.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use jobbox::HandlerLimits;

use super::{NatsArgs, Output, format, parse_fuel, parse_size};
use crate::registry::{DeployOptions, deploy};

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
    /// Who is deploying (default: $USER).
    #[arg(long)]
    deployed_by: Option<String>,
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
            let options = DeployOptions {
                version: deploy_args.version,
                limits,
                deployed_by: deploy_args
                    .deployed_by
                    .or_else(|| std::env::var("USER").ok()),
            };
            let route = deploy(&client, &deploy_args.job_type, wasm, options)
                .await
                .with_context(|| format!("failed to deploy {}", deploy_args.wasm.display()))?;
            match output {
                Output::Json => println!("{}", serde_json::to_string(&route)?),
                Output::Text => println!(
                    "deployed {} → {}{} ({})",
                    route.job_type,
                    route.digest,
                    route
                        .version
                        .as_deref()
                        .map(|v| format!(" [{v}]"))
                        .unwrap_or_default(),
                    format::size(route.size_bytes)
                ),
            }
        }
        HandlerCommand::List => {
            let routes = client.routes().await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string(&routes)?),
                Output::Text if routes.is_empty() => println!("no handlers deployed"),
                Output::Text => {
                    println!(
                        "{:<24} {:<20} {:<10} {:<9} deployed",
                        "JOB TYPE", "DIGEST", "VERSION", "SIZE"
                    );
                    for route in routes {
                        println!(
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
    }
    Ok(ExitCode::SUCCESS)
}

/// `sha256:` and the first 12 hex digits.
pub fn short_digest(digest: &str) -> String {
    digest.chars().take(7 + 12).collect()
}
