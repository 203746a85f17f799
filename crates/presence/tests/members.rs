//! Channel membership on every backend: per-channel presence, `join` and
//! `leave` exactly once per user transition under concurrency, the
//! subscriber limit, the presence list's cap and the active channels; on
//! Redis and the Cluster also the reaper's cleanup after a kill -9 and the
//! re-sync that puts memberships back.

#[macro_use]
mod support;

use std::time::Duration;

use pulse_presence::{
    ChannelPresence, Entered, FeedEvent, Left, MemberRecord, Presence, PublishOptions,
    RedisOptions,
    testing::{RedisCluster, RedisServer, unique_namespace},
};
use pulse_protocol::{ChannelMember, ServerMessage};
use serde_json::json;
use support::{DEADLINE, bus_ready};
use tokio::{sync::mpsc::UnboundedReceiver, time::timeout};

every_backend!(
    presence_counts_users_and_connections_across_instances,
    join_and_leave_go_out_once_per_user_under_concurrency,
    a_full_channel_refuses_the_next_subscriber,
    above_the_cap_only_counts_are_listed_and_no_join_is_sent,
    an_unregistered_instance_leaves_its_channels,
    active_channels_are_listed_by_prefix,
    personal_channels_and_bad_names_are_not_memberships,
);

fn member(channel: &str, connection_id: &str, user_id: &str, cap: u32) -> MemberRecord {
    MemberRecord {
        channel: channel.into(),
        connection_id: connection_id.into(),
        user_id: user_id.into(),
        join_leave_cap: cap,
    }
}

fn users(list: &[(&str, u64)]) -> Option<Vec<ChannelMember>> {
    Some(
        list.iter()
            .map(|(user_id, connections)| ChannelMember {
                user_id: (*user_id).into(),
                connections: *connections,
            })
            .collect(),
    )
}

