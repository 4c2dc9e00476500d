//! [`Client`]: connect, enqueue, read and wait for results, follow events, and store
//! handler code and routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, kv};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::error::{ClientError, NatsContext};
use crate::layout::{self, Layout};
use crate::model::{Job, JobEvent, JobEventType, JobResult, Route};
use crate::transient::again_while_transient;
use crate::{nats, wire};

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id.
    pub job_id: String,
    /// The job's sequence in the jobs stream.
    pub sequence: u64,
    /// True when the job id had already been enqueued inside the duplicate window, so
    /// this call added nothing.
    pub duplicate: bool,
}

/// Jobs whose publishes [`Client::enqueue_many`] keeps in flight at once.
///
/// Why: enough to keep the connection busy (a few hundred KB for small jobs), few
/// enough that a slow server pushes back before the client buffers megabytes.
pub const ENQUEUE_PIPELINE: usize = 1024;

/// How long an enqueue (or a handler's store, or a route change) keeps sending a
/// write again while JetStream's answer is transient.
pub const ENQUEUE_RETRY_FOR: Duration = crate::transient::RETRY_TRANSIENT_FOR;

/// Publishes of one enqueue whose acks are still to come.
pub(crate) struct PendingEnqueue {
    events: Vec<(JobEventType, jetstream::context::PublishAckFuture)>,
    job_ack: jetstream::context::PublishAckFuture,
}

impl PendingEnqueue {
    /// Waits until JetStream has stored the events and the job.
    pub(crate) async fn stored(self, job: &Job) -> Result<Enqueued, ClientError> {
        for (kind, ack) in self.events {
            ack.await
                .during(|| format!("record {} for job {}", kind.as_str(), job.id))?;
        }
        let ack = self
            .job_ack
            .await
            .during(|| format!("enqueue job {}", job.id))?;
        Ok(Enqueued {
            job_id: job.id.clone(),
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

/// Where a stream of events starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventsFrom {
    /// From the oldest event still kept.
    #[default]
    Start,
    /// Only events published from now on.
    Now,
}

/// How [`Client::connect_with`] sets up jobbox's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Copies of each stream and bucket to create where missing: 1 on one server, 3
    /// on a cluster (see [`layout::check_replicas`]). Existing ones keep theirs.
    pub replicas: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self { replicas: 1 }
    }
}

/// The server URLs in a comma-separated list, blanks around them ignored.
pub fn server_urls(urls: &str) -> Result<Vec<String>, ClientError> {
    let servers: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(String::from)
        .collect();
    if servers.is_empty() {
        return Err(ClientError::InvalidLayout(format!(
            "no NATS server URL in {urls:?}"
        )));
    }
    Ok(servers)
}

/// A connection to jobbox's NATS layout.
///
/// Cheap to clone; clones share one NATS connection.
#[derive(Debug, Clone)]
pub struct Client {
    nats: async_nats::Client,
    js: jetstream::Context,
    layout: Layout,
    /// Result reads that follow a change of the bucket's read mode.
    pub(crate) results: Arc<crate::result_reads::ResultReads>,
    /// How many times the connection was established again after a loss.
    reconnects: tokio::sync::watch::Receiver<u64>,
}

impl Client {
    /// Connects to `url` and creates jobbox's streams and buckets where missing.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), jobbox::ClientError> {
    /// let client = jobbox::Client::connect("nats://127.0.0.1:4222").await?;
    /// let job = jobbox::Job::json("word-count", &serde_json::json!({"text": "a b a"}))?;
    /// let enqueued = client.enqueue(&job).await?;
    /// let result = client
    ///     .wait_result(&enqueued.job_id, std::time::Duration::from_secs(30))
    ///     .await?;
    /// println!("{:?}", result.status);
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_with(url, &ClientOptions::default()).await
    }

    /// Connects to one of `urls` (comma-separated: `nats://a:4222,nats://b:4222`, the
    /// servers of a cluster) and creates what is missing of jobbox's layout with
    /// `options`. After a lost connection it reconnects, without limit, to any of the
    /// servers given or announced by the cluster.
    pub async fn connect_with(urls: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        // Boxed: connecting and creating the layout is a future of ~30 KB in a debug
        // build, which would otherwise sit inline in every caller's future.
        Box::pin(Self::connect_boxed(urls, options)).await
    }

