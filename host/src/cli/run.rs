//! `jobbox run`: run a handler once, locally, with the same sandbox as the worker.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use jobbox::{HandlerLimits, Job};
use serde_json::json;

use super::{Output, format, parse_fuel, parse_size};
use crate::sandbox::{EngineConfig, JobControl, RunOutcome, Sandbox, ScratchArea, ScratchCaps};

/// Longest a local compile may take before `jobbox run` gives up.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments of `jobbox run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The handler component (`.wasm`, built for wasm32-wasip2).
    wasm: PathBuf,
    /// The job's payload as JSON.
    #[arg(long, conflicts_with = "payload_file")]
    json: Option<String>,
    /// Read the payload from a file instead (use with --content-type).
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// The payload's media type.
    #[arg(long, default_value = jobbox::wire::CONTENT_TYPE_JSON)]
    content_type: String,
    /// The job type the handler sees.
    #[arg(long, default_value = "local")]
    job_type: String,
    /// Fuel (roughly, wasm instructions) the job may burn; "unlimited" for no limit.
    #[arg(long, value_parser = parse_fuel)]
    fuel: Option<u64>,
    /// Linear memory the job may use, e.g. 64MiB.
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Wall-clock limit, e.g. 5s or 250ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Largest output the job may return, e.g. 1MiB.
    #[arg(long, value_parser = parse_size)]
    max_output: Option<u64>,
    /// Give the job a scratch directory (`/tmp` in the guest) of this size, e.g.
    /// 64MiB, made under the default scratch root and removed afterwards.
    #[arg(long, value_parser = parse_size)]
    scratch: Option<u64>,
    /// Files, directories and symlinks the job may create there (default 1024).
    #[arg(long, requires = "scratch")]
    scratch_files: Option<u64>,
}

pub async fn run(args: RunArgs, output: Output) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.wasm)
        .with_context(|| format!("failed to read {}", args.wasm.display()))?;
    let payload = match (&args.json, &args.payload_file) {
        (Some(text), _) => {
            serde_json::from_str::<serde_json::Value>(text).context("--json is not valid JSON")?;
            text.clone().into_bytes()
        }
        (None, Some(path)) => {
            std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?
        }
        (None, None) => b"{}".to_vec(),
    };
    let limits = limits(&args);
    let scratch = if limits.has_scratch() {
        let root = crate::sandbox::scratch::area::default_root();
        let caps = ScratchCaps {
            max_bytes: limits.scratch_bytes,
            max_files: limits.scratch_files,
        };
        Some(
            ScratchArea::open(&root, caps)
                .with_context(|| format!("failed to set up the scratch area {}", root.display()))?,
        )
    } else {
        None
    };
    let sandbox = Sandbox::with_scratch(
        EngineConfig {
            concurrency: 1,
            max_memory_bytes: limits.memory_bytes,
            pooling: false,
        },
        scratch,
    )?;
    let handler = sandbox
        .load(Arc::from(bytes), COMPILE_TIMEOUT)
        .await
        .with_context(|| format!("{} is not a usable handler", args.wasm.display()))?;
    let job = Job::new(args.job_type.clone(), payload).content_type(args.content_type.clone());
    let outcome = sandbox
        .run(&handler, &job, limits, JobControl::default())
        .await;
    // What a worker would record as the result's content type.
    let content_type = outcome
        .output_content_type
        .clone()
        .unwrap_or_else(|| job.content_type.clone());
    match output {
        Output::Json => print_json(&outcome, handler.digest(), &content_type)?,
        Output::Text => print_text(&outcome, &content_type)?,
    }
    Ok(if outcome.result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn limits(args: &RunArgs) -> HandlerLimits {
    let mut limits = HandlerLimits::default();
    if let Some(fuel) = args.fuel {
        limits.fuel = fuel;
    }
    if let Some(memory) = args.memory {
        limits.memory_bytes = memory;
    }
    if let Some(timeout) = args.timeout {
        limits.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    }
    if let Some(scratch) = args.scratch {
        limits.scratch_bytes = scratch;
    }
    if let Some(files) = args.scratch_files {
        limits.scratch_files = files;
    }
    if let Some(max_output) = args.max_output {
        limits.output_bytes = max_output;
    }
    limits
}

fn print_text(outcome: &RunOutcome, content_type: &str) -> std::io::Result<()> {
    match &outcome.result {
        // MessagePack decoded; JSON and text as the handler wrote them.
        Ok(bytes) => match format::is_msgpack(content_type)
            .then(|| format::output_value(bytes, Some(content_type)))
            .flatten()
        {
            Some(value) => outln!("{value}"),
            None => outln!("{}", format::payload(bytes)),
        },
        Err(failure) => {
            outln!("failed: {failure}");
            if let Some(code) = &failure.trap_code {
                outln!("trap code: {code}");
            }
            if failure.retryable {
                outln!("retryable: a worker would retry this job");
            }
        }
    }
    if !outcome.logs.is_empty() || outcome.logs_dropped > 0 {
        outln!("\nlogs:");
        for entry in &outcome.logs {
            outln!("  {}", format::log_line(entry));
        }
        if outcome.logs_dropped > 0 {
            outln!(
                "  ({} more lines dropped past the log limit)",
                outcome.logs_dropped
            );
        }
    }
    for (name, bytes) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        if !bytes.is_empty() {
            outln!("\n{name}:\n{}", String::from_utf8_lossy(bytes).trim_end());
        }
    }
    outln!("\ncontent type: {content_type}");
    outln!("usage: {}", format::usage(&outcome.usage));
    Ok(())
}

fn print_json(outcome: &RunOutcome, digest: &str, content_type: &str) -> std::io::Result<()> {
    let output = outcome.result.as_ref().ok().map(|bytes| {
        format::output_value(bytes, Some(content_type))
            .unwrap_or_else(|| json!(String::from_utf8_lossy(bytes)))
    });
    let error = outcome.result.as_ref().err().map(|failure| {
        json!({
            "error_type": failure.error_type,
            "message": failure.message,
            "retryable": failure.retryable,
            "trap_code": failure.trap_code,
            "detail": failure.detail,
        })
    });
    let document = json!({
        "status": if outcome.result.is_ok() { "COMPLETED" } else { "FAILED" },
        "handler_digest": digest,
        "output": output,
        "content_type": content_type,
        "error": error,
        "logs": outcome.logs,
        "logs_dropped": outcome.logs_dropped,
        "stdout": String::from_utf8_lossy(&outcome.stdout),
        "stderr": String::from_utf8_lossy(&outcome.stderr),
        "usage": outcome.usage,
    });
    outln!("{document}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{parse_fuel, parse_size};

    #[test]
    fn sizes_and_fuel_parse() {
        assert_eq!(parse_size("64MiB"), Ok(64 * 1024 * 1024));
        assert_eq!(parse_fuel("unlimited"), Ok(u64::MAX));
        assert_eq!(parse_fuel("1_000"), Ok(1000));
        assert!(parse_fuel("lots").is_err());
    }
}
