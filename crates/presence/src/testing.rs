//! Test support: a Redis and a Redis Cluster to test against, and
//! namespaces that keep tests sharing one Redis apart.
//!
//! Compiled for this crate's tests and, with the `testing` feature, for
//! anyone else's.

use std::{
    net::{Ipv4Addr, TcpListener},
    process::Stdio,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    process::{Child, Command},
    sync::OnceCell,
    time::{Instant, sleep},
};

use crate::RedisOptions;

/// How long a fresh `redis-server` may take to answer `PING`.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// The pause between readiness polls.
const POLL_PAUSE: Duration = Duration::from_millis(20);
/// How many ports to try when another process grabs the free one first.
const START_ATTEMPTS: usize = 3;

/// A Redis for one test: the one `REDIS_URL` names when it is set, otherwise
/// a private `redis-server` on a free port, killed when this value drops.
#[derive(Debug)]
pub struct RedisServer {
    url: String,
    // Held for `kill_on_drop`.
    port: Option<u16>,
    child: Option<Child>,
}

impl RedisServer {
    /// `REDIS_URL` when set (no process), otherwise [`RedisServer::spawn`].
    ///
    /// # Panics
    ///
    /// When `redis-server` cannot be started or does not answer in time.
    pub async fn start() -> Self {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => Self {
                url,
                port: None,
                child: None,
            },
            _ => Self::spawn().await,
        }
    }

    /// Always a private `redis-server` on a free port, even when `REDIS_URL`
    /// is set: for tests that disturb the server (kill its clients, stop it).
    ///
    /// # Panics
    ///
    /// When `redis-server` cannot be started or does not answer in time.
    pub async fn spawn() -> Self {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_spawn_on(free_port()).await {
                Ok(server) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("cannot start redis-server: {last_error}")
    }

    /// A private `redis-server` on `port`, for tests that point a store at a
    /// port before Redis is there.
    ///
    /// # Panics
    ///
    /// When `redis-server` cannot be started or does not answer in time.
    pub async fn spawn_on(port: u16) -> Self {
        match Self::try_spawn_on(port).await {
            Ok(server) => server,
            Err(error) => panic!("cannot start redis-server on port {port}: {error}"),
        }
    }

    async fn try_spawn_on(port: u16) -> Result<Self, String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("spawning redis-server: {error}"))?;
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).map_err(|error| error.to_string())?;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server exited with {status} (port {port} taken?)"
                ));
            }
            if ping(&client).await {
                return Ok(Self {
                    url,
                    port: Some(port),
                    child: Some(child),
                });
            }
            if Instant::now() >= deadline {
                return Err(format!("no PING answer within {START_DEADLINE:?}"));
            }
            sleep(POLL_PAUSE).await;
        }
    }

    /// Stops a private server and waits until it has exited, so that its
    /// port is free again; does nothing for `REDIS_URL`.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means it had already exited, which is what we want.
            let _ = child.kill().await;
        }
    }

    /// The URL to connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port of a private server; `None` for `REDIS_URL`.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

/// A three-master Redis Cluster on loopback ports: the one
/// `REDIS_CLUSTER_URLS` names (comma-separated node URLs, as `scripts/test.sh`
/// exports) when set, otherwise one this process starts.
///
/// Each node is a `redis-server --cluster-enabled yes` in its own temporary
/// directory, joined with `redis-cli --cluster create`. A node runs under a
/// small `sh` guard that reads the test process's pipe: when the pipe closes
/// (this value drops, or the test process exits, even for a shared cluster
/// that is never dropped) the guard kills the node and removes its directory.
#[derive(Debug)]
pub struct RedisCluster {
    urls: Vec<String>,
    ports: Vec<u16>,
    // Held for their guards, which stop the nodes when dropped.
    _nodes: Vec<ClusterNode>,
}

#[derive(Debug)]
struct ClusterNode {
    guard: std::process::Child,
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        // Closing the pipe tells the guard to kill the node; waiting for it
        // makes sure the ports are free when this returns.
        drop(self.guard.stdin.take());
        let _ = self.guard.wait();
    }
}

