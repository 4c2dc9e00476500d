//! Test guest: writes a marker file named after its job id to its scratch directory,
//! then, by `mode`: `return`s, `spin`s until stopped, `trap`s (panics), or `look`s —
//! lists its scratch directory and tries to reach other jobs' directories
//! (`../job-<n>`, `../../<worker>/job-<n>`, the host paths the test names).
//!
//! Output (`return`, `look`): `{"own": [...], "others": [...], "reached": [...]}`:
//! entries of its scratch directory that are its own marker, entries that are not,
//! and other jobs' paths it could open. Expected: `others` and `reached` empty.

use std::fs;

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// Input.
#[derive(Deserialize)]
struct Input {
    /// `return`, `spin`, `trap` or `look`.
    mode: String,
    /// Host paths of other jobs' scratch directories, to try.
    #[serde(default)]
    others: Vec<String>,
}

/// Output.
#[derive(Serialize, Default)]
struct Report {
    /// Entries of the scratch directory this job made.
    own: Vec<String>,
    /// Entries it did not make.
    others: Vec<String>,
    /// Paths outside its directory it could open.
    reached: Vec<String>,
}

fn peek(input: Input, ctx: &Context) -> Result<Report, Error> {
    let dir = jobbox_guest::scratch::dir().ok_or_else(|| Error::reject("no scratch directory"))?;
    let marker = format!("marker-{}", ctx.id());
    let mut report = Report::default();
    for entry in fs::read_dir(dir)? {
        report
            .others
            .push(entry?.file_name().to_string_lossy().into_owned());
    }
    fs::write(dir.join(&marker), ctx.id())?;
    match input.mode.as_str() {
        "spin" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "trap" => panic!("trapping with a file in scratch"),
        _ => {}
    }
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name == marker {
            report.own.push(name);
        } else if !report.others.contains(&name) {
            report.others.push(name);
        }
    }
    let mut candidates: Vec<String> = (0..16)
        .flat_map(|n| [format!("/tmp/../job-{n}"), format!("/tmp/../../job-{n}")])
        .collect();
    candidates.extend(input.others);
    for path in candidates {
        if fs::read_dir(&path).is_ok() || fs::metadata(&path).is_ok() {
            report.reached.push(path);
        }
    }
    Ok(report)
}

jobbox_guest::export_handler!(peek);
