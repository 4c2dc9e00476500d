//! `jobbox worker` child processes for `jobbox bench --workers N`: spread over a
//! cluster's nodes, stopped with SIGTERM (killed when they do not stop).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::worker::WorkerConfig;

/// How long a worker process gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Worker processes owned by one bench run; killed on drop.
#[derive(Debug)]
pub struct WorkerProcesses {
    children: Vec<Child>,
    ids: Vec<String>,
}

impl WorkerProcesses {
    /// Starts `count` `jobbox worker` processes on `queue` with `config`'s concurrency
    /// and prefetch. Process `i` lists the servers in `urls` starting at the `i`-th, so
    /// on a cluster the workers first connect to different nodes.
    pub fn spawn(
        count: usize,
        urls: &str,
        queue: &str,
        config: &WorkerConfig,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("failed to find the jobbox executable")?;
        let servers = jobbox::server_urls(urls)?;
        let mut processes = Self {
            children: Vec::with_capacity(count),
            ids: Vec::with_capacity(count),
        };
        for i in 0..count {
            let rotated: Vec<&str> = servers
                .iter()
                .cycle()
                .skip(i % servers.len())
                .take(servers.len())
                .map(String::as_str)
                .collect();
            let id = format!("{queue}-w{i}");
            let mut command = Command::new(&exe);
            command
                .arg("worker")
                .args(["--queue", queue, "--worker-id", &id])
                .args(["--concurrency", &config.concurrency.to_string()])
                .args(["--nats-url", &rotated.join(",")])
                .env_remove("JOBBOX_METRICS_ADDR")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            // Their info lines (started, stopped) would interleave with the report.
            if std::env::var_os("RUST_LOG").is_none() {
                command.env("RUST_LOG", "warn");
            }
            if let Some(prefetch) = config.prefetch {
                command.args(["--prefetch", &prefetch.to_string()]);
            }
            let child = command
                .spawn()
                .with_context(|| format!("failed to start worker process {i}"))?;
            processes.children.push(child);
            processes.ids.push(id);
        }
        Ok(processes)
    }

    /// The processes' ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Waits until every process has announced itself in the workers bucket.
    pub async fn wait_ready(
        &self,
        client: &jobbox::Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let live = client.workers().await?;
            let ready = self
                .ids
                .iter()
                .filter(|id| live.iter().any(|worker| &worker.worker_id == *id))
                .count();
            if ready == self.ids.len() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{ready} of {} worker processes started within {timeout:?}",
                    self.ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM to every process and waits for them to exit (killing those
    /// still running after [`STOP_GRACE`]).
    pub async fn stop(mut self) {
        for child in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
