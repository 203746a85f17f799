//! Per-user connection state and the presence event bus.
//!
//! This crate owns who is connected where: every open WebSocket connection
//! (user, connection id, gateway instance, when it opened), the set of online
//! users, and the stream of [`PresenceEvent`]s that tells every instance and
//! every internal service about changes. It is the only code in Pulse that
//! knows Redis keys, scripts and channels.
//!
//! [`Presence`] is one type with two backends:
//!
//! - **Redis** ([`Presence::redis`]), shared by every gateway instance. Each
//!   state change is one Lua script that changes the state *and* publishes its
//!   events in the same atomic step, so events are ordered exactly as the state
//!   changed, and a user goes `online` once per none-to-some transition and
//!   `offline` once per some-to-none, under any concurrency.
//! - **In memory** ([`Presence::in_memory`]), for a single node: the same
//!   semantics and the same events.
//!
//! The crate also serves `pulse.presence.v1.Presence` over gRPC ([`run`]).
//!
//! In Redis, state is sharded into [`BUCKETS`] buckets by user id
//! ([`bucket_of`]); each bucket's keys share one hash tag, so every script
//! runs on one slot, and the same keys and scripts serve one Redis and a
//! Redis Cluster ([`RedisOptions::cluster`]). A bucket holds its users'
//! hashes, an index per instance, its online set, a connection counter and
//! its copy of the instance leases with their clock; events go out on the
//! `<ns>:events` channel, commands on one sharded channel per instance.

#![forbid(unsafe_code)]

use std::sync::Arc;

use pulse_protocol::PresenceEvent;
use tokio::sync::{broadcast, oneshot, watch};

pub mod access;
mod admission;
mod buckets;
mod bus;
pub mod channels;
pub mod channels_service;
mod commands;
pub mod config;
pub mod event_log;
mod fanout;
mod grpc_access;
pub mod history;
mod http_api;
mod leases;
mod members;
mod memory;
pub mod namespaces;
mod options;
mod redis_conn;
mod redis_store;
pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod user_entry;
mod watch_slots;
pub mod webhooks;

pub use admission::Admission;
pub use buckets::{BUCKETS, bucket_of, channel_bucket};
pub use channels::{
    ChannelFeed, ChannelName, Delivery, DeliveryPosition, FeedEvent, MAX_SERVER_SUBSCRIPTIONS,
    Published,
};
pub use commands::{MAX_BLOCK, MAX_DATA_BYTES, MAX_REASON_BYTES};
pub use event_log::{EventLogOptions, EventTail, TailError};
pub use history::{HistoryOptions, HistoryPage, HistoryQuery, PublishOptions, StreamRead};
pub use http_api::run_http;
pub use leases::run_reaper;
pub use members::{ChannelPresence, Entered, Left, MAX_LISTED_CHANNELS, MemberRecord};
pub use namespaces::{Authorize, NamespaceOptions, Namespaces, NamespacesError};
pub use options::{
    DEFAULT_LEASE_TTL, EVENTS_IDLE_AFTER, MIN_LEASE_TTL, RedisOptions, RedisOptionsError,
};
pub use service::{ApiConfig, ApiLimits, run};

use memory::MemoryStore;
use redis_store::RedisStore;

/// How many events the bus buffers for a slow subscriber before it lags.
const EVENT_CAPACITY: usize = 16_384;

/// The longest connection or instance id accepted, in bytes. User ids have
/// their own, shorter limit, the same everywhere in Pulse:
/// [`MAX_USER_ID_BYTES`].
pub const MAX_ID_LEN: usize = 1024;

pub use pulse_protocol::MAX_USER_ID_BYTES;

/// One open connection: which user, which gateway instance holds it, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// The connection's id, unique across the fleet.
    pub connection_id: String,
    /// The user the connection authenticated as.
    pub user_id: String,
    /// The gateway instance that holds the socket.
    pub instance_id: String,
    /// When the connection opened, milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
}

/// How many users are online, and on how many connections in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OnlineCount {
    /// Users with at least one open connection.
    pub users: u64,
    /// Open connections across all users.
    pub connections: u64,
}

/// Why a presence operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The backend (Redis) could not be reached or failed, so there is no
    /// answer (never a stale one). A change may or may not have been applied
    /// (Redis can run a script whose reply is then lost); every change is
    /// idempotent, so retrying it is safe.
    #[error("presence backend unavailable: {0}")]
    Unavailable(String),
    /// The request itself is wrong (an empty id, a bad Redis URL); retrying
    /// the same request will fail the same way.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// What [`Presence::sync_instance`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncReport {
    /// Connections the store lacked and now holds.
    pub registered: u64,
    /// Connections the store held for the instance that it no longer has.
    pub removed: u64,
}

