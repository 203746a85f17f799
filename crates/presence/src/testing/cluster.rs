//! A three-master Redis Cluster for tests (see [`RedisCluster`]).

use std::{
    net::{Ipv4Addr, TcpListener},
    process::Stdio,
    time::Duration,
};

use tokio::{
    process::Command,
    sync::OnceCell,
    time::{Instant, sleep},
};

use super::{POLL_PAUSE, START_ATTEMPTS, START_DEADLINE, free_port, ping};
use crate::RedisOptions;

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
    nodes: Vec<ClusterNode>,
}

#[derive(Debug)]
struct ClusterNode {
    // Locked only to write a line to the guard (see `restart`).
    guard: std::sync::Mutex<std::process::Child>,
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        let guard = self
            .guard
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Closing the pipe tells the guard to kill the node; waiting for it
        // makes sure the ports are free when this returns.
        drop(guard.stdin.take());
        let _ = guard.wait();
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
                        nodes: Vec::new(),
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
            nodes,
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

    /// Stops node `index` (of [`RedisCluster::urls`]) with `SHUTDOWN SAVE`,
    /// so that its data and cluster configuration are on disk, and waits
    /// until it no longer answers. [`RedisCluster::restart_node`] brings it
    /// back. For a cluster this process started (not `REDIS_CLUSTER_URLS`).
    ///
    /// # Panics
    ///
    /// When there is no such node of this process's, or it does not stop in time.
    pub async fn shutdown_node_saving(&self, index: usize) {
        assert!(index < self.nodes.len(), "not a node this process started");
        let client = redis::Client::open(self.urls[index].as_str()).expect("a node url");
        if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
            // The node closes the connection instead of answering.
            let _ = redis::cmd("SHUTDOWN")
                .arg("SAVE")
                .query_async::<()>(&mut connection)
                .await;
        }
        let deadline = Instant::now() + START_DEADLINE;
        while ping(&client).await {
            assert!(Instant::now() < deadline, "the node did not stop in time");
            sleep(POLL_PAUSE).await;
        }
    }

    /// Starts node `index` again, on its port and directory, with what it
    /// saved, and waits until the cluster is whole again.
    ///
    /// # Panics
    ///
    /// When there is no such node of this process's, or the cluster does not
    /// come back in time.
    pub async fn restart_node(&self, index: usize) {
        assert!(index < self.nodes.len(), "not a node this process started");
        self.nodes[index].restart();
        let client = redis::Client::open(self.urls[index].as_str()).expect("a node url");
        let deadline = Instant::now() + START_DEADLINE;
        while !ping(&client).await {
            assert!(
                Instant::now() < deadline,
                "the node did not restart in time"
            );
            sleep(POLL_PAUSE).await;
        }
        self.wait_ok().await.expect("the cluster is whole again");
    }

    /// Moves the hash slot of `key` to another master, with its keys, the
    /// way `redis-cli --cluster reshard` does (`SETSLOT IMPORTING` and
    /// `MIGRATING`, `MIGRATE`, then `SETSLOT NODE` on every master), and
    /// returns the URLs of the master it left and of the one that holds it
    /// now. The old master drops the slot's shard channel subscriptions
    /// (`sunsubscribe`) as the slot leaves.
    ///
    /// # Panics
    ///
    /// When a node does not answer as a cluster node does.
    pub async fn move_slot_of(&self, key: &str) -> (String, String) {
        let connect = |url: &str| {
            let client = redis::Client::open(url).expect("a node url");
            async move {
                client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("the node answers")
            }
        };
        let mut first = connect(&self.urls[0]).await;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut first)
            .await
            .expect("CLUSTER KEYSLOT");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut first)
            .await
            .expect("CLUSTER NODES");
        // `<id> <ip:port@bus> <flags> <master> ... <slot ranges...>`.
        let masters: Vec<(String, String, bool)> = nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() < 8 || !fields[2].contains("master") {
                    return None;
                }
                let addr = fields[1].split('@').next()?;
                let owns = fields[8..].iter().any(|range| {
                    let (start, end) = range.split_once('-').unwrap_or((range, range));
                    matches!((start.parse::<u16>(), end.parse::<u16>()), (Ok(start), Ok(end)) if (start..=end).contains(&slot))
                });
                Some((fields[0].to_owned(), format!("redis://{addr}"), owns))
            })
            .collect();
        let (source_id, source_url, _) = masters.iter().find(|m| m.2).expect("an owner").clone();
        let (target_id, target_url, _) = masters
            .iter()
            .find(|m| !m.2)
            .expect("another master")
            .clone();
        let (mut source, mut target) = (connect(&source_url).await, connect(&target_url).await);
        let setslot = |state: &'static str, node: String| {
            let mut command = redis::cmd("CLUSTER");
            command.arg("SETSLOT").arg(slot).arg(state).arg(node);
            command
        };
        let _: () = setslot("IMPORTING", source_id.clone())
            .query_async(&mut target)
            .await
            .expect("IMPORTING");
        let _: () = setslot("MIGRATING", target_id.clone())
            .query_async(&mut source)
            .await
            .expect("MIGRATING");
        let target_addr = target_url.trim_start_matches("redis://").to_owned();
        let (host, port) = target_addr.rsplit_once(':').expect("host:port");
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query_async(&mut source)
                .await
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg(host)
                .arg(port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut source)
                .await
                .expect("MIGRATE");
        }
        for (_, url, _) in &masters {
            let mut node = connect(url).await;
            let _: () = setslot("NODE", target_id.clone())
                .query_async(&mut node)
                .await
                .expect("SETSLOT NODE");
        }
        (source_url, target_url)
    }
}

impl ClusterNode {
    /// Starts `redis-server` under an `sh` guard that kills it, and removes
    /// its directory, when its stdin closes. A `restart` line on its stdin
    /// starts the node again in the same directory once it has exited.
    fn spawn(port: u16) -> Result<Self, String> {
        const GUARD: &str = r#"
dir=$(mktemp -d) || exit 1
start() {
  redis-server --port "$1" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file nodes.conf --dir "$dir" --save '' --appendonly no \
    >/dev/null 2>&1 &
  pid=$!
}
start "$1"
while read -r line; do
  if [ "$line" = restart ]; then
    wait "$pid" 2>/dev/null
    start "$1"
  fi
done
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
        Ok(Self {
            guard: std::sync::Mutex::new(guard),
        })
    }

    /// Asks the guard to start the node again (after it has exited).
    fn restart(&self) {
        use std::io::Write;
        let mut guard = self
            .guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stdin = guard.stdin.as_mut().expect("the guard's pipe is open");
        stdin
            .write_all(b"restart\n")
            .and_then(|()| stdin.flush())
            .expect("writing to the node's guard");
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
