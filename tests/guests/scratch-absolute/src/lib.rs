//! Test guest: opens absolute paths — `/etc/passwd`, `/`, `/proc/self/environ`, and
//! the host paths of files and directories the test names (the scratch root, the
//! worker's directory, its own job directory's host path) — through raw WASI (where
//! the host sees the absolute path itself) and through `std::fs`.
//!
//! Expected: completed, `"escaped": 0`.

use std::collections::BTreeMap;
use std::fmt::Debug;

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};
use wasip2::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

/// What the test tells the guest about the host.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
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

fn absolute(input: Input, _ctx: &Context) -> Result<Report, Error> {
    let dir = scratch()?;
    let mut report = Report::default();
    report.setup("write inside (relative)", write_at(&dir, "inside"));
    report.setup(
        "std write /tmp/inside2",
        std::fs::write("/tmp/inside2", b"ok"),
    );
    let mut files: Vec<String> = ["/etc/passwd", "/proc/self/environ", "/tmp/../etc/hostname"]
        .into_iter()
        .map(String::from)
        .collect();
    files.extend(input.outside_files);
    for path in &files {
        report.attempt(format!("raw read {path}"), read_at(&dir, path));
        report.attempt(format!("std read {path}"), std::fs::read(path));
    }
    let mut dirs: Vec<String> = ["/", "/etc", "/proc"]
        .into_iter()
        .map(String::from)
        .collect();
    dirs.extend(input.outside_dirs);
    for path in &dirs {
        report.attempt(format!("raw list {path}"), list_at(&dir, path));
        report.attempt(
            format!("std list {path}"),
            std::fs::read_dir(path).map(|d| d.count()),
        );
        let new = format!("{}/escaped", path.trim_end_matches('/'));
        report.attempt(format!("raw write {new}"), write_at(&dir, &new));
        report.attempt(format!("std write {new}"), std::fs::write(&new, b"escaped"));
    }
    Ok(report)
}

jobbox_guest::export_handler!(absolute);
