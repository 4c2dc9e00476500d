//! `jobbox admin layout`: show every jobbox stream with its replicas and where its
//! copies are, or change the replicas of an existing deployment.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{NatsArgs, Output};

/// Arguments of `jobbox admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Every jobbox stream and bucket with its replicas, leader and peers; with
    /// --replicas N, first change them all to N (1 to 5; the cluster must have at
    /// least N JetStream servers).
    Layout {
        #[command(flatten)]
        nats: NatsArgs,
    },
}

pub async fn run(args: AdminArgs, output: Output) -> anyhow::Result<ExitCode> {
    match args.command {
        AdminCommand::Layout { nats } => layout(nats, output).await,
    }
}

async fn layout(nats: NatsArgs, output: Output) -> anyhow::Result<ExitCode> {
    let client = nats.connect().await?;
    let js = client.jetstream();
    if let Some(replicas) = nats.replicas() {
        let changes = jobbox::layout::set_replicas(js, replicas).await?;
        if output == Output::Text {
            let changed = changes.iter().filter(|c| c.before != c.after).count();
            outln!(
                "{changed} of {} streams changed to {replicas} replicas",
                changes.len()
            );
        }
    }
    let mut rows = Vec::new();
    for name in jobbox::layout::stream_names() {
        let mut stream = js
            .get_stream(&name)
            .await
            .with_context(|| format!("failed to read stream {name}"))?;
        let info = stream
            .info()
            .await
            .with_context(|| format!("failed to read stream {name}"))?;
        let cluster = info.cluster.clone().unwrap_or_default();
        let peers: Vec<String> = cluster
            .replicas
            .iter()
            .map(|peer| {
                let state = if peer.current { "current" } else { "behind" };
                format!("{} ({state})", peer.name)
            })
            .collect();
        rows.push(json!({
            "stream": name,
            "replicas": info.config.num_replicas.max(1),
            "leader": cluster.leader,
            "peers": peers,
            "messages": info.state.messages,
        }));
    }
    match output {
        Output::Json => outln!("{}", serde_json::to_string(&rows)?),
        Output::Text => {
            for row in &rows {
                let peers = row["peers"]
                    .as_array()
                    .map(|peers| {
                        peers
                            .iter()
                            .filter_map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                outln!(
                    "{:<22} R{} leader {} {}",
                    row["stream"].as_str().unwrap_or_default(),
                    row["replicas"],
                    row["leader"].as_str().unwrap_or("-"),
                    if peers.is_empty() {
                        String::new()
                    } else {
                        format!("· followers {peers}")
                    }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
