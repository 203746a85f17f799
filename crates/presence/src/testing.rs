//! Test support: a Redis to test against, and namespaces that keep tests
//! sharing one Redis apart.
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
    time::{Instant, sleep},
};

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
