//! The `symlink` attack: plants symlinks in its scratch directory that lead out of it — to `/`,
//! `/etc`, `..`, `../..`, and to the host paths the test names — and reads, writes
//! and lists through each; also the same through `std::fs`.
//!
//! Expected: completed, `"escaped": 0`. Planting a link may succeed (it is only a
//! name); following one out never does.

use jobbox_guest::{Context, Error};

use crate::{Input, Report, list_at, read_at, scratch, write_at};

pub(crate) fn run(input: Input, _ctx: &Context) -> Result<Report, Error> {
    let dir = scratch()?;
    let mut report = Report::default();
    let mut targets: Vec<String> = [
        "/",
        "/etc",
        "/etc/passwd",
        "..",
        "../..",
        "../../..",
        "../../../../../../..",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    targets.extend(input.outside_files);
    targets.extend(input.outside_dirs);
    for (i, target) in targets.iter().enumerate() {
        let link = format!("link{i}");
        report.setup(
            format!("symlink {link} -> {target}"),
            dir.symlink_at(target, &link),
        );
        report.attempt(format!("read {link}"), read_at(&dir, &link));
        report.attempt(
            format!("read {link}/passwd"),
            read_at(&dir, &format!("{link}/passwd")),
        );
        report.attempt(
            format!("read {link}/secret"),
            read_at(&dir, &format!("{link}/secret")),
        );
        report.attempt(
            format!("write {link}/escaped"),
            write_at(&dir, &format!("{link}/escaped")),
        );
        report.attempt(format!("list {link}"), list_at(&dir, &link));
        let through_std = format!("{}/{link}/secret", jobbox_guest::scratch::DIR);
        report.attempt(
            format!("std read {through_std}"),
            std::fs::read(&through_std),
        );
    }
    // A link to a file that does not exist yet, then created through the link.
    report.setup(
        "symlink dangling -> ../created-outside",
        dir.symlink_at("../created-outside", "dangling"),
    );
    report.attempt("write dangling", write_at(&dir, "dangling"));
    // A chain: a link inside pointing at a link that points out.
    report.setup("symlink chain -> link3", dir.symlink_at("link3", "chain"));
    report.attempt("read chain/secret", read_at(&dir, "chain/secret"));
    Ok(report)
}