/// Per-user connection state and the event bus, with a Redis or an in-memory
/// backend. Cloning is cheap and every clone shares the same state and bus.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    events: broadcast::Sender<PresenceEvent>,
    /// Tells the bus that a consumer came (Redis; for
    /// [`RedisOptions::events_on_demand`]).
    events_wanted: Option<Arc<tokio::sync::Notify>>,
    epoch: watch::Sender<u64>,
    /// Where commands for this process's instance go, once a gateway listens.
    commands: watch::Sender<Option<bus::CommandListener>>,
    /// The command channel the bus is subscribed to right now (Redis only).
    commands_live: watch::Sender<Option<String>>,
    /// The channel feeds of this process (the in-memory backend's fan-out).
    local_hub: Arc<channels::LocalHub>,
    /// Channel memberships (the in-memory backend's).
    members: members::MemberTable,
    /// The history of personal channels (`[personal]` in the config file),
    /// set once at start: with it, `Send` is a publication with an offset.
    personal_history: std::sync::OnceLock<history::HistoryOptions>,
    /// How long events and "last seen" are kept, set once at start.
    event_log: std::sync::OnceLock<EventLogOptions>,
    // Dropped with the last `Presence` clone, which tells the bus task to stop.
    _bus_stop: Option<oneshot::Sender<()>>,
}

enum Backend {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.inner.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        };
        f.debug_struct("Presence")
            .field("backend", &backend)
            .finish()
    }
}

