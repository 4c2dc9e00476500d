//! The wire format: MessagePack maps with named fields.
//!
//! Every record in [`crate::model`] travels as a MessagePack map whose keys are the
//! field names (`rmp_serde::to_vec_named`), so a client in another language can read
//! and write them with any MessagePack library. `docs/wire-format.md` describes every
//! record field by field.
//!
//! Decoding is tolerant in the ways that keep old and new versions talking: unknown
//! keys are ignored, absent optional keys take their documented defaults, unknown enum
//! spellings read as the enum's `Other` case, and a record's `v` key (its format
//! version, [`WIRE_VERSION`] when absent) never makes a reader refuse it.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Content type of a JSON payload or result (the default for [`crate::Job::content_type`]).
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Content type of a MessagePack payload or result.
pub const CONTENT_TYPE_MSGPACK: &str = "application/msgpack";

/// The largest message a default `nats-server` accepts (`max_payload`, 1 MiB).
///
/// Size limits on payloads and outputs are derived from this so that a record that
/// passes validation also fits in one NATS message.
pub const NATS_MAX_PAYLOAD: usize = 1024 * 1024;

/// The format version this crate writes and reads fully: a record without a `v` key is
/// version 1. A writer sets `v` above this when a record carries something a reader of
/// this version would misread by ignoring it; readers still decode it (see
/// [`version_of`]) and must not write such a record back after changing it.
pub const WIRE_VERSION: u32 = 1;

/// The format version of an encoded record: its `v` key, [`WIRE_VERSION`] when absent.
///
/// # Errors
///
/// [`WireError::Decode`] if the bytes are not a MessagePack map or `v` is not an
/// unsigned integer.
///
/// # Example
///
/// ```
/// let bytes = jobbox::encode(&jobbox::Job::new("echo", Vec::new()))?;
/// assert_eq!(jobbox::wire::version_of(&bytes)?, jobbox::wire::WIRE_VERSION);
/// # Ok::<(), jobbox::WireError>(())
/// ```
pub fn version_of(bytes: &[u8]) -> Result<u32, WireError> {
    /// Only the `v` key of a record; every other key is skipped.
    #[derive(serde::Deserialize)]
    struct Versioned {
        #[serde(default = "first_version")]
        v: u32,
    }
    const fn first_version() -> u32 {
        WIRE_VERSION
    }
    decode::<Versioned>(bytes).map(|r| r.v)
}

/// Encodes a record as a MessagePack map with named fields.
///
/// # Errors
///
/// Returns [`WireError::Encode`] if the value cannot be represented in MessagePack
/// (for the records in this crate that does not happen in practice).
///
/// # Example
///
/// ```
/// let job = jobbox::Job::new("echo", b"hi".to_vec());
/// let bytes = jobbox::encode(&job)?;
/// let back: jobbox::Job = jobbox::decode(&bytes)?;
/// assert_eq!(back, job);
/// # Ok::<(), jobbox::WireError>(())
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    rmp_serde::to_vec_named(value).map_err(|source| WireError::Encode {
        record: std::any::type_name::<T>(),
        source,
    })
}

/// Decodes a record from MessagePack.
///
/// Never panics, whatever the input: garbage, truncated or wrong-type bytes give an error.
///
/// # Errors
///
/// Returns [`WireError::Decode`] if the bytes are not a valid MessagePack encoding of `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    rmp_serde::from_slice(bytes).map_err(|source| WireError::Decode {
        record: std::any::type_name::<T>(),
        source,
    })
}

/// Serializes a value as JSON bytes (used for JSON payloads).
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    serde_json::to_vec(value).map_err(|source| WireError::Json {
        record: std::any::type_name::<T>(),
        source,
    })
}

/// Deserializes a value from JSON bytes (used for JSON payloads and results).
pub(crate) fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(bytes).map_err(|source| WireError::Json {
        record: std::any::type_name::<T>(),
        source,
    })
}

/// An error encoding or decoding a record or payload.
///
/// `record` is the Rust type name of the value (`std::any::type_name`); the message
/// shows it without module paths, e.g. `failed to decode Job: ...`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A record could not be encoded as MessagePack.
    #[error("failed to encode {}: {source}", ShortTypeName(.record))]
    Encode {
        /// Type name of the record.
        record: &'static str,
        /// The underlying MessagePack error.
        source: rmp_serde::encode::Error,
    },
    /// Bytes were not a valid MessagePack encoding of the record.
    #[error("failed to decode {}: {source}", ShortTypeName(.record))]
    Decode {
        /// Type name of the record.
        record: &'static str,
        /// The underlying MessagePack error.
        source: rmp_serde::decode::Error,
    },
    /// A payload or result could not be converted to or from JSON.
    #[error("failed to convert {} to or from JSON: {source}", ShortTypeName(.record))]
    Json {
        /// Type name of the value.
        record: &'static str,
        /// The underlying JSON error.
        source: serde_json::Error,
    },
    /// A job result was read but the job produced no output.
    #[error("job {job_id} has no result (status {status})")]
    NoResult {
        /// The job's id.
        job_id: String,
        /// The job's final status.
        status: crate::JobStatus,
    },
}

/// Displays a type name without module paths: `alloc::vec::Vec<jobbox::model::job::Job>`
/// becomes `Vec<Job>`.
struct ShortTypeName<'a>(&'a str);

impl fmt::Display for ShortTypeName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while !rest.is_empty() {
            // A path runs until the next punctuation of a type expression.
            let end = rest
                .find(|c: char| {
                    matches!(c, '<' | '>' | ',' | ' ' | '(' | ')' | '[' | ']' | ';' | '&')
                })
                .unwrap_or(rest.len());
            let (path, tail) = rest.split_at(end);
            f.write_str(path.rsplit("::").next().unwrap_or(path))?;
            let mut chars = tail.chars();
            if let Some(c) = chars.next() {
                write!(f, "{c}")?;
            }
            rest = chars.as_str();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_type_names() {
        let show = |s| ShortTypeName(s).to_string();
        assert_eq!(show("jobbox::model::job::Job"), "Job");
        assert_eq!(show("alloc::vec::Vec<jobbox::model::job::Job>"), "Vec<Job>");
        assert_eq!(
            show("std::collections::BTreeMap<alloc::string::String, u8>"),
            "BTreeMap<String, u8>"
        );
        assert_eq!(show("(u8, &str)"), "(u8, &str)");
        assert_eq!(show("[u8]"), "[u8]");
        assert_eq!(show(""), "");
    }

    #[test]
    fn decode_error_names_the_record() {
        let err = decode::<crate::Job>(&[0xc1]).expect_err("0xc1 is never valid msgpack");
        let msg = err.to_string();
        assert!(msg.starts_with("failed to decode Job: "), "{msg}");
    }

    #[test]
    fn json_error_names_the_value() {
        let err = from_json::<u32>(b"nope").expect_err("not JSON");
        assert!(
            err.to_string()
                .starts_with("failed to convert u32 to or from JSON: ")
        );
    }
}
