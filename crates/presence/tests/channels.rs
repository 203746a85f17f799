//! Channel publications on every backend: a feed gets exactly the channels it
//! subscribed to, one frame per publication, across processes, on one Redis
//! and on a Cluster; a feed whose Redis connection is killed subscribes again.

#[macro_use]
mod support;

use std::time::Duration;

use pulse_presence::{
    Delivery, FeedEvent, Presence, PresenceError, PublishOptions, RedisOptions, bucket_of,
    testing::{RedisServer, unique_namespace},
};
use serde_json::{Value, json, value::RawValue};
use support::DEADLINE;
use tokio::{sync::mpsc::UnboundedReceiver, time::timeout};

every_backend!(
    a_feed_gets_what_it_subscribed_to_and_nothing_else,
    every_process_with_subscribers_gets_one_delivery,
    channels_in_every_bucket_are_delivered,
    bad_publications_are_invalid,
    server_subscriptions_are_kept_per_user_within_a_limit,
    admission_answers_the_users_server_subscriptions,
);

fn data(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).unwrap()
}

/// Publishes `text` on `channel` until `instances` processes hold it (a
/// feed that is still subscribing or letting go counts, or not, for a while).
async fn publish_until_heard_by(
    presence: &Presence,
    channel: &str,
    text: &str,
    instances: u64,
    never: &str,
) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let published = presence
            .publish(channel, &data(&json!(text)), &PublishOptions::default())
            .await
            .unwrap();
        if published.instances == instances {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{never}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next(deliveries: &mut UnboundedReceiver<FeedEvent>) -> Delivery {
    support::next_publication(deliveries).await
}

/// Nothing more arrives: a marker publication on a channel the feed holds
/// comes next, so anything unwanted would have come before it.
async fn nothing_before_marker(
    presence: &Presence,
    deliveries: &mut UnboundedReceiver<FeedEvent>,
    marker: &str,
) {
    presence
        .publish(marker, &data(&json!("marker")), &PublishOptions::default())
        .await
        .unwrap();
    let delivery = next(deliveries).await;
    assert_eq!(
        &*delivery.channel, marker,
        "got {:?} before the marker",
        delivery.frame
    );
}

async fn a_feed_gets_what_it_subscribed_to_and_nothing_else(presence: Presence) {
    let (feed, mut deliveries) = presence.channel_feed();
    feed.subscribe("room:1").await.unwrap();
    feed.subscribe("marker").await.unwrap();

    let published = presence
        .publish(
            "room:1",
            &data(&json!({"n": 12345678901234567890u64, "s": "é\"x"})),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(published.instances, 1);
    let delivery = next(&mut deliveries).await;
    assert_eq!(&*delivery.channel, "room:1");
    assert_eq!(
        &*delivery.frame,
        r#"{"type":"publication","channel":"room:1","data":{"n":12345678901234567890,"s":"é\"x"}}"#
    );

    // Another channel, and one in the same bucket as room:1 in spirit: not subscribed.
    assert_eq!(
        presence
            .publish("room:2", &data(&json!(2)), &PublishOptions::default())
            .await
            .unwrap()
            .instances,
        0
    );
    nothing_before_marker(&presence, &mut deliveries, "marker").await;

    feed.unsubscribe("room:1");
    // Unsubscribing is asynchronous; once the marker came back after it,
    // the unsubscription was handled (one task, in order).
    nothing_before_marker(&presence, &mut deliveries, "marker").await;
    presence
        .publish("room:1", &data(&json!("late")), &PublishOptions::default())
        .await
        .unwrap();
    nothing_before_marker(&presence, &mut deliveries, "marker").await;
}

async fn every_process_with_subscribers_gets_one_delivery(presence: Presence) {
    let (first, mut first_deliveries) = presence.channel_feed();
    let (second, mut second_deliveries) = presence.channel_feed();
    let (_third, mut third_deliveries) = presence.channel_feed();
    for feed in [&first, &second] {
        feed.subscribe("news").await.unwrap();
    }
    let published = presence
        .publish("news", &data(&json!("hello")), &PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(published.instances, 2);
    for deliveries in [&mut first_deliveries, &mut second_deliveries] {
        let delivery = next(deliveries).await;
        assert_eq!(
            &*delivery.frame,
            r#"{"type":"publication","channel":"news","data":"hello"}"#
        );
    }
    assert!(third_deliveries.try_recv().is_err());
    drop(second);
    // A dropped feed stops receiving (its process is gone).
    publish_until_heard_by(
        &presence,
        "news",
        "again",
        1,
        "the dropped feed still counts",
    )
    .await;
}

async fn channels_in_every_bucket_are_delivered(presence: Presence) {
    let (feed, mut deliveries) = presence.channel_feed();
    // One channel per bucket: on a Cluster, buckets live on every master.
    let mut channels = vec![String::new(); usize::from(pulse_presence::BUCKETS)];
    let mut found = 0;
    for n in 0.. {
        let channel = format!("room:{n}");
        let bucket = usize::from(bucket_of(&channel));
        if channels[bucket].is_empty() {
            channels[bucket] = channel;
            found += 1;
            if found == channels.len() {
                break;
            }
        }
    }
    for channel in &channels {
        feed.subscribe(channel.as_str()).await.unwrap();
    }
    for channel in &channels {
        assert_eq!(
            presence
                .publish(channel, &data(&json!(channel)), &PublishOptions::default())
                .await
                .unwrap()
                .instances,
            1,
            "{channel}"
        );
    }
    let mut got: Vec<String> = Vec::new();
    for _ in &channels {
        got.push(next(&mut deliveries).await.channel.to_string());
    }
    got.sort();
    let mut want = channels.clone();
    want.sort();
    assert_eq!(got, want);
}

async fn bad_publications_are_invalid(presence: Presence) {
    for channel in ["", "a b", ":x", &"c".repeat(300)] {
        assert!(
            matches!(
                presence
                    .publish(channel, &data(&json!(1)), &PublishOptions::default())
                    .await,
                Err(PresenceError::InvalidArgument(_))
            ),
            "{channel:?}"
        );
    }
    let big = json!("x".repeat(pulse_presence::MAX_DATA_BYTES));
    assert!(matches!(
        presence
            .publish("room:1", &data(&big), &PublishOptions::default())
            .await,
        Err(PresenceError::InvalidArgument(_))
    ));
}

async fn server_subscriptions_are_kept_per_user_within_a_limit(presence: Presence) {
    assert_eq!(presence.subscribe_user("alice", "room:1").await.unwrap(), 0);
    assert_eq!(
        presence.subscribe_user("alice", "room:1").await.unwrap(),
        0,
        "twice is once"
    );
    presence.subscribe_user("alice", "room:2").await.unwrap();
    let mut held = presence.server_subscriptions("alice").await.unwrap();
    held.sort();
    assert_eq!(held, ["room:1", "room:2"]);
    assert!(
        presence
            .server_subscriptions("bob")
            .await
            .unwrap()
            .is_empty()
    );
    presence.unsubscribe_user("alice", "room:1").await.unwrap();
    assert_eq!(
        presence.server_subscriptions("alice").await.unwrap(),
        ["room:2"]
    );
    for n in 0..pulse_presence::MAX_SERVER_SUBSCRIPTIONS - 1 {
        presence
            .subscribe_user("alice", &format!("many:{n}"))
            .await
            .unwrap();
    }
    assert!(matches!(
        presence.subscribe_user("alice", "one:more").await,
        Err(PresenceError::InvalidArgument(_))
    ));
    // Already held: not one more.
    presence.subscribe_user("alice", "room:2").await.unwrap();
    for bad in ["#alice", "a b", ""] {
        assert!(
            matches!(
                presence.subscribe_user("alice", bad).await,
                Err(PresenceError::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
}

/// The fan-out's connection is killed by Redis (`CLIENT KILL TYPE pubsub`):
/// the feed subscribes again and publications flow again, without the
/// gateway doing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscription_comes_back() {
    let server = RedisServer::spawn().await;
    let presence = support::redis_presence(&server).await;
    let (feed, mut deliveries) = presence.channel_feed();
    feed.subscribe("room:1").await.unwrap();
    presence
        .publish("room:1", &data(&json!(0)), &PublishOptions::default())
        .await
        .unwrap();
    next(&mut deliveries).await;

    assert!(support::kill_pubsub(server.url()).await >= 1);

    // The feed says the subscription came back (publications made
    // meanwhile were not delivered: the gateway recovers them from history).
    // Publish until one arrives after that.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut n = 1;
    let mut resumed = false;
    loop {
        presence
            .publish("room:1", &data(&json!(n)), &PublishOptions::default())
            .await
            .unwrap();
        match timeout(Duration::from_millis(100), deliveries.recv()).await {
            Ok(Some(FeedEvent::Resumed(channel))) => {
                assert_eq!(&*channel, "room:1");
                resumed = true;
            }
            Ok(Some(FeedEvent::Publication(delivery))) if resumed => {
                assert!(delivery.frame.contains("\"data\":"), "{}", delivery.frame);
                break;
            }
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery after the kill"
        );
        n += 1;
    }
}

/// A channel's slot moves to another master while a feed holds it: the old
/// master drops the subscription (`sunsubscribe`), the feed subscribes on
/// the new one (learnt from `MOVED`), and publications flow again, in order;
/// so do they on another channel of the same bucket (the feed moves a
/// bucket's channels together).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_channel_follows_its_slot_to_another_master() {
    let cluster = pulse_presence::testing::RedisCluster::spawn().await;
    let presence = support::cluster_presence(&cluster).await;
    let (feed, mut deliveries) = presence.channel_feed();
    feed.subscribe("room:moving").await.unwrap();
    let neighbour = (0..)
        .map(|n| format!("room:near-{n}"))
        .find(|name| bucket_of(name) == bucket_of("room:moving"))
        .unwrap();
    feed.subscribe(neighbour.as_str()).await.unwrap();
    presence
        .publish(
            "room:moving",
            &data(&json!("before")),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    assert!(next(&mut deliveries).await.frame.contains("before"));

    let tag = format!("{{b{}}}", bucket_of("room:moving"));
    let (from, to) = cluster.move_slot_of(&tag).await;
    assert_ne!(from, to);

    // Publish until one arrives (those sent while the feed moved are not
    // delivered live: without history, at most once), then every later one
    // arrives, in order.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut n = 0;
    loop {
        presence
            .publish("room:moving", &data(&json!(n)), &PublishOptions::default())
            .await
            .unwrap();
        // A publication, not the news that the subscription is back (which
        // comes first, and publications may still be on their way then).
        if let Ok(Some(FeedEvent::Publication(_))) =
            timeout(Duration::from_millis(100), deliveries.recv()).await
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery after the slot moved"
        );
        n += 1;
    }
    // Those still on their way come before a marker published now.
    presence
        .publish(
            "room:moving",
            &data(&json!("marker")),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    while !next(&mut deliveries).await.frame.contains("\"marker\"") {}
    for n in 0..20 {
        let published = presence
            .publish(
                "room:moving",
                &data(&json!({"after": n})),
                &PublishOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(published.instances, 1, "the feed listens on the new master");
    }
    for n in 0..20 {
        let delivery = next(&mut deliveries).await;
        assert!(
            delivery.frame.contains(&format!("{{\"after\":{n}}}")),
            "{}",
            delivery.frame
        );
    }
    publish_until_heard_by(
        &presence,
        &neighbour,
        "near",
        1,
        "the bucket's other channel was not subscribed on the new master",
    )
    .await;
    let delivery = next(&mut deliveries).await;
    assert_eq!(&*delivery.channel, neighbour.as_str());
    assert!(delivery.frame.contains("\"near\""), "{}", delivery.frame);
}

/// A new connection learns its user's server-side subscriptions from its
/// admission (the same atomic step that registers it), not from a second
/// read on every connect.
async fn admission_answers_the_users_server_subscriptions(presence: Presence) {
    let record = |user_id: &str, connection_id: &str| pulse_presence::ConnectionRecord {
        connection_id: connection_id.into(),
        user_id: user_id.into(),
        instance_id: "gw-1".into(),
        connected_at_ms: 1,
    };
    let admitted = |channels: &[&str]| pulse_presence::Admission::Admitted {
        server_subscriptions: channels.iter().map(|c| (*c).to_owned()).collect(),
    };
    assert_eq!(
        presence.admit(&record("alice", "c1"), 0).await.unwrap(),
        admitted(&[])
    );
    presence.subscribe_user("alice", "room:1").await.unwrap();
    assert_eq!(
        presence.admit(&record("alice", "c2"), 0).await.unwrap(),
        admitted(&["room:1"])
    );
    assert_eq!(
        presence.admit(&record("alice", "c2"), 0).await.unwrap(),
        admitted(&["room:1"]),
        "an admission that changes nothing answers the same"
    );
    assert_eq!(
        presence.admit(&record("bob", "c3"), 0).await.unwrap(),
        admitted(&[])
    );
}

/// The fan-out's own connections log in as the URL says (`HELLO 3 AUTH`):
/// an ACL user gets its publications, and a wrong password is an
/// unavailable feed whose error does not carry the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_logs_in_with_the_user_and_password_of_the_url() {
    let server = RedisServer::spawn().await;
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    ::redis::cmd("ACL")
        .arg(&["SETUSER", "fan", "on", ">s3cret-pass", "~*", "&*", "+@all"][..])
        .exec_async(&mut admin)
        .await
        .unwrap();
    let port = server.port().unwrap();
    let url = format!("redis://fan:s3cret-pass@127.0.0.1:{port}");
    let options = RedisOptions::new(&url).with_namespace(unique_namespace());
    let presence = Presence::redis(options).unwrap();
    let (feed, mut deliveries) = presence.channel_feed();
    feed.subscribe("room:acl").await.unwrap();
    presence
        .publish("room:acl", &data(&json!("hi")), &PublishOptions::default())
        .await
        .unwrap();
    assert!(next(&mut deliveries).await.frame.contains("\"hi\""));
    let clients: String = ::redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    let fanout = clients
        .lines()
        .find(|line| line.contains("name=pulse-fanout"))
        .unwrap_or_else(|| panic!("no fan-out connection in {clients}"));
    assert!(fanout.contains(" user=fan "), "{fanout}");

    let url = format!("redis://fan:not-the-pass@127.0.0.1:{port}");
    let options = RedisOptions::new(&url).with_namespace(unique_namespace());
    let presence = Presence::redis(options).unwrap();
    let (feed, _deliveries) = presence.channel_feed();
    match feed.subscribe("room:acl").await {
        Err(PresenceError::Unavailable(message)) => {
            assert!(!message.contains("not-the-pass"), "{message}");
            assert!(message.contains("WRONGPASS"), "{message}");
        }
        other => panic!("a wrong password subscribes nothing: {other:?}"),
    }
}
