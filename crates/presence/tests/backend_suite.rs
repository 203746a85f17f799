//! The behaviour every backend must share, written once and run against each:
//! `memory::<case>` on `Presence::in_memory()`, `redis::<case>` on Redis with
//! a fresh namespace, `cluster::<case>` on a three-master Redis Cluster with
//! a fresh namespace.

mod support;

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use pulse_presence::{Admission, ConnectionRecord, OnlineCount, Presence, PresenceError};
use pulse_protocol::{EventKind::*, PresenceEvent, event::now_ms};
use support::{Events, expect, record, replay, summary};

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

every_backend!(
    register_then_query,
    two_connections_one_user,
    register_twice_is_idempotent,
    unregister_unknown_is_a_no_op,
    users_keeps_order,
    unregister_instance_removes_only_that_instance,
    admission_counts_every_instance,
    concurrent_admissions_admit_exactly_the_limit,
    a_block_refuses_new_connections_until_it_ends,
    bad_blocks_are_invalid,
    concurrent_changes_keep_online_and_offline_exact,
    concurrent_duplicates_count_once,
    at_ms_round_trips_exactly,
    odd_ids_round_trip,
    empty_ids_are_invalid,
    user_ids_have_one_length_limit,
    commands_reach_the_listening_instance,
    a_full_command_queue_counts_only_what_it_takes,
);

async fn register_then_query(presence: Presence) {
    let mut events = Events::new(&presence);
    let alice = record("alice", "c1", "gw-1", 1_700_000_000_000);
    presence.register(&alice).await.unwrap();

    assert_eq!(presence.user("alice").await.unwrap(), [alice]);
    assert_eq!(presence.user("bob").await.unwrap(), []);
    assert_eq!(
        presence.count_online().await.unwrap(),
        OnlineCount {
            users: 1,
            connections: 1
        }
    );
    assert_eq!(
        summary(&events.settle(&presence).await),
        expect(&[
            ("alice", Connected, "c1", "gw-1"),
            ("alice", Online, "c1", "gw-1")
        ])
    );
}

async fn two_connections_one_user(presence: Presence) {
    let mut events = Events::new(&presence);
    let tab = record("alice", "c1", "gw-1", 1_700_000_000_000);
    let phone = record("alice", "c2", "gw-2", 1_700_000_000_001);
    presence.register(&tab).await.unwrap();
    presence.register(&phone).await.unwrap();
    assert_eq!(presence.user("alice").await.unwrap(), [tab, phone]);
    assert_eq!(
        presence.count_online().await.unwrap(),
        OnlineCount {
            users: 1,
            connections: 2
        }
    );

    presence.unregister("alice", "c1").await.unwrap();
    assert_eq!(presence.user("alice").await.unwrap().len(), 1);
    assert_eq!(
        presence.count_online().await.unwrap(),
        OnlineCount {
            users: 1,
            connections: 1
        }
    );
    presence.unregister("alice", "c2").await.unwrap();
    assert_eq!(presence.user("alice").await.unwrap(), []);
    assert_eq!(
        presence.count_online().await.unwrap(),
        OnlineCount::default()
    );

    assert_eq!(
        summary(&events.settle(&presence).await),
        expect(&[
            ("alice", Connected, "c1", "gw-1"),
            ("alice", Online, "c1", "gw-1"),
            ("alice", Connected, "c2", "gw-2"),
            ("alice", Disconnected, "c1", "gw-1"),
            ("alice", Disconnected, "c2", "gw-2"),
            ("alice", Offline, "c2", "gw-2"),
        ])
    );
}

