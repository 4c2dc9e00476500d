//! Test guest: writes one file in its scratch directory, 64 KiB at a time, until a
//! write fails (or `max_bytes` are written), then tries a sparse write far past the
//! end, deletes the file and tries once more.
//!
//! Input `{"max_bytes": N}`; output
//! `{"written": bytes, "error": "...", "full": true, "sparse_refused": true, ...}`.
//! Then the same past the limit with raw WASI calls (a stream write and a
//! positional `write`), reporting the WASI error codes.
//!
//! Expected with a scratch limit below `max_bytes`: completed (the guest handled a
//! failed write, no trap), `written` at most the limit, both raw errors
//! `insufficient-space`; the receipt's `peak_scratch_bytes` is at most the limit.
//! (Through `std::fs` the error is EIO: wasi-libc reports every stream error so.)

use std::fs::{self, OpenOptions};
use std::io::{Seek as _, SeekFrom, Write as _};

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// Input.
#[derive(Deserialize)]
struct Input {
    /// Stop after this many bytes if no write failed.
    max_bytes: u64,
}

/// Output.
#[derive(Serialize)]
struct Report {
    /// Bytes written before the first failed write.
    written: u64,
    /// The failed write's error, if one failed.
    error: Option<String>,
    /// Whether that error says the scratch directory is full.
    full: bool,
    /// Whether a 1-byte write 1 TiB past the end was refused.
    sparse_refused: bool,
    /// Whether a write still failed after the file was deleted (deleting gives
    /// nothing back).
    full_after_delete: bool,
    /// The error code of a raw WASI stream write past the limit
    /// (`filesystem-error-code` of its stream error).
    raw_stream_error: String,
    /// The error of a raw WASI `descriptor.write` past the limit.
    raw_write_error: String,
}

/// Raw WASI writes past a full quota: through an output stream, and positional.
fn raw_errors() -> Result<(String, String), Error> {
    use wasip2::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    let (dir, _) = wasip2::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == jobbox_guest::scratch::DIR)
        .ok_or_else(|| Error::reject("no scratch preopen"))?;
    let file = dir
        .open_at(
            PathFlags::empty(),
            "raw",
            OpenFlags::CREATE,
            DescriptorFlags::WRITE,
        )
        .map_err(|e| Error::reject(format!("open raw: {e:?}")))?;
    let stream = file
        .write_via_stream(0)
        .map_err(|e| Error::reject(format!("stream: {e:?}")))?;
    let stream_error = match stream.blocking_write_and_flush(&[1; 4096]) {
        Ok(()) => "no error".to_string(),
        Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
            format!("{:?}", wasip2::filesystem::types::filesystem_error_code(&e))
        }
        Err(e) => format!("{e:?}"),
    };
    let write_error = match file.write(&[1; 4096], 0) {
        Ok(n) => format!("wrote {n}"),
        Err(e) => format!("{e:?}"),
    };
    Ok((stream_error, write_error))
}

fn fill(Input { max_bytes }: Input, _ctx: &Context) -> Result<Report, Error> {
    let dir = jobbox_guest::scratch::dir().ok_or_else(|| Error::reject("no scratch directory"))?;
    let path = dir.join("big");
    let mut file = fs::File::create(&path)?;
    let chunk = vec![0xa5_u8; 64 * 1024];
    let mut written = 0;
    let mut error = None;
    while written < max_bytes {
        match file.write_all(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let full = error.as_ref().is_some_and(jobbox_guest::scratch::is_full);
    let mut sparse = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("sparse"))?;
    sparse.seek(SeekFrom::Start(1 << 40))?;
    let sparse_refused = sparse
        .write_all(b"x")
        .and_then(|()| sparse.flush())
        .is_err();
    drop(file);
    fs::remove_file(&path)?;
    let full_after_delete = fs::write(dir.join("again"), &chunk).is_err();
    let (raw_stream_error, raw_write_error) = raw_errors()?;
    Ok(Report {
        raw_stream_error,
        raw_write_error,
        written,
        error: error.map(|e| format!("{e} ({:?})", e.kind())),
        full,
        sparse_refused,
        full_after_delete,
    })
}

jobbox_guest::export_handler!(fill);
