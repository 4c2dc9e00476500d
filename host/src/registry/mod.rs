//! The worker's view of the handler registry: routes (job type → handler digest)
//! watched from the routes bucket, and compiled handlers loaded from the object store
//! by digest (or from the on-disk compile cache) and kept pre-instantiated.
//!
//! The route table is an `ArcSwap`: a job's lookup takes no lock, and a new version
//! replaces the old one in one atomic store only after it has loaded, so a version
//! that fails to load never replaces a working one. A job holds its own
//! `Arc<ActiveRoute>`, so a job already running finishes on the version it started
//! with. Every installed route carries its routes-bucket revision and only the newest
//! revision seen for a job type may be installed: a slow load of an older deploy never
//! overwrites a newer one.

mod answering;
mod cache;
mod cap;
mod deploy;
pub mod fleet;
mod loader;
mod memory;
pub mod sync;
mod versions;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use jobbox::{Client, ErrorType, Route};
use serde::Serialize;
use tokio::sync::watch as signal;

pub use cache::{CacheError, CacheStats, CompileCache, default_cache_dir, engine_key};
pub use cap::{COMPILE_CAP_BASE, COMPILE_CAP_PER_MIB, compile_cap};
pub use deploy::{
    DEPLOY_COMPILE_TIMEOUT, DeployError, DeployOptions, Deployed, RESULT_ENVELOPE_BYTES, deploy,
    max_output_bytes,
};
pub use fleet::{FleetArtifacts, FleetKey, FleetStats};
pub use loader::{HandlerLoader, WORKER_COMPILE_MARGIN};
pub use memory::memory_minimum;
pub use sync::{FleetRoute, ROUTE_SYNC_WAIT, WorkerRoute};
pub use versions::{
    Rollback, RollbackOptions, RouteVersion, VersionError, current_route, current_routes, history,
    remove, rollback,
};
pub use watch::watch_routes;

use crate::sandbox::{Failure, Handler};

/// A route whose handler is loaded and ready to run jobs.
#[derive(Debug, Clone)]
pub struct ActiveRoute {
    /// The route as deployed.
    pub route: Route,
    /// Its compiled handler.
    pub handler: Handler,
    /// The route's revision in the routes bucket.
    pub revision: u64,
}

/// A route version this worker could not load (so it kept the version it had).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadFailure {
    /// The digest that failed to load.
    pub digest: String,
    /// Its version label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The route's revision in the routes bucket.
    pub revision: u64,
    /// The class of failure (`invalid_handler`, `handler_unavailable`, …).
    pub error_type: ErrorType,
    /// Why.
    pub message: String,
    /// Whether loading it again may work (the object store was unreachable).
    pub retryable: bool,
    /// When the load failed.
    pub failed_at: DateTime<Utc>,
    /// The digest still serving jobs of this type, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<String>,
}

impl std::fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short: String = self.digest.chars().take(7 + 12).collect();
        write!(f, "{short}")?;
        if let Some(version) = &self.version {
            write!(f, " [{version}]")?;
        }
        write!(
            f,
            " failed to load: {}: {}",
            self.error_type.as_str(),
            self.message
        )?;
        match &self.serving {
            Some(serving) => {
                let serving: String = serving.chars().take(7 + 12).collect();
                write!(f, " (still serving {serving})")
            }
            None => write!(f, " (nothing serving)"),
        }
    }
}

/// What [`RouteTable::install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The route is now active; the digest it replaced, if any.
    Replaced(Option<String>),
    /// This revision (or a newer one) was active already.
    AlreadyActive,
    /// A newer revision of the route was seen meanwhile; nothing changed.
    Stale {
        /// The newest revision seen.
        newest: u64,
    },
}

/// Bookkeeping of writers (the watcher, a job reading a route the watcher has not
/// seen yet). Readers never take this lock.
#[derive(Debug, Default)]
struct WriteState {
    /// The newest routes-bucket revision seen per job type (a put or a delete).
    newest: HashMap<String, u64>,
    /// The newest route of a job type that failed to load.
    failures: BTreeMap<String, LoadFailure>,
    /// Every load failure recorded so far (for the metrics).
    failures_total: u64,
    /// Job types whose newest revision seen is a removal.
    removed: std::collections::BTreeSet<String>,
    /// Every write to the routes bucket up to this revision has been seen.
    seen_up_to: u64,
}

/// Job type → active route, swapped atomically as routes change.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Arc<ArcSwap<HashMap<String, Arc<ActiveRoute>>>>,
    state: Arc<Mutex<WriteState>>,
    /// Bumped whenever a route is installed, removed or fails to load.
    changes: Arc<signal::Sender<u64>>,
    /// The last reconnect count after which the routes were read again in full.
    synced: Arc<signal::Sender<u64>>,
    loader: HandlerLoader,
    client: Client,
}

