//! Connections to one Redis or to a Redis Cluster, behind one type.
//!
//! Single-node Redis goes through one shared, multiplexed connection
//! (redis-rs's `ConnectionManager`, which reconnects by itself): commands
//! that many connections send at once travel in one write and their replies
//! in one read, so a burst of registrations costs Redis and the gateway a
//! few syscalls rather than a round trip each. (deadpool-redis, used before,
//! also sends `UNWATCH` + `PING` every time it lends a connection: a second
//! round trip per command.) A Cluster goes through a deadpool pool of
//! [`ClusterConnection`]s (each routes every command to the master that owns
//! its slot and follows `MOVED`/`ASK`) made by our own manager:
//! deadpool-redis's cluster manager builds its client with redis-rs's
//! defaults (16 retries with waits of up to minutes, no response timeout),
//! and a dead Redis must fail fast. Either way an operation borrows a
//! [`Handle`], a clone of a multiplexed connection, so that it can send many
//! commands at once (one per bucket) on it.
//!
//! Every connection to Redis is opened with `TCP_NODELAY` ([`tcp_settings`]):
//! redis-rs leaves Nagle's algorithm on unless told, and with it a short
//! command written while an earlier short one was not yet acknowledged
//! waited in the kernel until the acknowledgement came (with Redis's answer
//! to the earlier one, or the receiver's delayed-ACK timer), on a connection
//! that many callers share.

use std::time::Duration;

use deadpool::{Runtime, managed};
use redis::{
    Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    io::tcp::TcpSettings,
};

use crate::{PresenceError, RedisOptions};

/// How long to wait for a pooled connection, or for a new one to open,
/// before answering `Unavailable`: a dead Redis must fail fast, never hang.
pub(crate) const POOL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for Redis to answer one command (with a Cluster, the
/// whole request, redirections and retries included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a Cluster request may be retried (a `MOVED` during resharding,
/// a failover), and the shortest and longest pause between tries, in ms.
const CLUSTER_RETRIES: u32 = 3;
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 10;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 500;
/// The pause before retrying a failed connect to a single Redis.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// The socket settings of every connection to Redis: `TCP_NODELAY`, so
/// that what is written goes at once (see the module's notes).
pub(crate) fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

/// `url`'s connection settings, with [`tcp_settings`].
pub(crate) fn connection_info(url: &str) -> RedisResult<ConnectionInfo> {
    Ok(url.into_connection_info()?.set_tcp_settings(tcp_settings()))
}

/// The client of a Cluster's command connections: `urls` are its seeds.
fn cluster_client(urls: Vec<&str>) -> RedisResult<ClusterClient> {
    ClusterClientBuilder::new(urls)
        .tcp_settings(tcp_settings())
        .connection_timeout(POOL_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(RESPONSE_TIMEOUT))
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
        .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS)
        .build()
}

/// The connection to one Redis, or a pool of them to a Cluster.
pub(crate) enum RedisConn {
    Single(ConnectionManager),
    Cluster(managed::Pool<ClusterManager>),
}

/// One borrowed connection; cheap to clone, and clones share its socket(s).
#[derive(Clone)]
pub(crate) enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Builds the pool without connecting, so that a process can start
    /// while Redis is down. `options` passed [`RedisOptions::validate`].
    pub(crate) fn new(options: &RedisOptions) -> Result<Self, PresenceError> {
        let invalid_url = |error: RedisError| {
            PresenceError::InvalidArgument(format!("invalid redis url: {error}"))
        };
        let pool_error = |error: &dyn std::fmt::Display| {
            PresenceError::InvalidArgument(format!("redis pool: {error}"))
        };
        if options.cluster {
            let client = cluster_client(options.urls()).map_err(invalid_url)?;
            let pool = managed::Pool::builder(ClusterManager { client })
                .max_size(options.pool_size)
                .wait_timeout(Some(POOL_TIMEOUT))
                .create_timeout(Some(POOL_TIMEOUT))
                .recycle_timeout(Some(POOL_TIMEOUT))
                .runtime(Runtime::Tokio1)
                .build()
                .map_err(|error| pool_error(&error))?;
            return Ok(Self::Cluster(pool));
        }
        let client = redis::Client::open(connection_info(options.url.trim()).map_err(invalid_url)?)
            .map_err(invalid_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(POOL_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // One quick retry of a failed connect, then the caller hears
            // Unavailable; the next command tries again.
            .set_number_of_retries(1)
            .set_min_delay(RECONNECT_DELAY)
            .set_max_delay(RECONNECT_DELAY);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|error| pool_error(&error))?;
        Ok(Self::Single(connection))
    }

    /// A connection to use now; the pooled one goes back at once, since
    /// multiplexed connections are meant to be shared.
    pub(crate) async fn handle(&self) -> Result<Handle, PresenceError> {
        let unavailable = |error: &dyn std::fmt::Display| {
            PresenceError::Unavailable(format!("redis pool: {error}"))
        };
        match self {
            Self::Single(connection) => Ok(Handle::Single(connection.clone())),
            Self::Cluster(pool) => {
                let pooled = pool.get().await.map_err(|error| unavailable(&error))?;
                Ok(Handle::Cluster((*pooled).clone()))
            }
        }
    }
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// How recently a pooled Cluster connection must have been handed out to be
/// lent again without a `PING`.
const RECENTLY_USED: Duration = Duration::from_secs(1);

/// Makes and checks pooled Cluster connections.
pub(crate) struct ClusterManager {
    client: ClusterClient,
}

impl managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> RedisResult<ClusterConnection> {
        self.client.get_async_connection().await
    }

    async fn recycle(
        &self,
        connection: &mut ClusterConnection,
        metrics: &managed::Metrics,
    ) -> managed::RecycleResult<RedisError> {
        // A cluster PING goes to every master; a connection handed out within
        // the last second has just proven itself, so skip it then.
        if metrics.last_used() < RECENTLY_USED {
            return Ok(());
        }
        redis::cmd("PING")
            .query_async::<String>(connection)
            .await
            .map(drop)
            .map_err(managed::RecycleError::Backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails with `set_nodelay(true)` taken out of [`tcp_settings`]: redis-rs
    /// opens its sockets with Nagle's algorithm on by default.
    #[test]
    fn every_connection_to_redis_is_opened_with_nodelay() {
        let info = connection_info("redis://:secret@127.0.0.1:6379/0").unwrap();
        assert!(info.tcp_settings().nodelay(), "the command connection");
        let bus =
            crate::bus::Nodes::new(&["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]).unwrap();
        for seed in bus.seeds() {
            assert!(
                seed.tcp_settings().nodelay(),
                "the bus's connection to {seed:?}"
            );
        }
        // The Cluster client applies its own settings to every node it
        // connects to; it shows them only in its Debug form.
        let cluster = format!(
            "{:?}",
            cluster_client(vec!["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]).unwrap()
        );
        assert!(
            cluster.contains("tcp_settings: TcpSettings { nodelay: true"),
            "the Cluster's command connections: {cluster}"
        );
    }
}
