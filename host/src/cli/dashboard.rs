//! `jobbox dashboard`: serve the web dashboard until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;

use super::NatsArgs;
use super::worker::shutdown_on_signal;
use crate::dashboard::{Dashboard, Token};

/// Arguments of `jobbox dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Where to serve the page. Keep it on a loopback or private address: reads
    /// need no token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The token the page's actions (replay, cancel, rollback) need; at least 16
    /// characters (default: a fresh random one, printed at start).
    #[arg(long, env = "JOBBOX_DASHBOARD_TOKEN")]
    token: Option<String>,
}

/// The token given, or a fresh one.
pub(crate) fn token_of(given: Option<&str>) -> anyhow::Result<Token> {
    match given {
        Some(token) => Token::new(token).map_err(anyhow::Error::msg),
        None => Ok(Token::random()),
    }
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<ExitCode> {
    let client = args.nats.connect().await?;
    let token = token_of(args.token.as_deref())?;
    let dashboard = Dashboard::bind(client, args.listen, token.clone()).await?;
    let addr = dashboard.local_addr()?;
    outln!("dashboard on http://{addr}/");
    if args.token.is_none() {
        outln!("action token: {}", token.expose());
    }
    dashboard.serve(shutdown_on_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
