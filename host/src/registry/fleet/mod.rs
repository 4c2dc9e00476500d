//! Compiling once per fleet: workers share the native code of each handler through
//! the artifacts object store, sealed under the fleet key.
//!
//! A worker with a fleet key loads a handler it does not have in its local compile
//! cache like this:
//!
//! 1. read the artifact `sha256-<hex>.<engine id>` ([`jobbox::nats::artifact_name`]:
//!    the handler's digest and a hash of the engine's compatibility hash) from
//!    `jobbox_artifacts`; if its seal verifies under the fleet key ([`seal::open`]),
//!    deserialize it. A missing, tampered, foreign or unsealed artifact is not used
//!    (and counted);
//! 2. otherwise claim the compile in `jobbox_compiles` (KV `create` of the same name;
//!    a claim that is done, failed, or older than the compile cap plus
//!    [`CLAIM_GRACE`] by the server's clock is taken over with a compare-and-set);
//! 3. the claimer compiles from the `.wasm`, seals and stores the artifact (replacing
//!    whatever was there), then marks the claim done; a worker that finds a live claim
//!    of another waits for it to change, at most the compile cap plus the grace, then
//!    reads the artifact again, and past that bound compiles (and shares) itself.
//!
//! Nothing a deployer writes is deserialized: only a worker holding the key can make
//! a seal that verifies. A deployer that writes a claim can delay a load by at most
//! the bound above. See docs/security.md.

pub mod key;
pub mod requests;
pub mod seal;

use std::hash::{Hash as _, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{CreateErrorKind, Operation};
use bytes::Bytes;
use futures::StreamExt as _;
use jobbox::{Client, nats};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::cap::compile_cap;
use crate::sandbox::{Failure, Handler, Sandbox};
pub use key::{FLEET_KEY_FILE_ENV, FleetKey};

/// Added to the compile cap when judging a claim stale or waiting for one: covers
/// fetching the `.wasm`, sealing and storing the artifact, and clock skew between the
/// worker and the server (a claim's age is the server's timestamp against ours).
pub const CLAIM_GRACE: Duration = Duration::from_secs(30);

/// Largest artifact read (a compiled 32 MiB component is well under this).
const MAX_ARTIFACT_BYTES: usize = 1 << 30;

/// Rounds of read-claim-wait before a worker compiles without a claim: each round
/// ends in a hit, a claim, or a wait that saw the claim change.
const MAX_ROUNDS: u32 = 4;

/// The engine's part of an artifact's name: 32 hex digits of SHA-256 over wasmtime's
/// [`Engine::precompile_compatibility_hash`] (which covers the exact wasmtime
/// version, the target and every setting that changes compiled code). Stable across
/// processes of one build, unlike the standard library's hasher.
pub fn engine_id(engine: &Engine) -> String {
    struct Sha256Hasher(Sha256);
    impl Hasher for Sha256Hasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.write(b"jobbox engine id\0");
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..nats::ENGINE_ID_HEX / 2])
}

/// A compile claim, the value of a `jobbox_compiles` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    /// Who claimed it.
    worker_id: String,
    /// Where the compile is.
    state: ClaimState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ClaimState {
    Compiling,
    Done,
    Failed,
}

/// Counters of what the fleet store did since the worker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FleetStats {
    /// Handlers loaded from a fleet artifact (no compile here).
    pub hits: u64,
    /// Loads that found no usable artifact.
    pub misses: u64,
    /// Artifacts refused: tampered, sealed under another key, not sealed at all, or
    /// refused by wasmtime. Each is replaced by a fresh compile.
    pub refused: u64,
    /// Artifacts this worker compiled and stored.
    pub published: u64,
    /// Artifacts that failed to be stored (the handler still runs here).
    pub publish_errors: u64,
    /// Loads that waited for another worker's compile.
    pub waited: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    refused: AtomicU64,
    published: AtomicU64,
    publish_errors: AtomicU64,
    waited: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The fleet's shared artifacts, as one worker sees them.
///
/// Cheap to clone; clones share the counters.
#[derive(Debug, Clone)]
pub struct FleetArtifacts {
    client: Client,
    key: Arc<FleetKey>,
    engine_id: String,
    worker_id: String,
    claim_bound: Option<Duration>,
    counters: Arc<Counters>,
}

