//! Routes: which handler code runs a `job_type`, and under which limits.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::limits::HandlerLimits;

/// Prefix of a handler digest: `sha256:` followed by 64 lowercase hex digits.
pub const DIGEST_PREFIX: &str = "sha256:";

/// True if `s` is a well-formed handler digest: `sha256:` and 64 lowercase hex digits.
#[must_use]
pub fn is_valid_digest(s: &str) -> bool {
    s.strip_prefix(DIGEST_PREFIX).is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The value in the routes KV bucket (`jobbox_routes`, key = `job_type`): the handler
/// a job type runs on now. Workers watch the bucket and swap handlers when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The job type this route serves (also the KV key).
    pub job_type: String,
    /// Digest of the handler component, `sha256:<hex>`; the object name in
    /// `jobbox_handlers`.
    pub digest: String,
    /// Human version label, e.g. `v3` or `1.2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Ceiling for every job of this type (missing fields take the defaults).
    #[serde(default)]
    pub limits: HandlerLimits,
    /// When this route was written.
    pub deployed_at: DateTime<Utc>,
    /// Who deployed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_by: Option<String>,
    /// Size of the component in bytes.
    #[serde(default)]
    pub size_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let good = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert!(is_valid_digest(&good));
        assert!(!is_valid_digest(&good[..good.len() - 1]));
        assert!(!is_valid_digest(&format!("{good}0")));
        assert!(!is_valid_digest(&good.to_uppercase()));
        assert!(!is_valid_digest(&good.replace("sha256:", "sha512:")));
        assert!(!is_valid_digest(&format!("sha256:{}", "g".repeat(64))));
        assert!(!is_valid_digest(""));
    }
}
