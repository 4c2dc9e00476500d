//! Test guest: hard-links files — one of its own inside its scratch directory, and
//! files outside it (`../secret`, `/etc/passwd`, the host paths the test names) — by
//! raw WASI `link-at` and by `std::fs::hard_link`, and reads the links.
//!
//! Expected: completed, `"escaped": 0`: every link is refused (`not-permitted`),
//! even inside, because a second name for counted bytes would defeat the quota.

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

fn hardlinks(input: Input, _ctx: &Context) -> Result<Report, Error> {
    let dir = scratch()?;
    let mut report = Report::default();
    report.setup("write own", write_at(&dir, "own"));
    report.attempt(
        "link own -> own2",
        dir.link_at(PathFlags::empty(), "own", &dir, "own2"),
    );
    report.attempt(
        "std link own -> own3",
        std::fs::hard_link("/tmp/own", "/tmp/own3"),
    );
    let mut outside: Vec<String> = ["../secret", "../../secret", "/etc/passwd"]
        .into_iter()
        .map(String::from)
        .collect();
    outside.extend(input.outside_files);
    outside.extend(input.outside_dirs);
    for (i, path) in outside.iter().enumerate() {
        let link = format!("out{i}");
        report.attempt(
            format!("link {path} -> {link}"),
            dir.link_at(PathFlags::empty(), path, &dir, &link),
        );
        report.attempt(format!("read {link}"), read_at(&dir, &link));
        report.attempt(
            format!("std link {path} -> /tmp/s{link}"),
            std::fs::hard_link(path, format!("/tmp/s{link}")),
        );
    }
    Ok(report)
}

jobbox_guest::export_handler!(hardlinks);
