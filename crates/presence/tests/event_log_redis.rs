//! The durable event log while Redis fails under it: a bus that drops
//! again and again, Redis restarted with its data, and Redis restarted
//! empty (the position expires, never a silent gap).

mod support;

use std::collections::{BTreeSet, HashSet};

use pulse_presence::{
    Presence, RedisOptions, TailError, bucket_of,
    testing::{RedisServer, unique_namespace},
};
use pulse_protocol::EventKind;
use support::{
    DEADLINE, bus_ready,
    event_log::{LIFECYCLE, next, now_position, per_user},
    record, register,
};
use tokio::time::timeout;

/// Events go on while the bus's Redis connection is killed again and again:
/// a tail hands out every one exactly once, in each user's order (what the
/// bus missed it reads from the logs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tail_loses_nothing_when_the_bus_drops() {
    let server = RedisServer::spawn().await;
    let presence = support::redis_presence(&server).await;
    let mut tail = presence
        .tail_events(presence.log_buckets(), None)
        .await
        .unwrap();
    let users: Vec<String> = (0..40).map(|n| format!("flap-{n}")).collect();
    let writer = {
        let presence = presence.clone();
        let users = users.clone();
        tokio::spawn(async move {
            for user in &users {
                let connection = record(user, "c1", "gw-1", 1);
                support::retry_unavailable(|| presence.register(&connection)).await;
                support::retry_unavailable(|| presence.unregister(user, "c1")).await;
            }
        })
    };
    let admin = ::redis::Client::open(server.url()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let mut events = Vec::new();
    while events.len() < users.len() * 4 {
        if events.len() % 37 == 5 {
            let _: ::redis::RedisResult<u64> = ::redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut admin)
                .await;
        }
        events.push(next(&mut tail).await);
    }
    writer.await.unwrap();
    // The bus did drop (and came back) while the events flowed.
    support::wait_epoch(&presence, 2).await;
    let ids: HashSet<_> = events.iter().map(|event| event.id).collect();
    assert_eq!(ids.len(), events.len(), "no event twice");
    for (user, events) in per_user(&events) {
        let kinds: Vec<_> = events.iter().map(|event| event.kind).collect();
        assert_eq!(kinds, LIFECYCLE, "{user}");
    }
}

/// Redis shut down with its data and started again: a position from before
/// resumes with exactly the events after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_position_survives_redis_restarted_with_its_data() {
    let mut server = RedisServer::spawn_persistent().await;
    let options = RedisOptions::new(server.url()).with_namespace(unique_namespace());
    let presence = Presence::redis(options).unwrap();
    bus_ready(&presence).await;
    register(&presence, "kim", "c1", "gw-1", 1).await;
    let position = now_position(&presence).await;
    server.shutdown_saving().await;
    server.restart().await;
    support::retry_unavailable(|| presence.unregister("kim", "c1")).await;

    let mut tail = presence
        .tail_events(presence.log_buckets(), Some(position))
        .await
        .unwrap();
    let kinds = [next(&mut tail).await.kind, next(&mut tail).await.kind];
    assert_eq!(kinds, [EventKind::Disconnected, EventKind::Offline]);
}

/// Redis restarted empty: a tail that was reading, and one that resumes
/// from a position taken before, are both told the position expired, even
/// after the new log has grown past the old one's length.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_lost_with_redis_expires_the_position_never_a_silent_gap() {
    let server = RedisServer::spawn().await;
    let port = server.port().unwrap();
    let options = RedisOptions::new(server.url()).with_namespace(unique_namespace());
    let presence = Presence::redis(options).unwrap();
    bus_ready(&presence).await;
    let log = BTreeSet::from([bucket_of("lee")]);
    let mut reading = presence.tail_events(log.clone(), None).await.unwrap();
    register(&presence, "lee", "c1", "gw-1", 1).await;
    next(&mut reading).await;
    next(&mut reading).await;
    let position = reading.position().clone();

    server.stop().await;
    let _empty = RedisServer::spawn_on(port).await;
    // More events than the old log had, in the same log.
    for n in 0..3 {
        let connection = record("lee", &format!("new-{n}"), "gw-1", 2);
        support::retry_unavailable(|| presence.register(&connection)).await;
    }
    match timeout(DEADLINE, reading.next())
        .await
        .expect("an answer in time")
    {
        Err(TailError::Expired { .. }) => {}
        other => panic!("a silent gap: {other:?}"),
    }
    let mut resumed = presence.tail_events(log, Some(position)).await.unwrap();
    match timeout(DEADLINE, resumed.next())
        .await
        .expect("an answer in time")
    {
        Err(TailError::Expired { .. }) => {}
        other => panic!("a silent gap: {other:?}"),
    }
}
