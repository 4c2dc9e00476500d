//! Sealing compiled handlers under the fleet key, and opening them. Pure: no NATS,
//! no wasmtime.
//!
//! A sealed artifact is a fixed header and the payload (wasmtime's serialized
//! component):
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `JBXFLT01` |
//! | 8 | the `.wasm` size, u64 little endian |
//! | 8 | the payload's length, u64 little endian |
//! | 32 | HMAC-SHA256 under the fleet key of: a domain string, the artifact's name (which names the handler digest and the engine), the two sizes and the payload |
//! | n | the payload |
//!
//! The MAC covers the name, so an artifact moved to another digest's or another
//! engine's name does not open; it is checked in constant time before anything of the
//! payload is used.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::key::FleetKey;

/// First bytes of every sealed artifact.
const MAGIC: &[u8; 8] = b"JBXFLT01";
/// Magic, `.wasm` size, payload length, MAC.
pub const HEADER_LEN: usize = 8 + 8 + 8 + 32;
/// What the MAC is computed over first, so that it never matches a MAC made for
/// another purpose under the same key.
const DOMAIN: &[u8] = b"jobbox fleet artifact v1\0";

type HmacSha256 = Hmac<Sha256>;

/// Why an artifact was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Shorter than a header, or not starting with the magic (plain `.wasm`, a raw
    /// `.cwasm`, anything else).
    #[error("not a sealed artifact (no jobbox header)")]
    NotSealed,
    /// The payload length in the header is not the payload's (truncated, or padded).
    #[error("its length does not match its header")]
    BadLength,
    /// The MAC does not match: tampered with, sealed under another key, or written
    /// under another artifact's name.
    #[error("its seal does not verify under this fleet's key (tampered, foreign key or moved)")]
    BadSeal,
}

fn mac_of(key: &FleetKey, name: &str, wasm_size: u64, payload: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as hmac::Mac>::new_from_slice(key.bytes())
        .expect("HMAC takes keys of any length");
    mac.update(DOMAIN);
    mac.update(&(name.len() as u64).to_le_bytes());
    mac.update(name.as_bytes());
    mac.update(&wasm_size.to_le_bytes());
    mac.update(&(payload.len() as u64).to_le_bytes());
    mac.update(payload);
    mac
}

/// The sealed artifact `name` of `payload`, compiled from a `.wasm` of `wasm_size`
/// bytes.
pub fn seal(key: &FleetKey, name: &str, wasm_size: u64, payload: &[u8]) -> Vec<u8> {
    let tag = mac_of(key, name, wasm_size, payload)
        .finalize()
        .into_bytes();
    let mut sealed = Vec::with_capacity(HEADER_LEN + payload.len());
    sealed.extend_from_slice(MAGIC);
    sealed.extend_from_slice(&wasm_size.to_le_bytes());
    sealed.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    sealed.extend_from_slice(&tag);
    sealed.extend_from_slice(payload);
    sealed
}

/// The `.wasm` size and payload of `sealed`, if it is the artifact `name` sealed
/// under `key`.
pub fn open<'a>(key: &FleetKey, name: &str, sealed: &'a [u8]) -> Result<(u64, &'a [u8]), Refused> {
    if sealed.len() < HEADER_LEN || &sealed[..8] != MAGIC {
        return Err(Refused::NotSealed);
    }
    let (header, payload) = sealed.split_at(HEADER_LEN);
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let wasm_size = u64_at(8);
    if u64_at(16) != payload.len() as u64 {
        return Err(Refused::BadLength);
    }
    mac_of(key, name, wasm_size, payload)
        .verify_slice(&header[24..HEADER_LEN])
        .map_err(|_| Refused::BadSeal)?;
    Ok((wasm_size, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> FleetKey {
        FleetKey::from_bytes(vec![byte; 32]).expect("key")
    }

    #[test]
    fn a_sealed_artifact_opens_under_its_key_and_name_only() {
        let sealed = seal(&key(1), "a.e", 42, b"native code");
        assert_eq!(open(&key(1), "a.e", &sealed), Ok((42, &b"native code"[..])));
        assert_eq!(open(&key(2), "a.e", &sealed), Err(Refused::BadSeal));
        assert_eq!(open(&key(1), "b.e", &sealed), Err(Refused::BadSeal));
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let sealed = seal(&key(1), "a.e", 42, b"native code");
        for at in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[at] ^= 0x01;
            assert!(open(&key(1), "a.e", &bad).is_err(), "byte {at}");
        }
        for len in 0..sealed.len() {
            assert!(
                open(&key(1), "a.e", &sealed[..len]).is_err(),
                "cut at {len}"
            );
        }
        let mut longer = sealed;
        longer.push(0);
        assert_eq!(open(&key(1), "a.e", &longer), Err(Refused::BadLength));
        assert_eq!(
            open(&key(1), "a.e", b"\0asm\x0d\0\x01\0"),
            Err(Refused::NotSealed)
        );
    }
}
