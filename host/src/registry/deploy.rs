//! Deploying a handler: validate with the worker's own sandbox, store by digest,
//! point the route at it. A refused upload leaves the route untouched.
//!
//! What is checked, in order, before anything is written to NATS:
//!
//! 1. the job type is a valid name;
//! 2. the route's limits can work: the output ceiling leaves room for the rest of the
//!    result in one NATS message and fits in one host call ([`max_output_bytes`]);
//! 3. the bytes are no larger than [`MAX_COMPONENT_BYTES`] nor than the route's own
//!    ceiling (`component_bytes`), and the route's ceilings on the component's shape
//!    (instances, memories, tables) are within what workers allow
//!    ([`check_shape_limits`]);
//! 4. they are a WebAssembly component (not a core module, not precompiled native
//!    code such as a `.cwasm`, not something else);
//! 5. no core memory's initial size is above the route's memory ceiling (every
//!    instantiation would fail: [`memory_minimum`]);
//! 6. the component compiles within the deploy's compile cap
//!    ([`compile_cap`] of its size by default), and the deploy waits no longer than
//!    the cap;
//! 7. it exports `jobbox:handler/handler@0.1.0`, imports nothing the worker's linker
//!    does not provide, and its `handle` has exactly the type this host calls
//!    ([`check_handle_signature`]: without it, a component with the right interface
//!    name but another `handle` would be routed, and fail every job).
//!
//! Only then is the component stored (by digest). Before the route changes, the
//! deploy asks the fleet to compile it ([`fleet::requests::request_compile`]): one
//! worker holding the fleet key compiles and shares it, so that every worker's first
//! job of the new version loads native code instead of compiling. The deploy itself
//! never writes compiled code anywhere. Then the route is updated, and the deploy
//! asks every live worker to install it and waits for their answers
//! ([`sync::confirm`]), so that a job enqueued after it returns runs the new version.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use jobbox::{Client, ClientError, HandlerLimits, JobEvent, JobEventType, Route};
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::cap::compile_cap;
use super::fleet::{self, requests::FleetCompile};
use super::memory::memory_minimum;
use super::sync::{self, FleetRoute};
use crate::sandbox::bindings::{GuestJob, HandlerError};
use crate::sandbox::limits::{
    HOSTCALL_BYTES, MAX_CORE_INSTANCES_PER_JOB, MAX_MEMORIES_PER_JOB, MAX_TABLE_ELEMENTS,
    MAX_TABLES_PER_JOB,
};
use crate::sandbox::{
    EngineConfig, HANDLER_INTERFACE, Handler, LoadError, MAX_COMPONENT_BYTES, Sandbox,
};

/// Longest a deploy waits for a tiny component to compile before refusing it; a
/// larger one gets more ([`compile_cap`]).
///
/// Compilation is not bounded by wasmtime's security model; uploads are capped at
/// [`MAX_COMPONENT_BYTES`] and compile time by [`compile_cap`]. The compiler thread
/// cannot be stopped: a refused compile finishes in the background, on a thread of its
/// own that neither the deploy nor the process's exit waits for.
pub const DEPLOY_COMPILE_TIMEOUT: Duration = super::cap::COMPILE_CAP_BASE;

/// Bytes a stored result needs besides the handler's output: status, error and
/// (trimmed) traceback, usage, ids and timestamps. The worker drops a result's logs
/// when they would not fit (see `encode_result` in the worker), so logs are not
/// counted here.
pub const RESULT_ENVELOPE_BYTES: u64 = 16 * 1024;

/// Options of a deploy.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// A human label for the version, e.g. "v2".
    pub version: Option<String>,
    /// Ceilings for jobs of this type; defaults where not set.
    pub limits: HandlerLimits,
    /// Who deployed (user or CI name).
    pub deployed_by: Option<String>,
}

/// Why a deploy was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The component is not a handler this worker can run.
    #[error("refused: {0}")]
    Invalid(#[from] LoadError),
    /// The job type is not a valid name.
    #[error("invalid job type {0:?}: use letters, digits, '-' and '_'")]
    BadJobType(String),
    /// The route's limits cannot work (e.g. its results could never be stored).
    #[error("refused: {0}")]
    BadLimits(String),
    /// A core memory of the component starts larger than the route's memory ceiling,
    /// so no job could ever instantiate it.
    #[error(
        "refused: the component needs {} of linear memory before it runs (a core \
         memory's initial size), more than the route's memory ceiling of {}; deploy \
         with --memory {}MiB or more, or make the handler's statics smaller",
        bytesize::ByteSize(*.needs).display().iec(),
        bytesize::ByteSize(*.ceiling).display().iec(),
        .needs.div_ceil(1 << 20)
    )]
    MemoryMinimum {
        /// Bytes the largest core memory needs at instantiation.
        needs: u64,
        /// The route's memory ceiling in bytes.
        ceiling: u64,
    },
    /// The component is larger than the route's ceiling (`component_bytes`).
    #[error(
        "refused: the component is {size} bytes, over the route's ceiling of {ceiling} \
         bytes; deploy with --max-component {}MiB or more (workers allow up to {} MiB)",
        .size.div_ceil(1 << 20),
        MAX_COMPONENT_BYTES >> 20
    )]
    ComponentTooLarge {
        /// The component's size in bytes.
        size: u64,
        /// The route's ceiling in bytes.
        ceiling: u64,
    },
    /// Talking to NATS failed.
    #[error(transparent)]
    Nats(#[from] ClientError),
    /// The local sandbox could not be built.
    #[error("failed to build a sandbox to validate with: {0:#}")]
    Sandbox(anyhow::Error),
}

