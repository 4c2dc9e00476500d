//! Test guest: creates tiny files (and some directories) in its scratch directory
//! until one is refused or `count` exist.
//!
//! Input `{"count": N}`; output `{"created": n, "error": "...", "full": true}`.
//! Expected with a file limit below `count` (the hostile case is 100,000 files):
//! completed, `created` equal to the limit, `full` true ("disk quota exceeded", an
//! error the guest handled).

use std::fs;

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// Input.
#[derive(Deserialize)]
struct Input {
    /// Files to try to create.
    count: u64,
}

/// Output.
#[derive(Serialize)]
struct Report {
    /// Entries created before the first refusal.
    created: u64,
    /// The refusal's error, if any.
    error: Option<String>,
    /// Whether the error says the scratch directory is full.
    full: bool,
}

fn files(Input { count }: Input, _ctx: &Context) -> Result<Report, Error> {
    let dir = jobbox_guest::scratch::dir().ok_or_else(|| Error::reject("no scratch directory"))?;
    let mut created = 0;
    let mut error = None;
    // Files go into subdirectories of 1,000 (themselves entries), as a real tool would.
    let mut sub = dir.to_path_buf();
    while created < count {
        let result = if created % 1000 == 0 {
            sub = dir.join(format!("d{}", created / 1000));
            fs::create_dir(&sub)
        } else {
            fs::write(sub.join(format!("f{created}")), b"x")
        };
        match result {
            Ok(()) => created += 1,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    Ok(Report {
        created,
        full: error.as_ref().is_some_and(jobbox_guest::scratch::is_full),
        error: error.map(|e| format!("{e} ({:?})", e.kind())),
    })
}

jobbox_guest::export_handler!(files);