impl Presence {
    /// A single-node store kept in this process.
    ///
    /// Its bus is live from the start, so [`Presence::bus_epoch`] reads 1 and
    /// never changes.
    pub fn in_memory() -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (epoch, _) = watch::channel(1);
        Self {
            inner: Arc::new(Inner {
                backend: Backend::Memory(MemoryStore::new(events.clone())),
                events,
                events_wanted: None,
                epoch,
                commands: watch::channel(None).0,
                commands_live: watch::channel(None).0,
                local_hub: Arc::default(),
                members: members::MemberTable::default(),
                personal_history: std::sync::OnceLock::new(),
                event_log: std::sync::OnceLock::new(),
                _bus_stop: None,
            }),
        }
    }

    /// A store shared through Redis.
    ///
    /// Builds the connection pool without connecting, so a process can start
    /// while Redis is down (operations fail with
    /// [`PresenceError::Unavailable`] until it is back), and spawns the task
    /// that subscribes to the event channel and keeps resubscribing. The task
    /// ends when the last clone of the returned value is dropped.
    ///
    /// # Errors
    ///
    /// [`PresenceError::InvalidArgument`] for a URL that does not parse, or
    /// options that [`RedisOptions::validate`] refuses (the message starts
    /// with the setting's flag).
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn redis(options: RedisOptions) -> Result<Self, PresenceError> {
        let store = RedisStore::new(&options)?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (epoch, _) = watch::channel(0);
        let (bus_stop, stopped) = oneshot::channel();
        let (commands, listener) = watch::channel(None);
        let (commands_live, _) = watch::channel(None);
        let wanted = Arc::new(tokio::sync::Notify::new());
        bus::spawn(
            store.subscriber(),
            store.keys().channel(),
            bus::Forward {
                subscribe: options.subscribe_events,
                on_demand: options.events_on_demand,
                wanted: wanted.clone(),
                events: events.clone(),
            },
            epoch.clone(),
            listener,
            commands_live.clone(),
            stopped,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                backend: Backend::Redis(store),
                events,
                events_wanted: Some(wanted),
                epoch,
                commands,
                commands_live,
                local_hub: Arc::default(),
                members: members::MemberTable::default(),
                personal_history: std::sync::OnceLock::new(),
                event_log: std::sync::OnceLock::new(),
                _bus_stop: Some(bus_stop),
            }),
        })
    }

    /// Records an open connection.
    ///
    /// Publishes `connected`, then `online` when it is the user's first
    /// connection anywhere. Idempotent: registering a connection id the user
    /// already has changes nothing and publishes nothing (even with another
    /// instance or time).
    pub async fn register(&self, record: &ConnectionRecord) -> Result<(), PresenceError> {
        check_user_id(&record.user_id)?;
        check_id("connection_id", &record.connection_id)?;
        check_id("instance_id", &record.instance_id)?;
        match &self.inner.backend {
            Backend::Memory(store) => {
                store.register(record);
                Ok(())
            }
            Backend::Redis(store) => observe("register", store.register(record)).await,
        }
    }

    /// Forgets a closed connection.
    ///
    /// Publishes `disconnected`, then `offline` when it was the user's last
    /// connection anywhere. Idempotent: an unknown connection changes nothing
    /// and publishes nothing.
    pub async fn unregister(
        &self,
        user_id: &str,
        connection_id: &str,
    ) -> Result<(), PresenceError> {
        check_user_id(user_id)?;
        check_id("connection_id", connection_id)?;
        match &self.inner.backend {
            Backend::Memory(store) => {
                store.unregister(user_id, connection_id);
                Ok(())
            }
            Backend::Redis(store) => {
                observe("unregister", store.unregister(user_id, connection_id)).await
            }
        }
    }

    /// Removes every connection `instance_id` holds, with the same events as
    /// [`Presence::unregister`] for each, and returns how many there were;
    /// its channel memberships go too, with their `leave`s.
    ///
    /// For a graceful shutdown, and for a restart under the same id, which
    /// must not leave the previous run's connections behind as phantoms.
    pub async fn unregister_instance(&self, instance_id: &str) -> Result<u64, PresenceError> {
        check_id("instance_id", instance_id)?;
        match &self.inner.backend {
            Backend::Memory(store) => {
                self.inner
                    .members
                    .purge_instance(instance_id, &self.inner.local_hub, store);
                Ok(store.unregister_instance(instance_id))
            }
            Backend::Redis(store) => {
                observe(
                    "unregister_instance",
                    store.unregister_instance(instance_id),
                )
                .await
            }
        }
    }

    /// A user's open connections, oldest first (ties by connection id).
    /// Empty when the user is offline.
    pub async fn user(&self, user_id: &str) -> Result<Vec<ConnectionRecord>, PresenceError> {
        check_user_id(user_id)?;
        match &self.inner.backend {
            Backend::Memory(store) => Ok(store.user(user_id)),
            Backend::Redis(store) => observe("user", store.user(user_id)).await,
        }
    }

    /// Several users' open connections, in the order asked, each as
    /// [`Presence::user`] returns it; one round trip to Redis.
    pub async fn users(
        &self,
        user_ids: &[String],
    ) -> Result<Vec<Vec<ConnectionRecord>>, PresenceError> {
        for user_id in user_ids {
            check_user_id(user_id)?;
        }
        match &self.inner.backend {
            Backend::Memory(store) => Ok(user_ids.iter().map(|id| store.user(id)).collect()),
            Backend::Redis(store) => observe("users", store.users(user_ids)).await,
        }
    }

    /// How many users are online, and on how many connections: with Redis,
    /// the sums over the buckets, each read atomically, all at once.
    pub async fn count_online(&self) -> Result<OnlineCount, PresenceError> {
        match &self.inner.backend {
            Backend::Memory(store) => Ok(store.count_online()),
            Backend::Redis(store) => observe("count_online", store.count_online()).await,
        }
    }

    /// Checks that the backend answers; always `Ok` in memory.
    pub async fn ping(&self) -> Result<(), PresenceError> {
        match &self.inner.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(store) => observe("ping", store.ping()).await,
        }
    }

    /// What in Redis's own settings lets it lose Pulse's data without a
    /// sign: the nodes (the one Redis, or each Cluster master by address)
    /// whose `maxmemory` is set with a `maxmemory-policy` other than
    /// `noeviction`, with that policy. Such a Redis drops keys when it is
    /// full: a user's presence, an instance's index (`allkeys-*`), a
    /// channel's history, an idempotency key that should have stopped a
    /// retried publication, a user's block (also `volatile-*`).
    /// With `noeviction` it refuses writes instead, which Pulse reports.
    /// Empty in memory, and for a node that refuses `CONFIG` (a managed
    /// Redis may).
    ///
    /// # Errors
    ///
    /// [`PresenceError::Unavailable`] when Redis cannot be reached.
    pub async fn evicting_nodes(&self) -> Result<Vec<EvictingNode>, PresenceError> {
        let Backend::Redis(store) = &self.inner.backend else {
            return Ok(Vec::new());
        };
        Ok(store
            .memory_settings()
            .await?
            .into_iter()
            .filter_map(|(node, settings)| {
                let settings = settings?;
                let limited = settings
                    .get("maxmemory")
                    .is_some_and(|bytes| bytes.trim() != "0");
                let policy = settings.get("maxmemory-policy")?;
                (limited && policy != "noeviction").then(|| EvictingNode {
                    node,
                    policy: policy.clone(),
                })
            })
            .collect())
    }

    /// Logs one warning per node of [`Presence::evicting_nodes`]; the
    /// binaries spawn it at start. While Redis cannot be reached it asks
    /// again every 5 s (the outage itself is logged by what needs Redis),
    /// and it ends once Redis has answered.
    pub async fn warn_if_redis_evicts(&self) {
        loop {
            match self.evicting_nodes().await {
                Ok(nodes) => {
                    for EvictingNode { node, policy } in nodes {
                        // A `volatile-*` policy evicts only keys with a
                        // lifetime; presence itself has none.
                        let lost = if policy.starts_with("volatile-") {
                            "histories, idempotency keys and user blocks"
                        } else {
                            "presence, histories, idempotency keys and user blocks"
                        };
                        tracing::warn!(
                            node = node.as_deref().unwrap_or("redis"),
                            %policy,
                            "Redis evicts keys when full (maxmemory-policy {policy}): {lost} can \
                             be lost without a sign; set maxmemory-policy noeviction"
                        );
                    }
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, "Redis's memory settings not read; asking again in 5 s");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
        }
    }

    /// Every event from every instance, including this one's. One user's
    /// events come in the order the backend applied them; on one Redis (and
    /// in memory) all events do. On a Cluster, events of users whose buckets
    /// live on different nodes travel separate links and may interleave
    /// differently than they happened.
    ///
    /// A receiver that falls more than about 16 000 events behind gets
    /// `Lagged` and should re-read the state it cares about.
    ///
    /// With [`RedisOptions::events_on_demand`] the bus may hold no
    /// subscription when this is called (nobody took events for a while):
    /// this wakes it, and events flow once [`Presence::bus_epoch`] moves;
    /// what came before is in the event log ([`EventTail`] reads it).
    pub fn subscribe(&self) -> broadcast::Receiver<PresenceEvent> {
        let receiver = self.inner.events.subscribe();
        if let Some(wanted) = &self.inner.events_wanted {
            wanted.notify_one();
        }
        receiver
    }

    /// How many times the bus has subscribed to the event channel.
    ///
    /// With Redis it starts at 0 (not subscribed yet) and goes up by one on
    /// every successful (re)subscription: a change means events published
    /// while the bus was down were missed, so a consumer should re-read the
    /// state it cares about (a *re-read*; a *re-sync* is an instance's repair
    /// of presence, [`Presence::sync_instance`]). In memory it is 1 from the
    /// start. Either way, once it is above 0, events published from then on
    /// reach [`Presence::subscribe`].
    pub fn bus_epoch(&self) -> watch::Receiver<u64> {
        self.inner.epoch.subscribe()
    }
}

