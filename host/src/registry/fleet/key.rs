//! The fleet key: the secret every worker of a fleet holds and nobody else does.
//! Compiled handlers are sealed under it before they are shared (see `seal.rs`).
//!
//! A key file holds 64 or more hex digits (32+ random bytes), surrounding whitespace
//! ignored: `openssl rand -hex 32 > fleet.key`. On Unix the file must not be
//! readable or writable by group or others (like an SSH private key).

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

/// Fewest key bytes accepted: HMAC-SHA256 gains nothing from more than 32 and is
/// weakened by fewer.
pub const MIN_KEY_BYTES: usize = 32;

/// Environment variable naming the key file of `jobbox worker`.
pub const FLEET_KEY_FILE_ENV: &str = "JOBBOX_FLEET_KEY_FILE";

/// A fleet key. Its `Debug` shows only a fingerprint, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetKey {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl FleetKey {
    /// A key of these bytes; refused if shorter than [`MIN_KEY_BYTES`].
    pub fn from_bytes(bytes: Vec<u8>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            bytes.len() >= MIN_KEY_BYTES,
            "a fleet key needs at least {MIN_KEY_BYTES} bytes ({} hex digits), this one has {}",
            MIN_KEY_BYTES * 2,
            bytes.len()
        );
        Ok(Self { bytes })
    }

    /// A fresh random key from the operating system's generator (`/dev/urandom`).
    pub fn generate() -> anyhow::Result<Self> {
        let mut bytes = Vec::with_capacity(MIN_KEY_BYTES);
        let mut file = std::fs::File::open("/dev/urandom")
            .context("failed to open /dev/urandom to make a fleet key")?;
        bytes.resize(MIN_KEY_BYTES, 0);
        std::io::Read::read_exact(&mut file, &mut bytes)
            .context("failed to read /dev/urandom to make a fleet key")?;
        Self::from_bytes(bytes)
    }

    /// Parses a key file's text: hex digits, whitespace around them ignored.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let bytes = hex::decode(text.trim())
            .context("a fleet key file holds hex digits only (e.g. `openssl rand -hex 32`)")?;
        Self::from_bytes(bytes)
    }

    /// Reads the key file at `path`, refusing one that group or others may read or
    /// write.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        check_private(path)?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the fleet key file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("bad fleet key file {}", path.display()))
    }

    /// Writes this key to a new file at `path` (mode 0600; fails if it exists).
    pub fn write_new(&self, path: &Path) -> anyhow::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .with_context(|| format!("failed to create the fleet key file {}", path.display()))?;
        writeln!(file, "{}", hex::encode(&self.bytes))
            .with_context(|| format!("failed to write the fleet key file {}", path.display()))
    }

    /// The key's bytes (for the MAC).
    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// 16 hex digits that tell keys apart in logs without saying anything about them.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"jobbox fleet key fingerprint\0");
        hasher.update(&self.bytes);
        hex::encode(&hasher.finalize()[..8])
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("failed to read the fleet key file {}", path.display()))?
        .permissions()
        .mode();
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the fleet key file {} may be read or written by other users (mode {:o}): `chmod 600` it",
        path.display(),
        mode & 0o7777
    );
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_of_at_least_32_bytes() {
        let hex64 = "ab".repeat(32);
        assert_eq!(
            FleetKey::parse(&format!("  {hex64}\n"))
                .expect("parses")
                .bytes(),
            vec![0xab; 32]
        );
        assert!(FleetKey::parse(&"ab".repeat(31)).is_err());
        assert!(FleetKey::parse("not hex at all, not even close, no no no no no no no").is_err());
        assert!(FleetKey::parse("").is_err());
    }

    #[test]
    fn key_files_must_be_private_and_debug_hides_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fleet.key");
        let key = FleetKey::generate().expect("key");
        key.write_new(&path).expect("written");
        assert_eq!(FleetKey::read(&path).expect("reads"), key);
        assert!(key.write_new(&path).is_err(), "never overwrites");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
            let error = FleetKey::read(&path).expect_err("group-readable");
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
        let shown = format!("{key:?}");
        assert!(!shown.contains(&hex::encode(key.bytes())), "{shown}");
        assert!(shown.contains(&key.fingerprint()), "{shown}");
    }
}
