//! Native (non-wasm) handlers: plain Rust functions run in place of a component, with
//! no sandbox. They exist to measure the sandbox's share of a job's cost
//! (`jobbox bench --handler native`) through the very same pipeline; never route
//! untrusted work to one.

use std::collections::BTreeMap;
use std::sync::Arc;

use jobbox::Job;

use crate::sandbox::Failure;

/// A native handler: the job in, its output out.
pub type NativeFn = dyn Fn(&Job) -> Result<Vec<u8>, Failure> + Send + Sync;

/// The digest results of native handlers name.
pub const NATIVE_DIGEST: &str = "native";

/// Native handlers by job type.
#[derive(Clone, Default)]
pub struct NativeHandlers {
    handlers: BTreeMap<String, Arc<NativeFn>>,
}

impl std::fmt::Debug for NativeHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}

impl NativeHandlers {
    /// Routes `job_type` to `handler`.
    #[must_use]
    pub fn with(mut self, job_type: impl Into<String>, handler: Arc<NativeFn>) -> Self {
        self.handlers.insert(job_type.into(), handler);
        self
    }

    /// The handler of `job_type`, if it is native.
    pub fn get(&self, job_type: &str) -> Option<&Arc<NativeFn>> {
        self.handlers.get(job_type)
    }
}

/// A native handler that returns its input, as the echo example does.
pub fn echo() -> Arc<NativeFn> {
    Arc::new(|job: &Job| Ok(job.payload.clone()))
}
