//! Builds every guest — the example handlers under `examples/` and the test guests under
//! `tests/guests/` — to `wasm32-wasip2`, and writes `$OUT_DIR/guests.rs` with one path
//! constant per guest (see `src/guests.rs`).
//!
//! The guests are built by one nested `cargo build --release --target wasm32-wasip2
//! -p <each>` into `<target dir>/wasm-guests`: a directory of its own, because the
//! outer cargo holds the lock on its own build directory while this script runs.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guests' target.
const TARGET: &str = "wasm32-wasip2";

/// Environment the outer build sets that must not reach the nested one: flags meant
/// for native code, the outer target and target dir, clippy's wrapper when this runs
/// under `cargo clippy`, and the outer jobserver (its file descriptors are not ours).
const ENV_TO_CLEAR: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
];

/// One guest crate.
struct Guest {
    /// Its directory's name, e.g. `word-count`.
    name: String,
    /// Its package name, e.g. `example-word-count`.
    package: String,
    /// Its package description, for the constant's doc comment.
    description: String,
    /// Where it came from, relative to the workspace root, e.g. `examples/word-count`.
    dir: String,
    /// Whether it is an example (rather than a test guest).
    example: bool,
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    for watched in [
        "guest-sdk",
        "wit",
        "examples",
        "tests/guests",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let mut guests = discover(&root, "examples", true);
    guests.extend(discover(&root, "tests/guests", false));
    check_unique_names(&guests);

    check_target_installed();
    let guest_target_dir = target_dir(&out_dir).join("wasm-guests");
    build(&root, &guest_target_dir, &guests);

    let wasm_dir = guest_target_dir.join(TARGET).join("release");
    let generated = generate(&guests, &wasm_dir);
    fs::write(out_dir.join("guests.rs"), generated).expect("failed to write guests.rs");
}

/// The guest crates in `root/parent/*`, sorted by name.
fn discover(root: &Path, parent: &str, example: bool) -> Vec<Guest> {
    let Ok(entries) = fs::read_dir(root.join(parent)) else {
        return Vec::new();
    };
    let mut guests: Vec<Guest> = entries
        .map(|entry| entry.expect("failed to list guest crates").path())
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .map(|dir| {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .expect("guest directory names are UTF-8")
                .to_owned();
            let manifest = fs::read_to_string(dir.join("Cargo.toml"))
                .unwrap_or_else(|e| panic!("failed to read {}/Cargo.toml: {e}", dir.display()));
            let package = package_field(&manifest, "name")
                .unwrap_or_else(|| panic!("{}/Cargo.toml has no package name", dir.display()));
            let description = package_field(&manifest, "description").unwrap_or_default();
            Guest {
                dir: format!("{parent}/{name}"),
                name,
                package,
                description,
                example,
            }
        })
        .collect();
    guests.sort_by(|a, b| a.name.cmp(&b.name));
    guests
}

/// The value of a `key = "value"` line in the `[package]` table of a manifest.
/// Guest manifests are simple; this avoids a TOML parser as a build dependency.
fn package_field(manifest: &str, key: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if k.trim() == key {
                let v = v.trim();
                return v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map(str::to_owned);
            }
        }
    }
    None
}

/// Two guests with the same directory name would get the same constant.
fn check_unique_names(guests: &[Guest]) {
    for (i, a) in guests.iter().enumerate() {
        if let Some(b) = guests[i + 1..]
            .iter()
            .find(|b| const_name(&b.name) == const_name(&a.name))
        {
            panic!(
                "guests {} and {} would both be called {}: rename one",
                a.dir,
                b.dir,
                const_name(&a.name)
            );
        }
    }
}

/// Fails the build with the fix when the standard library for `wasm32-wasip2` is missing.
fn check_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", rustc.to_string_lossy()));
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let std_dir = Path::new(&sysroot).join("lib/rustlib").join(TARGET);
    assert!(
        std_dir.is_dir(),
        "the {TARGET} target is not installed ({} is missing): run `rustup target add {TARGET}`",
        std_dir.display()
    );
}

/// The outer target directory: the nearest ancestor of `OUT_DIR` that cargo tagged
/// with `CACHEDIR.TAG`, else the directory above `<profile>/build/<pkg>/out`.
fn target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .or_else(|| out_dir.ancestors().nth(4))
        .expect("OUT_DIR is <target>/<profile>/build/<pkg>/out")
        .to_path_buf()
}

/// Runs the nested cargo that builds all guests in one go.
fn build(root: &Path, guest_target_dir: &Path, guests: &[Guest]) {
    if guests.is_empty() {
        return;
    }
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--release")
        .args(["--target", TARGET])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(guest_target_dir);
    for guest in guests {
        command.args(["-p", &guest.package]);
    }
    for var in ENV_TO_CLEAR {
        command.env_remove(var);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("failed to run {command:?}: {e}"));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            format!("\nhint: run `rustup target add {TARGET}`")
        } else {
            String::new()
        };
        panic!("building the wasm guests failed ({command:?}):\n{stderr}{hint}");
    }
}

/// The constant for a guest: `word-count` → `WORD_COUNT`.
fn const_name(name: &str) -> String {
    name.replace(['-', '.'], "_").to_ascii_uppercase()
}

/// The contents of `guests.rs`.
fn generate(guests: &[Guest], wasm_dir: &Path) -> String {
    let mut src = String::from("// Generated by tests/build.rs. Do not edit.\n");
    for guest in guests {
        let wasm = wasm_dir.join(format!("{}.wasm", guest.package.replace('-', "_")));
        assert!(
            wasm.is_file(),
            "{} was built but {} does not exist",
            guest.package,
            wasm.display()
        );
        let path = wasm.to_str().expect("target paths are UTF-8");
        writeln!(
            src,
            "\n/// `{}` (package `{}`): {}\npub const {}: &str = {path:?};",
            guest.dir,
            guest.package,
            guest.description,
            const_name(&guest.name),
        )
        .expect("writing to a String cannot fail");
    }
    let list = |pick: &dyn Fn(&Guest) -> bool| {
        guests
            .iter()
            .filter(|g| pick(g))
            .map(|g| format!("    ({:?}, {}),\n", g.name, const_name(&g.name)))
            .collect::<String>()
    };
    writeln!(
        src,
        "\n/// Every guest, as `(name, path)`: the examples, then the test guests.\n\
         pub const ALL: &[(&str, &str)] = &[\n{}{}];\n\n\
         /// The example handlers under `examples/`, as `(name, path)`.\n\
         pub const EXAMPLES: &[(&str, &str)] = &[\n{}];\n\n\
         /// The test guests under `tests/guests/`, as `(name, path)`.\n\
         pub const TEST_GUESTS: &[(&str, &str)] = &[\n{}];",
        list(&|g| g.example),
        list(&|g| !g.example),
        list(&|g| g.example),
        list(&|g| !g.example),
    )
    .expect("writing to a String cannot fail");
    src
}
