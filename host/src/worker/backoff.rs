//! Retry delays: exponential, capped, with jitter.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Delay before the first retry.
pub const RETRY_BASE: Duration = Duration::from_secs(1);

/// Longest delay between two attempts. Five minutes keeps a job that fails for an
/// hour from waiting most of another hour once its dependency is back.
pub const RETRY_CAP: Duration = Duration::from_secs(300);

/// Delay before retrying after failed attempt `attempt` (1-based): `base · 2^(n-1)`,
/// capped, then scaled by a random factor in [0.5, 1.0) so that jobs that failed
/// together do not all come back together.
pub fn retry_delay(attempt: u32, job_id: &str) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let full = RETRY_BASE.saturating_mul(1 << exponent).min(RETRY_CAP);
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write(job_id.as_bytes());
    hasher.write_u32(attempt);
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    full.mul_f64(0.5 + unit / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        for attempt in 1..=30u32 {
            let full = RETRY_BASE
                .saturating_mul(1 << attempt.saturating_sub(1).min(20))
                .min(RETRY_CAP);
            let delay = retry_delay(attempt, "job");
            assert!(
                delay >= full / 2 && delay < full,
                "attempt {attempt}: {delay:?}"
            );
        }
        assert!(retry_delay(40, "job") < RETRY_CAP);
    }
}
