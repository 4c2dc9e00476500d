//! The worker: pulls jobs from its queues, runs each in the sandbox, records one
//! result and the events of every step, and only then acks.

mod admit;
mod backoff;
mod batches;
mod cancels;
mod counters;
mod dispatch;
mod events;
mod fetch;
mod heartbeat;
mod inbox;
mod native;
mod record;
mod result_checks;
mod running;
mod scheduler;
mod store;
mod undeliverable;
mod verdict;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use jobbox::Client;
use tokio::sync::Semaphore;

use inbox::Inbox;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admit::DELIVERY_SLACK;
pub use backoff::{RETRY_BASE, RETRY_CAP, retry_delay};
pub use batches::{FLUSH_INTERVAL as BATCH_FLUSH_INTERVAL, RECONCILE_AFTER};
pub use counters::FLUSH_INTERVAL;
pub use heartbeat::HEARTBEAT_INTERVAL;
pub use native::{NATIVE_DIGEST, NativeFn, NativeHandlers, echo as native_echo};
pub use running::RunningJobs;
pub use scheduler::FIRE_JITTER;
pub use store::MAX_ERROR_BYTES;
pub use verdict::{Verdict, decide};

use crate::metrics::{Metrics, Snapshot};
use crate::registry::{FleetArtifacts, HandlerLoader, RouteTable, watch_routes};
use crate::sandbox::{EngineConfig, Sandbox, ScratchArea, ScratchCaps};

/// Default time a fetched job may go without an ack or progress ack before
/// JetStream hands it to another worker.
///
/// Running jobs send progress acks every third of this, so it bounds how long a
/// crashed worker's jobs wait to be redelivered, not how long a job may run.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// Default bound on deliveries of one job message, the lane consumers' `max_deliver`.
///
/// The worker ends a job that keeps coming back itself (its attempts plus
/// ten hand-backs); this bound is for a message no worker
/// ever sees, such as one the client cannot parse. The server stops delivering it and
/// says so in an advisory, which a worker turns into a dead letter
/// (`worker/undeliverable.rs`). Every delivery of such a message costs the worker that
/// fetched it a reconnect, once per `ack_wait`: a hundred deliveries leaves room for
/// routes with up to 89 retries.
pub const DEFAULT_MAX_DELIVERIES: u32 = 100;

/// Default time running jobs get to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How a worker is set up.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's id (unique among live workers).
    pub worker_id: String,
    /// Queues to take jobs from.
    pub queues: Vec<String>,
    /// Jobs run at the same time at most.
    pub concurrency: u32,
    /// The largest memory limit any job may get, in bytes.
    pub max_memory_bytes: u64,
    /// See [`DEFAULT_ACK_WAIT`].
    pub ack_wait: Duration,
    /// See [`DEFAULT_SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
    /// See [`DEFAULT_MAX_DELIVERIES`]: the `max_deliver` of the lane consumers this
    /// worker creates, and of existing ones that have none (made before it existed).
    pub max_deliveries: u32,
    /// Where compiled handlers are cached on disk (`None`: no cache).
    pub cache_dir: Option<std::path::PathBuf>,
    /// The fleet key: with one, compiled handlers are shared with the other workers
    /// holding it (sealed under it) and compile requests of deploys are answered;
    /// `None`: this worker compiles on its own.
    pub fleet_key: Option<crate::registry::FleetKey>,
    /// Messages each lane fetches ahead of free slots (default: the concurrency).
    /// Fetched messages wait locally, kept alive with progress acks; a larger value
    /// keeps the pipe full, a smaller one leaves more work to other workers.
    pub prefetch: Option<u32>,
    /// Job types run by native functions instead of components (benchmarks only).
    pub native: NativeHandlers,
    /// Where jobs' scratch directories are made (default: a private directory under
    /// the system temp dir, see [`crate::sandbox::scratch::area::default_root`]).
    /// Leftovers of dead workers in it are removed when the worker starts.
    pub scratch_dir: Option<std::path::PathBuf>,
    /// The most scratch any one job gets here, whatever its route grants.
    pub scratch_caps: ScratchCaps,
    /// Where to serve Prometheus metrics at `/metrics` (`None`: no metrics kept).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The OTLP/HTTP collector to export one span per job to, a base URL such as
    /// `http://127.0.0.1:4318` (`None`: no spans are made).
    pub otlp_endpoint: Option<String>,
}