async fn register_twice_is_idempotent(presence: Presence) {
    let mut events = Events::new(&presence);
    let first = record("alice", "c1", "gw-1", 1_700_000_000_000);
    presence.register(&first).await.unwrap();
    presence.register(&first).await.unwrap();
    // The same id again from elsewhere changes nothing either: first wins.
    presence
        .register(&record("alice", "c1", "gw-2", 1_800_000_000_000))
        .await
        .unwrap();

    assert_eq!(presence.user("alice").await.unwrap(), [first]);
    assert_eq!(
        presence.count_online().await.unwrap(),
        OnlineCount {
            users: 1,
            connections: 1
        }
    );
    // gw-2 never held c1, so purging it must not take c1 away.
    assert_eq!(presence.unregister_instance("gw-2").await.unwrap(), 0);
    assert_eq!(presence.user("alice").await.unwrap().len(), 1);
    assert_eq!(
        summary(&events.settle(&presence).await),
        expect(&[
            ("alice", Connected, "c1", "gw-1"),
            ("alice", Online, "c1", "gw-1")
        ])
    );
}

async fn unregister_unknown_is_a_no_op(presence: Presence) {
    let mut events = Events::new(&presence);
    presence
        .register(&record("alice", "c1", "gw-1", 1))
        .await
        .unwrap();
    events.settle(&presence).await;

    presence.unregister("alice", "nope").await.unwrap();
    presence.unregister("nobody", "c1").await.unwrap();
    presence.unregister("nobody", "nope").await.unwrap();
    assert_eq!(presence.unregister_instance("gw-unknown").await.unwrap(), 0);
    presence.unregister("alice", "c1").await.unwrap();
    presence.unregister("alice", "c1").await.unwrap();

    assert_eq!(
        summary(&events.settle(&presence).await),
        expect(&[
            ("alice", Disconnected, "c1", "gw-1"),
            ("alice", Offline, "c1", "gw-1")
        ])
    );
    assert_eq!(
        presence.count_online().await.unwrap(),
        OnlineCount::default()
    );
}

async fn users_keeps_order(presence: Presence) {
    let alice = record("alice", "a1", "gw-1", 10);
    let carol = [
        record("carol", "c2", "gw-1", 20),
        record("carol", "c1", "gw-2", 20),
    ];
    presence.register(&alice).await.unwrap();
    for connection in &carol {
        presence.register(connection).await.unwrap();
    }

    let asked: Vec<String> = ["carol", "bob", "alice", "bob"].map(String::from).into();
    let answer = presence.users(&asked).await.unwrap();
    // Carol's two connections opened at the same instant, so they sort by id.
    let carol_sorted = vec![carol[1].clone(), carol[0].clone()];
    assert_eq!(answer, [carol_sorted, vec![], vec![alice], vec![]]);
    assert_eq!(
        presence.users(&[]).await.unwrap(),
        Vec::<Vec<ConnectionRecord>>::new()
    );
}

async fn unregister_instance_removes_only_that_instance(presence: Presence) {
    let mut events = Events::new(&presence);
    presence
        .register(&record("alice", "a1", "gw-1", 1))
        .await
        .unwrap();
    presence
        .register(&record("alice", "a2", "gw-2", 2))
        .await
        .unwrap();
    presence
        .register(&record("bob", "b1", "gw-1", 3))
        .await
        .unwrap();
    presence
        .register(&record("carol", "c1", "gw-1", 4))
        .await
        .unwrap();
    presence.unregister("carol", "c1").await.unwrap();
    events.settle(&presence).await;

    assert_eq!(presence.unregister_instance("gw-1").await.unwrap(), 2);
    assert_eq!(
        presence.user("alice").await.unwrap(),
        [record("alice", "a2", "gw-2", 2)]
    );
    assert_eq!(presence.user("bob").await.unwrap(), []);
    assert_eq!(
        presence.count_online().await.unwrap(),
        OnlineCount {
            users: 1,
            connections: 1
        }
    );

    let mut seen = summary(&events.settle(&presence).await);
    // The purge walks its index in no particular order; each user's own
    // events must still come in order, which sorting by user keeps.
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        expect(&[
            ("alice", Disconnected, "a1", "gw-1"),
            ("bob", Disconnected, "b1", "gw-1"),
            ("bob", Offline, "b1", "gw-1"),
        ])
    );
    // A second purge (a restart under the same id, say) finds nothing left.
    assert_eq!(presence.unregister_instance("gw-1").await.unwrap(), 0);
    assert_eq!(presence.unregister_instance("gw-2").await.unwrap(), 1);
    assert_eq!(
        presence.count_online().await.unwrap(),
        OnlineCount::default()
    );
}