/// What reading an artifact found.
enum Fetched {
    Hit(Handler),
    Missing,
    Refused,
}

/// What a claim attempt found.
enum Claimed {
    /// This worker compiles; the claim's revision.
    Mine(u64),
    /// Another worker compiles; the claim's revision.
    Theirs(u64),
    /// The claim moved meanwhile: read again.
    Again,
    /// The claims bucket cannot be used.
    Unavailable,
}

impl FleetArtifacts {
    /// Artifacts of `client`'s deployment, sealed under `key`, for `engine`, claimed
    /// as `worker_id`.
    pub fn new(client: Client, key: FleetKey, engine: &Engine, worker_id: String) -> Self {
        Self {
            client,
            key: Arc::new(key),
            engine_id: engine_id(engine),
            worker_id,
            claim_bound: None,
            counters: Arc::default(),
        }
    }

    /// How long another worker's compile claim counts as live and is waited for,
    /// instead of the compile cap of the component plus [`CLAIM_GRACE`]. Past it a
    /// worker compiles (and shares) on its own.
    #[must_use]
    pub fn with_claim_bound(mut self, bound: Duration) -> Self {
        self.claim_bound = Some(bound);
        self
    }

    /// The engine id in this worker's artifact names.
    pub fn engine_id(&self) -> &str {
        &self.engine_id
    }

    /// The artifact name of `digest` for this worker's engine.
    pub fn name_of(&self, digest: &str) -> Option<String> {
        nats::artifact_name(digest, &self.engine_id)
    }

