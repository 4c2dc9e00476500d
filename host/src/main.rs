//! The `jobbox` command line.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = jobbox_host::cli::Cli::parse();
    jobbox_host::cli::init_tracing(cli.verbose);
    match cli.run().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
