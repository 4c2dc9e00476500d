//! Reading the results of many jobs in one request: a JetStream direct get with
//! `multi_last` over their keys, answered by the server with one message per stored
//! result and an end-of-batch status (nats-server ≥ 2.11).
//!
//! A worker looks up the result of every delivery before it runs the job; under load
//! many lookups are due at once, and one request for all of them costs the server
//! one request instead of one per job. Where the bucket is read from its leader
//! (replicas: direct gets are off, being served by any copy), the keys are read one
//! by one as [`Client::result_bytes`] does; a key that is not a valid job id is
//! refused before anything is sent.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::{StatusCode, Subscriber};
use bytes::Bytes;
use futures::StreamExt;

use crate::Client;
use crate::error::{ClientError, NatsContext};
use crate::model::job::check_name;

/// Most keys one request asks for.
pub const MAX_RESULT_BATCH: usize = 256;

/// How long the answer to one request may take before the read fails.
const BATCH_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads results many at a time. It owns one reply subscription and sends one request
/// at a time: keep one per task that batches lookups.
#[derive(Debug)]
pub struct ResultBatchReader {
    client: Client,
    inbox: String,
    replies: Option<Subscriber>,
    next_token: u64,
    batched: u64,
}

impl Client {
    /// A reader of many results at a time (see [`ResultBatchReader::read`]).
    pub fn result_batch_reader(&self) -> ResultBatchReader {
        ResultBatchReader {
            client: self.clone(),
            inbox: self.nats().new_inbox(),
            replies: None,
            next_token: 0,
            batched: 0,
        }
    }
}

impl ResultBatchReader {
    /// The stored result of each of `keys`, in order, each read on its own terms:
    /// one request per [`MAX_RESULT_BATCH`] keys when the bucket answers direct gets,
    /// else one read per key. A key that is not a valid job id fails alone, before anything is sent
    /// (a wildcard would read other jobs' results; an overlong subject would make the
    /// server drop the connection).
    pub async fn read(&mut self, keys: &[&str]) -> Vec<Result<Option<Bytes>, ClientError>> {
        let mut answers: Vec<Option<Result<Option<Bytes>, ClientError>>> = keys
            .iter()
            .map(|key| {
                check_name("job id", key)
                    .err()
                    .map(|invalid| Err(ClientError::from(invalid)))
            })
            .collect();
        let valid: Vec<&str> = keys
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.is_none())
            .map(|(key, _)| *key)
            .collect();
        let mut values = self.read_valid(&valid).await.into_iter();
        answers
            .iter_mut()
            .map(|answer| match answer.take() {
                Some(refused) => refused,
                None => values.next().unwrap_or_else(|| {
                    Err(ClientError::Integrity(
                        "a results read lost an answer".into(),
                    ))
                }),
            })
            .collect()
    }

    /// How many requests were answered with the results of a whole batch of keys.
    pub fn batched_reads(&self) -> u64 {
        self.batched
    }

    /// [`Self::read`] for keys known to be valid names, [`MAX_RESULT_BATCH`] at a
    /// time.
    async fn read_valid(&mut self, keys: &[&str]) -> Vec<Result<Option<Bytes>, ClientError>> {
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_RESULT_BATCH) {
            let (store, direct) = self.client.results.current();
            if direct && chunk.len() > 1 {
                match self.read_direct(&store, chunk).await {
                    Ok(read) => {
                        self.batched += 1;
                        values.extend(read.into_iter().map(Ok));
                        continue;
                    }
                    // The bucket may have been given replicas meanwhile (direct gets
                    // turned off): the one-by-one read notices and reads from the
                    // leader.
                    Err(e) => {
                        tracing::debug!(error = %e, "batched result read failed; reading one by one");
                    }
                }
            }
            let reads = chunk.iter().map(|key| self.client.result_bytes(key));
            values.extend(futures::future::join_all(reads).await);
        }
        values
    }

    async fn read_direct(
        &mut self,
        store: &async_nats::jetstream::kv::Store,
        keys: &[&str],
    ) -> Result<Vec<Option<Bytes>>, ClientError> {
        let operation = || format!("read the results of {} jobs", keys.len());
        if self.replies.is_none() {
            let replies = self
                .client
                .nats()
                .subscribe(format!("{}.*", self.inbox))
                .await
                .during(operation)?;
            self.replies = Some(replies);
        }
        self.next_token += 1;
        let reply = format!("{}.{}", self.inbox, self.next_token);
        let mut index: HashMap<String, Vec<usize>> = HashMap::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            index
                .entry(format!("{}{key}", store.prefix))
                .or_default()
                .push(i);
        }
        let request = serde_json::json!({
            "multi_last": index.keys().collect::<Vec<_>>(),
            "batch": index.len(),
        });
        let payload = Bytes::from(serde_json::to_vec(&request).map_err(|e| {
            ClientError::Integrity(format!("cannot encode a results request: {e}"))
        })?);
        self.client
            .nats()
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", store.stream_name),
                reply.clone(),
                payload,
            )
            .await
            .during(operation)?;

        let mut values = vec![None; keys.len()];
        let replies = self.replies.as_mut().ok_or_else(|| {
            ClientError::Integrity("the results reply subscription is missing".into())
        })?;
        let deadline = tokio::time::Instant::now() + BATCH_READ_TIMEOUT;
        loop {
            let message = match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    self.replies = None;
                    return Err(ClientError::NotFound(
                        "the results reply subscription (it ended)".into(),
                    ));
                }
                Err(_) => return Err(ClientError::Timeout(BATCH_READ_TIMEOUT, operation())),
            };
            // An answer to an earlier request that timed out.
            if message.subject.as_str() != reply {
                continue;
            }
            match message.status {
                // No key has a value.
                Some(StatusCode::NOT_FOUND) => return Ok(values),
                // The end of the batch: complete only if the server says nothing it
                // matched is left unsent; a key not answered is otherwise unknown,
                // not absent (reading it as absent would run a finished job again).
                Some(status) if status.as_u16() == 204 => {
                    let left = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Num-Pending"))
                        .map_or("0", |n| n.as_str());
                    if left != "0" {
                        return Err(ClientError::Integrity(format!(
                            "a results read ended with {left} results unsent"
                        )));
                    }
                    return Ok(values);
                }
                Some(status) => {
                    return Err(ClientError::Integrity(format!(
                        "the server answered a results read with {status} {}",
                        message.description.as_deref().unwrap_or_default()
                    )));
                }
                None => {}
            }
            let headers = message.headers.as_ref();
            let subject = headers
                .and_then(|h| h.get(async_nats::header::NATS_SUBJECT))
                .map(|s| s.as_str());
            let Some(positions) = subject.and_then(|s| index.get(s)) else {
                continue;
            };
            // A delete or purge marker: no result.
            let removed = headers
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
            if !removed {
                for &i in positions {
                    values[i] = Some(message.payload.clone());
                }
            }
        }
    }
}