impl WorkerConfig {
    /// A config for `queues` with defaults everywhere else.
    pub fn new(queues: Vec<String>) -> Self {
        Self {
            worker_id: format!("worker-{}", ulid::Ulid::new().to_string().to_lowercase()),
            queues,
            concurrency: 4,
            max_memory_bytes: 256 * 1024 * 1024,
            ack_wait: DEFAULT_ACK_WAIT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            cache_dir: None,
            fleet_key: None,
            prefetch: None,
            native: NativeHandlers::default(),
            scratch_dir: None,
            scratch_caps: ScratchCaps::default(),
            metrics_addr: None,
            otlp_endpoint: None,
        }
    }

    /// Messages each lane may hold: [`WorkerConfig::prefetch`] or the concurrency.
    pub fn lane_prefetch(&self) -> usize {
        self.prefetch.unwrap_or(self.concurrency).max(1) as usize
    }
}

/// Counters a worker keeps about itself.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Jobs that ended COMPLETED here.
    pub done: AtomicU64,
    /// Jobs that ended in any other final status here.
    pub failed: AtomicU64,
    /// Attempts handed back for a retry.
    pub retried: AtomicU64,
}

/// What every job task of a worker shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: WorkerConfig,
    pub client: Client,
    pub sandbox: Sandbox,
    pub routes: RouteTable,
    pub counters: WorkerCounters,
    pub slots: Arc<Semaphore>,
    /// Cancelled when running jobs must be abandoned and handed back.
    pub abort: CancellationToken,
    /// The jobs this worker holds (admitted, not yet acked), and the cancel flags of
    /// those whose handler runs.
    pub running: RunningJobs,
    /// Jobs cancelled recently (from the cancellations watch).
    pub cancelled: cancels::RecentCancels,
    /// Publishes events, collecting their acks in the background.
    pub events: events::EventSink,
    /// Looks up jobs' results before they run, many in one read under load.
    pub result_checks: result_checks::ResultChecks,
    /// Per-queue counts not yet flushed.
    pub queue_counters: counters::QueueCounters,
    /// Active batches, as the batch tracker last saw them.
    pub batches: batches::BatchBook,
    /// Prometheus metrics, when they are served.
    pub metrics: Option<Arc<Metrics>>,
    /// The span exporter, when spans are exported.
    pub tracer: Option<crate::otel::JobTracer>,
    /// Jobs taken from the inbox and not yet done with (each holds a slot).
    pub busy: AtomicU64,
}

impl Shared {
    /// The metrics and the bounded `job_type` label of `job_type`, when metrics are on.
    pub(crate) fn metrics_for<'a>(&self, job_type: &'a str) -> Option<(&Metrics, &'a str)> {
        let metrics = self.metrics.as_deref()?;
        let routed =
            self.routes.get(job_type).is_some() || self.config.native.get(job_type).is_some();
        Some((metrics, metrics.job_type_label(job_type, routed)))
    }
}

/// A running worker.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    event_acks: tokio::task::JoinHandle<()>,
    metrics_listener: Option<tokio::net::TcpListener>,
}

impl Worker {
    /// Builds the sandbox, loads the current routes and prepares the consumers.
    pub async fn new(client: Client, config: WorkerConfig) -> anyhow::Result<Self> {
        // Boxed: the whole setup is a future of ~90 KB in a debug build, and a
        // caller's own future (a test's body, polled on a 2 MiB thread stack) would
        // otherwise hold it inline, once per call.
        Box::pin(Self::build(client, config)).await
    }

