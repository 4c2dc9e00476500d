//! Run with: `cargo build -p example-tar --target wasm32-wasip2 --release` then
//! `jobbox run target/wasm32-wasip2/release/example_tar.wasm --scratch 16MiB --json
//! '{"files": {"a.txt": "hello", "b.txt": "world"}}' > out.tar`
//!
//! Packs files into a tar archive (POSIX ustar), built in the job's scratch
//! directory: each file is written to `/tmp/in/<name>`, the archive is written to
//! `/tmp/out.tar` from those files, then read back, checked and returned (the output
//! is the archive's bytes). The route must grant a scratch directory:
//! `jobbox handler deploy tar example_tar.wasm --scratch 16MiB`. Without one the job
//! is rejected; an archive larger than the scratch directory fails the write inside
//! the handler, which rejects the job with the error.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::Path;

use jobbox_guest::{Context, Error, scratch};
use serde::Deserialize;

/// Bytes in a tar block.
const BLOCK: usize = 512;

/// The job's input.
#[derive(Deserialize)]
struct Input {
    /// File name → contents. Names are plain (no `/`, no `..`), at most 100 bytes.
    files: BTreeMap<String, String>,
}

fn tar(payload: Vec<u8>, ctx: &Context) -> Result<Vec<u8>, Error> {
    let Input { files } = serde_json::from_reader(io::Cursor::new(payload))
        .map_err(|e| Error::reject(format!("invalid input: {e}")))?;
    let dir = scratch::dir()
        .ok_or_else(|| Error::reject("no scratch directory: deploy with --scratch"))?;
    for name in files.keys() {
        check_name(name)?;
    }
    let inputs = dir.join("in");
    fs::create_dir(&inputs)?;
    for (name, contents) in &files {
        fs::write(inputs.join(name), contents).map_err(|e| full_or(&e, "writing the inputs"))?;
    }
    ctx.progress(50, "inputs written");
    let archive = dir.join("out.tar");
    write_archive(&inputs, files.keys(), &archive)
        .map_err(|e| full_or(&e, "writing the archive"))?;
    let bytes = fs::read(&archive)?;
    let entries = count_entries(&bytes)?;
    jobbox_guest::info!("archive of {entries} files, {} bytes", bytes.len());
    ctx.progress(100, "archive read back");
    Ok(bytes)
}

/// A rejection naming what failed, with "scratch directory full" for a full one.
fn full_or(error: &io::Error, what: &str) -> Error {
    if scratch::is_full(error) {
        Error::reject(format!("scratch directory full while {what}: {error}"))
    } else {
        Error::reject(format!("failed {what}: {error}"))
    }
}

/// Refuses names that are not one plain path component of at most 100 bytes.
fn check_name(name: &str) -> Result<(), Error> {
    let plain = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0']);
    if plain {
        Ok(())
    } else {
        Err(Error::reject(format!("invalid file name {name:?}")))
    }
}

/// Writes a ustar archive of `names` (files in `dir`) to `out`, one file at a time.
fn write_archive<'a>(
    dir: &Path,
    names: impl Iterator<Item = &'a String>,
    out: &Path,
) -> io::Result<()> {
    let mut archive = File::create(out)?;
    let mut buffer = Vec::new();
    for name in names {
        buffer.clear();
        File::open(dir.join(name))?.read_to_end(&mut buffer)?;
        archive.write_all(&header(name, buffer.len() as u64))?;
        archive.write_all(&buffer)?;
        let padding = (BLOCK - buffer.len() % BLOCK) % BLOCK;
        archive.write_all(&vec![0; padding])?;
    }
    // The end of an archive: two zero blocks.
    archive.write_all(&[0; 2 * BLOCK])?;
    archive.flush()
}

/// The ustar header of a regular file `name` of `size` bytes.
fn header(name: &str, size: u64) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    let mut put = |offset: usize, bytes: &[u8]| {
        block[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    put(0, name.as_bytes());
    put(100, b"0000644\0"); // mode
    put(108, b"0000000\0"); // uid
    put(116, b"0000000\0"); // gid
    put(124, format!("{size:011o}\0").as_bytes());
    put(136, b"00000000000\0"); // mtime
    put(156, b"0"); // a regular file
    put(257, b"ustar\0");
    put(263, b"00");
    // The checksum is computed with its own field as eight spaces.
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    block
}

/// Walks an archive's headers and counts its files, checking each size field.
fn count_entries(bytes: &[u8]) -> Result<usize, Error> {
    let corrupt = || Error::reject("the archive read back is corrupt");
    let mut offset = 0;
    let mut entries = 0;
    while let Some(block) = bytes.get(offset..offset + BLOCK) {
        if block.iter().all(|&b| b == 0) {
            return Ok(entries);
        }
        let size_field = std::str::from_utf8(&block[124..135]).map_err(|_| corrupt())?;
        let size = usize::from_str_radix(size_field, 8).map_err(|_| corrupt())?;
        offset += BLOCK + size.div_ceil(BLOCK) * BLOCK;
        entries += 1;
    }
    Err(corrupt())
}

jobbox_guest::export_handler!(raw tar);
