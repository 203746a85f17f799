//! Registering, querying and removing connections, and their events.

use super::*;

pub(super) async fn register_then_query(presence: Presence) {
    let mut events = Events::new(&presence);
    let alice = record("alice", "c1", "gw-1", 1_700_000_000_000);
    presence.register(&alice).await.unwrap();

    assert_eq!(presence.user("alice").await.unwrap(), [alice]);
    assert_eq!(presence.user("bob").await.unwrap(), []);
    assert_eq!(counts(&presence).await, (1, 1));
    assert_eq!(
        summary(&events.settle(&presence).await),
        expect(&[
            ("alice", Connected, "c1", "gw-1"),
            ("alice", Online, "c1", "gw-1")
        ])
    );
}

pub(super) async fn two_connections_one_user(presence: Presence) {
    let mut events = Events::new(&presence);
    let tab = record("alice", "c1", "gw-1", 1_700_000_000_000);
    let phone = record("alice", "c2", "gw-2", 1_700_000_000_001);
    presence.register(&tab).await.unwrap();
    presence.register(&phone).await.unwrap();
    assert_eq!(presence.user("alice").await.unwrap(), [tab, phone]);
    assert_eq!(counts(&presence).await, (1, 2));

    presence.unregister("alice", "c1").await.unwrap();
    assert_eq!(presence.user("alice").await.unwrap().len(), 1);
    assert_eq!(counts(&presence).await, (1, 1));
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

pub(super) async fn register_twice_is_idempotent(presence: Presence) {
    let mut events = Events::new(&presence);
    let first = record("alice", "c1", "gw-1", 1_700_000_000_000);
    presence.register(&first).await.unwrap();
    presence.register(&first).await.unwrap();
    // The same id again from elsewhere changes nothing either: first wins.
    register(&presence, "alice", "c1", "gw-2", 1_800_000_000_000).await;

    assert_eq!(presence.user("alice").await.unwrap(), [first]);
    assert_eq!(counts(&presence).await, (1, 1));
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

pub(super) async fn unregister_unknown_is_a_no_op(presence: Presence) {
    let mut events = Events::new(&presence);
    register(&presence, "alice", "c1", "gw-1", 1).await;
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

pub(super) async fn users_keeps_order(presence: Presence) {
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

pub(super) async fn unregister_instance_removes_only_that_instance(presence: Presence) {
    let mut events = Events::new(&presence);
    register(&presence, "alice", "a1", "gw-1", 1).await;
    register(&presence, "alice", "a2", "gw-2", 2).await;
    register(&presence, "bob", "b1", "gw-1", 3).await;
    register(&presence, "carol", "c1", "gw-1", 4).await;
    presence.unregister("carol", "c1").await.unwrap();
    events.settle(&presence).await;

    assert_eq!(presence.unregister_instance("gw-1").await.unwrap(), 2);
    assert_eq!(
        presence.user("alice").await.unwrap(),
        [record("alice", "a2", "gw-2", 2)]
    );
    assert_eq!(presence.user("bob").await.unwrap(), []);
    assert_eq!(counts(&presence).await, (1, 1));

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
