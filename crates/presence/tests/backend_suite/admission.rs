//! Admission under the per-user limit, and blocks.

use super::*;

pub(super) async fn admission_counts_every_instance(presence: Presence) {
    let mut events = Events::new(&presence);
    let first = record("alice", "a1", "gw-1", 1);
    assert_eq!(
        presence.admit(&first, 2).await.unwrap(),
        Admission::Admitted {
            server_subscriptions: Vec::new()
        }
    );
    assert_eq!(
        presence
            .admit(&record("alice", "a2", "gw-2", 2), 2)
            .await
            .unwrap(),
        Admission::Admitted {
            server_subscriptions: Vec::new()
        }
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
        Admission::Admitted {
            server_subscriptions: Vec::new()
        }
    );
    // Another user, and no limit, are not affected.
    assert_eq!(
        presence
            .admit(&record("bob", "b1", "gw-3", 4), 2)
            .await
            .unwrap(),
        Admission::Admitted {
            server_subscriptions: Vec::new()
        }
    );
    assert_eq!(
        presence
            .admit(&record("alice", "a3", "gw-3", 3), 0)
            .await
            .unwrap(),
        Admission::Admitted {
            server_subscriptions: Vec::new()
        }
    );
    // An unconditional registration (a re-sync of an open socket) is never
    // refused; the count it leaves refuses the next admission.
    register(&presence, "alice", "a4", "gw-1", 5).await;
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
        Admission::Admitted {
            server_subscriptions: Vec::new()
        }
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

pub(super) async fn concurrent_admissions_admit_exactly_the_limit(presence: Presence) {
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
            Admission::Admitted { .. } => admitted += 1,
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

pub(super) async fn a_block_refuses_new_connections_until_it_ends(presence: Presence) {
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
        Admission::Admitted {
            server_subscriptions: Vec::new()
        }
    );
    assert_eq!(
        presence.admit(&open, 0).await.unwrap(),
        Admission::Admitted {
            server_subscriptions: Vec::new()
        }
    );
    register(&presence, "mallory", "m3", "gw-3", 4).await;
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
            Admission::Admitted { .. } => break,
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

pub(super) async fn bad_blocks_are_invalid(presence: Presence) {
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
        Admission::Admitted {
            server_subscriptions: Vec::new()
        }
    );
    presence
        .block("mallory", pulse_presence::MAX_BLOCK, "the longest")
        .await
        .unwrap();
}
