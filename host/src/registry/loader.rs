//! Loading handlers by digest: fetch from the object store, verify, compile once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jobbox::{Client, ClientError, ErrorType};
use tokio::sync::OnceCell;

use crate::sandbox::{Failure, Handler, Sandbox};

/// Longest a handler may take to compile on a worker before it is refused.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(60);

type Slot = Arc<OnceCell<Handler>>;

/// Compiles each digest at most once and shares the result.
#[derive(Debug, Clone)]
pub struct HandlerLoader {
    client: Client,
    sandbox: Sandbox,
    loaded: Arc<Mutex<HashMap<String, Slot>>>,
}

impl HandlerLoader {
    /// A loader that reads from `client`'s object store and compiles with `sandbox`.
    pub fn new(client: Client, sandbox: Sandbox) -> Self {
        Self {
            client,
            sandbox,
            loaded: Arc::default(),
        }
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
        slot.get_or_try_init(|| self.fetch_and_compile(digest))
            .await
            .cloned()
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
        let handler = self
            .sandbox
            .load(Arc::from(bytes), COMPILE_TIMEOUT)
            .await
            .map_err(|e| Failure::new(ErrorType::InvalidHandler, e.to_string()))?;
        tracing::info!(%digest, "handler loaded");
        Ok(handler)
    }
}
