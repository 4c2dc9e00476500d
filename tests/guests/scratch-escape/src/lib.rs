//! Test guest: tries to reach out of its scratch directory by the attack its input
//! names — `symlink` (links planted inside that point out), `dotdot` (`..` paths),
//! `absolute` (absolute and host paths) or `hardlink` (`link-at`, refused even
//! inside) — through raw WASI and through `std::fs`, and reports every attempt.
//!
//! Expected: completed, `"escaped": 0`.

mod absolute;
mod dotdot;
mod hardlink;
mod symlink;

use std::collections::BTreeMap;
use std::fmt::Debug;

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};
use wasip2::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

/// What the test tells the guest about the host.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    /// Which attack to run: `symlink`, `dotdot`, `absolute` or `hardlink`.
    attack: String,
    /// Host paths of files outside the scratch directory.
    outside_files: Vec<String>,
    /// Host paths of directories outside the scratch directory.
    outside_dirs: Vec<String>,
}

/// The outcome of one attempt.
#[derive(Serialize)]
struct Attempt {
    /// Whether the operation succeeded.
    ok: bool,
    /// The error, or a summary of what was obtained.
    detail: String,
}

impl Attempt {
    fn of<T: Debug, E: Debug>(result: Result<T, E>) -> Self {
        match result {
            Ok(value) => Self {
                ok: true,
                detail: format!("{value:?}").chars().take(200).collect(),
            },
            Err(e) => Self {
                ok: false,
                detail: format!("{e:?}").chars().take(200).collect(),
            },
        }
    }
}

/// The output: every attempt that must fail, by name, and how many did not.
#[derive(Serialize, Default)]
struct Report {
    /// Steps that set the attack up (allowed to succeed).
    setup: BTreeMap<String, Attempt>,
    /// Attempts to reach outside the scratch directory (every one must fail).
    attempts: BTreeMap<String, Attempt>,
    /// How many attempts succeeded.
    escaped: usize,
}

impl Report {
    fn setup<T: Debug, E: Debug>(&mut self, name: impl Into<String>, result: Result<T, E>) {
        self.setup.insert(name.into(), Attempt::of(result));
    }

    fn attempt<T: Debug, E: Debug>(&mut self, name: impl Into<String>, result: Result<T, E>) {
        let attempt = Attempt::of(result);
        self.escaped += usize::from(attempt.ok);
        self.attempts.insert(name.into(), attempt);
    }
}

/// The preopened scratch directory, as a raw WASI descriptor.
fn scratch() -> Result<Descriptor, Error> {
    wasip2::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == jobbox_guest::scratch::DIR)
        .map(|(dir, _)| dir)
        .ok_or_else(|| Error::reject("no scratch directory: deploy with --scratch"))
}

/// Opens `path` under `dir` for reading, following symlinks, and reads it.
fn read_at(dir: &Descriptor, path: &str) -> Result<usize, ErrorCode> {
    let file = dir.open_at(
        PathFlags::SYMLINK_FOLLOW,
        path,
        OpenFlags::empty(),
        DescriptorFlags::READ,
    )?;
    Ok(file.read(4096, 0)?.0.len())
}

/// Creates (or truncates) `path` under `dir`, following symlinks, and writes to it.
fn write_at(dir: &Descriptor, path: &str) -> Result<u64, ErrorCode> {
    let file = dir.open_at(
        PathFlags::SYMLINK_FOLLOW,
        path,
        OpenFlags::CREATE | OpenFlags::TRUNCATE,
        DescriptorFlags::WRITE,
    )?;
    file.write(b"escaped", 0)
}

/// Lists the directory `path` under `dir`.
fn list_at(dir: &Descriptor, path: &str) -> Result<Vec<String>, ErrorCode> {
    let sub = dir.open_at(
        PathFlags::SYMLINK_FOLLOW,
        path,
        OpenFlags::DIRECTORY,
        DescriptorFlags::READ,
    )?;
    let entries = sub.read_directory()?;
    let mut names = Vec::new();
    while let Some(entry) = entries.read_directory_entry()? {
        names.push(entry.name);
    }
    Ok(names)
}

fn escape(input: Input, ctx: &Context) -> Result<Report, Error> {
    match input.attack.as_str() {
        "symlink" => symlink::run(input, ctx),
        "dotdot" => dotdot::run(input, ctx),
        "absolute" => absolute::run(input, ctx),
        "hardlink" => hardlink::run(input, ctx),
        other => Err(Error::reject(format!("unknown attack {other:?}"))),
    }
}

jobbox_guest::export_handler!(escape);
