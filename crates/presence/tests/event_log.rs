//! The durable event log: reading from a position, snapshots, expiry, last
//! seen, on every backend; and on Redis, a bus that drops, Redis restarted
//! with its data or empty; and the same over gRPC (`Watch` with `since`,
//! `Snapshot`, `GetUser`'s `last_seen`).

#[macro_use]
mod support;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    time::Duration,
};

use futures_util::StreamExt;
use pulse_presence::{
    ApiConfig, ConnectionRecord, EventLogOptions, EventTail, MemberRecord, Presence, RedisOptions,
    TailError, bucket_of,
    testing::{RedisServer, unique_namespace},
};
use pulse_protocol::{
    EventKind, PresenceEvent,
    event::{Position, now_ms},
    proto::presence::v1 as pb,
    status::reason_of,
};
use support::{DEADLINE, bus_ready, record, register, served::Served};
use tokio::time::timeout;
use tonic::Code;

every_backend!(
    a_tail_from_a_position_gets_every_later_event_once,
    a_snapshot_then_its_position_make_the_truth_under_churn,
    an_expired_position_is_refused_with_how_many_were_lost,
    last_seen_is_when_the_last_connection_closed,
    watch_resumes_from_a_position_over_grpc,
    channel_joins_and_leaves_are_on_the_log,
);

/// One connection's whole life, for its user's only connection.
const LIFECYCLE: [EventKind; 4] = [
    EventKind::Connected,
    EventKind::Online,
    EventKind::Disconnected,
    EventKind::Offline,
];

async fn next(tail: &mut EventTail) -> PresenceEvent {
    timeout(DEADLINE, tail.next())
        .await
        .expect("an event in time")
        .expect("the tail goes on")
}

/// Reads `tail` until its position has reached `end` in every bucket.
async fn read_until(tail: &mut EventTail, end: &Position) -> Vec<PresenceEvent> {
    let mut events = Vec::new();
    while end
        .iter()
        .any(|(bucket, point)| tail.position().get(bucket).is_none_or(|at| at < point))
    {
        events.push(next(tail).await);
    }
    events
}

/// Where every log ends now.
async fn now_position(presence: &Presence) -> Position {
    presence
        .tail_events(presence.log_buckets(), None)
        .await
        .unwrap()
        .position()
        .clone()
}

fn per_user(events: &[PresenceEvent]) -> BTreeMap<String, Vec<PresenceEvent>> {
    let mut users: BTreeMap<String, Vec<PresenceEvent>> = BTreeMap::new();
    for event in events {
        users
            .entry(event.user_id.clone())
            .or_default()
            .push(event.clone());
    }
    users
}

async fn a_tail_from_a_position_gets_every_later_event_once(presence: Presence) {
    let all = presence.log_buckets();
    let mut live = presence.tail_events(all.clone(), None).await.unwrap();
    for user in ["ann", "bob", "cat", "dan"] {
        register(&presence, user, "c1", "gw-1", 1).await;
    }
    presence.unregister("ann", "c1").await.unwrap();
    register(&presence, "bob", "c2", "gw-2", 2).await;

    let mut events = Vec::new();
    let mut after_two = None;
    while events.len() < 11 {
        events.push(next(&mut live).await);
        if events.len() == 2 {
            after_two = Some(live.position().clone());
        }
    }
    // Everything from the bus, in one log's order for each user.
    let kinds: Vec<_> = per_user(&events)["ann"].iter().map(|e| e.kind).collect();
    assert_eq!(kinds, LIFECYCLE);

    // The same events again from the log, after the second one, exactly once
    // and equal field for field (ids, times and the `prev` links too).
    let mut resumed = presence.tail_events(all, after_two).await.unwrap();
    let again = read_until(&mut resumed, live.position()).await;
    assert_eq!(per_user(&again), per_user(&events[2..]));
    let ids: HashSet<_> = again.iter().map(|event| event.id).collect();
    assert_eq!(ids.len(), again.len(), "no event twice");
}

/// Applies events to a snapshot, failing on any that does not follow from
/// the state (a doubled `connected`, an `online` of a user who was, ...).
fn apply(state: &mut HashMap<String, BTreeSet<String>>, event: &PresenceEvent) {
    let held = state.entry(event.user_id.clone()).or_default();
    match event.kind {
        EventKind::Connected => {
            assert!(
                held.insert(event.connection_id.clone()),
                "doubled: {event:?}"
            )
        }
        EventKind::Disconnected => {
            assert!(held.remove(&event.connection_id), "unknown: {event:?}")
        }
        EventKind::Online => assert_eq!(held.len(), 1, "{event:?}"),
        EventKind::Offline => assert!(held.is_empty(), "{event:?}"),
        EventKind::Join | EventKind::Leave => panic!("no channel in this test: {event:?}"),
    }
    if held.is_empty() {
        state.remove(&event.user_id);
    }
}

