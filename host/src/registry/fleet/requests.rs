//! Compile requests: a deploy asks the fleet to compile a handler before it switches
//! the route, so that every worker's first job of the new version loads the shared
//! artifact instead of compiling.
//!
//! The request on [`nats::COMPILE_SUBJECT`] names only a digest; it is answered by one
//! worker holding the fleet key (queue group [`nats::COMPILE_QUEUE_GROUP`]) once the
//! artifact for its engine is stored (it compiles it, or finds it). The deploy never
//! touches artifacts itself. With no such worker the request fails at once (no
//! responders) and the deploy goes on: workers then compile on their own.
//!
//! Once a worker has shared the artifact, the deploy asks every worker to preload it
//! ([`nats::PRELOAD_SUBJECT`]): each worker holding the key loads it from the fleet's
//! artifact (never compiling for this; a worker of another engine answers at once)
//! and answers. The deploy waits for as many answers as there are live workers, at
//! most [`PRELOAD_WAIT`], so that when the route changes every worker already holds
//! the new handler and its first job starts without loading anything.

use async_nats::RequestErrorKind;
use futures::StreamExt as _;
use jobbox::{Client, nats};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::CLAIM_GRACE;
use crate::registry::cap::compile_cap;
use crate::registry::loader::HandlerLoader;

/// Compile requests one worker serves at the same time. A request costs a compile
/// (CPU for seconds); more at once would slow the worker's jobs for nothing, as each
/// compile is itself parallel.
const CONCURRENT_REQUESTS: usize = 1;

/// Longest a deploy waits for the fleet to preload a handler it compiled: a load
/// from the fleet's artifact takes well under a second; a worker that does not answer
/// (no fleet key, gone) costs the deploy this much once.
pub const PRELOAD_WAIT: Duration = Duration::from_secs(5);

/// A compile or preload request.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CompileRequest {
    digest: String,
}

/// A compile request's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CompileReply {
    /// The artifact stored (its name), if the compile worked.
    #[serde(default)]
    pub artifact: Option<String>,
    /// Why not, otherwise.
    #[serde(default)]
    pub error: Option<String>,
}

/// What asking the fleet to compile did.
#[derive(Debug, Clone)]
pub enum FleetCompile {
    /// A worker stored the artifact.
    Shared(String),
    /// No worker holding the fleet key listens: workers compile on their own.
    NoFleet,
    /// A worker answered with an error (the route still changes; its workers
    /// compile on their own and report a failed load as usual).
    Failed(String),
    /// No answer in time, or the request could not be sent.
    NoAnswer(String),
}

/// Asks one worker of the fleet to compile and share the handler `digest` of
/// `wasm_size` bytes, waiting at most its compile cap plus [`CLAIM_GRACE`].
pub async fn request_compile(client: &Client, digest: &str, wasm_size: usize) -> FleetCompile {
    let wait = compile_cap(wasm_size) + CLAIM_GRACE;
    let payload = match serde_json::to_vec(&CompileRequest {
        digest: digest.to_string(),
    }) {
        Ok(payload) => payload,
        Err(e) => return FleetCompile::NoAnswer(e.to_string()),
    };
    let request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(wait));
    match client
        .nats()
        .send_request(nats::COMPILE_SUBJECT, request)
        .await
    {
        Ok(message) => match serde_json::from_slice::<CompileReply>(&message.payload) {
            Ok(CompileReply {
                artifact: Some(artifact),
                ..
            }) => FleetCompile::Shared(artifact),
            Ok(CompileReply { error, .. }) => {
                FleetCompile::Failed(error.unwrap_or_else(|| "no reason given".into()))
            }
            Err(e) => FleetCompile::Failed(format!("unreadable answer: {e}")),
        },
        Err(e) if e.kind() == RequestErrorKind::NoResponders => FleetCompile::NoFleet,
        Err(e) => FleetCompile::NoAnswer(e.to_string()),
    }
}

