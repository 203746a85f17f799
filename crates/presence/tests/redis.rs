//! What only the Redis backend has: a server that can be down, a bus that
//! reconnects, a subscriber task that must not outlive the store.

mod support;

use std::time::{Duration, Instant};

use pulse_presence::{
    Presence, PresenceError, RedisOptions,
    testing::{RedisServer, free_port, unique_namespace},
};
use pulse_protocol::EventKind;
use support::{DEADLINE, Events, bus_ready, record, redis_presence, register, wait_epoch};
use tokio::{sync::broadcast::error::RecvError, time::timeout};

/// Redis down must mean a prompt `Unavailable`, never a hang.
const PROMPT: Duration = Duration::from_secs(5);

fn presence_at(url: &str) -> Presence {
    Presence::redis(RedisOptions::new(url).with_namespace(unique_namespace())).unwrap()
}

#[tokio::test]
async fn redis_down_is_unavailable_promptly() {
    let presence = presence_at(&format!("redis://127.0.0.1:{}", free_port()));

    let started = Instant::now();
    let result = presence.register(&record("alice", "c1", "gw-1", 1)).await;
    assert!(
        matches!(result, Err(PresenceError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());

    assert!(matches!(
        presence.ping().await,
        Err(PresenceError::Unavailable(_))
    ));
    assert!(matches!(
        presence.user("alice").await,
        Err(PresenceError::Unavailable(_))
    ));
    assert!(matches!(
        presence.count_online().await,
        Err(PresenceError::Unavailable(_))
    ));
    assert!(matches!(
        presence.admit(&record("alice", "c1", "gw-1", 1), 1).await,
        Err(PresenceError::Unavailable(_))
    ));
    assert_eq!(
        *presence.bus_epoch().borrow(),
        0,
        "the bus cannot have subscribed"
    );
}

#[tokio::test]
async fn a_store_started_before_redis_works_once_redis_is_up() {
    let port = free_port();
    let presence = presence_at(&format!("redis://127.0.0.1:{port}"));
    assert!(presence.ping().await.is_err());

    let _server = RedisServer::spawn_on(port).await;
    bus_ready(&presence).await;
    let mut events = Events::new(&presence);
    register(&presence, "alice", "c1", "gw-1", 1).await;
    assert_eq!(events.next().await.kind, EventKind::Connected);
    presence.ping().await.unwrap();
}

#[tokio::test]
async fn the_bus_resubscribes_and_bumps_its_epoch() {
    // A private server, because killing pub/sub clients would disturb other tests.
    let server = RedisServer::spawn().await;
    let presence = redis_presence(&server).await;
    let mut epochs = presence.bus_epoch();
    epochs.borrow_and_update();

    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let killed: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);

    timeout(DEADLINE, epochs.changed()).await.unwrap().unwrap();
    assert_eq!(*epochs.borrow(), 2);
    let mut events = Events::new(&presence);
    register(&presence, "alice", "c1", "gw-1", 1).await;
    assert_eq!(events.next().await.kind, EventKind::Connected);
}

#[tokio::test]
async fn the_bus_survives_a_redis_restart() {
    let first = RedisServer::spawn().await;
    let port = first.port().unwrap();
    let presence = redis_presence(&first).await;
    first.stop().await;

    // Commands fail while it is down, and work again once it is back.
    let down = presence.register(&record("alice", "c1", "gw-1", 1)).await;
    assert!(
        matches!(down, Err(PresenceError::Unavailable(_))),
        "{down:?}"
    );
    let _second = RedisServer::spawn_on(port).await;
    wait_epoch(&presence, 2).await;
    let mut events = Events::new(&presence);
    register(&presence, "alice", "c1", "gw-1", 1).await;
    assert_eq!(events.next().await.kind, EventKind::Connected);
}

#[tokio::test]
async fn undecodable_payloads_are_skipped() {
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence =
        Presence::redis(RedisOptions::new(server.url()).with_namespace(&namespace)).unwrap();
    bus_ready(&presence).await;
    let mut events = Events::new(&presence);

    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    for garbage in [
        "not json",
        r#"{"user_id":"alice"}"#,
        r#"{"kind":"exploded"}"#,
    ] {
        let _: u64 = redis::cmd("PUBLISH")
            .arg(format!("{namespace}:events"))
            .arg(garbage)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    register(&presence, "alice", "c1", "gw-1", 1).await;
    let event = events.next().await;
    assert_eq!(
        (event.user_id.as_str(), event.kind),
        ("alice", EventKind::Connected)
    );
}

#[tokio::test]
async fn the_bus_task_ends_with_the_last_clone() {
    let server = RedisServer::start().await;
    let presence = redis_presence(&server).await;
    let clone = presence.clone();
    let mut events = presence.subscribe();
    drop(presence);
    drop(clone);
    // The task holds a sender of this channel, so `Closed` means it is gone.
    let ended = timeout(DEADLINE, events.recv())
        .await
        .expect("the bus task ended");
    assert!(matches!(ended, Err(RecvError::Closed)), "{ended:?}");
}

#[tokio::test]
async fn two_stores_on_one_namespace_share_state_and_events() {
    // Two gateway instances: each sees the other's changes, in one order.
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let options = RedisOptions::new(server.url()).with_namespace(&namespace);
    let (one, two) = (
        Presence::redis(options.clone()).unwrap(),
        Presence::redis(options).unwrap(),
    );
    bus_ready(&one).await;
    bus_ready(&two).await;
    let (mut seen_by_one, mut seen_by_two) = (Events::new(&one), Events::new(&two));

    register(&one, "alice", "c1", "gw-1", 1).await;
    register(&two, "alice", "c2", "gw-2", 2).await;
    one.unregister("alice", "c2").await.unwrap();
    assert_eq!(
        two.user("alice").await.unwrap(),
        [record("alice", "c1", "gw-1", 1)]
    );
    let purged = two.unregister_instance("gw-1").await.unwrap();
    assert_eq!(purged, 1);

    let by_one = seen_by_one.settle(&one).await;
    let by_two = seen_by_two.settle(&two).await;
    assert_eq!(by_one.len(), 6);
    assert_eq!(by_one, by_two);
}

/// A store built without events (a gateway's) gets its commands and none of
/// the fleet's events: the bus does not subscribe to the events channel.
#[tokio::test]
async fn a_store_without_events_gets_commands_only() {
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let observer = Presence::redis(RedisOptions::new(server.url()).with_namespace(&namespace))
        .expect("valid options");
    let mut quiet_options = RedisOptions::new(server.url()).with_namespace(&namespace);
    quiet_options.subscribe_events = false;
    let quiet = Presence::redis(quiet_options).expect("valid options");
    let mut events = quiet.subscribe();
    let mut commands = quiet.listen_commands("gw-quiet");
    timeout(DEADLINE, quiet.commands_ready("gw-quiet"))
        .await
        .expect("the command channel is subscribed");

    for n in 0..10 {
        register(&observer, &format!("u{n}"), &format!("c{n}"), "gw-other", 1).await;
    }
    register(&observer, "alice", "a1", "gw-quiet", 1).await;
    // One Redis delivers what it published in order on the one subscriber
    // connection: once the command is here, any event would be too.
    assert_eq!(observer.disconnect("alice", None, "bye").await.unwrap(), 1);
    let command = timeout(DEADLINE, commands.recv())
        .await
        .expect("the command arrives")
        .expect("the listener is open");
    assert_eq!(command.user_id(), "alice");
    assert!(
        matches!(
            events.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ),
        "a store without events received one"
    );
}

/// Subscribers of `<namespace>:events` on `server`, as Redis counts them.
async fn event_subscribers(
    admin: &mut ::redis::aio::MultiplexedConnection,
    namespace: &str,
) -> u64 {
    let reply: (String, u64) = ::redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("{namespace}:events"))
        .query_async(admin)
        .await
        .unwrap();
    reply.1
}

/// With `events_on_demand` (what `pulse-presence` runs with), the bus holds
/// the events channel only while something here takes events: subscribed
/// when a consumer comes, its events delivered, let go
/// `EVENTS_IDLE_AFTER` after the last consumer went, and back (a new bus
/// epoch, so that a tail re-reads the logs) when another comes.
#[tokio::test]
async fn an_on_demand_bus_subscribes_while_events_are_taken() {
    let server = RedisServer::spawn().await;
    let namespace = unique_namespace();
    let presence = Presence::redis(RedisOptions {
        events_on_demand: true,
        ..RedisOptions::new(server.url()).with_namespace(namespace.clone())
    })
    .unwrap();
    let mut admin = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (polled, polled_namespace) = (admin.clone(), namespace.clone());
    let until = move |wanted: u64| {
        let mut admin = polled.clone();
        let namespace = polled_namespace.clone();
        async move {
            let deadline = Instant::now() + pulse_presence::EVENTS_IDLE_AFTER + DEADLINE;
            while event_subscribers(&mut admin, &namespace).await != wanted {
                assert!(
                    Instant::now() < deadline,
                    "the events channel never had {wanted} subscriber(s)"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let mut events = Events::new(&presence);
    wait_epoch(&presence, 1).await;
    assert_eq!(event_subscribers(&mut admin, &namespace).await, 1);
    register(&presence, "alice", "c1", "gw-1", 1).await;
    let event = events.next().await;
    assert_eq!(
        (event.kind, event.user_id.as_str()),
        (EventKind::Connected, "alice")
    );

    drop(events);
    until(0).await;
    assert_eq!(*presence.bus_epoch().borrow(), 1, "let go, not lost");

    let mut events = Events::new(&presence);
    wait_epoch(&presence, 2).await;
    register(&presence, "bob", "c2", "gw-1", 2).await;
    let event = events.next().await;
    assert_eq!(
        (event.kind, event.user_id.as_str()),
        (EventKind::Connected, "bob")
    );
}

/// A Redis that may evict keys when full (`maxmemory` set, a policy other
/// than `noeviction`) is named, with its policy, so that the binaries warn
/// at start: an evicted key is presence, history or an idempotency key lost
/// without a sign. Without a memory limit, or with `noeviction`, nothing.
#[tokio::test]
async fn a_redis_that_evicts_keys_is_named() {
    let server = RedisServer::spawn().await;
    let presence = presence_at(server.url());
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    for (maxmemory, policy, evicts) in [
        ("0", "noeviction", false),
        ("0", "allkeys-lru", false),
        ("100mb", "noeviction", false),
        ("100mb", "allkeys-lru", true),
        ("100mb", "volatile-ttl", true),
    ] {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(maxmemory)
            .arg("maxmemory-policy")
            .arg(policy)
            .query_async(&mut admin)
            .await
            .unwrap();
        let nodes = presence.evicting_nodes().await.unwrap();
        let expected = if evicts {
            vec![pulse_presence::EvictingNode {
                node: None,
                policy: policy.to_owned(),
            }]
        } else {
            Vec::new()
        };
        assert_eq!(nodes, expected, "maxmemory {maxmemory}, {policy}");
    }
}

/// A Redis that refuses `CONFIG` (as a managed one may) is not taken for
/// one that evicts, nor for one that is down.
#[tokio::test]
async fn a_redis_that_refuses_config_is_not_named() {
    let server = RedisServer::spawn().await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("100mb")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut admin)
        .await
        .unwrap();
    // A user who may do everything but CONFIG.
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">app-password")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-config")
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = server
        .url()
        .replace("redis://", "redis://app:app-password@");
    let presence = presence_at(&url);
    assert_eq!(presence.evicting_nodes().await.unwrap(), Vec::new());
    presence.ping().await.unwrap();
}
