//! Following the routes bucket: load each new version in the background, then swap.

use futures::StreamExt;
use jobbox::{Client, JobEvent, JobEventType, Route, wire};
use tokio_util::sync::CancellationToken;

use super::{ActiveRoute, RouteTable};

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
    for route in client.routes().await? {
        apply(&client, &table, &worker_id, route).await;
    }
    let mut watch = client
        .layout()
        .routes
        .watch_with_history(">")
        .await
        .map_err(|e| anyhow::anyhow!("failed to watch the routes bucket: {e}"))?;
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
                async_nats::jetstream::kv::Operation::Put => {
                    match wire::decode::<Route>(&entry.value) {
                        Ok(route) => {
                            // Load in the background: jobs keep running on the
                            // current version meanwhile.
                            let (client, table, worker_id) =
                                (client.clone(), table.clone(), worker_id.clone());
                            tokio::spawn(async move {
                                apply(&client, &table, &worker_id, route).await;
                            });
                        }
                        Err(e) => tracing::warn!(key = %entry.key, error = %e, "unreadable route"),
                    }
                }
                _ => table.remove(&entry.key),
            }
        }
    });
    Ok(())
}

/// Loads `route`'s handler and installs it; reports a swap or a failed load.
async fn apply(client: &Client, table: &RouteTable, worker_id: &str, route: Route) {
    if table
        .get(&route.job_type)
        .is_some_and(|active| active.route == route)
    {
        return;
    }
    let job_type = route.job_type.clone();
    let digest = route.digest.clone();
    match table.loader().load(&digest).await {
        Ok(handler) => {
            let old = table.install(ActiveRoute { route, handler });
            if old.as_deref() != Some(digest.as_str()) {
                tracing::info!(%job_type, %digest, old = ?old, "handler swapped in");
                let mut event = JobEvent::handler(JobEventType::HandlerSwapped, &job_type, &digest)
                    .with_worker(worker_id);
                if let Some(old) = old {
                    event = event.with_detail("old_digest", old);
                }
                publish(client, &event).await;
            }
        }
        Err(failure) => {
            tracing::error!(%job_type, %digest, %failure, "new handler version failed to load; keeping the current one");
            let event = JobEvent::handler(JobEventType::HandlerSwapped, &job_type, &digest)
                .with_worker(worker_id)
                .with_error(failure.error_type, failure.message.clone())
                .with_message("load failed; the current version keeps serving");
            publish(client, &event).await;
        }
    }
}

async fn publish(client: &Client, event: &JobEvent) {
    match client.publish_event(event).await {
        Ok(ack) => {
            if let Err(e) = ack.await {
                tracing::warn!(error = %e, "failed to record a handler event");
            }
        }
        Err(e) => tracing::warn!(error = %e, "failed to record a handler event"),
    }
}
