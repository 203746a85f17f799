//! The shared backend: keys, scripts and queries on Redis.
//!
//! Keys (`<ns>` is [`RedisOptions::namespace`]):
//!
//! - `<ns>:user:{<user_id>}`: HASH connection id -> `"<connected_at_ms>|<instance_id>"`,
//!   the truth about one user; hash-tagged so that it lives in one slot.
//! - `<ns>:instance:{<instance_id>}`: HASH connection id -> user id, the
//!   index that lets an instance's connections be removed at once.
//! - `<ns>:online`: SET of the users whose hash is not empty.
//! - `<ns>:instances`: ZSET instance id -> lease deadline (ms, Redis's clock);
//!   an instance past its deadline died without saying goodbye and is reaped.
//! - `<ns>:connections`: the number of connections, as a counter.
//! - `<ns>:events`: the pub/sub channel that carries [`PresenceEvent`] JSON.
//! - `<ns>:commands:{<instance_id>}`: the pub/sub channel that carries
//!   commands (send, disconnect) to one instance.
//!
//! Every change is one Lua script (`src/lua/`) that updates the keys and
//! publishes the events together, so nothing reads, decides and writes from
//! Rust. The scripts touch keys in several slots (a user hash, an instance
//! index, the global set and counter), which single-node Redis accepts; Redis
//! Cluster support is future work and will need the global keys and the
//! instance purge reshaped.
//!
//! [`PresenceEvent`]: pulse_protocol::PresenceEvent

use std::{
    collections::{HashMap, HashSet},
    sync::LazyLock,
    time::Duration,
};

use deadpool_redis::{Manager, Pool, Runtime};
use pulse_protocol::{Command, event::now_ms};
use redis::{AsyncConnectionConfig, Script, aio::ConnectionLike};
use tracing::warn;

use crate::{
    ConnectionRecord, OnlineCount, PresenceError, RedisOptions, SyncReport, sort_connections,
};

/// How long to wait for a pooled connection, or for a new one to open,
/// before answering `Unavailable`: a dead Redis must fail fast, never hang.
const POOL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for Redis to answer one command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// The instance purge walks every connection an instance holds; give it longer.
const PURGE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How many online users one `SSCAN` step asks for.
const SCAN_BATCH: usize = 1000;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/prelude.lua"),
                include_str!($file)
            ))
        })
    };
}

static REGISTER: LazyLock<Script> = script!("lua/register.lua");
static UNREGISTER: LazyLock<Script> = script!("lua/unregister.lua");
static UNREGISTER_INSTANCE: LazyLock<Script> = script!("lua/unregister_instance.lua");
static SEND: LazyLock<Script> = script!("lua/send.lua");
static RENEW_LEASE: LazyLock<Script> = script!("lua/renew_lease.lua");
static REAP: LazyLock<Script> = script!("lua/reap.lua");

/// How many expired instances one reap call removes at most.
const REAP_BATCH: usize = 64;
/// How many registrations one re-sync pipeline carries.
const SYNC_BATCH: usize = 500;

/// Key and channel names under one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    namespace: String,
}

impl Keys {
    fn user_prefix(&self) -> String {
        format!("{}:user:{{", self.namespace)
    }

    fn user(&self, user_id: &str) -> String {
        format!("{}:user:{{{user_id}}}", self.namespace)
    }

    fn instance_prefix(&self) -> String {
        format!("{}:instance:{{", self.namespace)
    }

    fn instance(&self, instance_id: &str) -> String {
        format!("{}:instance:{{{instance_id}}}", self.namespace)
    }

    fn online(&self) -> String {
        format!("{}:online", self.namespace)
    }

    fn connections(&self) -> String {
        format!("{}:connections", self.namespace)
    }

    fn leases(&self) -> String {
        format!("{}:instances", self.namespace)
    }

    pub(crate) fn channel(&self) -> String {
        format!("{}:events", self.namespace)
    }

    fn commands_prefix(&self) -> String {
        format!("{}:commands:{{", self.namespace)
    }

    /// The channel that carries commands for one instance.
    pub(crate) fn commands(&self, instance_id: &str) -> String {
        format!("{}:commands:{{{instance_id}}}", self.namespace)
    }
}

/// The Redis backend: a command pool, and a client for the bus's own
/// pub/sub connection (which a pool cannot lend).
pub(crate) struct RedisStore {
    pool: Pool,
    subscriber: redis::Client,
    keys: Keys,
    lease_ttl_ms: u64,
}

