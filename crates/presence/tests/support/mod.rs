//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub, unused_macros)] // Each test binary uses its own subset.

pub mod channels_api;
pub mod event_log;
pub mod pki;
pub mod served;
pub mod webhooks;

/// Runs each case against every backend: `memory::<case>` on
/// `Presence::in_memory()`, `redis::<case>` on Redis and `cluster::<case>` on
/// a three-master Redis Cluster, each with a fresh namespace. The test file
/// declares `#[macro_use] mod support;` and the cases as
/// `async fn case(presence: Presence)`.
macro_rules! every_backend {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(pulse_presence::Presence::in_memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let server = pulse_presence::testing::RedisServer::start().await;
                    super::$case(super::support::redis_presence(&server).await).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let cluster = pulse_presence::testing::RedisCluster::start().await;
                    super::$case(super::support::cluster_presence(cluster).await).await;
                }
            )*
        }
    };
}

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use pulse_presence::{
    BUCKETS, ConnectionRecord, Presence, RedisOptions, bucket_of,
    testing::{RedisCluster, RedisServer, unique_namespace},
};
use pulse_protocol::{EventKind, PresenceEvent};
use tokio::{sync::broadcast, time::timeout};

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The record of connection `connection_id` of `user_id` on `instance_id`.
pub fn record(
    user_id: &str,
    connection_id: &str,
    instance_id: &str,
    connected_at_ms: u64,
) -> ConnectionRecord {
    ConnectionRecord {
        connection_id: connection_id.to_owned(),
        user_id: user_id.to_owned(),
        instance_id: instance_id.to_owned(),
        connected_at_ms,
    }
}

/// Registers [`record`]`(user_id, connection_id, instance_id, connected_at_ms)`
/// in `presence`; panics when the store refuses.
pub async fn register(
    presence: &Presence,
    user_id: &str,
    connection_id: &str,
    instance_id: &str,
    connected_at_ms: u64,
) {
    presence
        .register(&record(
            user_id,
            connection_id,
            instance_id,
            connected_at_ms,
        ))
        .await
        .unwrap();
}

/// How many users and connections `presence` counts online.
pub async fn counts(presence: &Presence) -> (u64, u64) {
    let count = presence.count_online().await.unwrap();
    (count.users, count.connections)
}

/// A Redis-backed store in a fresh namespace, with its bus subscribed.
pub async fn redis_presence(server: &RedisServer) -> Presence {
    let options = RedisOptions::new(server.url()).with_namespace(unique_namespace());
    let presence = Presence::redis(options).expect("valid redis options");
    bus_ready(&presence).await;
    presence
}

/// A store on the Redis Cluster in a fresh namespace, with its bus subscribed.
pub async fn cluster_presence(cluster: &RedisCluster) -> Presence {
    let options = cluster.options().with_namespace(unique_namespace());
    let presence = Presence::redis(options).expect("valid redis options");
    bus_ready(&presence).await;
    presence
}

/// Waits until events published from now on reach subscribers.
pub async fn bus_ready(presence: &Presence) {
    wait_epoch(presence, 1).await;
}

/// Waits until the bus has subscribed at least `epoch` times.
pub async fn wait_epoch(presence: &Presence, epoch: u64) {
    let mut epochs = presence.bus_epoch();
    timeout(DEADLINE, epochs.wait_for(|current| *current >= epoch))
        .await
        .unwrap_or_else(|_| panic!("the bus did not reach epoch {epoch} in time"))
        .expect("the bus is alive");
}

/// A subscription with helpers to read it without sleeping.
pub struct Events {
    receiver: broadcast::Receiver<PresenceEvent>,
}

static MARKERS: AtomicU64 = AtomicU64::new(0);

impl Events {
    pub fn new(presence: &Presence) -> Self {
        Self {
            receiver: presence.subscribe(),
        }
    }

    pub async fn next(&mut self) -> PresenceEvent {
        timeout(DEADLINE, self.receiver.recv())
            .await
            .expect("an event in time")
            .expect("the bus is alive and keeping up")
    }

    /// Every event published before this call, and nothing after.
    ///
    /// The events of one bucket are totally ordered (on a Cluster, one
    /// bucket is one slot on one node, and a node's events reach the
    /// subscriber's node over one link, in order), so a marker connection
    /// registered and unregistered now in every bucket has its events after
    /// everything that came before; reading up to every marker's `offline`
    /// proves nothing else is in flight, with no sleep. The markers' own
    /// events are left out.
    pub async fn settle(&mut self, presence: &Presence) -> Vec<PresenceEvent> {
        let markers = markers();
        futures_util::future::join_all(markers.iter().map(|marker| async move {
            presence
                .register(&record(marker, "marker", "marker", 1))
                .await
                .expect("registering a marker");
            presence
                .unregister(marker, "marker")
                .await
                .expect("unregistering a marker");
        }))
        .await;
        let mut pending: std::collections::HashSet<String> = markers.into_iter().collect();
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            if event.kind == EventKind::Offline && pending.remove(&event.user_id) {
                if pending.is_empty() {
                    return seen;
                }
                continue;
            }
            // Other stores' markers (tests with two stores) are left out too.
            if !event.user_id.starts_with("~marker-") {
                seen.push(event);
            }
        }
    }
}

