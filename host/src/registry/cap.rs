//! How long a component may take to compile: a cap that grows with its size.
//!
//! Compilation is not bounded by wasmtime's security model, so every compile has a
//! cap. A flat cap either lets a small hostile component burn minutes or refuses a
//! large legitimate one (a 19 MB Python interpreter takes tens of seconds of
//! Cranelift on a busy two-core machine) because of load alone. The cap is
//! [`COMPILE_CAP_BASE`] plus [`COMPILE_CAP_PER_MIB`] for every started MiB.

use std::time::Duration;

/// The cap of a tiny component. A typical Rust handler compiles in a few hundred
/// milliseconds; 30 s leaves room for a machine under load.
pub const COMPILE_CAP_BASE: Duration = Duration::from_secs(30);

/// Added per started MiB of `.wasm`. Cranelift compiles roughly 1 MiB of wasm per
/// second per core; 4 s per MiB allows a quarter core, for a machine compiling
/// under full load. A 19 MB component gets 30 s + 19 × 4 s = 106 s, the largest
/// accepted (128 MiB, `MAX_COMPONENT_BYTES`) 542 s.
pub const COMPILE_CAP_PER_MIB: Duration = Duration::from_secs(4);

/// The compile cap of a component of `wasm_bytes` bytes.
#[must_use]
pub fn compile_cap(wasm_bytes: usize) -> Duration {
    let mib = u32::try_from(wasm_bytes.div_ceil(1 << 20)).unwrap_or(u32::MAX);
    COMPILE_CAP_BASE.saturating_add(COMPILE_CAP_PER_MIB.saturating_mul(mib))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_grows_with_the_size() {
        assert_eq!(compile_cap(0), Duration::from_secs(30));
        assert_eq!(compile_cap(1), Duration::from_secs(34));
        assert_eq!(compile_cap(1 << 20), Duration::from_secs(34));
        assert_eq!(compile_cap(19_000_000), Duration::from_secs(30 + 19 * 4));
        assert_eq!(
            compile_cap(crate::sandbox::MAX_COMPONENT_BYTES),
            Duration::from_secs(30 + 128 * 4)
        );
        assert!(compile_cap(usize::MAX) > compile_cap(1 << 30));
    }
}
