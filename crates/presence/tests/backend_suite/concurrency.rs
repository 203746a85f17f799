//! Concurrent changes: exactly one `online`/`offline` per transition.

use super::*;

pub(super) async fn concurrent_changes_keep_online_and_offline_exact(presence: Presence) {
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

pub(super) async fn concurrent_duplicates_count_once(presence: Presence) {
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
