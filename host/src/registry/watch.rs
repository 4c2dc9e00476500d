//! Following the routes bucket: load each new version in the background, then swap.
//!
//! Every route write has a revision (its sequence in the bucket's stream). The watcher
//! notes each revision as it arrives, before the load starts; a load that finishes
//! after a newer revision of the same job type was seen is dropped, so two quick
//! deploys v2 then v3 end with v3 installed however long v2 takes to compile.

use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use futures::StreamExt;
use jobbox::{Client, JobEvent, JobEventType, Route, wire};
use tokio_util::sync::CancellationToken;

use super::{ActiveRoute, Installed, RouteTable, versions};

/// Routes loaded at the same time at startup (each compile is itself parallel).
const STARTUP_LOADS: usize = 4;

/// Attempts at a load that failed for a reason a retry may fix (the object store
/// was unreachable), while the route is still the newest.
const LOAD_ATTEMPTS: u32 = 4;

/// Loads every current route, then follows changes until `shutdown`.
///
/// Returns once the current routes are installed (so a worker takes no job before
/// it knows its routes); the watch goes on in a background task.
pub async fn watch_routes(
    client: Client,
    table: RouteTable,
    worker_id: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Boxed: the startup loads make a large future, which would otherwise sit inline
    // in the caller's (a worker's start, a test's body).
    Box::pin(watch_routes_boxed(client, table, worker_id, shutdown)).await
}

async fn watch_routes_boxed(
    client: Client,
    table: RouteTable,
    worker_id: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Watch first: a route written while the current ones load is in the watch.
    let watch = open_watch(&client)
        .await
        .map_err(|e| anyhow::anyhow!("failed to watch the routes bucket: {e}"))?;
    let reconnects = client.reconnects();
    let reconnect = *reconnects.borrow();
    resync(&client, &table, &worker_id).await?;
    table.mark_synced(reconnect);
    tokio::spawn(follow(
        client, table, worker_id, watch, reconnects, shutdown,
    ));
    Ok(())
}

/// Pause before the watch is opened again after it ended or failed, doubling up to
/// [`MAX_REWATCH_BACKOFF`].
const REWATCH_BACKOFF: Duration = Duration::from_millis(250);
const MAX_REWATCH_BACKOFF: Duration = Duration::from_secs(10);

/// How often the watch is checked against the bucket: if the bucket holds a write
/// the watch never delivered (its consumer stalled), the routes are read again.
const WATCH_CHECK_INTERVAL: Duration = Duration::from_secs(30);

type RouteWatch = async_nats::jetstream::kv::Watch;

async fn open_watch(client: &Client) -> Result<RouteWatch, async_nats::jetstream::kv::WatchError> {
    client.layout().routes.watch_with_history(">").await
}

/// Follows the routes bucket until `shutdown`. The watch is opened again whenever it
/// ends or fails; after each reconnect, and whenever the bucket holds a write the
/// watch missed, every route is read again ([`resync`]).
async fn follow(
    client: Client,
    table: RouteTable,
    worker_id: String,
    watch: RouteWatch,
    mut reconnects: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let mut watch = Some(watch);
    let mut backoff = REWATCH_BACKOFF;
    let mut check = tokio::time::interval(WATCH_CHECK_INTERVAL);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.reset();
    loop {
        let Some(current) = watch.as_mut() else {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            match open_watch(&client).await {
                Ok(opened) => {
                    tracing::info!("watching the routes bucket again");
                    watch = Some(opened);
                    backoff = REWATCH_BACKOFF;
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "cannot watch the routes bucket; retrying");
                    backoff = (backoff * 2).min(MAX_REWATCH_BACKOFF);
                }
            }
            continue;
        };
        let entry = tokio::select! {
            () = shutdown.cancelled() => return,
            entry = current.next() => entry,
            Ok(()) = reconnects.changed() => {
                let reconnect = *reconnects.borrow_and_update();
                resync_until_done(&client, &table, &worker_id, &shutdown).await;
                table.mark_synced(reconnect);
                continue;
            }
            _ = check.tick() => {
                if missed_a_write(&client, &table).await {
                    tracing::warn!("the routes watch missed a write; reading every route again");
                    watch = None;
                    resync_until_done(&client, &table, &worker_id, &shutdown).await;
                }
                continue;
            }
        };
        let entry = match entry {
            Some(Ok(entry)) => entry,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the routes watch failed; watching again");
                watch = None;
                continue;
            }
            None => {
                tracing::warn!("the routes watch ended; watching again");
                watch = None;
                continue;
            }
        };
        table.saw(entry.revision);
        match entry.operation {
            Operation::Put => {
                // Replays of routes already loaded are not newer.
                if !table.note_revision(&entry.key, entry.revision) {
                    continue;
                }
                match wire::decode::<Route>(&entry.value) {
                    Ok(route) => {
                        // Load in the background: jobs keep running on the current
                        // version meanwhile.
                        let (client, table, worker_id) =
                            (client.clone(), table.clone(), worker_id.clone());
                        tokio::spawn(async move {
                            apply(&client, &table, &worker_id, route, entry.revision).await;
                        });
                    }
                    Err(e) => tracing::warn!(key = %entry.key, error = %e, "unreadable route"),
                }
            }
            Operation::Delete | Operation::Purge => {
                tracing::info!(job_type = %entry.key, "route removed");
                table.remove(&entry.key, entry.revision);
            }
        }
    }
}