    async fn build(client: Client, config: WorkerConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.queues.is_empty(),
            "a worker needs at least one queue"
        );
        for queue in &config.queues {
            anyhow::ensure!(jobbox::is_valid_name(queue), "invalid queue name {queue:?}");
        }
        let scratch_root = config
            .scratch_dir
            .clone()
            .unwrap_or_else(crate::sandbox::scratch::area::default_root);
        let scratch = ScratchArea::open(&scratch_root, config.scratch_caps).with_context(|| {
            format!(
                "failed to set up the scratch area {}",
                scratch_root.display()
            )
        })?;
        let sandbox = Sandbox::with_scratch(
            EngineConfig {
                concurrency: config.concurrency,
                max_memory_bytes: config.max_memory_bytes,
                pooling: true,
            },
            Some(scratch),
        )
        .context("failed to build the sandbox")?;
        let mut loader = HandlerLoader::new(client.clone(), sandbox.clone());
        if let Some(dir) = &config.cache_dir {
            loader = loader.with_cache_dir(dir.clone()).with_context(|| {
                format!("failed to open the compile cache at {}", dir.display())
            })?;
        }
        if let Some(key) = &config.fleet_key {
            let fleet = FleetArtifacts::new(
                client.clone(),
                key.clone(),
                sandbox.engine(),
                config.worker_id.clone(),
            );
            tracing::info!(engine = %fleet.engine_id(), key = %key.fingerprint(), "sharing compiled handlers with the fleet");
            loader = loader.with_fleet(fleet);
        }
        let routes = RouteTable::new(client.clone(), loader);
        let (events, event_acks) = events::EventSink::start(client.clone());
        let result_checks = result_checks::ResultChecks::start(client.clone());
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("failed to listen for metrics on {addr}"))?,
            ),
            None => None,
        };
        let metrics = metrics_listener.as_ref().map(|_| Arc::new(Metrics::new()));
        let tracer = match config
            .otlp_endpoint
            .as_deref()
            .filter(|e| !e.trim().is_empty())
        {
            Some(endpoint) => Some(crate::otel::JobTracer::new(endpoint, &config.worker_id)?),
            None => None,
        };
        Ok(Self {
            event_acks,
            metrics_listener,
            shared: Arc::new(Shared {
                slots: Arc::new(Semaphore::new(config.concurrency.max(1) as usize)),
                config,
                client,
                sandbox,
                routes,
                counters: WorkerCounters::default(),
                abort: CancellationToken::new(),
                running: RunningJobs::default(),
                cancelled: cancels::RecentCancels::default(),
                events,
                result_checks,
                queue_counters: counters::QueueCounters::default(),
                batches: batches::BatchBook::default(),
                metrics,
                tracer,
                busy: AtomicU64::new(0),
            }),
        })
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.shared.config.worker_id
    }

    /// The worker's counters.
    pub fn counters(&self) -> &WorkerCounters {
        &self.shared.counters
    }

    /// Runs until `shutdown` is cancelled, then stops fetching, gives running jobs
    /// the configured grace to finish and hands the rest back for redelivery.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            shared,
            event_acks,
            metrics_listener,
        } = self;
        // Answer deploys' compile requests from the start: a deploy made while this
        // worker loads its routes need not wait for it.
        if shared.routes.loader().fleet().is_some() {
            crate::registry::fleet::requests::serve(
                shared.client.clone(),
                shared.routes.loader().clone(),
                shutdown.clone(),
            )
            .await?;
        }
        Box::pin(watch_routes(
            shared.client.clone(),
            shared.routes.clone(),
            shared.config.worker_id.clone(),
            shutdown.clone(),
        ))
        .await
        .context("failed to load the current routes")?;
        // Deploys ask every worker to install the route they wrote (registry/sync.rs).
        crate::registry::sync::serve(
            shared.client.clone(),
            shared.routes.clone(),
            shared.config.worker_id.clone(),
            shutdown.clone(),
        )
        .await?;
        let started_at = chrono::Utc::now();
        heartbeat::beat(&shared, jobbox::WorkerState::Starting, started_at).await;
        let background = CancellationToken::new();
        tokio::spawn(cancels::watch_cancellations(
            Arc::clone(&shared),
            background.clone(),
        ));
        // Recurring jobs: any live worker fires a due tick (see worker/scheduler.rs).
        tokio::spawn(scheduler::run(
            shared.client.clone(),
            shared.config.worker_id.clone(),
            background.clone(),
        ));
        // Messages the server stopped delivering: any live worker dead-letters them.
        tokio::spawn(undeliverable::run(Arc::clone(&shared), background.clone()));
        // Batches: any live worker ends them and fires their callbacks (worker/batches/).
        tokio::spawn(batches::run(Arc::clone(&shared), background.clone()));
        if let (Some(listener), Some(metrics)) = (metrics_listener, shared.metrics.clone()) {
            serve_metrics(&shared, listener, metrics, background.clone());
        }
        let counters = {
            let shared = Arc::clone(&shared);
            let stop = background.clone();
            tokio::spawn(async move {
                let client = shared.client.clone();
                shared.queue_counters.flush_loop(client, stop).await;
            })
        };

        let inbox = Arc::new(Inbox::new(shared.config.lane_prefetch()));
        let fetching = CancellationToken::new();
        let mut fetchers = Vec::new();
        let mut shortest_ack_wait = shared.config.ack_wait;
        for queue in &shared.config.queues {
            let lanes = fetch::open_lanes(&shared, queue)
                .await
                .with_context(|| format!("failed to open the consumers of queue {queue}"))?;
            for lane in lanes {
                shortest_ack_wait = shortest_ack_wait.min(lane.ack_wait);
                let id = inbox.add_lane(lane.lane);
                fetchers.push(tokio::spawn(fetch::fetch_lane(
                    Arc::clone(&inbox),
                    id,
                    lane,
                    fetching.clone(),
                )));
            }
        }
        tokio::spawn(extend_waiting(
            Arc::clone(&inbox),
            shortest_ack_wait,
            background.clone(),
        ));
        tokio::spawn(heartbeat::heartbeat_loop(
            Arc::clone(&shared),
            started_at,
            background.clone(),
        ));
        tracing::info!(worker_id = %shared.config.worker_id, queues = ?shared.config.queues, concurrency = shared.config.concurrency, prefetch = shared.config.lane_prefetch(), "worker started");

        let tracker = TaskTracker::new();
        tokio::select! {
            () = inbox.primed() => {}
            () = shutdown.cancelled() => {}
        }
        run_loop(&shared, &inbox, &tracker, &shutdown).await;

        heartbeat::beat(&shared, jobbox::WorkerState::Stopping, started_at).await;
        tracing::info!("shutting down: no new jobs; waiting for running jobs");
        fetching.cancel();
        for fetcher in fetchers {
            let _ = fetcher.await;
        }
        let waiting = inbox.close();
        if !waiting.is_empty() {
            tracing::info!(
                jobs = waiting.len(),
                "handing back jobs that had not started"
            );
        }
        for fetched in waiting {
            dispatch::ack(&fetched.message, async_nats::jetstream::AckKind::Nak(None)).await;
        }
        tracker.close();
        if tokio::time::timeout(shared.config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: handing running jobs back for redelivery");
            shared.abort.cancel();
            tracker.wait().await;
        }
        background.cancel();
        let _ = counters.await;
        drop(shared.events.clone());
        if let Err(e) = shared
            .client
            .layout()
            .workers
            .delete(&shared.config.worker_id)
            .await
        {
            tracing::warn!(error = %e, "failed to remove the heartbeat");
        }
        if let Some(tracer) = &shared.tracer {
            tracer.shutdown().await;
        }
        // Every job task is done: the last sink is the one in `shared`.
        drop(shared);
        events::drain(event_acks).await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Serves the worker's metrics until `stop`, reading free slots, handlers and
