//! The README's demo works: with `jobbox dev` running (on one local server, or with
//! `--cluster` on three), `jobbox enqueue word-count --json '{"text":"a b a"}' --wait`
//! prints the counts.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobbox_tests::{free_port, guests, jobbox_bin};

#[test]
fn the_readme_demo_works() {
    let servers = the_readme_enqueue_works_against_jobbox_dev(&[]);
    assert_eq!(servers.len(), 1, "{servers:?}");
}

#[test]
fn the_readme_demo_works_on_a_local_three_node_cluster() {
    let servers = the_readme_enqueue_works_against_jobbox_dev(&["--cluster"]);
    assert_eq!(servers.len(), 3, "three nodes: {servers:?}");
}

/// Runs `jobbox dev` with `extra` arguments, the README's enqueue against it, and
/// stops it; returns the ports of the servers dev started (all stopped with it).
fn the_readme_enqueue_works_against_jobbox_dev(extra: &[&str]) -> Vec<u16> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md exists");
    assert!(
        readme.contains("jobbox dev"),
        "the README shows the demo command"
    );
    assert!(
        readme.contains(r#"enqueue word-count --json '{"text":"a b a"}' --wait"#),
        "the README shows the enqueue command this test runs"
    );

    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let examples = Path::new(guests::WORD_COUNT)
        .parent()
        .expect("examples dir");
    let mut dev = Command::new(jobbox_bin())
        .args(["dev", "--port", &port.to_string(), "--examples-dir"])
        .arg(examples)
        .args(extra)
        .env_remove("JOBBOX_NATS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start jobbox dev");
    let stdout = dev.stdout.take().expect("piped stdout");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (servers_tx, servers_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("dev: {line}");
            if let Some(urls) = line.trim_start().strip_prefix("NATS") {
                let _ = servers_tx.send(server_ports(urls));
            }
            if line == "ready" {
                let _ = ready_tx.send(());
            }
        }
    });
    let started = Instant::now();
    let ready = ready_rx.recv_timeout(Duration::from_secs(60));
    if ready.is_err() {
        let _ = dev.kill();
        panic!("jobbox dev was not ready after {:?}", started.elapsed());
    }

    let output = Command::new(jobbox_bin())
        .args([
            "enqueue",
            "word-count",
            "--json",
            r#"{"text":"a b a"}"#,
            "--wait",
        ])
        .args(["--nats-url", &url, "--wait-timeout", "60s"])
        .output()
        .expect("run jobbox enqueue");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!(
        "enqueue: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // SIGTERM: dev stops its worker and its nats-server.
    let _ = Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status();
    let stopped = wait_exit(&mut dev, Duration::from_secs(20));
    if !stopped {
        let _ = dev.kill();
    }

    assert!(output.status.success(), "enqueue failed: {stdout}");
    let counts: serde_json::Value = serde_json::from_str(&stdout).expect("counts are JSON");
    assert_eq!(counts["counts"], serde_json::json!({"a": 2, "b": 1}));
    assert_eq!(counts["words"], 3);
    assert!(stopped, "jobbox dev stops on SIGTERM");
    let servers = servers_rx
        .recv_timeout(Duration::from_secs(1))
        .expect("dev printed its NATS servers");
    assert_eq!(
        servers.first(),
        Some(&port),
        "the first server is on --port"
    );
    for server in &servers {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", *server)).is_err(),
            "dev's nats-server on {server} stopped with it"
        );
    }
    servers
}

/// The ports in dev's `NATS  nats://127.0.0.1:1,nats://127.0.0.1:2 (…)` line.
fn server_ports(line: &str) -> Vec<u16> {
    line.split_whitespace()
        .next()
        .unwrap_or_default()
        .split(',')
        .filter_map(|url| url.rsplit(':').next()?.parse().ok())
        .collect()
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
