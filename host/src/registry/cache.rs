//! The compiled-code cache: native code for each handler, on disk, so a restarted
//! worker does not run Cranelift again.
//!
//! An entry is keyed by the handler's digest and the engine it was compiled for:
//! `<root>/wasmtime48-<engine key>/<digest hex>.cwasm`, where the engine key is
//! wasmtime's [`Engine::precompile_compatibility_hash`] (which covers the exact
//! wasmtime version, the target and every compilation setting) hashed with the
//! standard library's hasher into 16 hex digits. A worker built differently never
//! sees another build's entries.
//!
//! Each file is a fixed header — magic, the `.wasm` size, the payload length and the
//! payload's SHA-256 — followed by the payload (wasmtime's serialized component).
//! Entries are written to a temporary file in the same directory, fsynced and renamed
//! into place, so a reader sees a whole entry or none. A file whose header, length or
//! checksum does not match (truncated, corrupted), or that wasmtime refuses, is
//! deleted and the handler is compiled again from the object store.
//!
//! This is the one module allowed `unsafe`: wasmtime's `Component::deserialize`.

#![allow(unsafe_code)]

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash as _, Hasher as _};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::sandbox::{Handler, Sandbox};

/// First bytes of every cache entry.
const MAGIC: &[u8; 8] = b"JBXCWSM1";
/// Magic, `.wasm` size (u64 LE), payload length (u64 LE), SHA-256 of the payload.
const HEADER_LEN: usize = 8 + 8 + 8 + 32;
/// Entries larger than this are not read (compiled handlers are a few MiB).
const MAX_ENTRY_BYTES: u64 = 1024 * 1024 * 1024;
/// Temporary files older than this are left over from a crash and removed on open.
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);
/// The wasmtime major version this host is built against, part of the directory name
/// (the compatibility hash covers the exact version too).
const WASMTIME_LINE: &str = "wasmtime48";

/// Why the cache cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file operation failed.
    #[error("compile cache {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The directory can be written by other users, so its files cannot be trusted.
    #[error(
        "compile cache {0} is writable by other users (mode {1:o}); refusing to load native code from it: `chmod go-w` it or pick another directory"
    )]
    Insecure(PathBuf, u32),
    /// wasmtime could not serialize a component.
    #[error("failed to serialize a compiled handler: {0}")]
    Serialize(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Counters of what the cache did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Loads answered from the cache (no compilation).
    pub hits: u64,
    /// Loads that found no entry.
    pub misses: u64,
    /// Entries found unusable (truncated, corrupted, refused by wasmtime) and deleted.
    pub corrupt: u64,
    /// Entries written.
    pub stored: u64,
    /// Entries that failed to be written (the handler still runs).
    pub store_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    stored: AtomicU64,
    store_errors: AtomicU64,
}

/// The on-disk cache of compiled handlers for one engine.
///
/// Cheap to clone; clones share the counters.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    counters: Arc<Counters>,
}

/// Where the cache lives unless configured: `$XDG_CACHE_HOME/jobbox/compiled`, else
/// `$HOME/.cache/jobbox/compiled`; `None` when neither variable is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let from = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    from("XDG_CACHE_HOME")
        .or_else(|| from("HOME").map(|home| home.join(".cache")))
        .map(|cache| cache.join("jobbox").join("compiled"))
}

