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

/// How long a compile claim lives: longer than any compile may take (the cap of the
/// largest component), short enough that the bucket does not fill with old claims.
/// A claim left by a dead worker is taken over well before this (see the worker's
/// `registry::fleet`).
pub const COMPILE_CLAIM_TTL: Duration = Duration::from_secs(3600);

/// The most copies of a stream a NATS cluster keeps (JetStream's own limit).
pub const MAX_REPLICAS: usize = 5;

/// How many copies of each stream and bucket to keep when creating them: 1 on a single
/// server, 3 (or 5) on a cluster, so that losing a node loses nothing acknowledged.
///
/// An existing layout keeps the replicas it was created with; [`set_replicas`] changes
/// them (`jobbox admin layout --replicas N`).
pub fn check_replicas(replicas: usize) -> Result<usize, ClientError> {
    if (1..=MAX_REPLICAS).contains(&replicas) {
        Ok(replicas)
    } else {
        Err(ClientError::InvalidLayout(format!(
            "replicas must be 1 to {MAX_REPLICAS}, not {replicas}"
        )))
    }
}

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
    /// Compiled handlers shared by a fleet (written by workers holding the fleet key).
    pub artifacts: object_store::ObjectStore,
    /// Compile claims.
    pub compiles: kv::Store,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout").finish_non_exhaustive()
    }
}

/// Creates (if missing) and opens every stream and bucket of DESIGN §3, one copy of
/// each (a single server).
pub async fn ensure(js: &jetstream::Context) -> Result<Layout, ClientError> {
    ensure_with(js, 1).await
}

