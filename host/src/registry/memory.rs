//! What a component's core memories need before its first instruction runs.

/// The largest initial size, in bytes, of any core memory a component (or a module
/// nested in it) defines: what instantiation needs before any guest code runs.
/// `None` if it defines no memory.
///
/// # Errors
///
/// A message if the bytes do not parse as WebAssembly.
pub fn memory_minimum(wasm: &[u8]) -> Result<Option<u64>, String> {
    let mut largest = None;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| format!("cannot read the component: {e}"))?;
        if let wasmparser::Payload::MemorySection(memories) = payload {
            for memory in memories {
                let memory = memory.map_err(|e| format!("cannot read a memory type: {e}"))?;
                let bytes = memory.initial.saturating_mul(u64::from(memory.page_size()));
                largest = Some(largest.map_or(bytes, |l: u64| l.max(bytes)));
            }
        }
    }
    Ok(largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module with one memory of `pages` initial 64 KiB pages.
    fn module_with_memory(pages: u8) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        // Memory section (id 5): 1 memory, limits flag 0 (no max), initial `pages`.
        m.extend([5, 3, 1, 0, pages]);
        m
    }

    #[test]
    fn reads_the_initial_size() {
        assert_eq!(memory_minimum(&module_with_memory(3)), Ok(Some(3 * 65536)));
        assert_eq!(memory_minimum(b"\0asm\x01\0\0\0"), Ok(None));
        assert!(memory_minimum(b"not wasm").is_err());
    }
}