/// Asks every worker to preload `digest` from the fleet's artifact, and waits for as
/// many answers as there are live workers, at most [`PRELOAD_WAIT`]. Returns
/// (workers that hold it now, live workers).
pub async fn preload(client: &Client, digest: &str) -> (usize, usize) {
    let live = client.workers().await.map_or(0, |workers| workers.len());
    let Ok(payload) = serde_json::to_vec(&CompileRequest {
        digest: digest.to_string(),
    }) else {
        return (0, live);
    };
    let inbox = client.nats().new_inbox();
    let Ok(mut answers) = client.nats().subscribe(inbox.clone()).await else {
        return (0, live);
    };
    if client
        .nats()
        .publish_with_reply(nats::PRELOAD_SUBJECT, inbox, payload.into())
        .await
        .is_err()
    {
        return (0, live);
    }
    let deadline = Instant::now() + PRELOAD_WAIT;
    let (mut answered, mut ready) = (0, 0);
    while answered < live {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, answers.next()).await {
            Ok(Some(answer)) => {
                answered += 1;
                if serde_json::from_slice::<CompileReply>(&answer.payload)
                    .is_ok_and(|reply| reply.artifact.is_some())
                {
                    ready += 1;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = answers.unsubscribe().await;
    (ready, live)
}

/// Answers compile and preload requests with `loader` (which must have a fleet
/// store) until `shutdown`. Returns once subscribed.
pub async fn serve(
    client: Client,
    loader: HandlerLoader,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let preloads = client
        .nats()
        .subscribe(nats::PRELOAD_SUBJECT)
        .await
        .map_err(|e| anyhow::anyhow!("failed to subscribe to preload requests: {e}"))?;
    let requests = client
        .nats()
        .queue_subscribe(nats::COMPILE_SUBJECT, nats::COMPILE_QUEUE_GROUP.into())
        .await
        .map_err(|e| anyhow::anyhow!("failed to subscribe to compile requests: {e}"))?;
    for (requests, kind) in [(preloads, Request::Preload), (requests, Request::Compile)] {
        let loader = loader.clone();
        crate::registry::answering::answer_each(
            client.clone(),
            requests,
            shutdown.clone(),
            CONCURRENT_REQUESTS,
            kind.name(),
            move |payload| {
                let loader = loader.clone();
                async move { kind.answer(&loader, &payload).await }
            },
        );
    }
    Ok(())
}

/// What a subscription's requests ask for.
#[derive(Debug, Clone, Copy)]
enum Request {
    /// Load (from the fleet, or compile and share) and name the artifact.
    Compile,
    /// Load from the fleet's artifact only.
    Preload,
}

impl Request {
    async fn answer(self, loader: &HandlerLoader, payload: &[u8]) -> CompileReply {
        match self {
            Self::Compile => Box::pin(answer(loader, payload)).await,
            Self::Preload => Box::pin(answer_preload(loader, payload)).await,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Compile => "compile",
            Self::Preload => "preload",
        }
    }
}

/// The answer to one preload request: the handler loaded, if the fleet has an
/// artifact of it for this worker's engine (nothing is compiled for a preload).
async fn answer_preload(loader: &HandlerLoader, payload: &[u8]) -> CompileReply {
    let failed = |error: &str| CompileReply {
        artifact: None,
        error: Some(error.to_string()),
    };
    let Ok(request) = serde_json::from_slice::<CompileRequest>(payload) else {
        return failed("not a preload request");
    };
    let Some(fleet) = loader.fleet() else {
        return failed("this worker shares no artifacts");
    };
    let Some(name) = fleet.name_of(&request.digest) else {
        return failed("invalid digest");
    };
    if !fleet.has_artifact(&name).await {
        return failed("no artifact for this worker's engine");
    }
    match loader.load(&request.digest).await {
        Ok(_) => CompileReply {
            artifact: Some(name),
            error: None,
        },
        Err(failure) => failed(&failure.to_string()),
    }
}

/// The answer to one request: load (from the fleet, or compile and share) and name
/// the artifact.
async fn answer(loader: &HandlerLoader, payload: &[u8]) -> CompileReply {
    let failed = |error: String| CompileReply {
        artifact: None,
        error: Some(error),
    };
    let Ok(request) = serde_json::from_slice::<CompileRequest>(payload) else {
        return failed("not a compile request".into());
    };
    // Nothing unchecked from the request becomes a key or an object name.
    if !jobbox::is_valid_digest(&request.digest) {
        return failed("invalid digest".into());
    }
    let Some(fleet) = loader.fleet() else {
        return failed("this worker shares no artifacts".into());
    };
    let started = std::time::Instant::now();
    let loaded = match loader.load(&request.digest).await {
        // Loaded earlier from the local cache, say: make sure the fleet has it too.
        Ok(handler) => fleet.ensure_shared(&handler).await,
        Err(failure) => Err(failure.to_string()),
    };
    match loaded {
        Ok(name) => {
            tracing::info!(digest = %request.digest, elapsed_ms = started.elapsed().as_millis() as u64, "compile request answered");
            CompileReply {
                artifact: Some(name),
                error: None,
            }
        }
        Err(error) => failed(error),
    }
}
