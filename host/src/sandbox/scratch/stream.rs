//! An output stream to a scratch file that charges the job's quota before each
//! write reaches wasmtime-wasi's own file stream.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamError, StreamResult};

use super::quota::ScratchQuota;
use super::{Exceeded, io_error};

/// Where a stream's writes land.
#[derive(Debug, Clone, Copy)]
pub enum Position {
    /// At this offset, advancing with each write (`write-via-stream`).
    At(u64),
    /// At the end of the file, wherever that is then (`append-via-stream`).
    Append,
}

/// A file output stream with a quota in front of it.
pub struct QuotaStream {
    inner: DynOutputStream,
    file: Arc<std::fs::File>,
    position: Position,
    quota: Arc<ScratchQuota>,
}

impl QuotaStream {
    /// Wraps `inner`, a stream that writes to `file` at `position`.
    pub fn new(
        inner: DynOutputStream,
        file: Arc<std::fs::File>,
        position: Position,
        quota: Arc<ScratchQuota>,
    ) -> Self {
        Self {
            inner,
            file,
            position,
            quota,
        }
    }

    /// Charges the growth a write of `len` bytes would cause; an error the guest sees
    /// as a failed write (`insufficient-space`) if it does not fit.
    fn charge(&mut self, len: usize) -> StreamResult<()> {
        let failed = |e: std::io::Error| StreamError::LastOperationFailed(e.into());
        let size = self.file.metadata().map_err(failed)?.len();
        let start = match self.position {
            Position::At(offset) => offset,
            Position::Append => size,
        };
        let end = start.saturating_add(len as u64);
        self.quota
            .charge_bytes(end.saturating_sub(size))
            .map_err(|_| failed(io_error(Exceeded::Bytes)))?;
        if let Position::At(offset) = &mut self.position {
            *offset = end;
        }
        Ok(())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.charge(bytes.len())?;
        self.inner.write(bytes)
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.charge(bytes.len())?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}
