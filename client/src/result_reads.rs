//! Reading results so that a change of how the results bucket is read reaches
//! processes that opened it before: direct gets (any copy answers) on one server,
//! reads from the leader once it has replicas (`jobbox admin layout --replicas 3`
//! turns direct gets off while workers run).

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_nats::jetstream::kv;
use bytes::Bytes;

/// The results bucket as this process reads it.
#[derive(Debug)]
pub(crate) struct ResultReads {
    store: ArcSwap<kv::Store>,
}

impl ResultReads {
    pub(crate) fn new(store: kv::Store) -> Self {
        Self {
            store: ArcSwap::from_pointee(store),
        }
    }

    /// The value stored under `key`, if any. When a direct get fails, the bucket's
    /// settings are read again: if direct gets were turned off since, the read is
    /// made again from the leader, and so are later ones.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, kv::EntryError> {
        let store = self.store.load_full();
        let error = match store.get(key).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if !store.stream.cached_info().config.allow_direct {
            return Err(error);
        }
        let mut fresh = (*store).clone();
        let direct = match fresh.stream.info().await {
            Ok(info) => info.config.allow_direct,
            Err(_) => return Err(error),
        };
        if direct {
            return Err(error);
        }
        tracing::info!(
            bucket = %fresh.name,
            "the results bucket is read from its leader now (it was given replicas)"
        );
        let fresh = Arc::new(fresh);
        self.store.store(Arc::clone(&fresh));
        fresh.get(key).await
    }

    /// The bucket as read now, and whether it answers direct gets (one server) rather
    /// than reads from its leader (replicas).
    pub(crate) fn current(&self) -> (Arc<kv::Store>, bool) {
        let store = self.store.load_full();
        let direct = store.stream.cached_info().config.allow_direct;
        (store, direct)
    }
}