/// The frames a feed got until the marker publication on `channel`: what
/// arrived before it is everything that was sent before it.
async fn frames_until_marker(
    presence: &Presence,
    deliveries: &mut UnboundedReceiver<FeedEvent>,
    channel: &str,
) -> Vec<ServerMessage> {
    let marker = json!({"marker": uuid_like()});
    presence
        .publish(
            channel,
            &serde_json::value::to_raw_value(&marker).unwrap(),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    let mut frames = Vec::new();
    loop {
        let event = timeout(DEADLINE, deliveries.recv())
            .await
            .expect("the marker in time")
            .expect("the feed is open");
        let FeedEvent::Publication(delivery) = event else {
            continue;
        };
        let message: ServerMessage = serde_json::from_str(&delivery.frame).unwrap();
        if matches!(&message, ServerMessage::Publication { data, .. } if *data == marker) {
            return frames;
        }
        frames.push(message);
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("m{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn join(channel: &str, user_id: &str) -> ServerMessage {
    ServerMessage::Join {
        channel: channel.into(),
        user_id: user_id.into(),
    }
}

fn leave(channel: &str, user_id: &str) -> ServerMessage {
    ServerMessage::Leave {
        channel: channel.into(),
        user_id: user_id.into(),
    }
}

async fn presence_counts_users_and_connections_across_instances(presence: Presence) {
    let room = "room:1";
    assert_eq!(
        presence.channel_presence(room, 100).await.unwrap(),
        ChannelPresence {
            users: Some(Vec::new()),
            num_users: 0,
            num_connections: 0
        }
    );
    for (connection, user, instance) in [
        ("a1", "alice", "gw-1"),
        ("a2", "alice", "gw-2"),
        ("b1", "bob", "gw-2"),
    ] {
        presence
            .enter_channel(&member(room, connection, user, 0), instance, 0)
            .await
            .unwrap();
    }
    assert_eq!(
        presence
            .enter_channel(&member(room, "a1", "alice", 0), "gw-1", 0)
            .await
            .unwrap(),
        Entered::Already,
        "entering twice changes nothing"
    );
    assert_eq!(
        presence.channel_presence(room, 100).await.unwrap(),
        ChannelPresence {
            users: users(&[("alice", 2), ("bob", 1)]),
            num_users: 2,
            num_connections: 3
        }
    );
    assert_eq!(
        presence.leave_channel(room, "a1", "gw-2").await.unwrap(),
        Left::NotIn,
        "another instance's connection id is not this one's"
    );
    assert_eq!(
        presence.leave_channel(room, "a1", "gw-1").await.unwrap(),
        Left::Removed
    );
    assert_eq!(
        presence.leave_channel(room, "b1", "gw-2").await.unwrap(),
        Left::UserLeft
    );
    assert_eq!(
        presence.leave_channel(room, "b1", "gw-2").await.unwrap(),
        Left::NotIn
    );
    assert_eq!(
        presence.channel_presence(room, 100).await.unwrap(),
        ChannelPresence {
            users: users(&[("alice", 1)]),
            num_users: 1,
            num_connections: 1
        }
    );
}

/// The same user subscribes on many instances at once, then leaves on all
/// of them at once: one `join`, one `leave`, whatever the interleaving.
async fn join_and_leave_go_out_once_per_user_under_concurrency(presence: Presence) {
    let room = "room:busy";
    let (feed, mut deliveries) = presence.channel_feed();
    feed.subscribe(room).await.unwrap();
    let connections: Vec<(String, String)> = (0..16)
        .map(|n| (format!("c{n}"), format!("gw-{}", n % 4)))
        .collect();
    let entered =
        futures_util::future::join_all(connections.iter().map(|(connection, instance)| {
            let presence = presence.clone();
            async move {
                presence
                    .enter_channel(&member(room, connection, "alice", 100), instance, 0)
                    .await
                    .unwrap()
            }
        }))
        .await;
    assert_eq!(
        entered.iter().filter(|e| **e == Entered::Joined).count(),
        1,
        "{entered:?}"
    );
    assert_eq!(
        frames_until_marker(&presence, &mut deliveries, room).await,
        [join(room, "alice")]
    );
    let left = futures_util::future::join_all(connections.iter().map(|(connection, instance)| {
        let presence = presence.clone();
        async move {
            presence
                .leave_channel(room, connection, instance)
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(
        left.iter().filter(|l| **l == Left::UserLeft).count(),
        1,
        "{left:?}"
    );
    assert_eq!(
        frames_until_marker(&presence, &mut deliveries, room).await,
        [leave(room, "alice")]
    );
    // A namespace without join_leave (cap 0) sends neither.
    presence
        .enter_channel(&member(room, "q1", "quiet", 0), "gw-1", 0)
        .await
        .unwrap();
    presence.leave_channel(room, "q1", "gw-1").await.unwrap();
    assert_eq!(
        frames_until_marker(&presence, &mut deliveries, room).await,
        []
    );
}

async fn a_full_channel_refuses_the_next_subscriber(presence: Presence) {
    let room = "room:small";
    for (connection, instance) in [("c1", "gw-1"), ("c2", "gw-2")] {
        assert_ne!(
            presence
                .enter_channel(&member(room, connection, connection, 0), instance, 2)
                .await
                .unwrap(),
            Entered::Full { held: 2 }
        );
    }
    assert_eq!(
        presence
            .enter_channel(&member(room, "c3", "carol", 0), "gw-1", 2)
            .await
            .unwrap(),
        Entered::Full { held: 2 }
    );
    assert_eq!(
        presence
            .enter_channel(&member(room, "c1", "c1", 0), "gw-1", 2)
            .await
            .unwrap(),
        Entered::Already,
        "one already in is not refused"
    );
    presence.leave_channel(room, "c2", "gw-2").await.unwrap();
    assert_eq!(
        presence
            .enter_channel(&member(room, "c3", "carol", 0), "gw-1", 2)
            .await
            .unwrap(),
        Entered::Joined
    );
    let counted = presence.channel_presence(room, 10).await.unwrap();
    assert_eq!((counted.num_users, counted.num_connections), (2, 2));
}

async fn above_the_cap_only_counts_are_listed_and_no_join_is_sent(presence: Presence) {
    let room = "room:big";
    let (feed, mut deliveries) = presence.channel_feed();
    feed.subscribe(room).await.unwrap();
    for user in ["u1", "u2", "u3"] {
        presence
            .enter_channel(&member(room, user, user, 2), "gw-1", 0)
            .await
            .unwrap();
    }
    assert_eq!(
        frames_until_marker(&presence, &mut deliveries, room).await,
        [join(room, "u1"), join(room, "u2")],
        "the third user made three, past the cap of two"
    );
    assert_eq!(
        presence.channel_presence(room, 2).await.unwrap(),
        ChannelPresence {
            users: None,
            num_users: 3,
            num_connections: 3
        }
    );
    presence.leave_channel(room, "u3", "gw-1").await.unwrap();
    presence.leave_channel(room, "u2", "gw-1").await.unwrap();
    assert_eq!(
        frames_until_marker(&presence, &mut deliveries, room).await,
        [leave(room, "u2")],
        "u3 left a channel of three; u2 one of two"
    );
    assert_eq!(
        presence.channel_presence(room, 2).await.unwrap().users,
        users(&[("u1", 1)])
    );
}

async fn an_unregistered_instance_leaves_its_channels(presence: Presence) {
    let room = "room:2";
    let (feed, mut deliveries) = presence.channel_feed();
    feed.subscribe(room).await.unwrap();
    for (connection, user, instance) in [
        ("a1", "alice", "gw-1"),
        ("a2", "alice", "gw-2"),
        ("b1", "bob", "gw-1"),
        ("b2", "bob", "gw-1"),
    ] {
        presence
            .enter_channel(&member(room, connection, user, 100), instance, 0)
            .await
            .unwrap();
    }
    presence
        .enter_channel(&member("room:other", "b1", "bob", 100), "gw-1", 0)
        .await
        .unwrap();
    assert_eq!(
        frames_until_marker(&presence, &mut deliveries, room).await,
        [join(room, "alice"), join(room, "bob")]
    );
    presence.unregister_instance("gw-1").await.unwrap();
    assert_eq!(
        frames_until_marker(&presence, &mut deliveries, room).await,
        [leave(room, "bob")],
        "alice is still in on gw-2"
    );
    assert_eq!(
        presence.channel_presence(room, 10).await.unwrap().users,
        users(&[("alice", 1)])
    );
    assert_eq!(
        presence
            .channel_presence("room:other", 10)
            .await
            .unwrap()
            .num_connections,
        0
    );
}

async fn active_channels_are_listed_by_prefix(presence: Presence) {
    for (channel, connection) in [
        ("room:1", "c1"),
        ("room:1", "c2"),
        ("room:2", "c1"),
        ("order:9", "c1"),
        ("news", "c3"),
    ] {
        presence
            .enter_channel(&member(channel, connection, connection, 0), "gw-1", 0)
            .await
            .unwrap();
    }
    let (all, more) = presence.active_channels("", 100).await.unwrap();
    assert!(!more);
    assert_eq!(
        all,
        [
            ("news".to_owned(), 1),
            ("order:9".to_owned(), 1),
            ("room:1".to_owned(), 2),
            ("room:2".to_owned(), 1)
        ]
    );
    let (rooms, more) = presence.active_channels("room:", 1).await.unwrap();
    assert_eq!(rooms, [("room:1".to_owned(), 2)]);
    assert!(more, "room:2 matched too");
    presence
        .leave_channel("room:2", "c1", "gw-1")
        .await
        .unwrap();
    let (rooms, _) = presence.active_channels("room:", 100).await.unwrap();
    assert_eq!(
        rooms,
        [("room:1".to_owned(), 2)],
        "an empty channel is not active"
    );
}

async fn personal_channels_and_bad_names_are_not_memberships(presence: Presence) {
    for channel in ["#alice", "", "a b", &"x".repeat(10_000)] {
        assert!(
            matches!(
                presence
                    .enter_channel(&member(channel, "c1", "alice", 0), "gw-1", 0)
                    .await,
                Err(pulse_presence::PresenceError::InvalidArgument(_))
            ),
            "{channel:.20}"
        );
        assert!(presence.channel_presence(channel, 1).await.is_err());
    }
}

/// Redis only: the reaper takes a dead instance's memberships out with one
/// `leave` per user it was the last holder of, and an instance whose lease
/// was lost puts its memberships back with `sync_members`.
mod leases {
    use super::*;

    const TTL: Duration = Duration::from_millis(300);

    async fn store(options: RedisOptions) -> Presence {
        let mut options = options;
        options.lease_ttl = TTL;
        let presence = Presence::redis(options).unwrap();
        bus_ready(&presence).await;
        presence
    }

    async fn reap_and_sync(presence: Presence) {
        let room = "room:lease";
        let (feed, mut deliveries) = presence.channel_feed();
        feed.subscribe(room).await.unwrap();
        for (connection, user, instance) in [
            ("a1", "alice", "dead"),
            ("a2", "alice", "alive"),
            ("b1", "bob", "dead"),
            ("b2", "bob", "dead"),
        ] {
            presence
                .enter_channel(&member(room, connection, user, 100), instance, 0)
                .await
                .unwrap();
        }
        assert_eq!(
            frames_until_marker(&presence, &mut deliveries, room).await,
            [join(room, "alice"), join(room, "bob")]
        );
        // `alive` renews; `dead` was kill -9ed and does not.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            presence.renew_lease("alive").await.unwrap();
            let reaped = presence.reap_expired().await.unwrap();
            if reaped.iter().any(|(id, _)| id == "dead") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never reaped");
            tokio::time::sleep(TTL / 6).await;
        }
        assert_eq!(
            frames_until_marker(&presence, &mut deliveries, room).await,
            [leave(room, "bob")]
        );
        assert_eq!(
            presence.channel_presence(room, 10).await.unwrap().users,
            users(&[("alice", 1)])
        );
        // `dead` was only stalled: it comes back and puts back what it holds.
        let held = vec![
            member(room, "b1", "bob", 100),
            member(room, "a1", "alice", 100),
        ];
        let report = presence
            .sync_members("dead", || held.clone())
            .await
            .unwrap();
        assert_eq!((report.registered, report.removed), (2, 0));
        assert_eq!(
            frames_until_marker(&presence, &mut deliveries, room).await,
            [join(room, "bob")]
        );
        // b1 closed since: the next sync takes it out, and nothing else.
        let report = presence
            .sync_members("dead", || vec![member(room, "a1", "alice", 100)])
            .await
            .unwrap();
        assert_eq!((report.registered, report.removed), (0, 1));
        assert_eq!(
            presence.channel_presence(room, 10).await.unwrap(),
            ChannelPresence {
                users: users(&[("alice", 2)]),
                num_users: 1,
                num_connections: 2
            }
        );
        assert_eq!(
            frames_until_marker(&presence, &mut deliveries, room).await,
            [leave(room, "bob")]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_reaps_and_syncs_memberships() {
        let server = RedisServer::start().await;
        let options = RedisOptions::new(server.url()).with_namespace(unique_namespace());
        reap_and_sync(store(options).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn cluster_reaps_and_syncs_memberships() {
        let cluster = RedisCluster::start().await;
        reap_and_sync(store(cluster.options().with_namespace(unique_namespace())).await).await;
    }
}
