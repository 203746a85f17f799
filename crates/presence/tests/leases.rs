//! Instance leases, the reaper and re-synchronisation, against a real Redis.

mod support;

use std::time::Duration;

use pulse_presence::{
    Presence, RedisOptions, SyncReport,
    testing::{RedisServer, unique_namespace},
};
use pulse_protocol::EventKind::*;
use support::{Events, bus_ready, expect, record, summary};

const TTL: Duration = Duration::from_millis(300);

async fn store(server: &RedisServer, namespace: &str) -> Presence {
    let mut options = RedisOptions::new(server.url()).with_namespace(namespace);
    options.lease_ttl = TTL;
    let presence = Presence::redis(options).unwrap();
    bus_ready(&presence).await;
    presence
}

#[tokio::test]
async fn a_lease_is_new_then_held() {
    let server = RedisServer::start().await;
    let presence = store(&server, &unique_namespace()).await;
    assert!(
        !presence.renew_lease("gw-1").await.unwrap(),
        "a new lease was not held"
    );
    assert!(presence.renew_lease("gw-1").await.unwrap());
    assert!(presence.renew_lease("gw-1").await.unwrap());
}

/// An instance that stops renewing is reaped once, with its events published
/// once, even with three reapers racing; a live instance is left alone.
#[tokio::test]
async fn an_expired_instance_is_reaped_exactly_once() {
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = store(&server, &namespace).await;
    let mut events = Events::new(&presence);

    presence
        .register(&record("alice", "a1", "dead", 1))
        .await
        .unwrap();
    presence
        .register(&record("alice", "a2", "alive", 2))
        .await
        .unwrap();
    presence
        .register(&record("bob", "b1", "dead", 3))
        .await
        .unwrap();
    presence
        .register(&record("bob", "b2", "dead", 4))
        .await
        .unwrap();
    presence.renew_lease("alive").await.unwrap();
    assert_eq!(
        events.settle(&presence).await.len(),
        6,
        "4 connected, 2 online"
    );

    // Three replicas reap while `alive` keeps renewing and `dead` does not.
    let reapers: Vec<Presence> = vec![
        presence.clone(),
        store(&server, &namespace).await,
        store(&server, &namespace).await,
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut reaped = Vec::new();
    while !reaped
        .iter()
        .any(|(instance, _): &(String, u64)| instance == "dead")
    {
        assert!(tokio::time::Instant::now() < deadline, "never reaped");
        presence.renew_lease("alive").await.unwrap();
        let rounds = futures_util::future::join_all(reapers.iter().map(|r| r.reap_expired())).await;
        for round in rounds {
            reaped.extend(round.unwrap());
        }
        tokio::time::sleep(TTL / 6).await;
    }
    // Markers of the settle step register under their own instance; only
    // the dead gateway matters here.
    reaped.retain(|(instance, _)| instance != "marker");
    assert_eq!(
        reaped,
        [("dead".to_owned(), 3)],
        "reaped once, by one reaper"
    );

    let mut seen = summary(&events.settle(&presence).await);
    seen.sort();
    let mut wanted = expect(&[
        ("alice", Disconnected, "a1", "dead"),
        ("bob", Disconnected, "b1", "dead"),
        ("bob", Disconnected, "b2", "dead"),
        ("bob", Offline, "b1", "dead"),
    ]);
    wanted.sort();
    // bob's offline names whichever of his connections went last.
    let bob_offline = seen.iter().position(|e| e.1 == Offline).unwrap();
    seen[bob_offline].2 = "b1".to_owned();
    seen.sort();
    assert_eq!(seen, wanted);
    assert_eq!(
        presence.user("alice").await.unwrap(),
        [record("alice", "a2", "alive", 2)]
    );
    assert!(presence.user("bob").await.unwrap().is_empty());
    assert_eq!(presence.count_online().await.unwrap().connections, 1);
}

#[tokio::test]
async fn sync_makes_redis_hold_exactly_what_the_instance_has() {
    let server = RedisServer::start().await;
    let presence = store(&server, &unique_namespace()).await;
    let mut events = Events::new(&presence);
    // Redis thinks gw-1 holds c1 and c2; gw-1 really holds c2 and c3 (c1
    // closed and c3 opened while Redis was away).
    presence
        .register(&record("alice", "c1", "gw-1", 1))
        .await
        .unwrap();
    presence
        .register(&record("alice", "c2", "gw-1", 2))
        .await
        .unwrap();
    events.settle(&presence).await;

    let local = vec![
        record("alice", "c2", "gw-1", 2),
        record("carol", "c3", "gw-1", 3),
    ];
    let report = presence
        .sync_instance("gw-1", || local.clone())
        .await
        .unwrap();
    assert_eq!(
        report,
        SyncReport {
            registered: 1,
            removed: 1
        }
    );
    assert_eq!(
        summary(&events.settle(&presence).await),
        expect(&[
            ("alice", Disconnected, "c1", "gw-1"),
            ("carol", Connected, "c3", "gw-1"),
            ("carol", Online, "c3", "gw-1"),
        ])
    );
    let again = presence
        .sync_instance("gw-1", || local.clone())
        .await
        .unwrap();
    assert_eq!(again, SyncReport::default(), "idempotent");
}

#[tokio::test]
async fn graceful_deregistration_gives_up_the_lease() {
    let server = RedisServer::start().await;
    let presence = store(&server, &unique_namespace()).await;
    presence.renew_lease("gw-1").await.unwrap();
    presence
        .register(&record("alice", "c1", "gw-1", 1))
        .await
        .unwrap();
    assert_eq!(presence.unregister_instance("gw-1").await.unwrap(), 1);
    assert!(
        !presence.renew_lease("gw-1").await.unwrap(),
        "the lease went with it"
    );
}