/// reconnects from the worker when scraped.
fn serve_metrics(
    shared: &Arc<Shared>,
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let weak = Arc::downgrade(shared);
    let reconnects = shared.client.reconnects();
    let spans = shared.tracer.as_ref().map(|t| Arc::clone(t.stats()));
    metrics.set_snapshot(move || {
        let Some(shared) = weak.upgrade() else {
            return Snapshot::default();
        };
        let loader = shared.routes.loader();
        Snapshot {
            // The run loop holds a permit while it waits for a message, so free
            // slots are counted from the jobs taken, not from the semaphore.
            free_slots: i64::from(shared.config.concurrency.max(1))
                - shared.busy.load(Ordering::Relaxed) as i64,
            handlers_loaded: shared.routes.digests().len() as i64,
            load_failures: shared.routes.load_failures_total(),
            reconnects: *reconnects.borrow(),
            spans_exported: spans
                .as_ref()
                .map_or(0, |s| s.exported.load(Ordering::Relaxed)),
            spans_lost: spans.as_ref().map_or(0, |s| s.lost.load(Ordering::Relaxed)),
            loads_from_cache: loader.cache_stats().hits,
            loads_from_fleet: loader.fleet_stats().hits,
            loads_compiled: loader.compiled(),
            artifacts_refused: loader.fleet_stats().refused,
            artifacts_published: loader.fleet_stats().published,
        }
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics at /metrics");
    }
    tokio::spawn(async move {
        if let Err(e) = crate::metrics::serve(listener, metrics, stop).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    });
}

/// Takes the next message whenever a slot is free and runs it, until `shutdown`.
async fn run_loop(
    shared: &Arc<Shared>,
    inbox: &Inbox,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            permit = Arc::clone(&shared.slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let fetched = tokio::select! {
            () = shutdown.cancelled() => return,
            fetched = inbox.next() => match fetched {
                Some(fetched) => fetched,
                None => return,
            },
        };
        let shared = Arc::clone(shared);
        shared.busy.fetch_add(1, Ordering::Relaxed);
        tracker.spawn(async move {
            dispatch::process(&shared, fetched).await;
            shared.busy.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Keeps messages waiting in the inbox alive until `stop`.
async fn extend_waiting(inbox: Arc<Inbox>, ack_wait: Duration, stop: CancellationToken) {
    let period = (ack_wait / 6).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {
                let extended = inbox.extend_waiting();
                if extended > 0 {
                    tracing::debug!(extended, waiting = inbox.waiting(), "extended waiting messages");
                }
            }
        }
    }
}
