//! The `absolute` attack: opens absolute paths — `/etc/passwd`, `/`, `/proc/self/environ`, and
//! the host paths of files and directories the test names (the scratch root, the
//! worker's directory, its own job directory's host path) — through raw WASI (where
//! the host sees the absolute path itself) and through `std::fs`.
//!
//! Expected: completed, `"escaped": 0`.

use jobbox_guest::{Context, Error};

use crate::{Input, Report, list_at, read_at, scratch, write_at};

pub(crate) fn run(input: Input, _ctx: &Context) -> Result<Report, Error> {
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