    /// What the fleet store did so far.
    pub fn stats(&self) -> FleetStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let c = &self.counters;
        FleetStats {
            hits: read(&c.hits),
            misses: read(&c.misses),
            refused: read(&c.refused),
            published: read(&c.published),
            publish_errors: read(&c.publish_errors),
            waited: read(&c.waited),
        }
    }

    /// The handler with `digest` (`wasm_size` bytes of `.wasm`): from the fleet's
    /// artifact, else from `compile` — run here once per fleet (per engine), or after
    /// a bounded wait for another worker's compile — and shared.
    pub async fn load<F, Fut>(
        &self,
        sandbox: &Sandbox,
        digest: &str,
        wasm_size: usize,
        compile: F,
    ) -> Result<Handler, Failure>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Handler, Failure>>,
    {
        let Some(name) = self.name_of(digest) else {
            return compile().await;
        };
        let bound = self
            .claim_bound
            .unwrap_or_else(|| compile_cap(wasm_size) + CLAIM_GRACE);
        let deadline = Instant::now() + bound;
        let mut waited = false;
        for round in 0..MAX_ROUNDS {
            let refused = match self.fetch(sandbox, digest, &name).await {
                Fetched::Hit(handler) => {
                    if waited {
                        bump(&self.counters.waited);
                    }
                    return Ok(handler);
                }
                Fetched::Missing => false,
                Fetched::Refused => true,
            };
            // A done claim with nothing read yet may have just landed: read again
            // once. One whose artifact was refused is taken over at once.
            let reread_done = round == 0 && !refused;
            match self.claim(&name, bound, reread_done).await {
                Claimed::Mine(revision) => {
                    return self.compile_and_share(&name, Some(revision), compile).await;
                }
                Claimed::Theirs(revision) => {
                    waited = true;
                    if !self.wait_for_change(&name, revision, deadline).await {
                        break;
                    }
                }
                Claimed::Again => {}
                Claimed::Unavailable => break,
            }
        }
        tracing::info!(%digest, "no shared artifact after a bounded wait; compiling here");
        self.compile_and_share(&name, None, compile).await
    }

    /// Reads and opens the artifact `name`, if there is a usable one.
    async fn fetch(&self, sandbox: &Sandbox, digest: &str, name: &str) -> Fetched {
        let artifacts = &self.client.layout().artifacts;
        let mut object = match artifacts.get(name).await {
            Ok(object) => object,
            Err(e) => {
                if e.kind() != async_nats::jetstream::object_store::GetErrorKind::NotFound {
                    tracing::warn!(%digest, error = %e, "cannot read the fleet's artifact; compiling instead");
                }
                bump(&self.counters.misses);
                return Fetched::Missing;
            }
        };
        if object.info().size > MAX_ARTIFACT_BYTES {
            return self.refuse(digest, "it is larger than any compiled handler");
        }
        let mut sealed = Vec::with_capacity(object.info().size);
        if let Err(e) = object.read_to_end(&mut sealed).await {
            // A half-written or half-purged object (see PITFALLS: object store puts).
            tracing::warn!(%digest, error = %e, "cannot read the fleet's artifact; compiling instead");
            bump(&self.counters.misses);
            return Fetched::Missing;
        }
        let (key, name_owned, sandbox_owned, digest_owned) = (
            Arc::clone(&self.key),
            name.to_string(),
            sandbox.clone(),
            digest.to_string(),
        );
        let opened = tokio::task::spawn_blocking(move || {
            open_artifact(&key, &name_owned, &sealed, &sandbox_owned, digest_owned)
        })
        .await;
        match opened {
            Ok(Ok(handler)) => {
                bump(&self.counters.hits);
                tracing::info!(%digest, "handler loaded from the fleet's artifact");
                Fetched::Hit(handler)
            }
            Ok(Err(reason)) => self.refuse(digest, &reason),
            Err(join) => self.refuse(digest, &format!("the loading thread failed: {join}")),
        }
    }

    fn refuse(&self, digest: &str, reason: &str) -> Fetched {
        bump(&self.counters.refused);
        tracing::warn!(%digest, %reason, "refused the fleet's artifact; compiling and replacing it");
        Fetched::Refused
    }

    /// Claims the compile of `name`, or says who has it.
    async fn claim(&self, name: &str, stale_after: Duration, reread_done: bool) -> Claimed {
        let compiles = &self.client.layout().compiles;
        let Ok(mine) = encode_claim(&self.worker_id, ClaimState::Compiling) else {
            return Claimed::Unavailable;
        };
        let entry = match compiles.entry(name).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(%name, error = %e, "cannot read compile claims");
                return Claimed::Unavailable;
            }
        };
        let Some(entry) = entry.filter(|entry| entry.operation == Operation::Put) else {
            return match compiles.create(name, mine).await {
                Ok(revision) => Claimed::Mine(revision),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Claimed::Again,
                Err(e) => {
                    tracing::warn!(%name, error = %e, "cannot claim a compile");
                    Claimed::Unavailable
                }
            };
        };
        let claim = jobbox::wire::decode::<Claim>(&entry.value).ok();
        let age = chrono::Utc::now().timestamp() - entry.created.unix_timestamp();
        let stale = age > i64::try_from(stale_after.as_secs()).unwrap_or(i64::MAX);
        match claim.map(|claim| claim.state) {
            Some(ClaimState::Compiling) if !stale => return Claimed::Theirs(entry.revision),
            Some(ClaimState::Done) if reread_done => return Claimed::Again,
            _ => {}
        }
        match compiles.update(name, mine, entry.revision).await {
            Ok(revision) => Claimed::Mine(revision),
            Err(_) => Claimed::Again,
        }
    }

    /// Waits until the claim `name` moves past `revision` (true), or until
    /// `deadline` (false).
    async fn wait_for_change(&self, name: &str, revision: u64, deadline: Instant) -> bool {
        let compiles = &self.client.layout().compiles;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return false;
        }
        let changed = async {
            match compiles.watch_from_revision(name, revision + 1).await {
                Ok(mut watch) => {
                    let _ = watch.next().await;
                }
                // No watch: look again a moment later.
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        tokio::time::timeout(remaining, changed).await.is_ok()
    }

    /// Compiles with `compile`, stores the sealed artifact, and settles the claim.
    async fn compile_and_share<F, Fut>(
        &self,
        name: &str,
        claim: Option<u64>,
        compile: F,
    ) -> Result<Handler, Failure>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Handler, Failure>>,
    {
        let compiled = compile().await;
        let state = match &compiled {
            Ok(handler) => match self.publish(name, handler).await {
                Ok(()) => {
                    bump(&self.counters.published);
                    ClaimState::Done
                }
                Err(e) => {
                    bump(&self.counters.publish_errors);
                    tracing::warn!(%name, error = %format!("{e:#}"), "failed to share a compiled handler");
                    ClaimState::Failed
                }
            },
            Err(_) => ClaimState::Failed,
        };
        if let Some(revision) = claim
            && let Ok(value) = encode_claim(&self.worker_id, state)
            && let Err(e) = self
                .client
                .layout()
                .compiles
                .update(name, value, revision)
                .await
        {
            tracing::debug!(%name, error = %e, "compile claim was taken over meanwhile");
        }
        compiled
    }

    /// Whether the fleet holds an artifact named `name` (not checked: a load does).
    pub async fn has_artifact(&self, name: &str) -> bool {
        self.client.layout().artifacts.info(name).await.is_ok()
    }

    /// Makes sure the fleet has an artifact of `handler` (stores one if there is
    /// none); returns its name.
    pub async fn ensure_shared(&self, handler: &Handler) -> Result<String, String> {
        let name = self
            .name_of(handler.digest())
            .ok_or_else(|| "invalid digest".to_string())?;
        if self.has_artifact(&name).await {
            return Ok(name);
        }
        match self.publish(&name, handler).await {
            Ok(()) => {
                bump(&self.counters.published);
                Ok(name)
            }
            Err(e) => {
                bump(&self.counters.publish_errors);
                Err(format!("{e:#}"))
            }
        }
    }

    /// Seals `handler`'s compiled code and stores it as `name`.
    async fn publish(&self, name: &str, handler: &Handler) -> anyhow::Result<()> {
        let (key, name_owned, handler) = (Arc::clone(&self.key), name.to_string(), handler.clone());
        let sealed = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
            let payload = handler
                .component()
                .serialize()
                .map_err(|e| anyhow::anyhow!("failed to serialize the compiled handler: {e:#}"))?;
            Ok(seal::seal(
                &key,
                &name_owned,
                handler.size() as u64,
                &payload,
            ))
        })
        .await
        .map_err(|e| anyhow::anyhow!("the sealing thread failed: {e}"))??;
        let mut reader = sealed.as_slice();
        self.client
            .layout()
            .artifacts
            .put(name, &mut reader)
            .await
            .map_err(|e| anyhow::anyhow!("failed to store artifact {name}: {e}"))?;
        Ok(())
    }
}

