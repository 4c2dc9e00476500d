//! Support for jobbox's end-to-end tests: a real `nats-server` per test, the guests
//! `build.rs` built, and helpers to deploy handlers and run workers.

pub mod chromium;
/// Python and JavaScript guests, built on demand with their language's toolchain.
pub mod components;
/// Paths of the wasm guests (example handlers and test guests) that `build.rs` built.
pub mod guests;
pub mod http;
mod nats_cluster;
mod nats_server;
pub mod otlp;

use std::path::PathBuf;
use std::time::Duration;

use jobbox::{Client, JobResult};
use jobbox_host::registry::{DeployOptions, deploy};
use jobbox_host::worker::{Worker, WorkerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use nats_cluster::{CLUSTER_NAME, NatsCluster};
pub use nats_server::{NatsServer, free_port, nats_server_bin};

/// Deploys the guest at `path` as `job_type` with default limits.
pub async fn deploy_guest(client: &Client, job_type: &str, path: &str) -> jobbox::Route {
    deploy_guest_with(client, job_type, path, DeployOptions::default()).await
}

/// Deploys the guest at `path` as `job_type` with `options`.
pub async fn deploy_guest_with(
    client: &Client,
    job_type: &str,
    path: &str,
    options: DeployOptions,
) -> jobbox::Route {
    let wasm = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    deploy(client, job_type, wasm, options)
        .await
        .unwrap_or_else(|e| panic!("deploy {job_type}: {e}"))
}

/// An in-process worker; stopped (gracefully) by [`RunningWorker::stop`].
#[derive(Debug)]
pub struct RunningWorker {
    /// The worker's id.
    pub id: String,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningWorker {
    /// Starts a worker on its own NATS connection.
    pub async fn start(url: &str, config: WorkerConfig) -> Self {
        let client = Client::connect(url).await.expect("worker connects");
        let worker = Worker::new(client, config).await.expect("worker builds");
        let id = worker.id().to_string();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker.run(shutdown.clone()));
        Self { id, shutdown, task }
    }

    /// Starts a worker on `queues` with `concurrency` and a short ack wait.
    pub async fn on(url: &str, queues: &[&str], concurrency: u32) -> Self {
        let mut config = WorkerConfig::new(queues.iter().map(|q| q.to_string()).collect());
        config.concurrency = concurrency;
        config.ack_wait = Duration::from_secs(5);
        config.shutdown_grace = Duration::from_secs(10);
        Self::start(url, config).await
    }

    /// Stops the worker and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("worker task joins")
            .expect("worker ends cleanly");
    }
}

/// Waits for a job's result, failing the test after `timeout`.
pub async fn wait_result(client: &Client, job_id: &str, timeout: Duration) -> JobResult {
    client
        .wait_result(job_id, timeout)
        .await
        .unwrap_or_else(|e| panic!("no result for job {job_id}: {e}"))
}

/// The directory of this build's binaries, `target/<profile>`, from the running
/// test binary (`target/<profile>/deps/<test binary>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// A compile cache directory beside the test binary (`target/<profile>/<name>`), for
/// workers that run large components (Python, JavaScript): each is compiled by a
/// worker once per build of the tests instead of once per test.
pub fn test_compile_cache(name: &str) -> PathBuf {
    profile_dir().join(name)
}

/// The `jobbox` binary built alongside the tests (`$JOBBOX_BIN` overrides).
pub fn jobbox_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("JOBBOX_BIN") {
        return PathBuf::from(path);
    }
    let bin = profile_dir().join("jobbox");
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build -p jobbox-host` (or set JOBBOX_BIN)",
        bin.display()
    );
    bin
}

/// A one-line summary of a result for assertion messages (logs left out).
pub fn brief(result: &JobResult) -> String {
    format!(
        "{} status={:?} error_type={:?} error={:?} attempts={} worker={}",
        result.job_id,
        result.status,
        result.error_type,
        result.error,
        result.attempts,
        result.worker_id
    )
}

/// Starts `jobbox worker <args> --nats-url <url>` as a child process (stdout and
/// stderr discarded), for tests that kill or signal a worker.
pub fn spawn_worker_process(url: &str, args: &[&str]) -> std::process::Child {
    std::process::Command::new(jobbox_bin())
        .arg("worker")
        .args(args)
        .args(["--nats-url", url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a worker process")
}

/// Like [`spawn_worker_process`], with the worker's log (stderr) written to `log`.
pub fn spawn_logged_worker_process(
    url: &str,
    args: &[&str],
    log: &std::path::Path,
) -> std::process::Child {
    let file = std::fs::File::create(log).expect("create the worker's log file");
    std::process::Command::new(jobbox_bin())
        .arg("worker")
        .args(args)
        .args(["--nats-url", url])
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .expect("start a worker process")
}

/// A child process killed (SIGCONT, then SIGKILL) and reaped when dropped, so a
/// failing test leaves no process behind, not even a stopped one.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `queue` has nothing pending and nothing unacknowledged on any lane: every
/// message ended (a worker acks a job only once its terminal event is stored).
pub async fn wait_settled(client: &Client, queue: &str, timeout: Duration) {
    let unsettled = || async {
        let jobs = client
            .jetstream()
            .get_stream(jobbox::nats::JOBS_STREAM)
            .await
            .ok()?;
        let mut open = 0;
        for lane in jobbox::nats::Lane::BY_URGENCY {
            let Ok(mut consumer) = jobs
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
                    &jobbox::nats::consumer_name(queue, lane),
                )
                .await
            else {
                continue;
            };
            let info = consumer.info().await.ok()?;
            open += info.num_pending + info.num_ack_pending as u64;
        }
        Some(open)
    };
    let wait = async {
        while unsettled().await != Some(0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(timeout, wait).await.is_err() {
        panic!(
            "queue {queue} still has {:?} open messages after {timeout:?}",
            unsettled().await
        );
    }
}
