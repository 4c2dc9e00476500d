//! The `dotdot` attack: reaches out of its scratch directory with `..`: raw WASI paths
//! (`../secret`, `../../secret`, `a/../../secret`, `./../..`), directories opened at
//! `..`, and the same through `std::fs` (`/tmp/../…`).
//!
//! Expected: completed, `"escaped": 0`.

use jobbox_guest::{Context, Error};
use wasip2::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};

use crate::{Input, Report, list_at, read_at, scratch, write_at};

pub(crate) fn run(_input: Input, _ctx: &Context) -> Result<Report, Error> {
    let dir = scratch()?;
    let mut report = Report::default();
    report.setup("mkdir a", dir.create_directory_at("a"));
    for path in [
        "../secret",
        "../../secret",
        "a/../../secret",
        "./../secret",
        "a/./../../../secret",
        "../../../../../../../etc/passwd",
    ] {
        report.attempt(format!("read {path}"), read_at(&dir, path));
        report.attempt(
            format!("write {path}-new"),
            write_at(&dir, &format!("{path}-new")),
        );
    }
    for path in ["..", "../..", "a/../..", "a/.."] {
        if path == "a/.." {
            // Inside: the scratch directory itself. Allowed.
            report.setup(format!("list {path}"), list_at(&dir, path));
        } else {
            report.attempt(format!("list {path}"), list_at(&dir, path));
        }
    }
    report.attempt("mkdir ../made", dir.create_directory_at("../made"));
    report.attempt("rename into ..", {
        let made = write_at(&dir, "inside");
        made.and_then(|_| dir.rename_at("inside", &dir, "../moved"))
    });
    // Opened subdirectory: its own `..` is the scratch directory, not further.
    if let Ok(sub) = dir.open_at(
        PathFlags::empty(),
        "a",
        OpenFlags::DIRECTORY,
        DescriptorFlags::READ,
    ) {
        report.attempt("from a: read ../../secret", read_at(&sub, "../../secret"));
    }
    for path in [
        "/tmp/../etc/passwd",
        "/tmp/../../secret",
        "/tmp/a/../../secret",
    ] {
        report.attempt(format!("std read {path}"), std::fs::read(path));
    }
    Ok(report)
}