    async fn connect_boxed(urls: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let servers = server_urls(urls)?;
        let (connected, reconnects) = tokio::sync::watch::channel(0u64);
        let connections = Arc::new(AtomicU64::new(0));
        let nats = async_nats::ConnectOptions::new()
            .name("jobbox")
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let connected = connected.clone();
                let connections = Arc::clone(&connections);
                async move {
                    match &event {
                        async_nats::Event::Disconnected => {
                            tracing::warn!("lost the NATS connection; reconnecting");
                        }
                        async_nats::Event::Connected => tracing::info!("connected to NATS"),
                        async_nats::Event::ServerError(e) => {
                            tracing::warn!(error = %e, "NATS server error");
                        }
                        async_nats::Event::ClientError(e) => {
                            tracing::warn!(error = %e, "NATS client error");
                        }
                        _ => {}
                    }
                    // The first Connected is the initial connection, delivered
                    // asynchronously: counted as a reconnect it would make every
                    // worker drop its first pull requests (and the messages already on
                    // their way, redelivered only after ack_wait).
                    if matches!(event, async_nats::Event::Connected)
                        && connections.fetch_add(1, Ordering::SeqCst) > 0
                    {
                        connected.send_modify(|n| *n += 1);
                    }
                }
            })
            .connect(servers)
            .await
            .map_err(|source| ClientError::Connect {
                url: urls.to_string(),
                source,
            })?;
        Self::with_reconnects(nats, reconnects, options.replicas).await
    }

    /// Uses an existing NATS connection. [`Client::reconnects`] never changes for
    /// a client made this way.
    pub async fn from_nats(nats: async_nats::Client) -> Result<Self, ClientError> {
        let (_, reconnects) = tokio::sync::watch::channel(0u64);
        Self::with_reconnects(nats, reconnects, 1).await
    }

    async fn with_reconnects(
        nats: async_nats::Client,
        reconnects: tokio::sync::watch::Receiver<u64>,
        replicas: usize,
    ) -> Result<Self, ClientError> {
        let js = jetstream::new(nats.clone());
        let layout = layout::ensure_with(&js, replicas).await?;
        let results = Arc::new(crate::result_reads::ResultReads::new(
            layout.results.clone(),
        ));
        Ok(Self {
            nats,
            js,
            layout,
            results,
            reconnects,
        })
    }

    /// Changes each time the connection is established again after it was lost:
    /// what was pending on the server side of the old connection (pull requests, for
    /// one) may be gone and should be asked for again.
    pub fn reconnects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reconnects.clone()
    }

    /// The NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Handles on every jobbox bucket.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Enqueues `job`: validates it, then publishes its ENQUEUED event (and SCHEDULED,
    /// for a delayed job) and the job itself with `Nats-Msg-Id` = job id, so a retried
    /// enqueue never makes a second job. The publishes go out together; this returns
    /// once JetStream has stored all of them (one round trip).
    ///
    /// A job with `depends_on` is refused when a dependency is not a known job.
    pub async fn enqueue(&self, job: &Job) -> Result<Enqueued, ClientError> {
        job.validate()?;
        if !job.depends_on.is_empty() {
            self.check_dependencies(std::slice::from_ref(job)).await?;
        }
        self.enqueue_checked(job).await
    }

    /// Sends a valid job and waits for it to be stored, sending it again while the
    /// answer is transient (a cluster electing a stream leader after losing a node, a
    /// broken connection) for up to [`ENQUEUE_RETRY_FOR`]. Safe: the job and its
    /// events carry message ids, so a copy stored by an earlier try is not stored
    /// twice (that try's job then comes back as `duplicate`).
    async fn enqueue_checked(&self, job: &Job) -> Result<Enqueued, ClientError> {
        again_while_transient("enqueue", || async {
            self.send_enqueue(job).await?.stored(job).await
        })
        .await
    }

    /// Enqueues many jobs, pipelined: every publish is sent first, then the acks are
    /// awaited together, [`ENQUEUE_PIPELINE`] jobs at a time. Returns one outcome per
    /// job, in order; an invalid job fails alone.
    pub async fn enqueue_many(
        &self,
        jobs: &[Job],
    ) -> Result<Vec<Result<Enqueued, ClientError>>, ClientError> {
        let mut outcomes = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(ENQUEUE_PIPELINE) {
            let mut sent = Vec::with_capacity(chunk.len());
            for job in chunk {
                sent.push(match job.validate() {
                    Ok(()) => self.send_enqueue(job).await,
                    Err(invalid) => Err(invalid.into()),
                });
            }
            for (job, pending) in chunk.iter().zip(sent) {
                let outcome = match pending {
                    Ok(pending) => pending.stored(job).await,
                    Err(e) => Err(e),
                };
                outcomes.push(match outcome {
                    Err(e) if e.is_transient() => self.enqueue_checked(job).await,
                    outcome => outcome,
                });
            }
        }
        Ok(outcomes)
    }

    /// Sends a job's enqueue events and the job, without waiting for their acks.
    pub(crate) async fn send_enqueue(&self, job: &Job) -> Result<PendingEnqueue, ClientError> {
        let mut events = Vec::with_capacity(2);
        for (event, id) in crate::jobs::enqueue_events(job) {
            events.push((
                event.event_type,
                self.publish_event_with_id(&event, &id).await?,
            ));
        }
        let job_ack = crate::jobs::publish_job(self, job, &job.id).await?;
        Ok(PendingEnqueue { events, job_ack })
    }

    /// Publishes `job` (to its lane, or as a message schedule if it is not yet due)
    /// with `Nats-Msg-Id` = `message_id`, without the enqueue events; the returned
    /// future resolves when JetStream has stored it. For workers handing a job back.
    pub async fn publish_job_with_id(
        &self,
        job: &Job,
        message_id: &str,
    ) -> Result<jetstream::context::PublishAckFuture, ClientError> {
        crate::jobs::publish_job(self, job, message_id).await
    }

    /// Publishes `event` and waits until JetStream has stored it.
    pub async fn record_event(&self, event: &JobEvent) -> Result<(), ClientError> {
        self.publish_event(event)
            .await?
            .await
            .during(|| format!("record a {} event", event.event_type.as_str()))?;
        Ok(())
    }

    /// Publishes `event` on its subject; the returned future resolves when JetStream
    /// has stored it.
    pub async fn publish_event(
        &self,
        event: &JobEvent,
    ) -> Result<jetstream::context::PublishAckFuture, ClientError> {
        let payload = wire::encode(event)?;
        self.js
            .publish(event_subject(event), Bytes::from(payload))
            .await
            .during(|| format!("publish {} event", event.event_type.as_str()))
    }

    /// Publishes `event` with `Nats-Msg-Id` = `id`, so a repeat inside the events
    /// stream's duplicate window is stored once.
    pub async fn publish_event_with_id(
        &self,
        event: &JobEvent,
        id: &str,
    ) -> Result<jetstream::context::PublishAckFuture, ClientError> {
        let payload = wire::encode(event)?;
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        self.js
            .publish_with_headers(event_subject(event), headers, Bytes::from(payload))
            .await
            .during(|| format!("publish {} event", event.event_type.as_str()))
    }

    /// The job's result, if it has one.
    pub async fn result(&self, job_id: &str) -> Result<Option<JobResult>, ClientError> {
        self.result_bytes(job_id)
            .await?
            .map(|bytes| wire::decode(&bytes))
            .transpose()
            .map_err(Into::into)
    }

    /// The job's result as stored (encoded), if it has one. Prefer this to reading
    /// [`Layout::results`] directly: it follows a change of the bucket's replicas
    /// made while this client runs.
    pub async fn result_bytes(&self, job_id: &str) -> Result<Option<Bytes>, ClientError> {
        self.results
            .get(job_id)
            .await
            .during(|| format!("read the result of job {job_id}"))
    }

    /// Waits up to `timeout` for the job's result.
    pub async fn wait_result(
        &self,
        job_id: &str,
        timeout: Duration,
    ) -> Result<JobResult, ClientError> {
        // Watch first, then read: a result written in between is seen by one of them.
        let mut watch = self
            .layout
            .results
            .watch(job_id)
            .await
            .during(|| format!("watch the result of job {job_id}"))?;
        if let Some(result) = self.result(job_id).await? {
            return Ok(result);
        }
        let wait = async {
            while let Some(entry) = watch.next().await {
                let entry = entry.during(|| format!("watch the result of job {job_id}"))?;
                if entry.operation == kv::Operation::Put {
                    return Ok(wire::decode::<JobResult>(&entry.value)?);
                }
            }
            Err(ClientError::NotFound(format!("result of job {job_id}")))
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout(timeout, format!("the result of job {job_id}")))?
    }

    /// Follows job events: all (`None, None`), one queue, or one job.
    pub async fn events(
        &self,
        queue: Option<&str>,
        job_id: Option<&str>,
        from: EventsFrom,
    ) -> Result<impl Stream<Item = Result<JobEvent, ClientError>> + use<>, ClientError> {
        Ok(self
            .events_with_sequence(queue, job_id, from)
            .await?
            .map_ok(|(_, event)| event))
    }

    /// Like [`Client::events`], with each event's sequence in the events stream.
    pub async fn events_with_sequence(
        &self,
        queue: Option<&str>,
        job_id: Option<&str>,
        from: EventsFrom,
    ) -> Result<impl Stream<Item = Result<(u64, JobEvent), ClientError>> + use<>, ClientError> {
        let filter = nats::events_filter(queue, job_id);
        let stream = self
            .js
            .get_stream(nats::EVENTS_STREAM)
            .await
            .during(|| "open the events stream".to_string())?;
        let deliver_policy = match from {
            EventsFrom::Start => consumer::DeliverPolicy::All,
            EventsFrom::Now => consumer::DeliverPolicy::New,
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .during(|| format!("follow events on {filter}"))?;
        let messages = consumer
            .messages()
            .await
            .during(|| format!("follow events on {filter}"))?;
        Ok(messages
            .map_err(|e| ClientError::nats("read an event", e))
            .and_then(|message| async move {
                let sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
                Ok((sequence, wire::decode::<JobEvent>(&message.payload)?))
            }))
    }

    /// Stores a handler component in the object store under its digest and returns
    /// the digest. Storing the same bytes twice is a no-op.
    ///
    /// This does not validate the component: `jobbox handler deploy` does that with
    /// the worker's own sandbox before calling this.
    pub async fn put_handler(&self, wasm: &[u8]) -> Result<String, ClientError> {
        let digest = digest_of(wasm);
        let name = nats::handler_object(&digest);
        if self.layout.handlers.info(&name).await.is_ok() {
            return Ok(digest);
        }
        // Stored again whole while a cluster elects the store's leader.
        again_while_transient("store handler", || async {
            let mut reader = wasm;
            self.layout
                .handlers
                .put(name.as_str(), &mut reader)
                .await
                .during(|| format!("store handler {digest}"))
        })
        .await?;
        Ok(digest)
    }

    /// Reads a handler component and checks that its bytes match `digest`.
    pub async fn get_handler(&self, digest: &str) -> Result<Vec<u8>, ClientError> {
        use tokio::io::AsyncReadExt as _;
        let name = nats::handler_object(digest);
        let mut object = self
            .layout
            .handlers
            .get(&name)
            .await
            .map_err(|e| ClientError::NotFound(format!("handler object {name} ({e})")))?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .during(|| format!("read handler {digest}"))?;
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(ClientError::Integrity(format!(
                "handler object {name} has digest {actual}, expected {digest}"
            )));
        }
        Ok(bytes)
    }

    /// Points `route.job_type` at `route.digest`; returns the routes-bucket revision.
    pub async fn set_route(&self, route: &Route) -> Result<u64, ClientError> {
        let value = Bytes::from(wire::encode(route)?);
        again_while_transient("set route", || async {
            self.layout
                .routes
                .put(&route.job_type, value.clone())
                .await
                .during(|| format!("set the route of {}", route.job_type))
        })
        .await
    }

    /// The current route of `job_type`.
    pub async fn route(&self, job_type: &str) -> Result<Option<Route>, ClientError> {
        let bytes = self
            .layout
            .routes
            .get(job_type)
            .await
            .during(|| format!("read the route of {job_type}"))?;
        bytes
            .map(|b| wire::decode(&b))
            .transpose()
            .map_err(Into::into)
    }

    /// Every deploy of `job_type` still in the bucket's history, oldest first.
    pub async fn route_history(&self, job_type: &str) -> Result<Vec<Route>, ClientError> {
        let mut history = self
            .layout
            .routes
            .history(job_type)
            .await
            .during(|| format!("read the route history of {job_type}"))?;
        let mut routes = Vec::new();
        while let Some(entry) = history.next().await {
            let entry = entry.during(|| format!("read the route history of {job_type}"))?;
            if entry.operation == kv::Operation::Put {
                routes.push(wire::decode(&entry.value)?);
            }
        }
        Ok(routes)
    }

    /// Every current route, sorted by job type.
    pub async fn routes(&self) -> Result<Vec<Route>, ClientError> {
        let keys = crate::layout::keys(&self.layout.routes, "routes").await?;
        let mut routes = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(route) = self.route(&key).await? {
                routes.push(route);
            }
        }
        routes.sort_by(|a, b| a.job_type.cmp(&b.job_type));
        Ok(routes)
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!(
        "{}{}",
        crate::model::DIGEST_PREFIX,
        hex::encode(Sha256::digest(bytes))
    )
}

fn event_subject(event: &JobEvent) -> String {
    if event.job_id.is_empty() {
        nats::handler_event_subject(&event.job_type, event.event_type)
    } else {
        nats::event_subject(&event.queue, &event.job_id, event.event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_split_on_commas() {
        assert_eq!(
            server_urls(" nats://a:1 ,nats://b:2,,").ok(),
            Some(vec!["nats://a:1".to_string(), "nats://b:2".to_string()])
        );
        assert!(server_urls("").is_err());
        assert!(server_urls(" , ").is_err());
    }
}