fn encode_claim(worker_id: &str, state: ClaimState) -> Result<Bytes, jobbox::wire::WireError> {
    jobbox::wire::encode(&Claim {
        worker_id: worker_id.to_string(),
        state,
    })
    .map(Bytes::from)
}

/// Opens the sealed artifact `name` and links it for `sandbox`. Blocking.
#[allow(unsafe_code)]
fn open_artifact(
    key: &FleetKey,
    name: &str,
    sealed: &[u8],
    sandbox: &Sandbox,
    digest: String,
) -> Result<Handler, String> {
    let (wasm_size, payload) = seal::open(key, name, sealed).map_err(|e| e.to_string())?;
    let wasm_size = usize::try_from(wasm_size).map_err(|_| "bad .wasm size".to_string())?;
    // SAFETY: `Component::deserialize` trusts its input to be code wasmtime produced.
    // These bytes are: their HMAC-SHA256 under the fleet key has just been verified
    // (constant time, over the artifact's name — which names this digest and this
    // engine — the sizes and every payload byte), and only a worker holding the key
    // can make one; workers seal only what they compiled themselves from `.wasm`
    // whose digest they verified (`publish`, after `Client::get_handler`). Deployers
    // and tenants never hold the key (docs/security.md), so nothing they write to the
    // artifacts bucket gets here. wasmtime also checks the engine compatibility itself.
    let component = unsafe { Component::deserialize(sandbox.engine(), payload) }
        .map_err(|e| format!("wasmtime refused it: {e:#}"))?;
    Handler::from_component(sandbox, &component, digest, wasm_size)
        .map_err(|e| format!("it does not link: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_ids_are_stable_hex_and_differ_by_settings() {
        let engine = Engine::default();
        let id = engine_id(&engine);
        assert_eq!(id.len(), nats::ENGINE_ID_HEX);
        assert_eq!(id, engine_id(&Engine::default()));
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let fuel = Engine::new(&config).expect("engine");
        assert_ne!(id, engine_id(&fuel));
        assert!(nats::artifact_name(&jobbox::digest_of(b""), &id).is_some());
    }
}
