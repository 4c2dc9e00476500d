//! Route sync: a deploy (or rollback) asks every worker to install the route it just
//! wrote and waits for their answers, so that when it returns, the live fleet runs the
//! new version.
//!
//! The routes watch alone is eventually consistent: a worker whose watch is being
//! re-created (its server died, its consumer was lost) can run jobs on the old version
//! for seconds after a deploy returned. The request on [`nats::ROUTE_SYNC_SUBJECT`]
//! names the job type and the revision written; each worker reads that route from the
//! bucket itself (nothing else in the request is trusted), installs it as its watch
//! would, and answers with what it runs now. The deploy waits for an answer from every
//! live worker (from the heartbeats), at most [`ROUTE_SYNC_WAIT`], and reports who did
//! not answer.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use jobbox::{Client, WorkerState, nats};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::RouteTable;
use super::versions::current_route;

/// Longest a deploy waits for the fleet to run the version it wrote. A worker that
/// compiles the new version itself (no fleet key) answers once the compile is done,
/// or at this bound with the version it still runs.
pub const ROUTE_SYNC_WAIT: Duration = Duration::from_secs(10);

/// A heartbeat older than this is a worker that is gone (its key not expired yet): it
/// is not waited for.
const LIVE_HEARTBEAT: Duration = Duration::from_secs(15);

/// Requests one worker answers at the same time; more wait (each costs a KV read and,
/// at most, one handler load).
const CONCURRENT_SYNCS: usize = 4;

/// A route sync request.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SyncRequest {
    job_type: String,
    revision: u64,
}

/// One worker's answer to a route sync.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerRoute {
    /// The worker answering.
    pub worker_id: String,
    /// The revision of the route active on it now, if any.
    #[serde(default)]
    pub revision: Option<u64>,
    /// The digest active on it now, if any.
    #[serde(default)]
    pub digest: Option<String>,
    /// Why the requested revision is not active on it, if it is not.
    #[serde(default)]
    pub error: Option<String>,
}

/// What the fleet said about one route write.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FleetRoute {
    /// Workers that run the revision written (or a newer one).
    pub current: Vec<String>,
    /// Workers that answered but run something else, with why.
    pub behind: Vec<WorkerRoute>,
    /// Live workers (by heartbeat) that did not answer in time.
    pub silent: Vec<String>,
}

impl FleetRoute {
    /// Whether every live worker answered and runs the revision written.
    pub fn all_current(&self) -> bool {
        self.behind.is_empty() && self.silent.is_empty()
    }

    /// `2 of 3 workers run it; w-3 did not answer`, for messages.
    pub fn describe(&self) -> String {
        let total = self.current.len() + self.behind.len() + self.silent.len();
        let mut text = format!("{} of {total} live workers run it", self.current.len());
        for worker in &self.behind {
            text.push_str(&format!(
                "; {} does not: {}",
                worker.worker_id,
                worker.error.as_deref().unwrap_or("no reason given")
            ));
        }
        if !self.silent.is_empty() {
            text.push_str(&format!(
                "; no answer from {} (they pick it up from the routes watch)",
                self.silent.join(", ")
            ));
        }
        text
    }
}

/// Asks every worker to install revision `revision` of `job_type`'s route, and waits
/// for every live worker's answer, at most [`ROUTE_SYNC_WAIT`]. Never fails: what
/// could not be confirmed is in the answer, and workers still follow the bucket.
pub async fn confirm(client: &Client, job_type: &str, revision: u64) -> FleetRoute {
    let mut expected = live_workers(client).await;
    let mut fleet = FleetRoute::default();
    let request = SyncRequest {
        job_type: job_type.to_string(),
        revision,
    };
    let sent = async {
        let payload = serde_json::to_vec(&request).ok()?;
        let inbox = client.nats().new_inbox();
        let answers = client.nats().subscribe(inbox.clone()).await.ok()?;
        client
            .nats()
            .publish_with_reply(nats::ROUTE_SYNC_SUBJECT, inbox, payload.into())
            .await
            .ok()?;
        Some(answers)
    };
    let Some(mut answers) = sent.await else {
        fleet.silent = expected.into_iter().collect();
        return fleet;
    };
    let deadline = Instant::now() + ROUTE_SYNC_WAIT;
    while !expected.is_empty() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(answer)) = tokio::time::timeout(remaining, answers.next()).await else {
            break;
        };
        let Ok(answer) = serde_json::from_slice::<WorkerRoute>(&answer.payload) else {
            continue;
        };
        // A worker started after the heartbeats were read answers too: counted, not
        // waited for.
        expected.remove(&answer.worker_id);
        if answer.revision.is_some_and(|active| active >= revision) {
            fleet.current.push(answer.worker_id);
        } else {
            fleet.behind.push(answer);
        }
    }
    let _ = answers.unsubscribe().await;
    fleet.silent = expected.into_iter().collect();
    fleet.current.sort();
    fleet
}

