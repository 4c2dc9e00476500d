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
    let mut watch = client
        .layout()
        .routes
        .watch_with_history(">")
        .await
        .map_err(|e| anyhow::anyhow!("failed to watch the routes bucket: {e}"))?;
    let current = versions::current_routes(&client).await?;
    for (revision, route) in &current {
        table.note_revision(&route.job_type, *revision);
    }
    futures::stream::iter(current)
        .map(|(revision, route)| apply(&client, &table, &worker_id, route, revision))
        .buffer_unordered(STARTUP_LOADS)
        .collect::<()>()
        .await;
    tokio::spawn(async move {
        loop {
            let entry = tokio::select! {
                () = shutdown.cancelled() => return,
                entry = watch.next() => entry,
            };
            let Some(entry) = entry else {
                tracing::warn!("the routes watch ended");
                return;
            };
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!(error = %e, "routes watch error");
                    continue;
                }
            };
            match entry.operation {
                Operation::Put => {
                    // Replays of routes already loaded at startup are not newer.
                    if !table.note_revision(&entry.key, entry.revision) {
                        continue;
                    }
                    match wire::decode::<Route>(&entry.value) {
                        Ok(route) => {
                            // Load in the background: jobs keep running on the
                            // current version meanwhile.
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
    });
    Ok(())
}

/// Loads `route`'s handler and installs it; reports a swap or a failed load.
async fn apply(client: &Client, table: &RouteTable, worker_id: &str, route: Route, revision: u64) {
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
