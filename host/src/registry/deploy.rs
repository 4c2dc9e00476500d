//! Deploying a handler: validate with the worker's own sandbox, store by digest,
//! point the route at it. A refused upload leaves the route untouched.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use jobbox::{Client, ClientError, HandlerLimits, JobEvent, JobEventType, Route};

use crate::sandbox::{EngineConfig, LoadError, Sandbox};

/// Longest a deploy waits for the component to compile before refusing it.
pub const DEPLOY_COMPILE_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Talking to NATS failed.
    #[error(transparent)]
    Nats(#[from] ClientError),
    /// The local sandbox could not be built.
    #[error("failed to build a sandbox to validate with: {0:#}")]
    Sandbox(anyhow::Error),
}

/// Validates `wasm`, stores it and points `job_type`'s route at it.
pub async fn deploy(
    client: &Client,
    job_type: &str,
    wasm: Vec<u8>,
    options: DeployOptions,
) -> Result<Route, DeployError> {
    if !jobbox::is_valid_name(job_type) {
        return Err(DeployError::BadJobType(job_type.to_string()));
    }
    let sandbox = Sandbox::new(EngineConfig {
        concurrency: 1,
        max_memory_bytes: options.limits.memory_bytes,
        pooling: false,
    })
    .map_err(DeployError::Sandbox)?;
    let wasm: Arc<[u8]> = Arc::from(wasm);
    sandbox
        .load(Arc::clone(&wasm), DEPLOY_COMPILE_TIMEOUT)
        .await?;
    let digest = client.put_handler(&wasm).await?;
    let route = Route {
        job_type: job_type.to_string(),
        digest: digest.clone(),
        version: options.version,
        limits: options.limits,
        deployed_at: Utc::now(),
        deployed_by: options.deployed_by,
        size_bytes: wasm.len() as u64,
    };
    client.set_route(&route).await?;
    let mut event = JobEvent::handler(JobEventType::HandlerDeployed, job_type, &digest);
    if let Some(version) = &route.version {
        event = event.with_detail("version", version.clone());
    }
    if let Ok(ack) = client.publish_event(&event).await {
        let _ = ack.await;
    }
    Ok(route)
}