/// Fresh marker user ids, one in each bucket.
fn markers() -> Vec<String> {
    let round = MARKERS.fetch_add(1, Ordering::Relaxed);
    one_user_per_bucket(&format!("~marker-{round}"))
}

/// User ids starting with `prefix`, one in each bucket, in bucket order.
pub fn one_user_per_bucket(prefix: &str) -> Vec<String> {
    let mut users: Vec<Option<String>> = vec![None; usize::from(BUCKETS)];
    let mut left = users.len();
    let mut n = 0_u64;
    while left > 0 {
        let user = format!("{prefix}-{n}");
        let slot = &mut users[usize::from(bucket_of(&user))];
        if slot.is_none() {
            *slot = Some(user);
            left -= 1;
        }
        n += 1;
    }
    users.into_iter().flatten().collect()
}

/// The parts of events that tests compare: user, kind, connection, instance.
pub fn summary(events: &[PresenceEvent]) -> Vec<(String, EventKind, String, String)> {
    events
        .iter()
        .map(|event| {
            (
                event.user_id.clone(),
                event.kind,
                event.connection_id.clone(),
                event.instance_id.clone(),
            )
        })
        .collect()
}

/// Builds what [`summary`] returns from string slices.
pub fn expect(
    events: &[(&str, EventKind, &str, &str)],
) -> Vec<(String, EventKind, String, String)> {
    events
        .iter()
        .map(|(user, kind, connection, instance)| {
            (
                (*user).to_owned(),
                *kind,
                (*connection).to_owned(),
                (*instance).to_owned(),
            )
        })
        .collect()
}

/// Replays connected/disconnected events per user and checks that `online`
/// comes right after (in that user's events) the `connected` that took the
/// user from none to some, and `offline` right after the `disconnected` that
/// took them back to none, and never otherwise. Returns the open counts.
pub fn replay(events: &[PresenceEvent]) -> HashMap<String, i64> {
    let mut open: HashMap<String, i64> = HashMap::new();
    let mut due: HashMap<String, (EventKind, String)> = HashMap::new();
    for event in events {
        // Channel joins and leaves are not connection transitions.
        if matches!(event.kind, EventKind::Join | EventKind::Leave) {
            continue;
        }
        if let Some(expected) = due.remove(&event.user_id) {
            assert_eq!(
                (event.kind, event.connection_id.clone()),
                expected,
                "{event:?}"
            );
            continue;
        }
        let count = open.entry(event.user_id.clone()).or_default();
        match event.kind {
            EventKind::Connected => {
                *count += 1;
                if *count == 1 {
                    due.insert(
                        event.user_id.clone(),
                        (EventKind::Online, event.connection_id.clone()),
                    );
                }
            }
            EventKind::Disconnected => {
                *count -= 1;
                assert!(*count >= 0, "more disconnects than connects: {event:?}");
                if *count == 0 {
                    due.insert(
                        event.user_id.clone(),
                        (EventKind::Offline, event.connection_id.clone()),
                    );
                }
            }
            EventKind::Online | EventKind::Offline | EventKind::Join | EventKind::Leave => {
                panic!("a transition nothing caused: {event:?}")
            }
        }
    }
    assert!(due.is_empty(), "transitions never published: {due:?}");
    open
}

/// Calls `call` until it stops failing with `Unavailable` (Redis coming
/// back), for at most [`DEADLINE`].
pub async fn retry_unavailable<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, pulse_presence::PresenceError>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(pulse_presence::PresenceError::Unavailable(_))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("{error}"),
        }
    }
}

/// The next publication a feed hands over (a subscription that was lost
/// and came back is skipped: these tests look at what is delivered).
pub async fn next_publication(
    deliveries: &mut tokio::sync::mpsc::UnboundedReceiver<pulse_presence::FeedEvent>,
) -> pulse_presence::Delivery {
    loop {
        let event = timeout(DEADLINE, deliveries.recv())
            .await
            .expect("a delivery in time")
            .expect("the feed is open");
        if let pulse_presence::FeedEvent::Publication(delivery) = event {
            return delivery;
        }
    }
}

/// Kills every pub/sub connection of the Redis at `url` (`CLIENT KILL TYPE
/// pubsub`); how many it killed.
pub async fn kill_pubsub(url: &str) -> u64 {
    let client = ::redis::Client::open(url).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap()
}
