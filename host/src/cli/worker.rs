//! `jobbox worker`: run jobs from one or more queues until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{NatsArgs, parse_size};
use crate::sandbox::ScratchCaps;
use crate::worker::{Worker, WorkerConfig};

/// Arguments of `jobbox worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Queue to take jobs from (repeat for several).
    #[arg(long = "queue", short = 'q', default_value = jobbox::DEFAULT_QUEUE)]
    queues: Vec<String>,
    /// Jobs to run at the same time.
    #[arg(long, short = 'c', default_value_t = 4)]
    concurrency: u32,
    /// Largest memory any one job may get, e.g. 256MiB.
    #[arg(long, value_parser = parse_size, default_value = "256MiB")]
    max_memory: u64,
    /// How long a job's message stays with this worker without an ack.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    ack_wait: Duration,
    /// Deliveries of one job message before the server gives up on it and a worker
    /// dead-letters it (the `max_deliver` of lane consumers this worker creates).
    #[arg(long, default_value_t = crate::worker::DEFAULT_MAX_DELIVERIES, value_parser = clap::value_parser!(u32).range(2..))]
    max_deliveries: u32,
    /// How long running jobs get to finish after SIGTERM/Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    shutdown_grace: Duration,
    /// This worker's id (default: a fresh unique one).
    #[arg(long)]
    worker_id: Option<String>,
    /// Where compiled handlers are cached (default: ~/.cache/jobbox/compiled).
    #[arg(long, env = "JOBBOX_CACHE_DIR")]
    cache_dir: Option<std::path::PathBuf>,
    /// Messages each lane fetches ahead of free slots (default: the concurrency).
    /// Lower it for long jobs so that other workers get more of the backlog.
    #[arg(long)]
    prefetch: Option<u32>,
    /// The fleet key file (64+ hex digits, mode 0600): share compiled handlers with
    /// the other workers holding the same key, sealed under it, and compile for
    /// deploys. Deployers must never get this key. Default: compile on this worker
    /// only.
    #[arg(long, env = crate::registry::fleet::FLEET_KEY_FILE_ENV)]
    fleet_key_file: Option<std::path::PathBuf>,
    /// Compile every handler at start, without the on-disk cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// Where jobs' scratch directories are made (made private, mode 0700; default: a
    /// directory of this user's under the system temp dir). Workers may share one;
    /// what dead workers left in it is removed at start.
    #[arg(long, env = "JOBBOX_SCRATCH_DIR")]
    scratch_dir: Option<std::path::PathBuf>,
    /// Largest scratch directory any one job may get, whatever its route grants,
    /// e.g. 1GiB.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    max_scratch: u64,
    /// Most files, directories and symlinks any one job may create in its scratch
    /// directory, whatever its route grants.
    #[arg(long, default_value_t = crate::sandbox::scratch::area::DEFAULT_MAX_SCRATCH_FILES)]
    max_scratch_files: u64,
    /// Serve Prometheus metrics at http://<addr>/metrics, e.g. 127.0.0.1:9464
    /// (default: no metrics).
    #[arg(long, env = "JOBBOX_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Export one span per job to this OTLP/HTTP collector, a base URL such as
    /// http://127.0.0.1:4318 (spans go to <url>/v1/traces; default: no spans).
    #[arg(long, env = crate::otel::OTLP_ENDPOINT_ENV)]
    otlp_endpoint: Option<String>,
}

impl WorkerArgs {
    /// The worker config these arguments describe (reads the fleet key file).
    pub fn config(&self) -> anyhow::Result<WorkerConfig> {
        let mut config = WorkerConfig::new(self.queues.clone());
        config.concurrency = self.concurrency.max(1);
        config.max_memory_bytes = self.max_memory;
        config.ack_wait = self.ack_wait;
        config.shutdown_grace = self.shutdown_grace;
        config.max_deliveries = self.max_deliveries;
        config.prefetch = self.prefetch;
        config.metrics_addr = self.metrics_addr;
        config.otlp_endpoint.clone_from(&self.otlp_endpoint);
        config.scratch_dir.clone_from(&self.scratch_dir);
        config.scratch_caps = ScratchCaps {
            max_bytes: self.max_scratch,
            max_files: self.max_scratch_files,
        };
        if let Some(id) = &self.worker_id {
            config.worker_id.clone_from(id);
        }
        config.cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir
                .clone()
                .or_else(crate::registry::default_cache_dir)
        };
        config.fleet_key = self
            .fleet_key_file
            .as_deref()
            .map(crate::registry::FleetKey::read)
            .transpose()?;
        Ok(config)
    }
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let client = args.nats.connect().await?;
    let worker = Worker::new(client, args.config()?).await?;
    let shutdown = shutdown_on_signal();
    worker.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// A token cancelled on SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}