/// How many masters a test cluster has.
const CLUSTER_MASTERS: usize = 3;
/// How long forming a cluster may take (`redis-cli --cluster create` waits
/// for the nodes to agree, which takes a few seconds).
const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// The cluster `REDIS_CLUSTER_URLS` names when set (no process), otherwise
    /// one cluster shared by every test of this process, started on first use
    /// (forming a cluster takes seconds, too long to pay per test).
    ///
    /// # Panics
    ///
    /// When the cluster cannot be started or does not form in time.
    pub async fn start() -> &'static Self {
        static SHARED: OnceCell<RedisCluster> = OnceCell::const_new();
        SHARED
            .get_or_init(|| async {
                match std::env::var("REDIS_CLUSTER_URLS") {
                    Ok(urls) if !urls.trim().is_empty() => Self {
                        urls: urls.split(',').map(|url| url.trim().to_owned()).collect(),
                        ports: Vec::new(),
                        _nodes: Vec::new(),
                    },
                    _ => Self::spawn().await,
                }
            })
            .await
    }

    /// A private cluster of three masters, stopped when this value drops.
    ///
    /// # Panics
    ///
    /// When the cluster cannot be started or does not form in time.
    pub async fn spawn() -> Self {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let ports: Result<Vec<u16>, String> =
                (0..CLUSTER_MASTERS).map(|_| cluster_port()).collect();
            match ports {
                Ok(ports) => match Self::try_spawn_on(&ports).await {
                    Ok(cluster) => return cluster,
                    Err(error) => last_error = error,
                },
                Err(error) => last_error = error,
            }
        }
        panic!("cannot start a redis cluster: {last_error}")
    }

    /// A fresh, empty cluster on `ports` (one master each), for tests that
    /// stop a cluster and bring one back where clients expect it.
    ///
    /// # Panics
    ///
    /// When the cluster cannot be started or does not form in time.
    pub async fn spawn_on(ports: &[u16]) -> Self {
        match Self::try_spawn_on(ports).await {
            Ok(cluster) => cluster,
            Err(error) => panic!("cannot start a redis cluster on {ports:?}: {error}"),
        }
    }

    async fn try_spawn_on(ports: &[u16]) -> Result<Self, String> {
        let mut nodes = Vec::new();
        let mut urls = Vec::new();
        for &port in ports {
            nodes.push(ClusterNode::spawn(port)?);
            urls.push(format!("redis://127.0.0.1:{port}"));
        }
        let cluster = Self {
            urls,
            ports: ports.to_vec(),
            _nodes: nodes,
        };
        for url in &cluster.urls {
            let client = redis::Client::open(url.as_str()).map_err(|error| error.to_string())?;
            let deadline = Instant::now() + START_DEADLINE;
            while !ping(&client).await {
                if Instant::now() >= deadline {
                    return Err(format!("{url}: no PING answer within {START_DEADLINE:?}"));
                }
                sleep(POLL_PAUSE).await;
            }
        }
        let addresses: Vec<String> = cluster
            .urls
            .iter()
            .map(|url| url.trim_start_matches("redis://").to_owned())
            .collect();
        let create = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(CLUSTER_DEADLINE, create)
            .await
            .map_err(|_| format!("redis-cli --cluster create took over {CLUSTER_DEADLINE:?}"))?
            .map_err(|error| format!("running redis-cli: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            ));
        }
        cluster.wait_ok().await?;
        Ok(cluster)
    }

    /// Waits until every node says `cluster_state:ok` and knows every node.
    async fn wait_ok(&self) -> Result<(), String> {
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        for url in &self.urls {
            let client = redis::Client::open(url.as_str()).map_err(|error| error.to_string())?;
            loop {
                let info = cluster_info(&client).await.unwrap_or_default();
                let known = format!("cluster_known_nodes:{}", self.urls.len());
                if info.contains("cluster_state:ok") && info.contains(&known) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!("{url} not ok within {CLUSTER_DEADLINE:?}: {info}"));
                }
                sleep(POLL_PAUSE).await;
            }
        }
        Ok(())
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The nodes' ports for a cluster this process started; empty for
    /// `REDIS_CLUSTER_URLS`.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Presence options for this cluster (every node as a seed).
    pub fn options(&self) -> RedisOptions {
        RedisOptions::cluster(&self.urls)
    }
}

impl ClusterNode {
    /// Starts `redis-server` under an `sh` guard that kills it, and removes
    /// its directory, when its stdin closes.
    fn spawn(port: u16) -> Result<Self, String> {
        const GUARD: &str = r#"
dir=$(mktemp -d) || exit 1
redis-server --port "$1" --bind 127.0.0.1 --cluster-enabled yes \
  --cluster-config-file nodes.conf --dir "$dir" --save '' --appendonly no \
  >/dev/null 2>&1 &
pid=$!
cat >/dev/null
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$dir"
"#;
        let guard = std::process::Command::new("sh")
            .args(["-c", GUARD, "redis-cluster-node", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("spawning sh for redis-server: {error}"))?;
        Ok(Self { guard })
    }
}

/// A free port whose cluster bus port (+10000) is free as well.
fn cluster_port() -> Result<u16, String> {
    for _ in 0..100 {
        let port = free_port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port pair (port, port + 10000)".to_owned())
}

async fn cluster_info(client: &redis::Client) -> Option<String> {
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async::<String>(&mut connection)
        .await
        .ok()
}

async fn ping(client: &redis::Client) -> bool {
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await
        .is_ok()
}

/// A port nothing listens on right now: bound, read back and released.
///
/// # Panics
///
/// When no local port can be bound at all.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0")
}

/// A namespace no other test uses, so that tests can share one Redis.
pub fn unique_namespace() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    format!(
        "pulse-test-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
