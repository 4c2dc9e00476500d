//! A size-capped in-memory sink for a guest's stdout and stderr.
//!
//! Unlike wasmtime's `MemoryOutputPipe`, which fails the guest's write once full, this
//! keeps the first `capacity` bytes and silently counts the rest: a
//! handler that prints too much is truncated, not failed.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Largest write permit handed to the guest at once; bounds one host-side copy.
const WRITE_PERMIT_BYTES: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Buffer {
    kept: Vec<u8>,
    dropped: u64,
}

/// A shared, capped byte sink; clones write into the same buffer.
#[derive(Debug, Clone)]
pub struct CappedOutput {
    capacity: usize,
    buffer: Arc<Mutex<Buffer>>,
}

impl CappedOutput {
    /// A sink that keeps at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            buffer: Arc::default(),
        }
    }

    /// The bytes kept so far and the number of bytes dropped past the cap.
    pub fn contents(&self) -> (Vec<u8>, u64) {
        let buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        (buffer.kept.clone(), buffer.dropped)
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let room = self.capacity.saturating_sub(buffer.kept.len());
        let keep = room.min(bytes.len());
        buffer.kept.extend_from_slice(&bytes[..keep]);
        buffer.dropped += (bytes.len() - keep) as u64;
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT_BYTES)
    }
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_capacity_and_counts_the_rest() {
        let sink = CappedOutput::new(4);
        sink.append(b"abc");
        sink.append(b"defg");
        let (kept, dropped) = sink.contents();
        assert_eq!(kept, b"abcd");
        assert_eq!(dropped, 3);
    }
}