fn as_state(users: Vec<(String, Vec<ConnectionRecord>)>) -> HashMap<String, BTreeSet<String>> {
    users
        .into_iter()
        .filter(|(_, connections)| !connections.is_empty())
        .map(|(user, connections)| {
            let held = connections.into_iter().map(|c| c.connection_id).collect();
            (user, held)
        })
        .collect()
}

async fn a_snapshot_then_its_position_make_the_truth_under_churn(presence: Presence) {
    let users: Vec<String> = (0..24).map(|n| format!("churn-{n}")).collect();
    let churn = {
        let presence = presence.clone();
        let users = users.clone();
        tokio::spawn(async move {
            for round in 0..12u64 {
                for (n, user) in users.iter().enumerate() {
                    let connection = format!("c{}", (round + n as u64) % 3);
                    if presence
                        .user(user)
                        .await
                        .unwrap()
                        .iter()
                        .any(|c| c.connection_id == connection)
                    {
                        presence.unregister(user, &connection).await.unwrap();
                    } else {
                        presence
                            .register(&record(user, &connection, "gw-1", round + 1))
                            .await
                            .unwrap();
                    }
                }
                tokio::task::yield_now().await;
            }
        })
    };
    // Taken while the churn runs.
    tokio::task::yield_now().await;
    let (snapshot, position) = presence.snapshot().await.unwrap();
    churn.await.unwrap();

    let mut state = as_state(snapshot);
    let mut tail = presence
        .tail_events(presence.log_buckets(), Some(position))
        .await
        .unwrap();
    for event in read_until(&mut tail, &now_position(&presence).await).await {
        apply(&mut state, &event);
    }
    let truth = presence.users(&users).await.unwrap();
    let truth = as_state(users.iter().cloned().zip(truth).collect());
    assert_eq!(state, truth);
}

/// Another user whose events go to the same log as `user`'s.
fn same_log(presence: &Presence, user: &str) -> String {
    (0..)
        .map(|n| format!("neighbour-{n}"))
        .find(|other| presence.log_of(other) == presence.log_of(user))
        .unwrap()
}

async fn an_expired_position_is_refused_with_how_many_were_lost(presence: Presence) {
    presence.set_event_log_options(EventLogOptions {
        retention: Duration::from_millis(1),
        last_seen: EventLogOptions::DEFAULT_LAST_SEEN,
    });
    let log = BTreeSet::from([presence.log_of("old")]);
    let before = presence
        .tail_events(log.clone(), None)
        .await
        .unwrap()
        .position()
        .clone();
    register(&presence, "old", "c1", "gw-1", 1).await;
    // Older than the retention by the time the next events are written.
    tokio::time::sleep(Duration::from_millis(20)).await;
    register(&presence, &same_log(&presence, "old"), "c1", "gw-1", 2).await;
    presence.trim_event_log().await.unwrap();

    let mut tail = presence.tail_events(log, Some(before)).await.unwrap();
    match timeout(DEADLINE, tail.next())
        .await
        .expect("an answer in time")
    {
        // The old user's two; the trim may also have taken the neighbour's
        // `connected` (older than 1 ms by then), never its newest entry.
        Err(TailError::Expired { lost, .. }) => {
            assert!(matches!(lost, Some(2 | 3)), "{lost:?}");
        }
        other => panic!("{other:?}"),
    }
}

async fn last_seen_is_when_the_last_connection_closed(presence: Presence) {
    assert_eq!(presence.last_seen("never").await.unwrap(), None);
    register(&presence, "leaver", "c1", "gw-1", 1).await;
    register(&presence, "leaver", "c2", "gw-1", 2).await;
    presence.unregister("leaver", "c1").await.unwrap();
    assert_eq!(
        presence.last_seen("leaver").await.unwrap(),
        None,
        "still online"
    );
    let before = now_ms();
    presence.unregister("leaver", "c2").await.unwrap();
    let seen = presence.last_seen("leaver").await.unwrap().expect("seen");
    assert!((before..=now_ms()).contains(&seen), "{seen}");
}

