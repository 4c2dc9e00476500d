//! Handlers written in Python and JavaScript, built into components on demand.
//!
//! `build.rs` builds the Rust guests; these need other toolchains (componentize-py,
//! componentize-js, installed by `scripts/setup`), so a test asks for the one it uses
//! and this module builds it with the language's script (`guest-sdk/python/build.sh`,
//! `guest-sdk/js/build.sh`) into `<target>/<profile>/lang-guests/`. A build is named
//! by a digest of everything it is made from (the guest's directory, the language's
//! SDK directory, the WIT, the pinned tool versions), so it is reused until one of
//! those changes; concurrent
//! test processes wait for one build under a file lock instead of repeating it.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The language a non-Rust guest is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// An `app.py` module built with componentize-py.
    Python,
    /// An `app.js` ES module built with componentize-js.
    JavaScript,
}

impl Language {
    /// The SDK directory (helper module and build script), relative to the repository.
    fn sdk_dir(self) -> &'static str {
        match self {
            Self::Python => "guest-sdk/python",
            Self::JavaScript => "guest-sdk/js",
        }
    }

    /// What the build script takes as its first argument, given the guest's directory.
    fn build_input(self, dir: &Path) -> PathBuf {
        match self {
            Self::Python => dir.to_path_buf(),
            Self::JavaScript => dir.join("app.js"),
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::Python => "py",
            Self::JavaScript => "js",
        }
    }
}

/// `examples/python-<name>`, built: the path of its `.wasm`.
pub fn python_example(name: &str) -> String {
    build(Language::Python, &format!("examples/python-{name}"))
}

/// `examples/js-<name>`, built: the path of its `.wasm`.
pub fn js_example(name: &str) -> String {
    build(Language::JavaScript, &format!("examples/js-{name}"))
}

/// The Python test guest `tests/guests-py/<name>`, built: the path of its `.wasm`.
pub fn python_guest(name: &str) -> String {
    build(Language::Python, &format!("tests/guests-py/{name}"))
}

/// The JavaScript test guest `tests/guests-js/<name>`, built: the path of its `.wasm`.
pub fn js_guest(name: &str) -> String {
    build(Language::JavaScript, &format!("tests/guests-js/{name}"))
}

/// The repository's root directory.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_path_buf()
}

/// `<target>/<profile>/lang-guests`, beside the test binary's `deps/`.
fn out_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    profile_dir.join("lang-guests")
}

/// Builds the guest in `dir` (relative to the repository) unless a build of the same
/// sources exists; returns the component's path.
///
/// # Panics
///
/// If the build fails, with the build script's output and how to install the tool.
pub fn build(language: Language, dir: &str) -> String {
    let root = repo_root();
    let source_dir = root.join(dir);
    assert!(
        source_dir.is_dir(),
        "{} does not exist",
        source_dir.display()
    );
    let digest = sources_digest(&root, language, &source_dir);
    let name = dir.replace('/', "-");
    let out_dir = out_dir();
    fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("create {}: {e}", out_dir.display()));
    let wasm = out_dir.join(format!("{name}-{}.wasm", &digest[..16]));
    if wasm.is_file() {
        return path_string(&wasm);
    }
    // One build per guest at a time, across test processes: the others wait here,
    // then find the finished component.
    let lock_path = out_dir.join(format!("{name}.lock"));
    let lock =
        File::create(&lock_path).unwrap_or_else(|e| panic!("create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));
    if !wasm.is_file() {
        let partial = out_dir.join(format!("{name}.wasm.partial"));
        run_build_script(&root, language, &source_dir, &partial);
        fs::rename(&partial, &wasm)
            .unwrap_or_else(|e| panic!("rename {} into place: {e}", partial.display()));
        remove_older_builds(&out_dir, &name, &wasm);
    }
    drop(lock);
    path_string(&wasm)
}

fn path_string(path: &Path) -> String {
    path.to_str().expect("target paths are UTF-8").to_owned()
}

/// Runs the language's build script on `source_dir`, writing `out`.
fn run_build_script(root: &Path, language: Language, source_dir: &Path, out: &Path) {
    let script = root.join(language.sdk_dir()).join("build.sh");
    let mut command = Command::new(&script);
    command
        .arg(language.build_input(source_dir))
        .arg(out)
        .current_dir(root);
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", script.display()));
    if !output.status.success() {
        let hint = if output.status.code() == Some(127) {
            "\nhint: run scripts/setup, which installs componentize-py and componentize-js"
        } else {
            ""
        };
        panic!(
            "building {} with {} failed ({}):\n{}{}{hint}",
            source_dir.display(),
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    assert!(
        out.is_file(),
        "{} succeeded but wrote no {}",
        script.display(),
        out.display()
    );
}

/// Builds of `name` other than `keep`: stale once their sources changed.
fn remove_older_builds(out_dir: &Path, name: &str, keep: &Path) {
    let Ok(entries) = fs::read_dir(out_dir) else {
        return;
    };
    let prefix = format!("{name}-");
    for entry in entries.flatten() {
        let path = entry.path();
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let is_build = file_name
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.len() == 16 + ".wasm".len() && rest.ends_with(".wasm"));
        if is_build && path != keep {
            let _ = fs::remove_file(path);
        }
    }
}

/// A digest of every file a build reads — the guest's directory, the language's SDK
/// directory, the WIT — and of `scripts/setup`, which pins the toolchains' versions;
/// by path and contents.
fn sources_digest(root: &Path, language: Language, source_dir: &Path) -> String {
    let mut files = Vec::new();
    collect_files(source_dir, &mut files);
    collect_files(&root.join(language.sdk_dir()), &mut files);
    collect_files(&root.join("guest-sdk/wit"), &mut files);
    // Where the toolchains' versions are pinned: a new version is a new build.
    files.push(root.join("scripts/setup"));
    files.sort();
    let mut all = Vec::new();
    all.extend_from_slice(language.short().as_bytes());
    for file in files {
        let contents = fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let relative = file.strip_prefix(root).unwrap_or(&file);
        all.extend_from_slice(relative.to_string_lossy().as_bytes());
        all.push(0);
        all.extend_from_slice(&(contents.len() as u64).to_le_bytes());
        all.extend_from_slice(&contents);
    }
    let digest = jobbox::digest_of(&all);
    digest.strip_prefix("sha256:").unwrap_or(&digest).to_owned()
}

/// The files under `dir`, recursively, leaving out Python's bytecode caches.
fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "__pycache__") {
                continue;
            }
            collect_files(&path, files);
        } else if path.is_file() {
            files.push(path);
        }
    }
}