/// The engine part of the cache key: 16 hex digits.
pub fn engine_key(engine: &Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    WASMTIME_LINE.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

impl CompileCache {
    /// Opens (creating, mode 0700) the cache under `root` for `engine`'s compiled code.
    ///
    /// Refuses a directory other users can write to. Removes temporary files left
    /// behind by a crash.
    pub fn open(root: impl Into<PathBuf>, engine: &Engine) -> Result<Self, CacheError> {
        let root = root.into();
        let dir = root.join(format!("{WASMTIME_LINE}-{}", engine_key(engine)));
        create_private_dir(&dir)?;
        for checked in [&root, &dir] {
            check_not_shared(checked)?;
        }
        remove_stale_temp_files(&dir);
        Ok(Self {
            dir,
            counters: Arc::default(),
        })
    }

    /// The directory this engine's entries are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `digest`'s entry; `None` for a malformed digest.
    pub fn path_of(&self, digest: &str) -> Option<PathBuf> {
        if !jobbox::is_valid_digest(digest) {
            return None;
        }
        let hex = digest.strip_prefix(jobbox::DIGEST_PREFIX)?;
        Some(self.dir.join(format!("{hex}.cwasm")))
    }

    /// What the cache did so far.
    pub fn stats(&self) -> CacheStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheStats {
            hits: read(&self.counters.hits),
            misses: read(&self.counters.misses),
            corrupt: read(&self.counters.corrupt),
            stored: read(&self.counters.stored),
            store_errors: read(&self.counters.store_errors),
        }
    }

    /// The cached handler with `digest`, linked for `sandbox`, if there is a usable
    /// entry. An unusable entry is deleted. Blocking: call off the async executor.
    pub fn get(&self, sandbox: &Sandbox, digest: &str) -> Option<Handler> {
        let path = self.path_of(digest)?;
        let bytes = match read_entry(&path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a compile cache entry; compiling instead");
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let (wasm_size, payload) = match parse_entry(&bytes) {
            Ok(parsed) => parsed,
            Err(reason) => {
                self.discard(&path, digest, reason);
                return None;
            }
        };
        // SAFETY: `Component::deserialize` trusts its input to be code wasmtime
        // produced. These bytes are: the only files read here are ones this process
        // (or another worker of the same build, same user) wrote itself with `put`
        // from a component it had just compiled from `.wasm` whose digest it had
        // verified; never bytes a user uploaded (deploys and the object store carry
        // `.wasm` only, and `.cwasm` uploads are refused). Entries live in a directory
        // private to this user (created 0700; a directory others can write to is
        // refused in `open`), keyed by digest and the engine's compatibility hash, are
        // written atomically (temp file, fsync, rename), and have just been checked
        // against the length and SHA-256 in their header, so a truncated or corrupted
        // file never gets here. wasmtime also checks the engine compatibility itself
        // and refuses an entry built for another version or configuration.
        let component = match unsafe { Component::deserialize(sandbox.engine(), payload) } {
            Ok(component) => component,
            Err(e) => {
                self.discard(&path, digest, &format!("wasmtime refused it: {e:#}"));
                return None;
            }
        };
        match Handler::from_component(sandbox, &component, digest.to_string(), wasm_size) {
            Ok(handler) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(handler)
            }
            Err(e) => {
                self.discard(&path, digest, &format!("it does not link: {e}"));
                None
            }
        }
    }

    /// Stores `handler`'s compiled code. Blocking: call off the async executor.
    pub fn put(&self, handler: &Handler) -> Result<PathBuf, CacheError> {
        let stored = self.write_entry(handler);
        let counter = match &stored {
            Ok(_) => &self.counters.stored,
            Err(_) => &self.counters.store_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        stored
    }

    fn write_entry(&self, handler: &Handler) -> Result<PathBuf, CacheError> {
        let path = self
            .path_of(handler.digest())
            .ok_or_else(|| CacheError::Io {
                path: self.dir.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "malformed digest"),
            })?;
        let payload = handler
            .component()
            .serialize()
            .map_err(|e| CacheError::Serialize(format!("{e:#}")))?;
        let header = encode_header(handler.size() as u64, &payload);
        let mut temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .suffix(".cwasm")
            .tempfile_in(&self.dir)
            .map_err(io_error(&self.dir))?;
        temp.write_all(&header).map_err(io_error(temp.path()))?;
        temp.write_all(&payload).map_err(io_error(temp.path()))?;
        temp.as_file().sync_all().map_err(io_error(temp.path()))?;
        temp.persist(&path).map_err(|e| CacheError::Io {
            path: path.clone(),
            source: e.error,
        })?;
        // Make the rename itself durable.
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(path)
    }

    fn discard(&self, path: &Path, digest: &str, reason: &str) {
        self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%digest, path = %path.display(), %reason, "unusable compile cache entry; deleting it and compiling again");
        if let Err(e) = fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "failed to delete a compile cache entry");
        }
    }
}

fn encode_header(wasm_size: u64, payload: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&wasm_size.to_le_bytes());
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    header.extend_from_slice(&Sha256::digest(payload));
    header
}

/// The `.wasm` size and the payload of a whole entry, if its header vouches for it.
fn parse_entry(bytes: &[u8]) -> Result<(usize, &[u8]), &'static str> {
    if bytes.len() < HEADER_LEN {
        return Err("shorter than its header");
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    if &header[..8] != MAGIC {
        return Err("bad magic");
    }
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let wasm_size = usize::try_from(u64_at(8)).map_err(|_| "bad .wasm size")?;
    if u64_at(16) != payload.len() as u64 {
        return Err("length does not match its header (truncated?)");
    }
    if Sha256::digest(payload)[..] != header[24..HEADER_LEN] {
        return Err("checksum does not match its header (corrupted)");
    }
    Ok((wasm_size, payload))
}

/// The whole file, `None` if there is none.
fn read_entry(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_ENTRY_BYTES).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

fn create_private_dir(dir: &Path) -> Result<(), CacheError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))
}

#[cfg(unix)]
fn check_not_shared(dir: &Path) -> Result<(), CacheError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(dir)
        .map_err(io_error(dir))?
        .permissions()
        .mode();
    if mode & 0o022 != 0 {
        return Err(CacheError::Insecure(dir.to_path_buf(), mode & 0o7777));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_not_shared(_dir: &Path) -> Result<(), CacheError> {
    Ok(())
}

fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(".tmp-")
            && entry
                .metadata()
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| {
                    now.duration_since(modified)
                        .is_ok_and(|age| age > STALE_TEMP_AGE)
                });
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_caught() {
        let payload = b"compiled code".to_vec();
        let mut entry = encode_header(42, &payload);
        entry.extend_from_slice(&payload);
        assert_eq!(parse_entry(&entry), Ok((42, payload.as_slice())));

        let truncated = &entry[..entry.len() - 1];
        assert!(parse_entry(truncated).is_err());
        assert!(parse_entry(&entry[..10]).is_err());

        let mut flipped = entry.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(parse_entry(&flipped).is_err());

        let mut bad_magic = entry;
        bad_magic[0] = b'X';
        assert!(parse_entry(&bad_magic).is_err());
    }

    #[test]
    fn default_dir_ends_in_jobbox_compiled() {
        if let Some(dir) = default_cache_dir() {
            assert!(dir.ends_with("jobbox/compiled"), "{}", dir.display());
        }
    }
}