/// `join` and `leave` of a channel with presence go on the log of the
/// channel's bucket (whatever the namespace's join/leave cap for
/// subscribers), with the channel; an instance's purge leaves too.
async fn channel_joins_and_leaves_are_on_the_log(presence: Presence) {
    let room = "room:lobby";
    let log = BTreeSet::from([presence.log_of(room)]);
    let mut tail = presence.tail_events(log.clone(), None).await.unwrap();
    let start = tail.position().clone();
    let member = |connection: &str, user: &str| MemberRecord {
        channel: room.to_owned(),
        connection_id: connection.to_owned(),
        user_id: user.to_owned(),
        join_leave_cap: 0,
    };
    presence
        .enter_channel(&member("a1", "amy"), "gw-1", 0)
        .await
        .unwrap();
    presence
        .enter_channel(&member("a2", "amy"), "gw-2", 0)
        .await
        .unwrap();
    presence
        .enter_channel(&member("b1", "ben"), "gw-1", 0)
        .await
        .unwrap();
    presence.leave_channel(room, "a1", "gw-1").await.unwrap();
    presence.unregister_instance("gw-2").await.unwrap();
    presence.leave_channel(room, "b1", "gw-1").await.unwrap();

    let expected = [
        (EventKind::Join, "amy", "a1", "gw-1"),
        (EventKind::Join, "ben", "b1", "gw-1"),
        (EventKind::Leave, "amy", "a2", "gw-2"),
        (EventKind::Leave, "ben", "b1", "gw-1"),
    ];
    let mut live = Vec::new();
    for _ in 0..expected.len() {
        live.push(next(&mut tail).await);
    }
    let shape =
        |events: &[PresenceEvent]| -> Vec<(EventKind, String, String, String, Option<String>)> {
            events
                .iter()
                .map(|e| {
                    (
                        e.kind,
                        e.user_id.clone(),
                        e.connection_id.clone(),
                        e.instance_id.clone(),
                        e.channel.clone(),
                    )
                })
                .collect()
        };
    let wanted: Vec<_> = expected
        .iter()
        .map(|(kind, user, connection, instance)| {
            (
                *kind,
                (*user).to_owned(),
                (*connection).to_owned(),
                (*instance).to_owned(),
                Some(room.to_owned()),
            )
        })
        .collect();
    assert_eq!(shape(&live), wanted);
    // The same from the log.
    let mut again = presence.tail_events(log, Some(start)).await.unwrap();
    let end = tail.position().clone();
    assert_eq!(shape(&read_until(&mut again, &end).await), wanted);
}

async fn watch_resumes_from_a_position_over_grpc(presence: Presence) {
    let served = Served::start(presence.clone(), ApiConfig::open()).await;
    let mut client = pb::presence_client::PresenceClient::new(served.channel());
    let watch = |since: &str| pb::WatchRequest {
        user_ids: vec!["gail".into()],
        all: false,
        since: since.to_owned(),
    };
    let mut first = client.watch(watch("")).await.unwrap().into_inner();
    register(&presence, "gail", "c1", "gw-1", 1).await;
    let connected = timeout(DEADLINE, first.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(connected.kind(), pb::EventKind::Connected);
    assert!(connected.id.starts_with('b'), "{connected:?}");
    drop(first);

    // Missed while no Watch was open.
    presence.unregister("gail", "c1").await.unwrap();
    let mut resumed = client
        .watch(watch(&connected.position))
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let event = timeout(DEADLINE, resumed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        kinds.push(event.kind());
    }
    assert_eq!(
        kinds,
        [
            pb::EventKind::Online,
            pb::EventKind::Disconnected,
            pb::EventKind::Offline
        ]
    );

    // GetUser of the offline user says when they left.
    let user = client
        .get_user(pb::GetUserRequest {
            user_id: "gail".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!user.online && user.last_seen.is_some(), "{user:?}");

    // A snapshot's position covers everyone.
    let mut chunks = client
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut position = String::new();
    while let Some(chunk) = timeout(DEADLINE, chunks.next()).await.unwrap() {
        position = chunk.unwrap().position;
    }
    assert!(position.starts_with("p1."), "{position:?}");
    register(&presence, "gail", "c2", "gw-1", 3).await;
    let mut after = client.watch(watch(&position)).await.unwrap().into_inner();
    let event = timeout(DEADLINE, after.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.kind(), event.connection_id.as_str()),
        (pb::EventKind::Connected, "c2")
    );

    // Garbage is refused with a reason; the socket of the API stays usable.
    let status = client.watch(watch("p1.***")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some("bad_position"));
    served.shutdown().await;
}

/// A gRPC Watch from a position whose events were trimmed ends with
/// `FAILED_PRECONDITION` + `position_expired`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_position_fails_the_watch_with_a_reason() {
    let presence = Presence::in_memory();
    presence.set_event_log_options(EventLogOptions {
        retention: Duration::from_millis(1),
        last_seen: EventLogOptions::DEFAULT_LAST_SEEN,
    });
    let served = Served::start(presence.clone(), ApiConfig::open()).await;
    let mut client = pb::presence_client::PresenceClient::new(served.channel());
    let watch = |since: String| pb::WatchRequest {
        user_ids: vec![],
        all: true,
        since,
    };
    let mut first = client
        .watch(watch(String::new()))
        .await
        .unwrap()
        .into_inner();
    register(&presence, "hal", "c1", "gw-1", 1).await;
    let event = timeout(DEADLINE, first.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(first);
    presence.unregister("hal", "c1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    register(&presence, "ida", "c1", "gw-1", 2).await;

    let mut resumed = client
        .watch(watch(event.position))
        .await
        .unwrap()
        .into_inner();
    let status = timeout(DEADLINE, resumed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some("position_expired"));
    served.shutdown().await;
}

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
