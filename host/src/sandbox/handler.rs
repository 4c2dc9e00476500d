//! A handler component, validated, compiled and pre-instantiated: ready to run jobs.

use std::sync::Arc;

use wasmtime::component::Component;

use super::Sandbox;
use super::bindings::HandlerWorldPre;
use super::state::JobState;

/// The largest `.wasm` a worker will compile, in bytes, whatever the route says.
///
/// Compilation is not bounded by wasmtime's security model, so uploads are capped.
/// Each route has its own, smaller ceiling (`HandlerLimits::component_bytes`, default
/// 64 MiB), checked at deploy; this is the most a route may set. 128 MiB holds an
/// interpreter with a good number of dependencies (a Python word count is 19 MB, most
/// Rust handlers well under 5 MiB).
pub const MAX_COMPONENT_BYTES: usize = 128 * 1024 * 1024;

/// The `handler` interface a component must export, with the version this host speaks.
pub const HANDLER_INTERFACE: &str = "jobbox:handler/handler@0.1.0";

/// Why a `.wasm` file cannot be used as a handler.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (bad magic number)")]
    NotWasm,
    /// The bytes are wasmtime precompiled native code, which is never loaded from users.
    #[error("precompiled native code (.cwasm) is refused: upload the .wasm component instead")]
    Precompiled,
    /// The bytes are a core module, not a component.
    #[error(
        "a core WebAssembly module, not a component: build with `cargo build --target wasm32-wasip2`"
    )]
    CoreModule,
    /// The file is larger than [`MAX_COMPONENT_BYTES`].
    #[error("component is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// The file's size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// wasmtime could not validate or compile the component.
    #[error("component does not compile: {0}")]
    Compile(String),
    /// Compilation took longer than the deploy cap.
    #[error("component did not compile within {0:?}")]
    CompileTimeout(std::time::Duration),
    /// The component imports something the worker does not provide.
    #[error("component imports something jobbox does not provide: {0}")]
    UnsupportedImport(String),
    /// The component does not export a compatible `handler` interface.
    #[error("component does not export `{HANDLER_INTERFACE}`: {0}")]
    MissingExport(String),
}

/// What kind of bytes these are, from their header alone.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    const WASM_MAGIC: &[u8] = b"\0asm";
    // The layer/version field: core modules are version 1, components 0x0d layer 1.
    const CORE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    if wasmtime::Engine::detect_precompiled(bytes).is_some() || bytes.starts_with(b"\x7fELF") {
        return Err(LoadError::Precompiled);
    }
    if !bytes.starts_with(WASM_MAGIC) || bytes.len() < 8 {
        return Err(LoadError::NotWasm);
    }
    if bytes[4..8] == CORE_VERSION {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

/// `sha256:<hex>` of `bytes`: the name a handler is stored and routed under
/// (the client's function, so deploys and workers can never disagree).
pub use jobbox::digest_of;

/// A compiled, linked, pre-instantiated handler component.
///
/// Cheap to clone; each job instantiates it into its own fresh `Store`.
#[derive(Clone)]
pub struct Handler {
    pub(super) pre: HandlerWorldPre<JobState>,
    digest: Arc<str>,
    size: usize,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// Validates and compiles `bytes`, then links and pre-instantiates the component.
    ///
    /// This is CPU-heavy (it runs Cranelift); call it off the async executor.
    pub fn compile(sandbox: &Sandbox, bytes: &[u8]) -> Result<Self, LoadError> {
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                max: MAX_COMPONENT_BYTES,
            });
        }
        check_header(bytes)?;
        let component = Component::new(sandbox.engine(), bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        Self::link(sandbox, &component, digest_of(bytes), bytes.len())
    }

    /// Links and pre-instantiates a component compiled earlier by this sandbox's
    /// engine (e.g. read back from the compile cache), as the handler with `digest`
    /// whose `.wasm` was `size` bytes.
    ///
    /// Runs the same export and import checks as [`Handler::compile`].
    pub fn from_component(
        sandbox: &Sandbox,
        component: &Component,
        digest: String,
        size: usize,
    ) -> Result<Self, LoadError> {
        Self::link(sandbox, component, digest, size)
    }

    /// Links an already compiled component.
    pub(super) fn link(
        sandbox: &Sandbox,
        component: &Component,
        digest: String,
        size: usize,
    ) -> Result<Self, LoadError> {
        let exports: Vec<String> = component
            .component_type()
            .exports(sandbox.engine())
            .map(|(name, _)| name.to_string())
            .collect();
        if !exports.iter().any(|name| name == HANDLER_INTERFACE) {
            let found = if exports.is_empty() {
                "it exports nothing".to_string()
            } else {
                format!("it exports {}", exports.join(", "))
            };
            return Err(LoadError::MissingExport(found));
        }
        let instance_pre = sandbox
            .linker()
            .instantiate_pre(component)
            .map_err(|e| LoadError::UnsupportedImport(format!("{e:#}")))?;
        let pre = HandlerWorldPre::new(instance_pre)
            .map_err(|e| LoadError::MissingExport(format!("{e:#}")))?;
        Ok(Self {
            pre,
            digest: digest.into(),
            size,
        })
    }

    /// `sha256:<hex>` of the component's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Size of the component's `.wasm` in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The compiled component (for serializing into the compile cache).
    pub fn component(&self) -> &Component {
        self.pre.instance_pre().component()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(check_header(b""), Err(LoadError::NotWasm)));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(matches!(
            check_header(b"\x7fELF\x02\x01\x01"),
            Err(LoadError::Precompiled)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