/// A Redis node that may evict Pulse's keys: [`Presence::evicting_nodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictingNode {
    /// A Cluster master's address; `None` for the one Redis.
    pub node: Option<String>,
    /// Its `maxmemory-policy`.
    pub policy: String,
}

/// Times one Redis operation and counts its failures: `pulse_presence_redis_seconds{op}`
/// and `pulse_presence_redis_errors_total{op}`.
async fn observe<T>(
    op: &'static str,
    operation: impl Future<Output = Result<T, PresenceError>>,
) -> Result<T, PresenceError> {
    let started = std::time::Instant::now();
    let result = operation.await;
    metrics::histogram!("pulse_presence_redis_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!("pulse_presence_redis_errors_total", "op" => op).increment(1);
    }
    result
}

/// Rejects an empty user id or one over [`MAX_USER_ID_BYTES`].
pub(crate) fn check_user_id(user_id: &str) -> Result<(), PresenceError> {
    if user_id.is_empty() {
        return Err(PresenceError::InvalidArgument(
            "user_id must not be empty".to_owned(),
        ));
    }
    if user_id.len() > MAX_USER_ID_BYTES {
        return Err(PresenceError::InvalidArgument(format!(
            "user_id is {} bytes, longer than the {MAX_USER_ID_BYTES} allowed",
            user_id.len()
        )));
    }
    Ok(())
}

/// Rejects an empty or oversized id before it reaches a key name.
fn check_id(what: &str, value: &str) -> Result<(), PresenceError> {
    if value.is_empty() {
        return Err(PresenceError::InvalidArgument(format!(
            "{what} must not be empty"
        )));
    }
    if value.len() > MAX_ID_LEN {
        return Err(PresenceError::InvalidArgument(format!(
            "{what} is longer than {MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}

/// Sorts one user's connections the way every query returns them.
fn sort_connections(connections: &mut [ConnectionRecord]) {
    connections.sort_by(|a, b| {
        (&a.user_id, a.connected_at_ms, &a.connection_id).cmp(&(
            &b.user_id,
            b.connected_at_ms,
            &b.connection_id,
        ))
    });
}
