//! The `jobbox` command line.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: the per-job path allocates many small
/// buffers across threads (message encoding, NATS protocol, futures), where glibc's
/// malloc cost about a tenth of the worker's CPU. See `docs/performance.md`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = jobbox_host::cli::Cli::parse();
    jobbox_host::cli::init_tracing(cli.verbose, cli.log_format);
    match cli.run().await {
        Ok(code) => code,
        // The reader went away (`jobbox result … | head`): nothing to report.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", jobbox_host::cli::error_line(&error));
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