impl RouteTable {
    /// An empty table that loads handlers with `loader`.
    pub fn new(client: Client, loader: HandlerLoader) -> Self {
        Self {
            routes: Arc::default(),
            state: Arc::default(),
            changes: Arc::new(signal::channel(0).0),
            synced: Arc::new(signal::channel(0).0),
            loader,
            client,
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|changes| *changes += 1);
    }

    /// Whether revision `revision` of `job_type`'s route has been dealt with: it (or
    /// a newer one) is active, failed to load, or was superseded by a newer revision.
    pub fn settled(&self, job_type: &str, revision: u64) -> bool {
        let state = self.state();
        self.get(job_type).is_some_and(|a| a.revision >= revision)
            || state
                .failures
                .get(job_type)
                .is_some_and(|f| f.revision >= revision)
            || state.newest.get(job_type).is_some_and(|newest| {
                *newest > revision || (*newest == revision && state.removed.contains(job_type))
            })
    }

    /// Waits at most `within` until [`RouteTable::settled`]; whether it is.
    pub async fn wait_settled(&self, job_type: &str, revision: u64, within: Duration) -> bool {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.settled(job_type, revision) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.settled(job_type, revision),
            }
        }
    }

    /// Records that every route was read again in full after reconnect `reconnect`
    /// (see [`jobbox::Client::reconnects`]).
    pub fn mark_synced(&self, reconnect: u64) {
        self.synced.send_if_modified(|synced| {
            let newer = reconnect > *synced;
            if newer {
                *synced = reconnect;
            }
            newer
        });
    }

    /// The last reconnect after which every route was read again
    /// ([`RouteTable::mark_synced`]).
    pub fn synced(&self) -> signal::Receiver<u64> {
        self.synced.subscribe()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The active route of `job_type`, if any.
    pub fn get(&self, job_type: &str) -> Option<Arc<ActiveRoute>> {
        self.routes.load().get(job_type).cloned()
    }

    /// Job type → digest of every active route.
    pub fn digests(&self) -> BTreeMap<String, String> {
        self.routes
            .load()
            .iter()
            .map(|(job_type, active)| (job_type.clone(), active.route.digest.clone()))
            .collect()
    }

    /// Job type → the newest route version that failed to load on this worker and
    /// has not been superseded since (by a version that loaded, or a removal). The
    /// worker keeps serving the version it had, named in [`LoadFailure::serving`].
    pub fn load_failures(&self) -> BTreeMap<String, LoadFailure> {
        self.state().failures.clone()
    }

    /// How many handler loads have failed on this worker so far.
    pub fn load_failures_total(&self) -> u64 {
        self.state().failures_total
    }

    /// Records that revision `revision` of `job_type`'s route exists; true if it is
    /// newer than any seen before.
    pub fn note_revision(&self, job_type: &str, revision: u64) -> bool {
        let mut guard = self.state();
        let state = &mut *guard;
        let newest = state.newest.entry(job_type.to_string()).or_default();
        if revision > *newest {
            *newest = revision;
            state.removed.remove(job_type);
            true
        } else {
            false
        }
    }

    /// Records that the routes bucket's writes up to `revision` have been seen.
    pub fn saw(&self, revision: u64) {
        let mut state = self.state();
        state.seen_up_to = state.seen_up_to.max(revision);
    }

    /// The routes bucket's revision up to which every write has been seen.
    pub fn seen_up_to(&self) -> u64 {
        self.state().seen_up_to
    }

    /// Whether `revision` is the newest revision seen of `job_type`'s route.
    pub fn is_newest(&self, job_type: &str, revision: u64) -> bool {
        self.state()
            .newest
            .get(job_type)
            .is_none_or(|newest| revision >= *newest)
    }

    /// Installs `active` for its job type, unless a newer revision of the route has
    /// been seen (or is active) already.
    pub fn install(&self, active: ActiveRoute) -> Installed {
        let job_type = active.route.job_type.clone();
        let mut state = self.state();
        let newest = state.newest.get(&job_type).copied().unwrap_or(0);
        if active.revision < newest {
            return Installed::Stale { newest };
        }
        let current = self.routes.load();
        if let Some(existing) = current.get(&job_type)
            && existing.revision >= active.revision
        {
            return Installed::AlreadyActive;
        }
        state.newest.insert(job_type.clone(), active.revision);
        state.removed.remove(&job_type);
        if state
            .failures
            .get(&job_type)
            .is_some_and(|failure| failure.revision <= active.revision)
        {
            state.failures.remove(&job_type);
        }
        let mut next = HashMap::clone(&current);
        let replaced = next
            .insert(job_type, Arc::new(active))
            .map(|old| old.route.digest.clone());
        // Writers hold `state`, so nothing changed `routes` since `load`.
        self.routes.store(Arc::new(next));
        drop(state);
        self.changed();
        Installed::Replaced(replaced)
    }

    /// Removes the route of `job_type` as of `revision` (a delete in the routes
    /// bucket); a route installed from a newer revision stays.
    pub fn remove(&self, job_type: &str, revision: u64) {
        let mut state = self.state();
        let newest = state.newest.entry(job_type.to_string()).or_default();
        if revision < *newest {
            return;
        }
        *newest = revision;
        state.failures.remove(job_type);
        state.removed.insert(job_type.to_string());
        let current = self.routes.load();
        if current.contains_key(job_type) {
            let mut next = HashMap::clone(&current);
            next.remove(job_type);
            self.routes.store(Arc::new(next));
        }
        drop(state);
        self.changed();
    }

    /// Records that revision `revision` of `route` failed to load; kept (for
    /// [`RouteTable::load_failures`]) only while it is the newest revision seen.
    pub fn record_failure(&self, route: &Route, revision: u64, failure: &Failure) {
        let serving = self.get(&route.job_type).map(|a| a.route.digest.clone());
        let mut state = self.state();
        state.failures_total += 1;
        let newest = state.newest.get(&route.job_type).copied().unwrap_or(0);
        if revision < newest {
            return;
        }
        state.failures.insert(
            route.job_type.clone(),
            LoadFailure {
                digest: route.digest.clone(),
                version: route.version.clone(),
                revision,
                error_type: failure.error_type,
                message: failure.message.clone(),
                retryable: failure.retryable,
                failed_at: Utc::now(),
                serving,
            },
        );
        drop(state);
        self.changed();
    }

    /// The handler loader.
    pub fn loader(&self) -> &HandlerLoader {
        &self.loader
    }

    /// Finds the handler for a job: its pinned digest or version if it has one,
    /// else the active route. A route deployed a moment ago that the watcher has not
    /// installed yet is read from the bucket directly.
    pub async fn resolve(
        &self,
        job_type: &str,
        pin: Option<&str>,
    ) -> Result<Arc<ActiveRoute>, Failure> {
        if let Some(pin) = pin {
            return self.resolve_pinned(job_type, pin).await;
        }
        if let Some(active) = self.get(job_type) {
            return Ok(active);
        }
        let (revision, route) = versions::current_route(&self.client, job_type)
            .await
            .map_err(|e| {
                Failure::new(
                    ErrorType::Internal,
                    format!("failed to read the route: {e}"),
                )
                .retryable(true)
            })?
            .ok_or_else(|| unknown_job_type(job_type))?;
        // A version that already failed to load for good is not compiled again for
        // every job of its type.
        if let Some(failed) = self.state().failures.get(job_type)
            && failed.revision == revision
            && !failed.retryable
        {
            return Err(Failure::new(
                failed.error_type,
                format!(
                    "handler {} of job type \"{job_type}\" failed to load on this worker: {}",
                    versions::describe(&route),
                    failed.message
                ),
            ));
        }
        let handler = match self.loader.load(&route.digest).await {
            Ok(handler) => handler,
            Err(failure) => {
                self.record_failure(&route, revision, &failure);
                return Err(failure);
            }
        };
        let active = ActiveRoute {
            route,
            handler,
            revision,
        };
        self.install(active.clone());
        Ok(Arc::new(active))
    }

    async fn resolve_pinned(&self, job_type: &str, pin: &str) -> Result<Arc<ActiveRoute>, Failure> {
        if let Some(active) = self.get(job_type)
            && versions::names(&active.route, pin, false)
        {
            return Ok(active);
        }
        let history = versions::raw_history(&self.client, job_type)
            .await
            .map_err(|e| {
                Failure::new(
                    ErrorType::Internal,
                    format!("failed to read route history: {e}"),
                )
                .retryable(true)
            })?;
        let removed = history
            .last()
            .is_none_or(|last| last.operation != async_nats::jetstream::kv::Operation::Put);
        if removed {
            return Err(unknown_job_type(job_type));
        }
        let deploys: Vec<(u64, Route)> = history
            .iter()
            .rev()
            .filter(|entry| entry.operation == async_nats::jetstream::kv::Operation::Put)
            .filter_map(|entry| {
                jobbox::wire::decode::<Route>(&entry.value)
                    .ok()
                    .map(|route| (entry.revision, route))
            })
            .collect();
        let (revision, route) = deploys
            .iter()
            .find(|(_, route)| versions::names(route, pin, false))
            .cloned()
            .ok_or_else(|| {
                Failure::new(
                    ErrorType::HandlerUnavailable,
                    format!(
                        "job type \"{job_type}\" has no deployed version \"{pin}\" (the job is pinned to it; known versions, newest first: {})",
                        versions::known_versions(deploys.iter().map(|(_, route)| route))
                    ),
                )
            })?;
        let handler = self.loader.load(&route.digest).await?;
        Ok(Arc::new(ActiveRoute {
            route,
            handler,
            revision,
        }))
    }
}

/// The failure of a job whose type has no route. Retryable: a job enqueued moments
/// before its handler's deploy lands must not be lost; it retries with backoff and,
/// if no route appears, ends in the DLQ, from where it can be replayed.
fn unknown_job_type(job_type: &str) -> Failure {
    Failure::new(
        ErrorType::UnknownJobType,
        format!("no handler is deployed for job type \"{job_type}\""),
    )
    .retryable(true)
}
