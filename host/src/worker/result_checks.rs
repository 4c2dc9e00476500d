//! The result check every delivery needs before its job runs, batched: lookups that
//! come while a read is out go together in the next read, one request for up to
//! [`jobbox::MAX_RESULT_BATCH`] jobs ([`jobbox::ResultBatchReader`]).
//!
//! Nothing waits to fill a batch: a lookup alone is read at once, as a single get.
//! Under load the batch is what came during one round trip, so the server answers
//! one request where it answered one per job, and no lookup waits longer than the
//! read before it plus its own.

use bytes::Bytes;
use jobbox::{Client, ClientError, MAX_RESULT_BATCH, ResultBatchReader};
use tokio::sync::{mpsc, oneshot};

/// One job's lookup and where its answer goes.
struct Lookup {
    key: String,
    answer: oneshot::Sender<Result<Option<Bytes>, ClientError>>,
}

/// Looks up job results, batching lookups made at the same time. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ResultChecks {
    client: Client,
    lookups: mpsc::UnboundedSender<Lookup>,
}

impl ResultChecks {
    /// Starts the task that reads results for `client` (it ends with the last clone).
    pub fn start(client: Client) -> Self {
        // Unbounded: every lookup holds a run slot, so there are at most as many as
        // the worker's concurrency.
        let (lookups, rx) = mpsc::unbounded_channel();
        tokio::spawn(read_batches(client.result_batch_reader(), rx));
        Self { client, lookups }
    }

    /// The stored result of job `key`, if it has one.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, ClientError> {
        let (answer, answered) = oneshot::channel();
        let lookup = Lookup {
            key: key.to_string(),
            answer,
        };
        if self.lookups.send(lookup).is_ok()
            && let Ok(value) = answered.await
        {
            return value;
        }
        // The batching task is gone (the runtime is stopping): read alone.
        self.client.result_bytes(key).await
    }
}

async fn read_batches(mut reader: ResultBatchReader, mut rx: mpsc::UnboundedReceiver<Lookup>) {
    let mut batch = Vec::with_capacity(MAX_RESULT_BATCH);
    while rx.recv_many(&mut batch, MAX_RESULT_BATCH).await > 0 {
        let keys: Vec<&str> = batch.iter().map(|lookup| lookup.key.as_str()).collect();
        let values = reader.read(&keys).await;
        for (lookup, value) in batch.drain(..).zip(values) {
            let _ = lookup.answer.send(value);
        }
    }
}
