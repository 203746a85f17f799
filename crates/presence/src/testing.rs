//! Test support: a Redis and a Redis Cluster to test against, namespaces
//! that keep tests sharing one Redis apart, and the HTTP side of a webhook
//! receiver.
//!
//! Compiled for this crate's tests and, with the `testing` feature, for
//! anyone else's.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    process::{Child, Command},
    time::{Instant, sleep},
};

mod cluster;
mod webhook_server;

pub use cluster::RedisCluster;
pub use webhook_server::serve_webhooks;

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
    /// Where a persistent server keeps its data; removed on drop.
    dir: Option<PathBuf>,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // Already gone is fine.
            let _ = child.start_kill();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
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
                dir: None,
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
            match Self::try_spawn_on(free_port(), None).await {
                Ok(server) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("cannot start redis-server: {last_error}")
    }

    /// A private `redis-server` on a free port that keeps its data in a
    /// directory of its own, for tests that restart Redis with its data
    /// ([`RedisServer::shutdown_saving`], then [`RedisServer::restart`]).
    /// It saves only when shut down that way. The directory goes when this
    /// value drops.
    ///
    /// # Panics
    ///
    /// When the directory cannot be made, or `redis-server` cannot be
    /// started or does not answer in time.
    pub async fn spawn_persistent() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pulse-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|error| panic!("creating {}: {error}", dir.display()));
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_spawn_on(free_port(), Some(&dir)).await {
                Ok(mut server) => {
                    server.dir = Some(dir);
                    return server;
                }
                Err(error) => last_error = error,
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("cannot start redis-server: {last_error}")
    }

    /// Stops a persistent server with `SHUTDOWN SAVE`, so that its data is
    /// on disk, and waits until it has exited.
    ///
    /// # Panics
    ///
    /// When the server is not a persistent one, or does not exit in time.
    pub async fn shutdown_saving(&mut self) {
        assert!(self.dir.is_some(), "only a persistent server saves");
        let mut child = self.child.take().expect("the server is running");
        if let Ok(client) = redis::Client::open(self.url.as_str())
            && let Ok(mut connection) = client.get_multiplexed_async_connection().await
        {
            // The server closes the connection instead of answering.
            let _ = redis::cmd("SHUTDOWN")
                .arg("SAVE")
                .query_async::<()>(&mut connection)
                .await;
        }
        tokio::time::timeout(START_DEADLINE, child.wait())
            .await
            .expect("redis-server exits after SHUTDOWN SAVE")
            .expect("waiting for redis-server");
    }

    /// Starts a persistent server again, on the same port and directory,
    /// with the data it saved.
    ///
    /// # Panics
    ///
    /// When the server is not a persistent one that was shut down, or does
    /// not start in time.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "shut it down first");
        let dir = self.dir.clone().expect("only a persistent server restarts");
        let port = self.port.expect("a private server");
        let mut restarted = Self::try_spawn_on(port, Some(&dir))
            .await
            .unwrap_or_else(|error| panic!("restarting redis-server on port {port}: {error}"));
        self.child = restarted.child.take();
    }

    /// A private `redis-server` on `port`, for tests that point a store at a
    /// port before Redis is there.
    ///
    /// # Panics
    ///
    /// When `redis-server` cannot be started or does not answer in time.
    pub async fn spawn_on(port: u16) -> Self {
        match Self::try_spawn_on(port, None).await {
            Ok(server) => server,
            Err(error) => panic!("cannot start redis-server on port {port}: {error}"),
        }
    }

    /// A `redis-server` on `port`; with `dir`, its data lives there
    /// (`dump.rdb`, written on `SHUTDOWN SAVE` only, and read at start).
    async fn try_spawn_on(port: u16, dir: Option<&Path>) -> Result<Self, String> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(dir) = dir {
            command.arg("--dir").arg(dir);
        }
        let mut child = command
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
                    dir: None,
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

/// Whether a fresh connection to `client` gets an answer to `PING`.
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