async fn admission_counts_every_instance(presence: Presence) {
    let mut events = Events::new(&presence);
    let first = record("alice", "a1", "gw-1", 1);
    assert_eq!(
        presence.admit(&first, 2).await.unwrap(),
        Admission::Admitted
    );
    assert_eq!(
        presence
            .admit(&record("alice", "a2", "gw-2", 2), 2)
            .await
            .unwrap(),
        Admission::Admitted
    );
    // The third, on any instance, is refused and changes nothing.
    assert_eq!(
        presence
            .admit(&record("alice", "a3", "gw-3", 3), 2)
            .await
            .unwrap(),
        Admission::TooMany { held: 2 }
    );
    // A connection the user already has is admitted again without a change.
    assert_eq!(
        presence.admit(&first, 2).await.unwrap(),
        Admission::Admitted
    );
    // Another user, and no limit, are not affected.
    assert_eq!(
        presence
            .admit(&record("bob", "b1", "gw-3", 4), 2)
            .await
            .unwrap(),
        Admission::Admitted
    );
    assert_eq!(
        presence
            .admit(&record("alice", "a3", "gw-3", 3), 0)
            .await
            .unwrap(),
        Admission::Admitted
    );
    // An unconditional registration (a re-sync of an open socket) is never
    // refused; the count it leaves refuses the next admission.
    presence
        .register(&record("alice", "a4", "gw-1", 5))
        .await
        .unwrap();
    assert_eq!(
        presence
            .admit(&record("alice", "a5", "gw-2", 6), 2)
            .await
            .unwrap(),
        Admission::TooMany { held: 4 }
    );
    // A place freed is a place taken again.
    for id in ["a1", "a2", "a3"] {
        presence.unregister("alice", id).await.unwrap();
    }
    assert_eq!(
        presence
            .admit(&record("alice", "a5", "gw-2", 6), 2)
            .await
            .unwrap(),
        Admission::Admitted
    );
    let user: Vec<_> = presence
        .user("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|connection| connection.connection_id)
        .collect();
    assert_eq!(user, ["a4", "a5"]);
    let seen = events.settle(&presence).await;
    let connected = seen.iter().filter(|event| event.kind == Connected).count();
    assert_eq!(connected, 6, "refusals publish nothing: {seen:?}");
}

async fn concurrent_admissions_admit_exactly_the_limit(presence: Presence) {
    const LIMIT: u64 = 7;
    let mut events = Events::new(&presence);
    let attempts: Vec<_> = (0..60)
        .map(|n| {
            let presence = presence.clone();
            let connection = record("mallory", &format!("m{n}"), &format!("gw-{}", n % 4), n);
            tokio::spawn(async move { presence.admit(&connection, LIMIT).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Admission::Admitted => admitted += 1,
            Admission::TooMany { held } => assert_eq!(held, LIMIT),
            blocked @ Admission::Blocked { .. } => panic!("{blocked:?}"),
        }
    }
    assert_eq!(admitted, LIMIT);
    assert_eq!(presence.user("mallory").await.unwrap().len() as u64, LIMIT);
    let seen = events.settle(&presence).await;
    assert_eq!(
        seen.iter().filter(|event| event.kind == Connected).count() as u64,
        LIMIT
    );
    assert_eq!(seen.iter().filter(|event| event.kind == Online).count(), 1);
}

async fn a_block_refuses_new_connections_until_it_ends(presence: Presence) {
    let mut events = Events::new(&presence);
    let open = record("mallory", "m1", "gw-1", 1);
    presence.register(&open).await.unwrap();
    presence
        .block("mallory", Duration::from_secs(60), "spamming")
        .await
        .unwrap();
    match presence
        .admit(&record("mallory", "m2", "gw-2", 2), 0)
        .await
        .unwrap()
    {
        Admission::Blocked { reason, remaining } => {
            assert_eq!(reason, "spamming");
            assert!(
                remaining > Duration::ZERO && remaining <= Duration::from_secs(60),
                "{remaining:?}"
            );
        }
        other => panic!("a blocked user was answered {other:?}"),
    }
    // The block is the user's alone; it closes nothing; a connection the
    // user already has is admitted again (idempotent); an unconditional
    // registration (a re-sync of an open socket) is not refused.
    assert_eq!(
        presence
            .admit(&record("bob", "b1", "gw-2", 3), 0)
            .await
            .unwrap(),
        Admission::Admitted
    );
    assert_eq!(presence.admit(&open, 0).await.unwrap(), Admission::Admitted);
    presence
        .register(&record("mallory", "m3", "gw-3", 4))
        .await
        .unwrap();
    assert_eq!(presence.user("mallory").await.unwrap().len(), 2);

    // A new block replaces the old one, and a block ends by itself.
    presence
        .block("mallory", Duration::from_millis(50), "cool down")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + support::DEADLINE;
    loop {
        match presence
            .admit(&record("mallory", "m4", "gw-2", 5), 0)
            .await
            .unwrap()
        {
            Admission::Admitted => break,
            Admission::Blocked { reason, .. } => assert_eq!(reason, "cool down"),
            other => panic!("{other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the block never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connected: Vec<_> = events
        .settle(&presence)
        .await
        .into_iter()
        .filter(|event| event.kind == Connected)
        .map(|event| event.connection_id)
        .collect();
    assert_eq!(
        connected,
        ["m1", "b1", "m3", "m4"],
        "refusals publish nothing"
    );
}

async fn bad_blocks_are_invalid(presence: Presence) {
    let day = Duration::from_secs(86_400);
    for (user, duration, reason) in [
        ("mallory", Duration::ZERO, "x"),
        (
            "mallory",
            pulse_presence::MAX_BLOCK + Duration::from_millis(1),
            "x",
        ),
        ("mallory", 365 * day, "x"),
        ("", day, "x"),
        (
            "mallory",
            day,
            &"r".repeat(pulse_presence::MAX_REASON_BYTES + 1),
        ),
    ] {
        assert!(
            matches!(
                presence.block(user, duration, reason).await,
                Err(PresenceError::InvalidArgument(_))
            ),
            "{user:?} {duration:?}"
        );
    }
    // Nothing was blocked.
    assert_eq!(
        presence
            .admit(&record("mallory", "m1", "gw-1", 1), 0)
            .await
            .unwrap(),
        Admission::Admitted
    );
    presence
        .block("mallory", pulse_presence::MAX_BLOCK, "the longest")
        .await
        .unwrap();
}

async fn concurrent_changes_keep_online_and_offline_exact(presence: Presence) {
    const TASKS: usize = 50;
    const ROUNDS: usize = 4;
    let users = ["u0", "u1", "u2"];
    let instances = ["i0", "i1", "i2"];
    let mut events = Events::new(&presence);

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let presence = presence.clone();
            let (user, instance) = (users[task % 3], instances[(task / 3) % 3]);
            tokio::spawn(async move {
                let mut kept = Vec::new();
                for round in 0..ROUNDS {
                    let connection_id = format!("t{task}-r{round}");
                    let connection = record(user, &connection_id, instance, now_ms());
                    presence.register(&connection).await.unwrap();
                    tokio::task::yield_now().await;
                    if (task + round) % 3 == 0 {
                        kept.push(connection);
                    } else {
                        presence.unregister(user, &connection_id).await.unwrap();
                    }
                }
                kept
            })
        })
        .collect();
    let mut kept: HashMap<String, BTreeSet<String>> = HashMap::new();
    for task in tasks {
        for connection in task.await.unwrap() {
            kept.entry(connection.user_id)
                .or_default()
                .insert(connection.connection_id);
        }
    }

    let seen = events.settle(&presence).await;
    let open = replay(&seen);
    let total: usize = kept.values().map(BTreeSet::len).sum();
    let count_of = |kind| seen.iter().filter(|event| event.kind == kind).count();
    assert_eq!(count_of(Connected), TASKS * ROUNDS);
    assert_eq!(count_of(Disconnected), TASKS * ROUNDS - total);
    for user in users {
        let expected = kept.get(user).cloned().unwrap_or_default();
        let actual: BTreeSet<_> = presence
            .user(user)
            .await
            .unwrap()
            .into_iter()
            .map(|connection| connection.connection_id)
            .collect();
        assert_eq!(actual, expected, "{user}'s connections");
        assert_eq!(
            open.get(user).copied().unwrap_or(0),
            expected.len() as i64,
            "{user}'s events"
        );

        let transitions: Vec<_> = seen
            .iter()
            .filter(|event| event.user_id == user && matches!(event.kind, Online | Offline))
            .map(|event| event.kind)
            .collect();
        assert!(!transitions.is_empty(), "{user} never came online");
        for (index, kind) in transitions.iter().enumerate() {
            assert_eq!(
                *kind,
                if index % 2 == 0 { Online } else { Offline },
                "{user}: {transitions:?}"
            );
        }
        assert_eq!(
            transitions.last() == Some(&Online),
            !expected.is_empty(),
            "{user}'s final state"
        );
    }
    let count = presence.count_online().await.unwrap();
    assert_eq!(count.connections, total as u64);
    assert_eq!(
        count.users,
        kept.values().filter(|set| !set.is_empty()).count() as u64
    );
}

async fn concurrent_duplicates_count_once(presence: Presence) {
    let mut events = Events::new(&presence);
    let connection = record("alice", "c1", "gw-1", 1);
    let registers: Vec<_> = (0..20)
        .map(|_| {
            let (presence, connection) = (presence.clone(), connection.clone());
            tokio::spawn(async move { presence.register(&connection).await.unwrap() })
        })
        .collect();
    for task in registers {
        task.await.unwrap();
    }
    let unregisters: Vec<_> = (0..20)
        .map(|_| {
            let presence = presence.clone();
            tokio::spawn(async move { presence.unregister("alice", "c1").await.unwrap() })
        })
        .collect();
    for task in unregisters {
        task.await.unwrap();
    }
    assert_eq!(
        summary(&events.settle(&presence).await),
        expect(&[
            ("alice", Connected, "c1", "gw-1"),
            ("alice", Online, "c1", "gw-1"),
            ("alice", Disconnected, "c1", "gw-1"),
            ("alice", Offline, "c1", "gw-1"),
        ])
    );
    assert_eq!(
        presence.count_online().await.unwrap(),
        OnlineCount::default()
    );
}

async fn at_ms_round_trips_exactly(presence: Presence) {
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

async fn odd_ids_round_trip(presence: Presence) {
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
        })
        .collect();
    let seen: Vec<_> = events
        .settle(&presence)
        .await
        .into_iter()
        .map(|event| PresenceEvent { at_ms: 0, ..event })
        .collect();
    assert_eq!(seen, expected);
}

async fn empty_ids_are_invalid(presence: Presence) {
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

async fn user_ids_have_one_length_limit(presence: Presence) {
    use pulse_presence::MAX_USER_ID_BYTES;
    use serde_json::value::RawValue;

    let longest = "ü".repeat(MAX_USER_ID_BYTES / 2);
    assert_eq!(longest.len(), MAX_USER_ID_BYTES);
    let connection = record(&longest, "c1", "gw-1", 1);
    assert_eq!(
        presence.admit(&connection, 0).await.unwrap(),
        Admission::Admitted
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

async fn commands_reach_the_listening_instance(presence: Presence) {
    use pulse_protocol::Command;
    use serde_json::value::RawValue;

    let mut commands = presence.listen_commands("gw-1");
    presence
        .register(&record("alice", "c1", "gw-1", 1))
        .await
        .unwrap();
    presence
        .register(&record("alice", "c2", "gw-1", 2))
        .await
        .unwrap();

    // With Redis the bus subscribes in the background; once it says it has,
    // a send reaches both connections at the first try.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        presence.commands_ready("gw-1"),
    )
    .await
    .expect("the command channel is subscribed");
    let data = RawValue::from_string(r#"{"n":18446744073709551615}"#.into()).unwrap();
    assert_eq!(presence.send("alice", data).await.unwrap(), 2);
    match commands.recv().await.unwrap() {
        Command::Send { user_id, data } => {
            assert_eq!(user_id, "alice");
            assert_eq!(data.get(), r#"{"n":18446744073709551615}"#);
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(
        presence
            .disconnect("alice", Some("c2"), "bye")
            .await
            .unwrap(),
        1
    );
    match commands.recv().await.unwrap() {
        Command::Disconnect {
            user_id,
            connection_id,
            reason,
        } => {
            assert_eq!(
                (user_id.as_str(), connection_id.as_deref(), reason.as_str()),
                ("alice", Some("c2"), "bye")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        presence
            .disconnect("alice", Some("nope"), "bye")
            .await
            .unwrap(),
        0
    );
    let one = RawValue::from_string("1".into()).unwrap();
    assert_eq!(
        presence.send("bob", one).await.unwrap(),
        0,
        "offline users get nothing"
    );
    assert!(commands.try_recv().is_err(), "nothing else was delivered");

    let too_big = RawValue::from_string(format!(
        "\"{}\"",
        "x".repeat(pulse_presence::MAX_DATA_BYTES)
    ))
    .unwrap();
    assert!(matches!(
        presence.send("alice", too_big).await,
        Err(PresenceError::InvalidArgument(_))
    ));
}

/// A gateway that does not keep up fills its command queue: what it cannot
/// take must be counted as not delivered, and what was counted must arrive.
async fn a_full_command_queue_counts_only_what_it_takes(presence: Presence) {
    use futures_util::future::join_all;
    use pulse_protocol::Command;
    use serde_json::value::RawValue;

    // Past the queue's capacity (16,384), with nobody reading.
    const SENT: u64 = 17_500;
    let mut commands = presence.listen_commands("gw-slow");
    presence
        .register(&record("alice", "c1", "gw-slow", 1))
        .await
        .unwrap();
    tokio::time::timeout(support::DEADLINE, presence.commands_ready("gw-slow"))
        .await
        .expect("the command channel is subscribed");
    let numbers: Vec<u64> = (0..SENT).collect();
    let mut counted = 0;
    for chunk in numbers.chunks(100) {
        let sends = chunk.iter().map(|n| {
            let data = RawValue::from_string(n.to_string()).unwrap();
            presence.send("alice", data)
        });
        for sent in join_all(sends).await {
            counted += sent.unwrap();
        }
    }
    assert!(counted < SENT, "a full queue cannot have taken all {SENT}");

    // Now the gateway reads; once this instance takes commands again, a
    // last one marks the end of what was sent.
    let reader = tokio::spawn(async move {
        let mut received = 0_u64;
        loop {
            match commands.recv().await.expect("the listener is open") {
                Command::Send { data, .. } if data.get() == "\"end\"" => return received,
                Command::Send { .. } => received += 1,
                other => panic!("{other:?}"),
            }
        }
    });
    tokio::time::timeout(support::DEADLINE, presence.commands_ready("gw-slow"))
        .await
        .expect("the instance takes commands again once its queue drains");
    // In memory the queue takes it as soon as the reader made room; a try
    // that finds no room is counted as not delivered, and is not.
    let deadline = tokio::time::Instant::now() + support::DEADLINE;
    loop {
        let end = RawValue::from_string("\"end\"".to_owned()).unwrap();
        if presence.send("alice", end).await.unwrap() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room for the marker"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let received = tokio::time::timeout(support::DEADLINE, reader)
        .await
        .expect("the marker arrives")
        .unwrap();
    assert_eq!(
        received, counted,
        "every command counted as delivered arrived, and only those"
    );
}