/// Whether the routes bucket holds a write newer than any this worker has seen.
async fn missed_a_write(client: &Client, table: &RouteTable) -> bool {
    last_write(client)
        .await
        .is_ok_and(|last| last > table.seen_up_to())
}

/// The revision of the routes bucket's last write.
async fn last_write(client: &Client) -> anyhow::Result<u64> {
    let name = format!("KV_{}", jobbox::nats::ROUTES_BUCKET);
    let mut stream = client.jetstream().get_stream(&name).await?;
    Ok(stream.info().await?.state.last_sequence)
}

/// [`resync`] until it works (NATS may still be settling after a reconnect), with a
/// growing pause, or until `shutdown`.
async fn resync_until_done(
    client: &Client,
    table: &RouteTable,
    worker_id: &str,
    shutdown: &CancellationToken,
) {
    let mut backoff = REWATCH_BACKOFF;
    loop {
        match resync(client, table, worker_id).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "cannot read the routes; retrying");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_REWATCH_BACKOFF);
    }
}

/// Longest [`resync`] waits for a load another path (the watch) started.
const RESYNC_SETTLE_WAIT: Duration = Duration::from_secs(10);

/// Reads every current route from the bucket and installs those newer than what this
/// worker runs (and removes those deleted); returns once each is active, failed to
/// load, or [`RESYNC_SETTLE_WAIT`] passed.
async fn resync(client: &Client, table: &RouteTable, worker_id: &str) -> anyhow::Result<()> {
    // Read before the routes: what is written meanwhile is newer than this.
    let last = last_write(client).await?;
    let current = versions::current_routes(client).await?;
    let present: std::collections::BTreeSet<&str> = current
        .iter()
        .map(|(_, route)| route.job_type.as_str())
        .collect();
    for job_type in table.digests().into_keys() {
        if !present.contains(job_type.as_str())
            && let Some(revision) = versions::removal_revision(client, &job_type).await?
        {
            tracing::info!(%job_type, "route removed");
            table.remove(&job_type, revision);
        }
    }
    let fresh: Vec<(u64, Route)> = current
        .iter()
        .filter(|(revision, route)| table.note_revision(&route.job_type, *revision))
        .cloned()
        .collect();
    futures::stream::iter(fresh)
        .map(|(revision, route)| apply(client, table, worker_id, route, revision))
        .buffer_unordered(STARTUP_LOADS)
        .collect::<()>()
        .await;
    let deadline = tokio::time::Instant::now() + RESYNC_SETTLE_WAIT;
    for (revision, route) in &current {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        table.wait_settled(&route.job_type, *revision, left).await;
    }
    table.saw(last);
    Ok(())
}

/// Loads `route`'s handler and installs it; reports a swap or a failed load.
pub(super) async fn apply(
    client: &Client,
    table: &RouteTable,
    worker_id: &str,
    route: Route,
    revision: u64,
) {
    if table
        .get(&route.job_type)
        .is_some_and(|active| active.revision >= revision)
    {
        return;
    }
    let job_type = route.job_type.clone();
    let digest = route.digest.clone();
    let mut attempt = 1;
    let loaded = loop {
        match table.loader().load(&digest).await {
            Err(failure)
                if failure.retryable
                    && attempt < LOAD_ATTEMPTS
                    && table.is_newest(&job_type, revision) =>
            {
                tracing::warn!(%job_type, %digest, %failure, attempt, "handler load failed; retrying");
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                attempt += 1;
            }
            other => break other,
        }
    };
    match loaded {
        Ok(handler) => match table.install(ActiveRoute {
            route,
            handler,
            revision,
        }) {
            Installed::Replaced(old) => {
                if old.as_deref() != Some(digest.as_str()) {
                    tracing::info!(%job_type, %digest, old = ?old, revision, "handler swapped in");
                    let mut event =
                        JobEvent::handler(JobEventType::HandlerSwapped, &job_type, &digest)
                            .with_worker(worker_id)
                            .with_detail("revision", revision.to_string());
                    if let Some(old) = old {
                        event = event.with_detail("old_digest", old);
                    }
                    publish(client, &event).await;
                }
            }
            Installed::AlreadyActive => {}
            Installed::Stale { newest } => {
                tracing::info!(%job_type, %digest, revision, newest, "a newer route arrived while this version loaded; not installing it");
            }
        },
        Err(failure) => {
            table.record_failure(&route, revision, &failure);
            tracing::error!(%job_type, %digest, %failure, "new handler version failed to load; keeping the current one");
            let event = JobEvent::handler(JobEventType::HandlerSwapped, &job_type, &digest)
                .with_worker(worker_id)
                .with_detail("revision", revision.to_string())
                .with_error(failure.error_type, failure.message.clone())
                .with_message("load failed; the current version keeps serving");
            publish(client, &event).await;
        }
    }
}

async fn publish(client: &Client, event: &JobEvent) {
    if let Err(e) = client.record_event(event).await {
        tracing::warn!(error = %e, "failed to record a handler event");
    }
}