impl RedisStore {
    pub(crate) fn new(options: &RedisOptions) -> Result<Self, PresenceError> {
        let namespace = &options.namespace;
        if namespace.is_empty() || namespace.contains(['{', '}']) {
            return Err(PresenceError::InvalidArgument(format!(
                "invalid redis namespace {namespace:?}: must be non-empty and without braces"
            )));
        }
        if options.pool_size == 0 {
            return Err(PresenceError::InvalidArgument(
                "redis pool size must be at least 1".to_owned(),
            ));
        }
        let invalid_url = |error: redis::RedisError| {
            PresenceError::InvalidArgument(format!("invalid redis url: {error}"))
        };
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(POOL_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager =
            Manager::new_with_config(options.url.as_str(), connection).map_err(invalid_url)?;
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|error| PresenceError::InvalidArgument(format!("redis pool: {error}")))?;
        let subscriber = redis::Client::open(options.url.as_str()).map_err(invalid_url)?;
        let lease_ttl_ms = u64::try_from(options.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        if lease_ttl_ms < 100 {
            return Err(PresenceError::InvalidArgument(
                "lease ttl must be at least 100ms".to_owned(),
            ));
        }
        Ok(Self {
            pool,
            subscriber,
            keys: Keys {
                namespace: namespace.clone(),
            },
            lease_ttl_ms,
        })
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn subscriber(&self) -> redis::Client {
        self.subscriber.clone()
    }

    async fn connection(&self) -> Result<deadpool_redis::Connection, PresenceError> {
        self.pool
            .get()
            .await
            .map_err(|error| PresenceError::Unavailable(format!("redis pool: {error}")))
    }

    /// The register script with its keys and arguments, for one call or a pipeline.
    fn register_invocation(&self, record: &ConnectionRecord) -> redis::ScriptInvocation<'static> {
        let mut invocation = REGISTER.prepare_invoke();
        invocation
            .key(self.keys.user(&record.user_id))
            .key(self.keys.instance(&record.instance_id))
            .key(self.keys.online())
            .key(self.keys.connections())
            .key(self.keys.leases())
            .arg(self.keys.channel())
            .arg(&record.user_id)
            .arg(&record.connection_id)
            .arg(&record.instance_id)
            .arg(record.connected_at_ms.to_string())
            .arg(self.lease_ttl_ms);
        invocation
    }

    pub(crate) async fn register(&self, record: &ConnectionRecord) -> Result<(), PresenceError> {
        let mut connection = self.connection().await?;
        let _added: i64 = self
            .register_invocation(record)
            .invoke_async(&mut *connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn unregister(
        &self,
        user_id: &str,
        connection_id: &str,
    ) -> Result<(), PresenceError> {
        let mut connection = self.connection().await?;
        let _removed: i64 = UNREGISTER
            .key(self.keys.user(user_id))
            .key(self.keys.online())
            .key(self.keys.connections())
            .arg(self.keys.channel())
            .arg(user_id)
            .arg(connection_id)
            .arg(now_ms().to_string())
            .arg(self.keys.instance_prefix())
            .invoke_async(&mut *connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Publishes a command to each instance holding the user's connections
    /// (or the one connection); returns the connections on instances that took it.
    pub(crate) async fn dispatch(
        &self,
        command: &Command,
        only: Option<&str>,
    ) -> Result<u64, PresenceError> {
        let mut connection = self.connection().await?;
        let reached: u64 = SEND
            .key(self.keys.user(command.user_id()))
            .arg(self.keys.commands_prefix())
            .arg(command.encode())
            .arg(only.unwrap_or(""))
            .invoke_async(&mut *connection)
            .await
            .map_err(unavailable)?;
        Ok(reached)
    }

    pub(crate) async fn unregister_instance(
        &self,
        instance_id: &str,
    ) -> Result<u64, PresenceError> {
        let pooled = self.connection().await?;
        // A clone shares the pooled connection's socket but has its own
        // response timeout, so the longer one does not stay in the pool.
        let mut connection = (*pooled).clone();
        connection.set_response_timeout(PURGE_RESPONSE_TIMEOUT);
        UNREGISTER_INSTANCE
            .key(self.keys.instance(instance_id))
            .key(self.keys.online())
            .key(self.keys.connections())
            .key(self.keys.leases())
            .arg(self.keys.channel())
            .arg(instance_id)
            .arg(now_ms().to_string())
            .arg(self.keys.user_prefix())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    /// Renews an instance's lease; `false` when it held none (see renew_lease.lua).
    pub(crate) async fn renew_lease(&self, instance_id: &str) -> Result<bool, PresenceError> {
        let mut connection = self.connection().await?;
        let held: i64 = RENEW_LEASE
            .key(self.keys.leases())
            .arg(instance_id)
            .arg(self.lease_ttl_ms)
            .invoke_async(&mut *connection)
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }

    /// Reaps instances whose lease expired; returns (instance id, connections removed).
    pub(crate) async fn reap(&self) -> Result<Vec<(String, u64)>, PresenceError> {
        let pooled = self.connection().await?;
        let mut connection = (*pooled).clone();
        connection.set_response_timeout(PURGE_RESPONSE_TIMEOUT);
        // The script returns a flat list of pairs, which decodes as tuples.
        let reaped: Vec<(String, u64)> = REAP
            .key(self.keys.leases())
            .key(self.keys.online())
            .key(self.keys.connections())
            .arg(self.keys.channel())
            .arg(self.keys.instance_prefix())
            .arg(self.keys.user_prefix())
            .arg(REAP_BATCH)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(reaped)
    }

    /// Makes Redis hold exactly an instance's connections: what the index has
    /// and `local` lacks is unregistered (with events), what `local` has and
    /// the index lacks is registered (with events). `local` is called after
    /// the index is read, so a connection registered meanwhile is never
    /// mistaken for a stale one.
    pub(crate) async fn sync_instance(
        &self,
        instance_id: &str,
        local: impl FnOnce() -> Vec<ConnectionRecord>,
    ) -> Result<SyncReport, PresenceError> {
        let index: HashMap<String, String> = {
            let mut connection = self.connection().await?;
            redis::cmd("HGETALL")
                .arg(self.keys.instance(instance_id))
                .query_async(&mut *connection)
                .await
                .map_err(unavailable)?
        };
        let local = local();
        let held: HashSet<&str> = local.iter().map(|r| r.connection_id.as_str()).collect();
        let mut report = SyncReport::default();
        for (connection_id, user_id) in &index {
            if !held.contains(connection_id.as_str()) {
                self.unregister(user_id, connection_id).await?;
                report.removed += 1;
            }
        }
        let missing: Vec<&ConnectionRecord> = local
            .iter()
            .filter(|record| !index.contains_key(&record.connection_id))
            .collect();
        let mut connection = self.connection().await?;
        // Pipelined EVALSHA needs the script loaded first.
        REGISTER
            .prepare_invoke()
            .load_async(&mut *connection)
            .await
            .map_err(unavailable)?;
        for batch in missing.chunks(SYNC_BATCH) {
            let mut pipe = redis::pipe();
            for record in batch {
                pipe.invoke_script(&self.register_invocation(record));
            }
            let added: Vec<i64> = pipe
                .query_async(&mut *connection)
                .await
                .map_err(unavailable)?;
            report.registered += added.iter().filter(|added| **added == 1).count() as u64;
        }
        Ok(report)
    }

    pub(crate) async fn user(&self, user_id: &str) -> Result<Vec<ConnectionRecord>, PresenceError> {
        let mut connection = self.connection().await?;
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.user(user_id))
            .query_async(&mut *connection)
            .await
            .map_err(unavailable)?;
        Ok(decode_user(user_id, hash))
    }

    pub(crate) async fn users(
        &self,
        user_ids: &[String],
    ) -> Result<Vec<Vec<ConnectionRecord>>, PresenceError> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection().await?;
        self.fetch_users(&mut *connection, user_ids).await
    }

    /// One pipelined `HGETALL` per user: a single round trip.
    async fn fetch_users(
        &self,
        connection: &mut impl ConnectionLike,
        user_ids: &[String],
    ) -> Result<Vec<Vec<ConnectionRecord>>, PresenceError> {
        let mut pipe = redis::pipe();
        for user_id in user_ids {
            pipe.cmd("HGETALL").arg(self.keys.user(user_id));
        }
        let hashes: Vec<HashMap<String, String>> =
            pipe.query_async(connection).await.map_err(unavailable)?;
        Ok(user_ids
            .iter()
            .zip(hashes)
            .map(|(user_id, hash)| decode_user(user_id, hash))
            .collect())
    }

    pub(crate) async fn count_online(&self) -> Result<OnlineCount, PresenceError> {
        let mut connection = self.connection().await?;
        // MULTI/EXEC, so the two numbers come from the same instant.
        let (users, connections): (u64, Option<i64>) = redis::pipe()
            .atomic()
            .scard(self.keys.online())
            .get(self.keys.connections())
            .query_async(&mut *connection)
            .await
            .map_err(unavailable)?;
        Ok(OnlineCount {
            users,
            connections: connections.map_or(0, |n| u64::try_from(n).unwrap_or(0)),
        })
    }

    pub(crate) async fn all_connections(&self) -> Result<Vec<ConnectionRecord>, PresenceError> {
        let mut connection = self.connection().await?;
        // The online set indexes exactly the users with connections, so walking
        // it with SSCAN visits only our namespace's users, a batch at a time,
        // without blocking Redis the way KEYS (or one SMEMBERS) would.
        let mut seen = HashSet::new();
        let mut records = Vec::new();
        let mut cursor = "0".to_owned();
        loop {
            let (next, batch): (String, Vec<String>) = redis::cmd("SSCAN")
                .arg(self.keys.online())
                .arg(&cursor)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query_async(&mut *connection)
                .await
                .map_err(unavailable)?;
            // SSCAN may return a member twice; each user is fetched once.
            let fresh: Vec<String> = batch
                .into_iter()
                .filter(|id| seen.insert(id.clone()))
                .collect();
            if !fresh.is_empty() {
                let users = self.fetch_users(&mut *connection, &fresh).await?;
                records.extend(users.into_iter().flatten());
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        sort_connections(&mut records);
        Ok(records)
    }

    pub(crate) async fn ping(&self) -> Result<(), PresenceError> {
        let mut connection = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut *connection)
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

fn unavailable(error: redis::RedisError) -> PresenceError {
    PresenceError::Unavailable(format!("redis: {error}"))
}

/// Turns a user hash into records, skipping (and reporting) any value that
/// is not `"<connected_at_ms>|<instance_id>"` rather than failing the query.
fn decode_user(user_id: &str, hash: HashMap<String, String>) -> Vec<ConnectionRecord> {
    let mut records: Vec<_> = hash
        .into_iter()
        .filter_map(|(connection_id, value)| {
            let decoded = value
                .split_once('|')
                .and_then(|(at, instance)| Some((at.parse::<u64>().ok()?, instance)));
            let Some((connected_at_ms, instance_id)) = decoded else {
                warn!(
                    user_id,
                    connection_id, value, "skipping a malformed presence entry"
                );
                return None;
            };
            Some(ConnectionRecord {
                instance_id: instance_id.to_owned(),
                connection_id,
                user_id: user_id.to_owned(),
                connected_at_ms,
            })
        })
        .collect();
    sort_connections(&mut records);
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys {
            namespace: "ns".to_owned(),
        }
    }

    #[test]
    fn keys_are_hash_tagged_by_user_and_instance() {
        let keys = keys();
        assert_eq!(keys.user("u1"), "ns:user:{u1}");
        assert_eq!(keys.instance("i1"), "ns:instance:{i1}");
        assert_eq!(format!("{}u1}}", keys.user_prefix()), keys.user("u1"));
        assert_eq!(
            format!("{}i1}}", keys.instance_prefix()),
            keys.instance("i1")
        );
        assert_eq!(keys.online(), "ns:online");
        assert_eq!(keys.connections(), "ns:connections");
        assert_eq!(keys.channel(), "ns:events");
    }

    #[test]
    fn user_hash_values_decode_and_bad_ones_are_skipped() {
        let hash = HashMap::from([
            ("c2".to_owned(), "1712345678901|gw|with|bars".to_owned()),
            ("c1".to_owned(), "1712345678901|gw-1".to_owned()),
            ("bad".to_owned(), "not a number|gw".to_owned()),
            ("worse".to_owned(), "no separator".to_owned()),
        ]);
        let records = decode_user("u", hash);
        let ids: Vec<_> = records
            .iter()
            .map(|r| (r.connection_id.as_str(), r.instance_id.as_str()))
            .collect();
        assert_eq!(ids, [("c1", "gw-1"), ("c2", "gw|with|bars")]);
        assert!(
            records
                .iter()
                .all(|r| r.connected_at_ms == 1_712_345_678_901 && r.user_id == "u")
        );
    }

    #[test]
    fn bad_options_are_invalid_arguments() {
        for options in [
            RedisOptions::new("not a url"),
            RedisOptions::default().with_namespace(""),
            RedisOptions::default().with_namespace("a{b}"),
            RedisOptions {
                pool_size: 0,
                ..RedisOptions::default()
            },
        ] {
            assert!(matches!(
                RedisStore::new(&options),
                Err(PresenceError::InvalidArgument(_))
            ));
        }
    }
}