/// Validates `wasm`, stores it and points `job_type`'s route at it.
///
/// Compilation is capped at [`compile_cap`] of the component's size; see
/// [`DeployOptions::deploy_with_compile_timeout`] for another cap.
pub async fn deploy(
    client: &Client,
    job_type: &str,
    wasm: Vec<u8>,
    options: DeployOptions,
) -> Result<Route, DeployError> {
    let cap = compile_cap(wasm.len());
    Box::pin(options.deploy_with_compile_timeout(client, job_type, wasm, cap)).await
}

/// The largest output ceiling a route may have when results travel in NATS messages
/// of at most `max_payload` bytes: the output plus [`RESULT_ENVELOPE_BYTES`] must fit
/// in one message, and the output must fit in one host call ([`HOSTCALL_BYTES`]: it
/// crosses from the guest into the worker as the return value of one call).
///
/// With a default nats-server (`max_payload` 1 MiB) that is 1 MiB − 16 KiB.
#[must_use]
pub fn max_output_bytes(max_payload: usize) -> u64 {
    let in_a_message = (max_payload as u64).saturating_sub(RESULT_ENVELOPE_BYTES);
    in_a_message.min(HOSTCALL_BYTES as u64)
}

/// Refuses a route ceiling on the component's shape above what any worker's engine
/// allows ([`crate::sandbox::limits`]): the pool is sized for those bounds.
fn check_shape_limits(limits: &HandlerLimits) -> Result<(), DeployError> {
    let bounds = [
        (
            "core instances",
            u64::from(limits.instances),
            MAX_CORE_INSTANCES_PER_JOB,
        ),
        ("memories", u64::from(limits.memories), MAX_MEMORIES_PER_JOB),
        ("tables", u64::from(limits.tables), MAX_TABLES_PER_JOB),
        ("table elements", limits.table_elements, MAX_TABLE_ELEMENTS),
        (
            "component bytes",
            limits.component_bytes,
            MAX_COMPONENT_BYTES,
        ),
    ];
    for (what, asked, most) in bounds {
        if asked > most as u64 {
            return Err(DeployError::BadLimits(format!(
                "a ceiling of {asked} {what} is more than workers allow (at most {most})"
            )));
        }
    }
    Ok(())
}

/// Refuses limits a route cannot work with.
fn check_limits(limits: &HandlerLimits, max_payload: usize) -> Result<(), DeployError> {
    check_shape_limits(limits)?;
    let max_output = max_output_bytes(max_payload);
    if limits.output_bytes > max_output {
        return Err(DeployError::BadLimits(format!(
            "an output ceiling of {} bytes is more than a result can carry: the result \
             must fit in one NATS message (the server's max_payload is {max_payload} \
             bytes) and the output in one host call ({HOSTCALL_BYTES} bytes); use at \
             most {max_output} bytes",
            limits.output_bytes
        )));
    }
    Ok(())
}

/// Checks that `component`'s `handle` has exactly the type this host calls it with.
///
/// Loading a handler checks the export's *name*; the types are otherwise only
/// checked when a job instantiates it. This is the same check, made statically on the
/// component's type, with the host's own generated types.
fn check_handle_signature(
    engine: &wasmtime::Engine,
    component: &Component,
) -> Result<(), LoadError> {
    const EXPECTED: &str = "func(job: job) -> result<list<u8>, handler-error>";
    let ty = component.component_type();
    let not_a_handler = |why: &str| LoadError::MissingExport(why.to_string());
    let Some(export) = ty.get_export(engine, HANDLER_INTERFACE) else {
        return Err(not_a_handler("it has no such export"));
    };
    let ComponentItem::ComponentInstance(instance) = export.ty else {
        return Err(not_a_handler("the export is not an interface"));
    };
    let Some(handle) = instance.get_export(engine, "handle") else {
        return Err(not_a_handler("it has no `handle` function"));
    };
    let ComponentItem::ComponentFunc(func) = handle.ty else {
        return Err(not_a_handler("its `handle` is not a function"));
    };
    // The very typecheck `get_typed_func` makes when a job instantiates the handler
    // (a hidden but public wasmtime API; revisit on a wasmtime upgrade).
    func.typecheck::<(GuestJob,), (Result<Vec<u8>, HandlerError>,)>(&ty.instance_type())
        .map_err(|e| LoadError::MissingExport(format!("its `handle` is not `{EXPECTED}`: {e:#}")))
}

