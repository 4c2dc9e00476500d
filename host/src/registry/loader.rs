//! Loading handlers by digest: from the compile cache if it has them, else from the
//! fleet's shared artifact (with a fleet key), else fetch from the object store,
//! verify, compile once (and store in the cache, and share with the fleet).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jobbox::{Client, ClientError, ErrorType};
use tokio::sync::OnceCell;

use super::cache::{CacheError, CacheStats, CompileCache};
use super::cap::compile_cap;
use super::fleet::{FleetArtifacts, FleetStats};
use crate::sandbox::{Failure, Handler, Sandbox};

/// Added to a component's [`compile_cap`] on a worker: a worker that refuses a
/// handler the deploy accepted leaves its job type without a handler there, so it
/// allows more than the deploy did.
pub const WORKER_COMPILE_MARGIN: Duration = Duration::from_secs(30);

type Slot = Arc<OnceCell<Handler>>;

/// Compiles each digest at most once and shares the result.
///
/// With a compile cache ([`HandlerLoader::with_cache_dir`]) a digest compiled by an
/// earlier run of this worker (same build, same engine settings) is read back from
/// disk instead of compiled.
#[derive(Debug, Clone)]
pub struct HandlerLoader {
    client: Client,
    sandbox: Sandbox,
    cache: Option<CompileCache>,
    fleet: Option<FleetArtifacts>,
    compiled: Arc<AtomicU64>,
    loaded: Arc<Mutex<HashMap<String, Slot>>>,
}

impl HandlerLoader {
    /// A loader that reads from `client`'s object store and compiles with `sandbox`,
    /// without a compile cache.
    pub fn new(client: Client, sandbox: Sandbox) -> Self {
        Self {
            client,
            sandbox,
            cache: None,
            fleet: None,
            compiled: Arc::default(),
            loaded: Arc::default(),
        }
    }

    /// Uses a compile cache under `dir` (created, mode 0700, if missing), e.g.
    /// [`default_cache_dir`](super::default_cache_dir). Fails if the directory cannot
    /// be created or other users can write to it.
    pub fn with_cache_dir(self, dir: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let cache = CompileCache::open(dir, self.sandbox.engine())?;
        Ok(self.with_cache(cache))
    }

    /// Uses `cache` (opened for this loader's sandbox engine).
    #[must_use]
    pub fn with_cache(mut self, cache: CompileCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Shares compiled handlers with the fleet through `fleet` (made for this
    /// loader's sandbox engine).
    #[must_use]
    pub fn with_fleet(mut self, fleet: FleetArtifacts) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// The fleet's artifact store, if this loader shares compiled handlers.
    pub fn fleet(&self) -> Option<&FleetArtifacts> {
        self.fleet.as_ref()
    }

    /// What the fleet store did so far (all zero without one).
    pub fn fleet_stats(&self) -> FleetStats {
        self.fleet
            .as_ref()
            .map(FleetArtifacts::stats)
            .unwrap_or_default()
    }

    /// Handlers this loader compiled (not read from a cache or the fleet) so far.
    pub fn compiled(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    /// The compile cache, if one is configured.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }

    /// What the compile cache did so far (all zero without a cache).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache
            .as_ref()
            .map(CompileCache::stats)
            .unwrap_or_default()
    }

    /// The sandbox handlers are compiled for.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The handler with `digest`, loading it on first use. Concurrent callers share
    /// one load; a failed load is not remembered, so the next call tries again.
    pub async fn load(&self, digest: &str) -> Result<Handler, Failure> {
        let slot = {
            let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(loaded.entry(digest.to_string()).or_default())
        };
        // Boxed: the load future holds the fleet's and the cache's steps, too large to
        // be copied around on a small stack.
        slot.get_or_try_init(|| Box::pin(self.load_uncached(digest)))
            .await
            .cloned()
    }

    async fn load_uncached(&self, digest: &str) -> Result<Handler, Failure> {
        if let Some(cache) = &self.cache {
            let (cache, sandbox, wanted) =
                (cache.clone(), self.sandbox.clone(), digest.to_string());
            if let Ok(Some(handler)) =
                tokio::task::spawn_blocking(move || cache.get(&sandbox, &wanted)).await
            {
                tracing::info!(%digest, "handler loaded from the compile cache");
                return Ok(handler);
            }
        }
        // Only a digest the handler store holds goes through the fleet: nothing is
        // claimed or shared for one it does not (the fetch then fails and says so).
        let stored_size = match &self.fleet {
            Some(_) => self.stored_size(digest).await,
            None => None,
        };
        let handler = match (&self.fleet, stored_size) {
            (Some(fleet), Some(size)) => {
                fleet
                    .load(&self.sandbox, digest, size, || {
                        self.fetch_and_compile(digest)
                    })
                    .await?
            }
            _ => self.fetch_and_compile(digest).await?,
        };
        if let Some(cache) = &self.cache {
            let (cache, compiled) = (cache.clone(), handler.clone());
            let stored = tokio::task::spawn_blocking(move || cache.put(&compiled))
                .await
                .map_err(|e| e.to_string())
                .and_then(|stored| stored.map_err(|e| e.to_string()));
            match stored {
                Ok(path) => {
                    tracing::debug!(%digest, path = %path.display(), "compiled handler cached");
                }
                // The handler still runs; the next start compiles it again.
                Err(error) => {
                    tracing::warn!(%digest, %error, "failed to cache a compiled handler");
                }
            }
        }
        Ok(handler)
    }

    /// The size of the stored `.wasm` of `digest`, if the handler store holds it.
    async fn stored_size(&self, digest: &str) -> Option<usize> {
        let name = jobbox::nats::handler_object(digest);
        self.client
            .layout()
            .handlers
            .info(&name)
            .await
            .ok()
            .map(|info| info.size)
    }

    async fn fetch_and_compile(&self, digest: &str) -> Result<Handler, Failure> {
        let bytes = self.client.get_handler(digest).await.map_err(|e| match e {
            ClientError::NotFound(_) | ClientError::Integrity(_) => {
                Failure::new(ErrorType::HandlerUnavailable, e.to_string())
            }
            other => Failure::new(
                ErrorType::HandlerUnavailable,
                format!("failed to fetch handler {digest}: {other}"),
            )
            .retryable(true),
        })?;
        let cap = compile_cap(bytes.len()) + WORKER_COMPILE_MARGIN;
        let started = std::time::Instant::now();
        let handler = self
            .sandbox
            .load(Arc::from(bytes), cap)
            .await
            .map_err(|e| Failure::new(ErrorType::InvalidHandler, e.to_string()))?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%digest, elapsed_ms = started.elapsed().as_millis() as u64, "handler compiled");
        Ok(handler)
    }
}
