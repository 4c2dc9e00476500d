//! Test guest: returns what the process environment looks like from inside:
//! `{"vars": [["K", "V"], ...], "args": [...], "current_dir": "..." | null,
//! "current_dir_error": "..." | null}`.
//!
//! Expected: completed, with no variables and no arguments: a handler must learn
//! nothing about the worker's machine. `current_dir` is `"/"`: that is wasi-libc's
//! default when the host sets none, not a real directory (nothing is preopened, so
//! `fs-escape` cannot even list it).

use jobbox_guest::{Context, Error};
use serde::Serialize;
use serde::de::IgnoredAny;

/// The output.
#[derive(Serialize)]
struct Environment {
    /// `std::env::vars_os()`, lossily converted.
    vars: Vec<(String, String)>,
    /// `std::env::args_os()`, lossily converted.
    args: Vec<String>,
    /// `std::env::current_dir()`, if it succeeded.
    current_dir: Option<String>,
    /// Why `std::env::current_dir()` failed, if it did.
    current_dir_error: Option<String>,
}

fn env_probe(_input: IgnoredAny, _ctx: &Context) -> Result<Environment, Error> {
    let (current_dir, current_dir_error) = match std::env::current_dir() {
        Ok(dir) => (Some(dir.to_string_lossy().into_owned()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(Environment {
        vars: std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect(),
        args: std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        current_dir,
        current_dir_error,
    })
}

jobbox_guest::export_handler!(env_probe);