/// Compiles `wasm` on a thread of its own and waits at most `cap` for it.
///
/// Not tokio's blocking pool: a runtime waits for its blocking tasks when it shuts
/// down, so a `jobbox handler deploy` refused at the cap would only exit (and a caller
/// capturing its output would only see the refusal) once the compile finished.
async fn compile_within(
    sandbox: &Sandbox,
    wasm: Arc<[u8]>,
    cap: Duration,
) -> Result<Handler, LoadError> {
    let (done, compiled) = tokio::sync::oneshot::channel();
    let sandbox = sandbox.clone();
    std::thread::Builder::new()
        .name("jobbox-deploy-compile".into())
        // Explicit, not the 2 MiB default of a spawned thread: validating and linking
        // a large component (an interpreter) must not be what overflows.
        .stack_size(COMPILER_STACK_BYTES)
        .spawn(move || {
            // The receiver is gone when the deploy gave up waiting: nothing to tell.
            let _ = done.send(Handler::compile(&sandbox, &wasm));
        })
        .map_err(|e| LoadError::Compile(format!("cannot start a compiler thread: {e}")))?;
    match tokio::time::timeout(cap, compiled).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(LoadError::Compile("the compiler thread failed".into())),
        Err(_) => Err(LoadError::CompileTimeout(cap)),
    }
}

impl DeployOptions {
    /// Like [`deploy`], refusing the component if it does not compile within
    /// `compile_timeout` instead of [`compile_cap`] of its size.
    ///
    /// (A method rather than a field of `DeployOptions`, so that adding it did not
    /// change how the options are built.)
    pub async fn deploy_with_compile_timeout(
        self,
        client: &Client,
        job_type: &str,
        wasm: Vec<u8>,
        compile_timeout: Duration,
    ) -> Result<Route, DeployError> {
        let deployed =
            Box::pin(self.deploy_confirmed(client, job_type, wasm, compile_timeout)).await?;
        Ok(deployed.route)
    }

    /// Like [`DeployOptions::deploy_with_compile_timeout`], and says which live
    /// workers confirmed that they run the new version.
    pub async fn deploy_confirmed(
        self,
        client: &Client,
        job_type: &str,
        wasm: Vec<u8>,
        compile_timeout: Duration,
    ) -> Result<Deployed, DeployError> {
        if !jobbox::is_valid_name(job_type) {
            return Err(DeployError::BadJobType(job_type.to_string()));
        }
        // The server's INFO says how big a message may be; 0 means none was seen yet.
        let max_payload = match client.nats().server_info().max_payload {
            0 => jobbox::NATS_MAX_PAYLOAD,
            announced => announced,
        };
        check_limits(&self.limits, max_payload)?;
        // Checked again by the compile step; refusing here spares building an engine.
        if wasm.len() > MAX_COMPONENT_BYTES {
            return Err(LoadError::TooLarge {
                size: wasm.len(),
                max: MAX_COMPONENT_BYTES,
            }
            .into());
        }
        if wasm.len() as u64 > self.limits.component_bytes {
            return Err(DeployError::ComponentTooLarge {
                size: wasm.len() as u64,
                ceiling: self.limits.component_bytes,
            });
        }
        let sandbox = Sandbox::new(EngineConfig {
            concurrency: 1,
            max_memory_bytes: self.limits.memory_bytes,
            pooling: false,
        })
        .map_err(DeployError::Sandbox)?;
        // A parse error is left to the compile step, which names it better.
        if let Ok(Some(needs)) = memory_minimum(&wasm)
            && needs > self.limits.memory_bytes
        {
            return Err(DeployError::MemoryMinimum {
                needs,
                ceiling: self.limits.memory_bytes,
            });
        }
        let wasm: Arc<[u8]> = Arc::from(wasm);
        let handler = compile_within(&sandbox, Arc::clone(&wasm), compile_timeout).await?;
        check_handle_signature(sandbox.engine(), handler.component())?;
        let digest = client.put_handler(&wasm).await?;
        share_with_fleet(client, &digest, wasm.len()).await;
        let route = Route {
            job_type: job_type.to_string(),
            digest: digest.clone(),
            version: self.version,
            limits: self.limits,
            deployed_at: Utc::now(),
            deployed_by: self.deployed_by,
            size_bytes: wasm.len() as u64,
        };
        let revision = client.set_route(&route).await?;
        let fleet = sync::confirm(client, job_type, revision).await;
        if !fleet.all_current() {
            tracing::warn!(%job_type, %digest, revision, fleet = %fleet.describe(), "not every live worker confirmed the new version");
        }
        let mut event = JobEvent::handler(JobEventType::HandlerDeployed, job_type, &digest);
        if let Some(version) = &route.version {
            event = event.with_detail("version", version.clone());
        }
        if let Ok(ack) = client.publish_event(&event).await {
            let _ = ack.await;
        }
        Ok(Deployed { route, fleet })
    }
}

