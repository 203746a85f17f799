//! Ids and timestamps: what round-trips, what is refused.

use super::*;
use pulse_protocol::event::{EventId, LogPoint};

pub(super) async fn at_ms_round_trips_exactly(presence: Presence) {
    let mut events = Events::new(&presence);
    // A 13-digit timestamp of today, 2^53 + 1 (the first integer a double
    // cannot hold) and the largest u64: none may be rounded on the way.
    for (index, at_ms) in [1_712_345_678_901, 9_007_199_254_740_993, u64::MAX]
        .into_iter()
        .enumerate()
    {
        let user = format!("user-{index}");
        let connection = record(&user, "c1", "gw-1", at_ms);
        presence.register(&connection).await.unwrap();
        assert_eq!(presence.user(&user).await.unwrap(), [connection]);
        let seen = events.settle(&presence).await;
        assert_eq!(
            seen.iter().map(|event| event.at_ms).collect::<Vec<_>>(),
            [at_ms, at_ms]
        );
    }

    let before = now_ms();
    presence.unregister("user-0", "c1").await.unwrap();
    let after = now_ms();
    for event in events.settle(&presence).await {
        assert!(
            (before..=after).contains(&event.at_ms),
            "{event:?} not in {before}..={after}"
        );
    }
}

pub(super) async fn odd_ids_round_trip(presence: Presence) {
    let mut events = Events::new(&presence);
    let user = "ünï\"cøde\\/{x}}\n\t😀 |";
    let connection = record(user, "c\"1|2", "gw/1 ✓|{i}", 1_712_345_678_901);
    presence.register(&connection).await.unwrap();
    assert_eq!(
        presence.user(user).await.unwrap(),
        std::slice::from_ref(&connection)
    );
    presence
        .unregister_instance(&connection.instance_id)
        .await
        .unwrap();

    let expected: Vec<PresenceEvent> = [Connected, Online, Disconnected, Offline]
        .into_iter()
        .map(|kind| PresenceEvent {
            user_id: user.to_owned(),
            kind,
            connection_id: connection.connection_id.clone(),
            instance_id: connection.instance_id.clone(),
            at_ms: 0,
            id: EventId::default(),
            prev: LogPoint::default(),
            channel: None,
        })
        .collect();
    let seen = events.settle(&presence).await;
    // One user's events are consecutive entries of one log.
    for pair in seen.windows(2) {
        assert_eq!(pair[1].prev, pair[0].id.point, "{seen:?}");
        assert!(pair[0].id.point.precedes(pair[1].id.point), "{seen:?}");
        assert_eq!(pair[1].id.bucket, pair[0].id.bucket);
    }
    let seen: Vec<_> = seen
        .into_iter()
        .map(|event| PresenceEvent {
            at_ms: 0,
            id: EventId::default(),
            prev: LogPoint::default(),
            ..event
        })
        .collect();
    assert_eq!(seen, expected);
}

pub(super) async fn empty_ids_are_invalid(presence: Presence) {
    let mut events = Events::new(&presence);
    let long = "x".repeat(pulse_presence::MAX_ID_LEN + 1);
    let results = [
        presence.register(&record("", "c1", "gw-1", 1)).await,
        presence.register(&record("alice", "", "gw-1", 1)).await,
        presence.register(&record("alice", "c1", "", 1)).await,
        presence.register(&record(&long, "c1", "gw-1", 1)).await,
        presence.unregister("", "c1").await,
        presence.unregister("alice", "").await,
        presence.unregister_instance("").await.map(drop),
        presence.user("").await.map(drop),
        presence
            .users(&["alice".to_owned(), String::new()])
            .await
            .map(drop),
    ];
    for result in results {
        assert!(
            matches!(result, Err(PresenceError::InvalidArgument(_))),
            "{result:?}"
        );
    }
    assert_eq!(events.settle(&presence).await, []);
}

pub(super) async fn user_ids_have_one_length_limit(presence: Presence) {
    use pulse_presence::MAX_USER_ID_BYTES;
    use serde_json::value::RawValue;

    let longest = "ü".repeat(MAX_USER_ID_BYTES / 2);
    assert_eq!(longest.len(), MAX_USER_ID_BYTES);
    let connection = record(&longest, "c1", "gw-1", 1);
    assert_eq!(
        presence.admit(&connection, 0).await.unwrap(),
        Admission::Admitted {
            server_subscriptions: Vec::new()
        }
    );
    assert_eq!(presence.user(&longest).await.unwrap(), [connection]);

    let over = format!("{longest}x");
    let data = || RawValue::from_string("1".to_owned()).unwrap();
    let results = [
        presence.register(&record(&over, "c2", "gw-1", 1)).await,
        presence
            .admit(&record(&over, "c2", "gw-1", 1), 0)
            .await
            .map(drop),
        presence.unregister(&over, "c2").await,
        presence.user(&over).await.map(drop),
        presence
            .users(&[longest.clone(), over.clone()])
            .await
            .map(drop),
        presence.send(&over, data()).await.map(drop),
        presence.disconnect(&over, None, "x").await.map(drop),
        presence
            .block(&over, Duration::from_secs(1), "x")
            .await
            .map(drop),
    ];
    for result in results {
        match result {
            Err(PresenceError::InvalidArgument(message)) => {
                assert!(message.contains("256"), "{message}")
            }
            other => panic!("a {}-byte user id was answered {other:?}", over.len()),
        }
    }
}
