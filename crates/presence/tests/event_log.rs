//! The durable event log through the store's API, on every backend:
//! reading from a position, snapshots, expiry, last seen, channel joins and
//! leaves. The same over gRPC is in `event_log_grpc.rs`; Redis failing
//! under it (the bus dropping, Redis restarted with its data or empty) in
//! `event_log_redis.rs`.

#[macro_use]
mod support;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::Duration,
};

use pulse_presence::{ConnectionRecord, EventLogOptions, MemberRecord, Presence, TailError};
use pulse_protocol::{EventKind, PresenceEvent, event::now_ms};
use support::{
    DEADLINE,
    event_log::{LIFECYCLE, next, now_position, per_user, read_until},
    record, register,
};
use tokio::time::timeout;

every_backend!(
    a_tail_from_a_position_gets_every_later_event_once,
    a_snapshot_then_its_position_make_the_truth_under_churn,
    an_expired_position_is_refused_with_how_many_were_lost,
    last_seen_is_when_the_last_connection_closed,
    channel_joins_and_leaves_are_on_the_log,
);

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