/// Workers whose last heartbeat is recent and who take jobs.
async fn live_workers(client: &Client) -> BTreeSet<String> {
    let now = chrono::Utc::now();
    let Ok(workers) = client.workers().await else {
        return BTreeSet::new();
    };
    workers
        .into_iter()
        .filter(|worker| worker.state != WorkerState::Stopping)
        .filter(|worker| {
            (now - worker.heartbeat_at)
                .to_std()
                .map_or(true, |age| age <= LIVE_HEARTBEAT)
        })
        .map(|worker| worker.worker_id)
        .collect()
}

/// Answers route sync requests for `table` as `worker_id` until `shutdown`. Returns
/// once subscribed.
pub async fn serve(
    client: Client,
    table: RouteTable,
    worker_id: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let requests = client
        .nats()
        .subscribe(nats::ROUTE_SYNC_SUBJECT)
        .await
        .map_err(|e| anyhow::anyhow!("failed to subscribe to route sync requests: {e}"))?;
    let answering = client.clone();
    super::answering::answer_each(
        client,
        requests,
        shutdown,
        CONCURRENT_SYNCS,
        "route sync",
        move |payload| {
            let (client, table, worker_id) = (answering.clone(), table.clone(), worker_id.clone());
            async move { Box::pin(answer(&client, &table, &worker_id, &payload)).await }
        },
    );
    Ok(())
}

/// One worker's answer: installs the requested revision if this worker has not seen
/// it yet (reading the route from the bucket), then says what it runs.
async fn answer(
    client: &Client,
    table: &RouteTable,
    worker_id: &str,
    payload: &[u8],
) -> WorkerRoute {
    let mut answer = WorkerRoute {
        worker_id: worker_id.to_string(),
        ..WorkerRoute::default()
    };
    let request = match serde_json::from_slice::<SyncRequest>(payload) {
        Ok(request) if jobbox::is_valid_name(&request.job_type) => request,
        Ok(_) => {
            answer.error = Some("invalid job type".into());
            return answer;
        }
        Err(_) => {
            answer.error = Some("not a route sync request".into());
            return answer;
        }
    };
    let job_type = request.job_type.as_str();
    if !table.settled(job_type, request.revision) {
        // The watch has not delivered it, or is loading it: read it ourselves. Only a
        // revision the bucket holds is waited for; a request naming another answers
        // at once with what runs.
        match current_route(client, job_type).await {
            Ok(Some((revision, route))) if revision >= request.revision => {
                if table.note_revision(job_type, revision) {
                    // In the background: a long compile outlives the deploy's wait.
                    let (client, table, worker_id) =
                        (client.clone(), table.clone(), worker_id.to_string());
                    tokio::spawn(async move {
                        super::watch::apply(&client, &table, &worker_id, route, revision).await;
                    });
                }
                // Answer before the deploy stops listening, with what runs by then.
                let within = ROUTE_SYNC_WAIT.saturating_sub(Duration::from_secs(1));
                table.wait_settled(job_type, request.revision, within).await;
            }
            Ok(_) => {
                answer.error = Some(format!(
                    "the routes bucket holds no revision {} or newer of this job type",
                    request.revision
                ));
            }
            Err(e) => answer.error = Some(format!("cannot read the route: {e}")),
        }
    }
    if let Some(active) = table.get(job_type) {
        answer.revision = Some(active.revision);
        answer.digest = Some(active.route.digest.clone());
    }
    if answer
        .revision
        .is_none_or(|active| active < request.revision)
        && answer.error.is_none()
    {
        answer.error = Some(match table.load_failures().remove(job_type) {
            Some(failure) if failure.revision >= request.revision => failure.to_string(),
            _ => "the new version is still loading".into(),
        });
    }
    answer
}
