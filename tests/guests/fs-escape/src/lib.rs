//! Test guest: tries to reach the filesystem — read `/etc/passwd`, list `/` and `.`,
//! create `/tmp/x` and a file in the working directory — and returns what happened:
//! `{"attempts": {"read /etc/passwd": {"ok": false, "detail": "..."}, ...}, "succeeded": 0}`.
//!
//! Expected: completed, with every attempt failed (`"succeeded": 0`): a handler gets
//! no preopened directories. Anything else is a sandbox escape.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs;

use jobbox_guest::{Context, Error};
use serde::Serialize;
use serde::de::IgnoredAny;

/// The outcome of one attempt.
#[derive(Serialize)]
struct Attempt {
    /// Whether the operation succeeded.
    ok: bool,
    /// The error, or a summary of what was obtained.
    detail: String,
}

impl<T: Debug> From<std::io::Result<T>> for Attempt {
    fn from(result: std::io::Result<T>) -> Self {
        match result {
            Ok(value) => Self {
                ok: true,
                detail: format!("{value:?}").chars().take(200).collect(),
            },
            Err(e) => Self {
                ok: false,
                detail: e.to_string(),
            },
        }
    }
}

/// The output.
#[derive(Serialize)]
struct Report {
    /// Each attempt by name.
    attempts: BTreeMap<&'static str, Attempt>,
    /// How many attempts succeeded.
    succeeded: usize,
}

fn list(dir: &str) -> std::io::Result<Vec<String>> {
    fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect()
}

fn fs_escape(_input: IgnoredAny, _ctx: &Context) -> Result<Report, Error> {
    let mut attempts = BTreeMap::new();
    attempts.insert(
        "read /etc/passwd",
        fs::read("/etc/passwd").map(|b| b.len()).into(),
    );
    attempts.insert("list /", list("/").into());
    attempts.insert("list .", list(".").into());
    attempts.insert("create /tmp/x", fs::File::create("/tmp/x").into());
    attempts.insert("write ./x", fs::write("x", b"escaped").into());
    attempts.insert("metadata /", fs::metadata("/").map(|m| m.is_dir()).into());
    let succeeded = attempts.values().filter(|a: &&Attempt| a.ok).count();
    Ok(Report {
        attempts,
        succeeded,
    })
}

jobbox_guest::export_handler!(fs_escape);