/// Like [`ensure`], creating what is missing with `replicas` copies (see
/// [`check_replicas`]). What exists already is opened as it is.
pub async fn ensure_with(js: &jetstream::Context, replicas: usize) -> Result<Layout, ClientError> {
    let replicas = check_replicas(replicas)?;
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
            num_replicas: replicas,
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
            num_replicas: replicas,
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
            num_replicas: replicas,
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
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    ensure_stream(
        js,
        stream::Config {
            name: nats::UNDELIVERABLE_STREAM.into(),
            subjects: vec![nats::UNDELIVERABLE_SUBJECTS.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            max_age: EVENTS_MAX_AGE,
            description: Some(
                "jobbox: job messages the server stopped delivering, to be dead-lettered".into(),
            ),
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    let kv = |bucket, history, max_age| Bucket {
        name: bucket,
        history,
        max_age,
        replicas,
    };
    ensure_kv(js, kv(nats::RESULTS_BUCKET, 1, RESULTS_TTL)).await?;
    // Results are read from the leader once there are replicas (see
    // `fence_reads_on_leader`); the store is opened after that, as it caches the setting.
    fence_reads_on_leader(js).await?;
    Ok(Layout {
        results: ensure_kv(js, kv(nats::RESULTS_BUCKET, 1, RESULTS_TTL)).await?,
        cancels: ensure_kv(js, kv(nats::CANCELS_BUCKET, 1, RESULTS_TTL)).await?,
        routes: ensure_kv(js, kv(nats::ROUTES_BUCKET, ROUTE_HISTORY, Duration::ZERO)).await?,
        workers: ensure_kv(js, kv(nats::WORKERS_BUCKET, 1, WORKER_TTL)).await?,
        schedules: ensure_kv(js, kv(nats::SCHEDULES_BUCKET, 1, Duration::ZERO)).await?,
        batches: ensure_kv(js, kv(nats::BATCHES_BUCKET, 1, Duration::ZERO)).await?,
        compiles: ensure_kv(js, kv(nats::COMPILES_BUCKET, 1, COMPILE_CLAIM_TTL)).await?,
        handlers: ensure_object_store(
            js,
            nats::HANDLERS_BUCKET,
            "jobbox: handler components by digest",
            replicas,
        )
        .await?,
        artifacts: ensure_object_store(
            js,
            nats::ARTIFACTS_BUCKET,
            "jobbox: compiled handlers, sealed under the fleet key (workers write them)",
            replicas,
        )
        .await?,
    })
}

/// The names of every stream jobbox creates, buckets' streams included
/// (`KV_<bucket>`, `OBJ_<bucket>`).
pub fn stream_names() -> Vec<String> {
    let streams = [
        nats::JOBS_STREAM,
        nats::EVENTS_STREAM,
        nats::DLQ_STREAM,
        nats::STATS_STREAM,
        nats::UNDELIVERABLE_STREAM,
    ]
    .map(String::from);
    let buckets = [
        nats::RESULTS_BUCKET,
        nats::CANCELS_BUCKET,
        nats::ROUTES_BUCKET,
        nats::WORKERS_BUCKET,
        nats::SCHEDULES_BUCKET,
        nats::BATCHES_BUCKET,
        nats::COMPILES_BUCKET,
    ]
    .map(|bucket| format!("KV_{bucket}"));
    let object_stores = [nats::HANDLERS_BUCKET, nats::ARTIFACTS_BUCKET].map(|b| format!("OBJ_{b}"));
    streams
        .into_iter()
        .chain(buckets)
        .chain(object_stores)
        .collect()
}

/// One stream's replicas before and after [`set_replicas`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaChange {
    /// The stream's name.
    pub stream: String,
    /// Copies it had.
    pub before: usize,
    /// Copies it has now.
    pub after: usize,
}

/// Changes the replicas of every jobbox stream and bucket of an existing deployment
/// (creating what is missing first). JetStream copies the data to the new replicas
/// in the background; durable consumers follow their stream. Processes that opened
/// the layout before keep working; restart workers after going from 1 to more
/// replicas so that they read results from the leader (see `fence_reads_on_leader`).
pub async fn set_replicas(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<Vec<ReplicaChange>, ClientError> {
    let replicas = check_replicas(replicas)?;
    ensure_with(js, replicas).await?;
    let results_stream = format!("KV_{}", nats::RESULTS_BUCKET);
    let mut changes = Vec::new();
    for name in stream_names() {
        let operation = || format!("read stream {name}");
        let mut stream = js
            .get_stream(&name)
            .await
            .map_err(|e| ClientError::nats(operation(), e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| ClientError::nats(operation(), e))?;
        let mut config = info.config.clone();
        let before = config.num_replicas.max(1);
        config.num_replicas = replicas;
        if name == results_stream {
            config.allow_direct = replicas == 1;
        }
        if config != info.config {
            js.update_stream(config)
                .await
                .map_err(|e| ClientError::nats(format!("change replicas of stream {name}"), e))?;
        }
        changes.push(ReplicaChange {
            stream: name,
            before,
            after: replicas,
        });
    }
    Ok(changes)
}

/// With replicas, a direct get may be answered by a follower that has not yet applied
/// the latest write (KV reads are not read-your-writes there): a worker checking
/// whether a redelivered job already has a result could miss it and run the handler
/// again. So the results bucket answers reads from its leader only (`allow_direct:
/// false`) once it has more than one copy.
async fn fence_reads_on_leader(js: &jetstream::Context) -> Result<(), ClientError> {
    let name = format!("KV_{}", nats::RESULTS_BUCKET);
    let operation = || format!("read stream {name}");
    let stream = js
        .get_stream(&name)
        .await
        .map_err(|e| ClientError::nats(operation(), e))?;
    let info = stream.cached_info();
    if info.config.num_replicas > 1 && info.config.allow_direct {
        let mut config = info.config.clone();
        config.allow_direct = false;
        js.update_stream(config)
            .await
            .map_err(|e| ClientError::nats(format!("read results from the leader ({name})"), e))?;
    }
    Ok(())
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

/// What a KV bucket is created with.
struct Bucket {
    name: &'static str,
    history: i64,
    max_age: Duration,
    replicas: usize,
}

async fn ensure_kv(js: &jetstream::Context, bucket: Bucket) -> Result<kv::Store, ClientError> {
    let Bucket {
        name: bucket,
        history,
        max_age,
        replicas,
    } = bucket;
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: bucket.into(),
        history,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
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
    description: &str,
    replicas: usize,
) -> Result<object_store::ObjectStore, ClientError> {
    if let Ok(store) = js.get_object_store(bucket).await {
        return Ok(store);
    }
    let config = object_store::Config {
        bucket: bucket.into(),
        storage: stream::StorageType::File,
        description: Some(description.into()),
        num_replicas: replicas,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_one_to_five() {
        assert!(check_replicas(0).is_err());
        assert_eq!(check_replicas(1).ok(), Some(1));
        assert_eq!(check_replicas(3).ok(), Some(3));
        assert!(check_replicas(MAX_REPLICAS + 1).is_err());
        assert!(check_replicas(usize::MAX).is_err());
    }

    #[test]
    fn every_bucket_has_its_stream_named() {
        let names = stream_names();
        assert_eq!(names.len(), 14);
        assert!(names.contains(&nats::UNDELIVERABLE_STREAM.to_string()));
        assert!(names.contains(&"KV_jobbox_results".to_string()));
        assert!(names.contains(&"OBJ_jobbox_handlers".to_string()));
        assert!(names.contains(&"OBJ_jobbox_artifacts".to_string()));
        assert!(names.contains(&"KV_jobbox_compiles".to_string()));
        assert!(names.contains(&nats::JOBS_STREAM.to_string()));
    }
}
