//! The `hardlink` attack: hard-links files — one of its own inside its scratch directory, and
//! files outside it (`../secret`, `/etc/passwd`, the host paths the test names) — by
//! raw WASI `link-at` and by `std::fs::hard_link`, and reads the links.
//!
//! Expected: completed, `"escaped": 0`: every link is refused (`not-permitted`),
//! even inside, because a second name for counted bytes would defeat the quota.

use jobbox_guest::{Context, Error};
use wasip2::filesystem::types::PathFlags;

use crate::{Input, Report, read_at, scratch, write_at};

pub(crate) fn run(input: Input, _ctx: &Context) -> Result<Report, Error> {
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
