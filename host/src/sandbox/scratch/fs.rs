//! `wasi:filesystem/types` for jobs: wasmtime-wasi's implementation with a quota in
//! front.
//!
//! Path resolution is wasmtime-wasi's: every path is resolved inside the preopened
//! directory by `cap-primitives` (the engine of `cap-std`), so `..`, absolute paths
//! and symlinks that lead out are refused. This layer adds what wasmtime-wasi does
//! not have: before a call that adds bytes to a file (`write`, `set-size`, the
//! writes of `write-via-stream` and `append-via-stream`) or an entry to a directory
//! (`open-at` with `create` of a new file, `create-directory-at`, `symlink-at`) the
//! job's [`ScratchQuota`] is charged, and a call that does not fit fails with
//! `insufficient-space` (bytes) or `quota` (entries), errors the guest can handle.
//! `link-at` is refused (`not-permitted`): a hard link is a second name for bytes
//! already counted, which the quota could not tell apart from new ones when one of
//! them is deleted, and nothing a handler needs.
//!
//! A byte is counted when a write moves a file's end past its current size (sparse
//! writes far past the end count the gap), so rewriting a file in place costs
//! nothing more.

use std::sync::Arc;

use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError, FsResult};

use super::quota::{DIRECTORY_BYTES, Exceeded, ScratchQuota};
use super::stream::{Position, QuotaStream};

/// [`HasData`] for the guest's filesystem: a [`ScratchFsView`].
pub struct ScratchFs;

impl HasData for ScratchFs {
    type Data<'a> = ScratchFsView<'a>;
}

/// wasmtime-wasi's filesystem view plus the job's quota.
pub struct ScratchFsView<'a> {
    /// wasmtime-wasi's view, which every call is handed on to.
    pub fs: WasiFilesystemCtxView<'a>,
    /// The job's allowance.
    pub quota: &'a Arc<ScratchQuota>,
}

/// The guest's error for an allowance used up.
fn refused(exceeded: Exceeded) -> FsError {
    match exceeded {
        Exceeded::Bytes => ErrorCode::InsufficientSpace.into(),
        Exceeded::Files => ErrorCode::Quota.into(),
    }
}

impl ScratchFsView<'_> {
    /// The host file behind `fd`, if it is a file.
    fn file(&self, fd: &Resource<types::Descriptor>) -> FsResult<Arc<std::fs::File>> {
        match self.fs.table.get(fd)? {
            Descriptor::File(f) => Ok(Arc::clone(&f.file)),
            Descriptor::Dir(_) => Err(ErrorCode::BadDescriptor.into()),
        }
    }

    /// Charges the bytes that make the file behind `fd` reach `end`.
    fn charge_growth(&self, fd: &Resource<types::Descriptor>, end: u64) -> FsResult<()> {
        let size = self.file(fd)?.metadata()?.len();
        self.quota
            .charge_bytes(end.saturating_sub(size))
            .map_err(refused)
    }

    /// Replaces the stream `stream` (writing to the file behind `fd` at `position`)
    /// with one that charges the quota first.
    fn wrap_stream(
        &mut self,
        fd: &Resource<types::Descriptor>,
        stream: Resource<DynOutputStream>,
        position: Position,
    ) -> FsResult<Resource<DynOutputStream>> {
        let file = self.file(fd)?;
        let inner = self.fs.table.delete(stream)?;
        let wrapped: DynOutputStream = Box::new(QuotaStream::new(
            inner,
            file,
            position,
            Arc::clone(self.quota),
        ));
        Ok(self.fs.table.push(wrapped)?)
    }
}

impl types::Host for ScratchFsView<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.fs, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.fs, err)
    }
}

impl HostDescriptor for ScratchFsView<'_> {
    async fn advise(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.fs.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.fs.sync_data(fd).await
    }

    async fn get_flags(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorFlags> {
        self.fs.get_flags(fd).await
    }

    async fn get_type(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorType> {
        self.fs.get_type(fd).await
    }

    async fn set_size(
        &mut self,
        fd: Resource<types::Descriptor>,
        size: types::Filesize,
    ) -> FsResult<()> {
        self.charge_growth(&fd, size)?;
        self.fs.set_size(fd, size).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<types::Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.fs.set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<types::Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.fs.read(fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<types::Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        self.charge_growth(&fd, offset.saturating_add(buf.len() as u64))?;
        self.fs.write(fd, buf, offset).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        self.fs.read_directory(fd).await
    }

    async fn sync(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.fs.sync(fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        self.quota.charge_entry(DIRECTORY_BYTES).map_err(refused)?;
        let made = self.fs.create_directory_at(fd, path).await;
        if made.is_err() {
            self.quota.refund_entry(DIRECTORY_BYTES);
        }
        made
    }

    async fn stat(&mut self, fd: Resource<types::Descriptor>) -> FsResult<types::DescriptorStat> {
        self.fs.stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        self.fs.stat_at(fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.fs.set_times_at(fd, path_flags, path, atim, mtim).await
    }

    async fn link_at(
        &mut self,
        _fd: Resource<types::Descriptor>,
        _old_path_flags: types::PathFlags,
        _old_path: String,
        _new_descriptor: Resource<types::Descriptor>,
        _new_path: String,
    ) -> FsResult<()> {
        Err(ErrorCode::NotPermitted.into())
    }

    async fn open_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<types::Descriptor>> {
        if oflags.contains(types::OpenFlags::CREATE) {
            // Only a file that does not exist yet is a new entry. The guest makes one
            // call at a time, so nothing can create it between the check and the open.
            let dir = Resource::new_borrow(fd.rep());
            let exists = match self.fs.stat_at(dir, path_flags, path.clone()).await {
                Ok(_) => true,
                Err(e) => match e.downcast_ref() {
                    Some(ErrorCode::NoEntry) => false,
                    _ => return Err(e),
                },
            };
            if !exists {
                self.quota.charge_entry(0).map_err(refused)?;
                let opened = self.fs.open_at(fd, path_flags, path, oflags, flags).await;
                if opened.is_err() {
                    self.quota.refund_entry(0);
                }
                return opened;
            }
        }
        self.fs.open_at(fd, path_flags, path, oflags, flags).await
    }

    fn drop(&mut self, fd: Resource<types::Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.fs, fd)
    }

    async fn readlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<String> {
        self.fs.readlink_at(fd, path).await
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        self.fs.remove_directory_at(fd, path).await
    }

    async fn rename_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path: String,
        new_fd: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        self.fs.rename_at(fd, old_path, new_fd, new_path).await
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let bytes = src_path.len() as u64;
        self.quota.charge_entry(bytes).map_err(refused)?;
        let made = self.fs.symlink_at(fd, src_path, dest_path).await;
        if made.is_err() {
            self.quota.refund_entry(bytes);
        }
        made
    }

    async fn unlink_file_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        self.fs.unlink_file_at(fd, path).await
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        self.fs.read_via_stream(fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let borrowed = Resource::new_borrow(fd.rep());
        let stream = self.fs.write_via_stream(fd, offset)?;
        self.wrap_stream(&borrowed, stream, Position::At(offset))
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let borrowed = Resource::new_borrow(fd.rep());
        let stream = self.fs.append_via_stream(fd)?;
        self.wrap_stream(&borrowed, stream, Position::Append)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<types::Descriptor>,
        b: Resource<types::Descriptor>,
    ) -> wasmtime::Result<bool> {
        self.fs.is_same_object(a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.fs.metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        self.fs.metadata_hash_at(fd, path_flags, path).await
    }
}

impl HostDirectoryEntryStream for ScratchFsView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.fs.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.fs, stream)
    }
}