/// What a deploy did (as JSON: the route's fields and `fleet`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployed {
    /// The route written.
    #[serde(flatten)]
    pub route: Route,
    /// Which live workers run it now ([`sync::confirm`]).
    pub fleet: FleetRoute,
}

/// Stack of the deploy's compiler thread: what a process's main thread gets.
const COMPILER_STACK_BYTES: usize = 8 << 20;

/// Asks the fleet to compile and share `digest` before the route points at it, and
/// says what came of it. Never fails the deploy: without an answer workers compile on
/// their own, as without a fleet key.
async fn share_with_fleet(client: &Client, digest: &str, wasm_size: usize) {
    let started = std::time::Instant::now();
    match fleet::requests::request_compile(client, digest, wasm_size).await {
        FleetCompile::Shared(artifact) => {
            tracing::info!(
                %digest, %artifact, elapsed_ms = started.elapsed().as_millis() as u64,
                "the fleet compiled the handler"
            );
            let started = std::time::Instant::now();
            let (ready, live) = fleet::requests::preload(client, digest).await;
            tracing::info!(
                %digest, ready, live, elapsed_ms = started.elapsed().as_millis() as u64,
                "workers preloaded the handler before the route changed"
            );
        }
        FleetCompile::NoFleet => {
            tracing::debug!(%digest, "no worker shares compiled handlers; each compiles its own");
        }
        FleetCompile::Failed(error) => {
            tracing::warn!(%digest, %error, "the fleet could not compile the handler; workers will try on their own");
        }
        FleetCompile::NoAnswer(error) => {
            tracing::warn!(%digest, %error, "no answer from the fleet's compile; workers will compile on their own");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_fit_a_default_server() {
        let max_payload = jobbox::NATS_MAX_PAYLOAD;
        assert!(check_limits(&HandlerLimits::default(), max_payload).is_ok());
        assert_eq!(
            max_output_bytes(max_payload),
            (max_payload as u64) - RESULT_ENVELOPE_BYTES
        );
    }

    #[test]
    fn output_ceilings_a_result_cannot_carry_are_refused() {
        let max_payload = jobbox::NATS_MAX_PAYLOAD;
        let at_most = max_output_bytes(max_payload);
        let fits = HandlerLimits {
            output_bytes: at_most,
            ..HandlerLimits::default()
        };
        assert!(check_limits(&fits, max_payload).is_ok());
        let too_big = HandlerLimits {
            output_bytes: at_most + 1,
            ..HandlerLimits::default()
        };
        let error = check_limits(&too_big, max_payload).expect_err("refused");
        assert!(error.to_string().contains("max_payload"), "{error}");
        // A server with bigger messages does not lift the host-call cap.
        assert_eq!(max_output_bytes(64 << 20), HOSTCALL_BYTES as u64);
    }

    #[test]
    fn shape_ceilings_past_the_engines_are_refused() {
        let max_payload = jobbox::NATS_MAX_PAYLOAD;
        let widest = HandlerLimits {
            instances: MAX_CORE_INSTANCES_PER_JOB as u32,
            memories: MAX_MEMORIES_PER_JOB as u32,
            tables: MAX_TABLES_PER_JOB as u32,
            table_elements: MAX_TABLE_ELEMENTS as u64,
            component_bytes: MAX_COMPONENT_BYTES as u64,
            ..HandlerLimits::default()
        };
        assert!(check_limits(&widest, max_payload).is_ok());
        type Raise = fn(&mut HandlerLimits);
        let over: [(&str, Raise); 5] = [
            ("core instances", |l| l.instances += 1),
            ("memories", |l| l.memories += 1),
            ("tables", |l| l.tables += 1),
            ("table elements", |l| l.table_elements += 1),
            ("component bytes", |l| l.component_bytes += 1),
        ];
        for (what, raise) in over {
            let mut limits = widest;
            raise(&mut limits);
            let error = check_limits(&limits, max_payload).expect_err(what);
            assert!(error.to_string().contains(what), "{error}");
        }
        // The defaults fit every engine.
        assert!(check_shape_limits(&HandlerLimits::default()).is_ok());
    }
}
