//! Creating jobbox's streams, buckets and object store: idempotent, and safe when
//! several processes start at once.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};

use crate::error::{ClientError, NatsContext};
use crate::nats;

/// How long job events are kept.
///
/// A week is enough to debug last week's incidents; event volume is a few hundred
/// bytes per job step, so at 1,000 jobs/s that is on the order of 100 GiB: operators
/// with more traffic should lower it (`nats stream edit`).
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long results are kept after a job ends.
pub const RESULTS_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The window inside which a second publish of the same job id is dropped.
///
/// JetStream's default is 2 minutes; an hour covers a client that retries an enqueue
/// after a long outage.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(3600);

/// How long a worker heartbeat lives without being renewed.
pub const WORKER_TTL: Duration = Duration::from_secs(15);

/// Route history kept per job type (deploys you can roll back to).
pub const ROUTE_HISTORY: i64 = 64;

/// Handles on every jobbox stream and bucket.
#[derive(Clone)]
pub struct Layout {
    /// The results bucket.
    pub results: kv::Store,
    /// The cancellations bucket.
    pub cancels: kv::Store,
    /// The routes bucket.
    pub routes: kv::Store,
    /// The workers bucket.
    pub workers: kv::Store,
    /// The schedules bucket.
    pub schedules: kv::Store,
    /// The batches bucket.
    pub batches: kv::Store,
    /// The handler object store.
    pub handlers: object_store::ObjectStore,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout").finish_non_exhaustive()
    }
}

/// Creates (if missing) and opens every stream and bucket of DESIGN §3.
pub async fn ensure(js: &jetstream::Context) -> Result<Layout, ClientError> {
    ensure_stream(
        js,
        stream::Config {
            name: nats::JOBS_STREAM.into(),
            subjects: vec![nats::JOBS_SUBJECTS.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            // Delayed jobs are JetStream message schedules (server ≥ 2.12).
            allow_message_schedules: true,
            // A batch's jobs go in all together, up to 1,000 at a time (≥ 2.12).
            allow_atomic_publish: true,
            description: Some("jobbox: jobs waiting to run".into()),
            ..Default::default()
        },
    )
    .await?;
    ensure_stream(
        js,
        stream::Config {
            name: nats::EVENTS_STREAM.into(),
            subjects: vec![nats::EVENTS_SUBJECTS.into()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: EVENTS_MAX_AGE,
            duplicate_window: Duration::from_secs(120),
            description: Some("jobbox: job events".into()),
            ..Default::default()
        },
    )
    .await?;
    ensure_stream(
        js,
        stream::Config {
            name: nats::DLQ_STREAM.into(),
            subjects: vec![nats::DLQ_SUBJECTS.into()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            description: Some("jobbox: dead-lettered jobs".into()),
            ..Default::default()
        },
    )
    .await?;
    ensure_stream(
        js,
        stream::Config {
            name: nats::STATS_STREAM.into(),
            subjects: vec![nats::STATS_SUBJECTS.into()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_messages_per_subject: 1,
            allow_message_counter: true,
            description: Some("jobbox: per-queue counters".into()),
            ..Default::default()
        },
    )
    .await?;
    Ok(Layout {
        results: ensure_kv(js, nats::RESULTS_BUCKET, 1, RESULTS_TTL).await?,
        cancels: ensure_kv(js, nats::CANCELS_BUCKET, 1, RESULTS_TTL).await?,
        routes: ensure_kv(js, nats::ROUTES_BUCKET, ROUTE_HISTORY, Duration::ZERO).await?,
        workers: ensure_kv(js, nats::WORKERS_BUCKET, 1, WORKER_TTL).await?,
        schedules: ensure_kv(js, nats::SCHEDULES_BUCKET, 1, Duration::ZERO).await?,
        batches: ensure_kv(js, nats::BATCHES_BUCKET, 1, Duration::ZERO).await?,
        handlers: ensure_object_store(js, nats::HANDLERS_BUCKET).await?,
    })
}

async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<(), ClientError> {
    let name = config.name.clone();
    if js.get_stream(&name).await.is_ok() {
        return Ok(());
    }
    match js.create_stream(config).await {
        Ok(_) => Ok(()),
        // Another process may have created it in the meantime.
        Err(create) => js
            .get_stream(&name)
            .await
            .map(|_| ())
            .map_err(|_| ClientError::nats(format!("create stream {name}"), create)),
    }
}

async fn ensure_kv(
    js: &jetstream::Context,
    bucket: &str,
    history: i64,
    max_age: Duration,
) -> Result<kv::Store, ClientError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: bucket.into(),
        history,
        max_age,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(create) => js
            .get_key_value(bucket)
            .await
            .map_err(|_| ClientError::nats(format!("create KV bucket {bucket}"), create)),
    }
}

async fn ensure_object_store(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<object_store::ObjectStore, ClientError> {
    if let Ok(store) = js.get_object_store(bucket).await {
        return Ok(store);
    }
    let config = object_store::Config {
        bucket: bucket.into(),
        storage: stream::StorageType::File,
        description: Some("jobbox: handler components by digest".into()),
        ..Default::default()
    };
    match js.create_object_store(config).await {
        Ok(store) => Ok(store),
        Err(create) => js
            .get_object_store(bucket)
            .await
            .map_err(|_| ClientError::nats(format!("create object store {bucket}"), create)),
    }
}

/// Every key of `bucket` (what it holds named by `what`, for the error).
pub(crate) async fn keys(bucket: &kv::Store, what: &str) -> Result<Vec<String>, ClientError> {
    use futures::TryStreamExt as _;
    let operation = || format!("list {what}");
    match bucket.keys().await {
        Ok(keys) => keys.try_collect().await.during(operation),
        Err(e) => Err(ClientError::nats(operation(), e)),
    }
}
