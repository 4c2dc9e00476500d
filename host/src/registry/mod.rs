//! The worker's view of the handler registry: routes (job type → handler digest)
//! watched from the routes bucket, and compiled handlers loaded from the object store
//! by digest and kept pre-instantiated.
//!
//! The route table is an `ArcSwap`: a job's lookup takes no lock, and a new version
//! replaces the old one in one atomic store only after it has loaded, so a version
//! that fails to load never replaces a working one.

mod deploy;
mod loader;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use jobbox::{Client, ErrorType, Route};

pub use deploy::{DeployError, DeployOptions, deploy};
pub use loader::HandlerLoader;

use crate::sandbox::{Failure, Handler};

/// A route whose handler is loaded and ready to run jobs.
#[derive(Debug, Clone)]
pub struct ActiveRoute {
    /// The route as deployed.
    pub route: Route,
    /// Its compiled handler.
    pub handler: Handler,
}

/// Job type → active route, swapped atomically as routes change.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Arc<ArcSwap<HashMap<String, Arc<ActiveRoute>>>>,
    loader: HandlerLoader,
    client: Client,
}

impl RouteTable {
    /// An empty table that loads handlers with `loader`.
    pub fn new(client: Client, loader: HandlerLoader) -> Self {
        Self {
            routes: Arc::default(),
            loader,
            client,
        }
    }

    /// The active route of `job_type`, if any.
    pub fn get(&self, job_type: &str) -> Option<Arc<ActiveRoute>> {
        self.routes.load().get(job_type).cloned()
    }

    /// Job type → digest of every active route.
    pub fn digests(&self) -> std::collections::BTreeMap<String, String> {
        self.routes
            .load()
            .iter()
            .map(|(job_type, active)| (job_type.clone(), active.route.digest.clone()))
            .collect()
    }

    /// Installs `active` for its job type; returns the digest it replaced.
    pub fn install(&self, active: ActiveRoute) -> Option<String> {
        let job_type = active.route.job_type.clone();
        let active = Arc::new(active);
        let mut replaced = None;
        self.routes.rcu(|current| {
            let mut next = HashMap::clone(current);
            replaced = next
                .insert(job_type.clone(), Arc::clone(&active))
                .map(|old| old.route.digest.clone());
            next
        });
        replaced
    }

    /// Removes the route of `job_type`.
    pub fn remove(&self, job_type: &str) {
        self.routes.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.remove(job_type);
            next
        });
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
        let route = self
            .client
            .route(job_type)
            .await
            .map_err(|e| {
                Failure::new(
                    ErrorType::Internal,
                    format!("failed to read the route: {e}"),
                )
                .retryable(true)
            })?
            .ok_or_else(|| {
                Failure::new(
                    ErrorType::UnknownJobType,
                    format!("no handler is deployed for job type \"{job_type}\""),
                )
            })?;
        let handler = self.loader.load(&route.digest).await?;
        let active = ActiveRoute { route, handler };
        // Install only if the watcher has not installed something meanwhile.
        if self.get(job_type).is_none() {
            self.install(active.clone());
        }
        Ok(Arc::new(active))
    }

    async fn resolve_pinned(&self, job_type: &str, pin: &str) -> Result<Arc<ActiveRoute>, Failure> {
        if let Some(active) = self.get(job_type)
            && (active.route.digest == pin || active.route.version.as_deref() == Some(pin))
        {
            return Ok(active);
        }
        let history = self.client.route_history(job_type).await.map_err(|e| {
            Failure::new(
                ErrorType::Internal,
                format!("failed to read route history: {e}"),
            )
            .retryable(true)
        })?;
        let route = history
            .into_iter()
            .rev()
            .find(|route| route.digest == pin || route.version.as_deref() == Some(pin))
            .ok_or_else(|| {
                Failure::new(
                    ErrorType::HandlerUnavailable,
                    format!("job type \"{job_type}\" has no deployed version \"{pin}\""),
                )
            })?;
        let handler = self.loader.load(&route.digest).await?;
        Ok(Arc::new(ActiveRoute { route, handler }))
    }
}

pub use watch::watch_routes;
