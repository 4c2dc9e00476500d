//! `jobbox-guest` outside this repository: a crate made with `cargo new` in a temporary
//! directory, with the `Cargo.toml` and `src/lib.rs` that docs/writing-handlers.md
//! shows, builds to a component that runs; the crate packages with its WIT.

use std::path::{Path, PathBuf};
use std::process::Command;

use jobbox_tests::jobbox_bin;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The fenced blocks of `lang` in `markdown`, in order.
fn code_blocks<'a>(markdown: &'a str, lang: &str) -> Vec<&'a str> {
    let fence = format!("```{lang}\n");
    let mut blocks = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let Some(end) = body.find("```") else { break };
        blocks.push(&body[..end]);
        rest = &body[end..];
    }
    blocks
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

#[test]
fn a_crate_made_with_cargo_new_outside_the_repository_builds_from_this_page() {
    let page = std::fs::read_to_string(repo().join("docs/writing-handlers.md"))
        .expect("docs/writing-handlers.md");
    let manifest = code_blocks(&page, "toml")
        .into_iter()
        .find(|block| block.contains("jobbox-guest"))
        .expect("the page shows a Cargo.toml with jobbox-guest");
    let lib_rs = code_blocks(&page, "rust")
        .into_iter()
        .find(|block| block.contains("export_handler!(count_words)"))
        .expect("the page shows the word-count src/lib.rs");
    // The page's path assumes the jobbox checkout next to the new crate.
    let documented = r#"jobbox-guest = { path = "../jobbox/guest-sdk" }"#;
    assert!(manifest.contains(documented), "{manifest}");

    let dir = tempfile::tempdir().expect("temp dir");
    let status = cargo()
        .args(["new", "--lib", "--vcs", "none", "my-handler"])
        .current_dir(dir.path())
        .status()
        .expect("run cargo new");
    assert!(status.success(), "cargo new failed");
    let krate = dir.path().join("my-handler");
    let sdk = repo().join("guest-sdk");
    let manifest = manifest.replace(
        documented,
        &format!(
            "jobbox-guest = {{ path = {:?} }}",
            sdk.display().to_string()
        ),
    );
    std::fs::write(krate.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    std::fs::write(krate.join("src/lib.rs"), lib_rs).expect("write src/lib.rs");
    // The versions this repository builds with, so the test needs no registry update
    // (cargo drops what the new crate does not use).
    std::fs::copy(repo().join("Cargo.lock"), krate.join("Cargo.lock")).expect("copy Cargo.lock");

    // A target directory of its own, kept between runs beside the suite's (a cold build
    // of the guest's dependencies takes about a minute).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo().join("target"), PathBuf::from)
        .join("outside-sdk-test");
    let build = cargo()
        .args(["build", "--target", "wasm32-wasip2", "--release"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo build");
    assert!(
        build.status.success(),
        "the documented crate does not build:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/my_handler.wasm");
    assert!(wasm.is_file(), "no component at {}", wasm.display());

    // Step 5's `jobbox run`, with the page's input.
    let run = Command::new(jobbox_bin())
        .arg("run")
        .arg(&wasm)
        .args(["--json", r#"{"text": "a b a"}"#])
        .output()
        .expect("run jobbox run");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The output is the first line; logs and usage follow.
    let first = stdout.lines().next().unwrap_or_default();
    let output: serde_json::Value = serde_json::from_str(first).expect("JSON output");
    assert_eq!(output["words"], 3, "{output}");
    assert_eq!(output["counts"]["a"], 2, "{output}");
}

#[test]
fn the_sdk_packages_with_its_wit_and_no_path_outside_it() {
    let listed = cargo()
        .args(["package", "-p", "jobbox-guest", "--list", "--allow-dirty"])
        .current_dir(repo())
        .output()
        .expect("run cargo package --list");
    let files = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    for expected in ["wit/handler.wit", "src/lib.rs", "Cargo.toml", "README.md"] {
        assert!(
            files.lines().any(|f| f == expected),
            "{expected} in {files}"
        );
    }
    // The repository's wit/ is the same file (a link), for hosts and other languages.
    let here = std::fs::read(repo().join("guest-sdk/wit/handler.wit")).expect("sdk wit");
    let there = std::fs::read(repo().join("wit/handler.wit")).expect("repo wit");
    assert_eq!(here, there);
}
