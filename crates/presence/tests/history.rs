//! Channel history on every backend: offsets from 1 in publish order, the
//! frame the script builds equal to the one Rust builds, recovery (all the
//! missed, in order; or `recovered: false` for another epoch, a trimmed
//! stream, a position past the end), idempotent publication, History
//! pages, and a Redis restarted empty giving a new epoch; on Redis, the
//! history list checked against its offsets, one an earlier version left,
//! and what a trimmed one holds.

#[macro_use]
mod support;

use std::time::Duration;

use pulse_presence::{
    DeliveryPosition, HistoryOptions, HistoryQuery, Presence, PresenceError, PublishOptions,
    RedisOptions,
    testing::{RedisServer, unique_namespace},
};
use pulse_protocol::{StreamPosition, channel::publication_frame};
use serde_json::{Value, json, value::RawValue};

every_backend!(
    offsets_count_from_one_and_every_frame_carries_its_own,
    a_recovery_returns_exactly_what_was_missed,
    a_recovery_that_cannot_be_filled_says_so,
    a_position_past_the_end_starts_a_new_epoch,
    an_idempotency_key_publishes_once,
    history_pages_through_what_is_kept,
    a_personal_history_makes_send_a_publication_with_an_offset,
);

const HISTORY: HistoryOptions = HistoryOptions {
    size: 5,
    ttl: Duration::from_secs(60),
};

fn with_history() -> PublishOptions<'static> {
    PublishOptions {
        history: Some(HISTORY),
        ..PublishOptions::default()
    }
}

fn data(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).unwrap()
}

async fn publish(presence: &Presence, channel: &str, n: u64) -> (u64, String) {
    let published = presence
        .publish(channel, &data(&json!({ "n": n })), &with_history())
        .await
        .unwrap();
    (published.offset.unwrap(), published.epoch.unwrap())
}

fn numbers(entries: &[pulse_protocol::history::HistoryEntry]) -> Vec<(u64, u64)> {
    entries
        .iter()
        .map(|entry| {
            let value: Value = serde_json::from_str(entry.data.get()).unwrap();
            (entry.offset, value["n"].as_u64().unwrap())
        })
        .collect()
}

async fn offsets_count_from_one_and_every_frame_carries_its_own(presence: Presence) {
    let (feed, mut deliveries) = presence.channel_feed();
    feed.subscribe("room:h").await.unwrap();
    let top = presence.stream_top("room:h").await.unwrap();
    assert_eq!(top.offset, 0, "no publication yet");
    let payload = r#"{"n":12345678901234567890,"s":"é\"x"}"#;
    for expected in 1..=3 {
        let published = presence
            .publish(
                "room:h",
                &RawValue::from_string(payload.into()).unwrap(),
                &with_history(),
            )
            .await
            .unwrap();
        assert_eq!(published.offset, Some(expected));
        assert_eq!(
            published.epoch.as_deref(),
            Some(top.epoch.as_str()),
            "the epoch the first read made"
        );
        assert_eq!(published.instances, 1);
        let delivery = support::next_publication(&mut deliveries).await;
        assert_eq!(
            delivery.position,
            Some(DeliveryPosition {
                offset: expected,
                epoch: top.epoch.as_str().into()
            })
        );
        assert_eq!(
            *delivery.frame,
            publication_frame(
                "room:h",
                Some(expected),
                &RawValue::from_string(payload.into()).unwrap()
            ),
            "the script builds the frame Rust builds"
        );
    }
    // A namespace without history: no offset.
    let plain = presence
        .publish("room:h", &data(&json!(0)), &PublishOptions::default())
        .await
        .unwrap();
    assert_eq!((plain.offset, plain.epoch), (None, None));
    assert_eq!(
        support::next_publication(&mut deliveries).await.position,
        None
    );
}

async fn a_recovery_returns_exactly_what_was_missed(presence: Presence) {
    let mut epoch = String::new();
    for n in 1..=4 {
        epoch = publish(&presence, "room:r", n).await.1;
    }
    let since = StreamPosition {
        offset: 1,
        epoch: epoch.clone(),
    };
    let read = presence
        .read_stream("room:r", HISTORY, Some(&since))
        .await
        .unwrap();
    assert_eq!(read.top.offset, 4);
    let recovery = read.recovery.unwrap();
    assert!(recovery.recovered);
    assert_eq!(numbers(&recovery.publications), [(2, 2), (3, 3), (4, 4)]);

    // Nothing missed: recovered, nothing to replay.
    let at_top = StreamPosition { offset: 4, epoch };
    let recovery = presence
        .read_stream("room:r", HISTORY, Some(&at_top))
        .await
        .unwrap()
        .recovery
        .unwrap();
    assert!(recovery.recovered);
    assert!(recovery.publications.is_empty());

    // Without a since: the position only.
    let read = presence.read_stream("room:r", HISTORY, None).await.unwrap();
    assert_eq!((read.top.offset, read.recovery), (4, None));
}

async fn a_recovery_that_cannot_be_filled_says_so(presence: Presence) {
    let mut epoch = String::new();
    for n in 1..=8 {
        epoch = publish(&presence, "room:t", n).await.1;
    }
    // Five are kept (4 to 8): from offset 2 on, 3 is gone.
    let trimmed = StreamPosition {
        offset: 2,
        epoch: epoch.clone(),
    };
    let recovery = presence
        .read_stream("room:t", HISTORY, Some(&trimmed))
        .await
        .unwrap()
        .recovery
        .unwrap();
    assert!(!recovery.recovered, "trimmed past the position");
    assert!(recovery.publications.is_empty());
    // From 3 on, every one is there.
    let kept = StreamPosition {
        offset: 3,
        epoch: epoch.clone(),
    };
    let recovery = presence
        .read_stream("room:t", HISTORY, Some(&kept))
        .await
        .unwrap()
        .recovery
        .unwrap();
    assert!(recovery.recovered);
    assert_eq!(recovery.publications.len(), 5);

    let other = StreamPosition {
        offset: 8,
        epoch: "another".into(),
    };
    let read = presence
        .read_stream("room:t", HISTORY, Some(&other))
        .await
        .unwrap();
    assert!(!read.recovery.unwrap().recovered, "another epoch");
    assert_eq!(read.top.epoch, epoch, "which does not change this one");
}

async fn a_position_past_the_end_starts_a_new_epoch(presence: Presence) {
    let (_, epoch) = publish(&presence, "room:p", 1).await;
    // A client saw offset 5 of this epoch, which holds 1: writes were lost.
    let ahead = StreamPosition {
        offset: 5,
        epoch: epoch.clone(),
    };
    let read = presence
        .read_stream("room:p", HISTORY, Some(&ahead))
        .await
        .unwrap();
    assert!(!read.recovery.unwrap().recovered);
    assert_ne!(read.top.epoch, epoch, "this history is not the one it saw");
    let (offset, new_epoch) = publish(&presence, "room:p", 2).await;
    assert_eq!(new_epoch, read.top.epoch);
    assert_eq!(offset, 2, "offsets go on");
    // Recovering inside the new epoch works.
    let since = StreamPosition {
        offset: 1,
        epoch: new_epoch,
    };
    let recovery = presence
        .read_stream("room:p", HISTORY, Some(&since))
        .await
        .unwrap()
        .recovery
        .unwrap();
    assert!(recovery.recovered);
    assert_eq!(numbers(&recovery.publications), [(2, 2)]);
}

async fn an_idempotency_key_publishes_once(presence: Presence) {
    let (feed, mut deliveries) = presence.channel_feed();
    feed.subscribe("room:i").await.unwrap();
    feed.subscribe("plain").await.unwrap();
    let keyed = |key| PublishOptions {
        history: Some(HISTORY),
        idempotency_key: Some(key),
        idempotency_window: Duration::from_secs(60),
    };
    let first = presence
        .publish("room:i", &data(&json!("paid")), &keyed("order-42"))
        .await
        .unwrap();
    let again = presence
        .publish("room:i", &data(&json!("paid")), &keyed("order-42"))
        .await
        .unwrap();
    assert_eq!(first, again, "the first call's answer");
    assert_eq!(first.offset, Some(1));
    let other = presence
        .publish("room:i", &data(&json!("shipped")), &keyed("order-43"))
        .await
        .unwrap();
    assert_eq!(other.offset, Some(2));
    // Without history, once as well.
    let once = PublishOptions {
        history: None,
        idempotency_key: Some("k"),
        idempotency_window: Duration::from_secs(60),
    };
    for _ in 0..2 {
        presence
            .publish("plain", &data(&json!("x")), &once)
            .await
            .unwrap();
    }
    presence
        .publish("plain", &data(&json!("marker")), &PublishOptions::default())
        .await
        .unwrap();
    let mut got = Vec::new();
    loop {
        let delivery = support::next_publication(&mut deliveries).await;
        let frame: Value = serde_json::from_str(&delivery.frame).unwrap();
        if frame["data"] == json!("marker") {
            break;
        }
        got.push((frame["channel"].clone(), frame["data"].clone()));
    }
    assert_eq!(
        got,
        [
            (json!("room:i"), json!("paid")),
            (json!("room:i"), json!("shipped")),
            (json!("plain"), json!("x")),
        ],
        "one publication per key"
    );
    let bad = PublishOptions {
        idempotency_key: Some(""),
        ..PublishOptions::default()
    };
    assert!(matches!(
        presence.publish("plain", &data(&json!(1)), &bad).await,
        Err(PresenceError::InvalidArgument(_))
    ));
}

async fn history_pages_through_what_is_kept(presence: Presence) {
    for n in 1..=7 {
        publish(&presence, "room:pages", n).await;
    }
    let page = |query: HistoryQuery| {
        let presence = presence.clone();
        async move { presence.history("room:pages", &query).await.unwrap() }
    };
    let first = page(HistoryQuery::after(0, 2)).await;
    assert_eq!(first.top.offset, 7);
    assert_eq!(numbers(&first.publications), [(3, 3), (4, 4)], "five kept");
    let next = page(HistoryQuery::after(4, 10)).await;
    assert_eq!(numbers(&next.publications), [(5, 5), (6, 6), (7, 7)]);
    let end = page(HistoryQuery::after(7, 10)).await;
    assert!(end.publications.is_empty());
    assert!(matches!(
        presence
            .history("room:pages", &HistoryQuery::after(0, 0))
            .await,
        Err(PresenceError::InvalidArgument(_))
    ));

    // The newest first, and on back.
    let last = page(HistoryQuery::newest(None, 2)).await;
    assert_eq!(numbers(&last.publications), [(7, 7), (6, 6)]);
    let older = page(HistoryQuery::newest(Some(6), 2)).await;
    assert_eq!(numbers(&older.publications), [(5, 5), (4, 4)]);
    let oldest = page(HistoryQuery::newest(Some(4), 2)).await;
    assert_eq!(numbers(&oldest.publications), [(3, 3)], "1 and 2 are gone");
    let none = page(HistoryQuery::newest(Some(3), 2)).await;
    assert!(none.publications.is_empty());
    let all = page(HistoryQuery::newest(None, 100)).await;
    assert_eq!(all.publications.len(), 5);

    // A range: above 3 and below 7, from either end.
    let range = HistoryQuery {
        after: 3,
        before: Some(7),
        limit: 2,
        newest_first: false,
    };
    assert_eq!(numbers(&page(range).await.publications), [(4, 4), (5, 5)]);
    let range = HistoryQuery {
        newest_first: true,
        ..range
    };
    assert_eq!(numbers(&page(range).await.publications), [(6, 6), (5, 5)]);
    let empty = HistoryQuery {
        after: 5,
        before: Some(6),
        ..range
    };
    assert!(page(empty).await.publications.is_empty());
}

async fn a_personal_history_makes_send_a_publication_with_an_offset(presence: Presence) {
    presence.set_personal_history(HISTORY);
    support::register(&presence, "alice", "c1", "gw-1", 1).await;
    support::register(&presence, "alice", "c2", "gw-2", 2).await;
    let (feed, mut deliveries) = presence.channel_feed();
    feed.subscribe("#alice").await.unwrap();
    let sent = presence
        .send("alice", data(&json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(sent, 2, "Send still counts the user's connections");
    let delivery = support::next_publication(&mut deliveries).await;
    assert_eq!(delivery.position.as_ref().map(|p| p.offset), Some(1));
    assert_eq!(
        *delivery.frame,
        publication_frame("#alice", Some(1), &data(&json!({"n": 1})))
    );
    let published = presence
        .publish(
            "#alice",
            &data(&json!({"n": 2})),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!((published.instances, published.offset), (2, Some(2)));
    let since = StreamPosition {
        offset: 0,
        epoch: published.epoch.unwrap(),
    };
    let recovery = presence
        .read_stream("#alice", HISTORY, Some(&since))
        .await
        .unwrap()
        .recovery
        .unwrap();
    assert!(recovery.recovered);
    assert_eq!(numbers(&recovery.publications), [(1, 1), (2, 2)]);
    // Nobody's connections: kept all the same, for their next connection.
    assert_eq!(
        presence.send("bob", data(&json!({"n": 1}))).await.unwrap(),
        0
    );
    assert_eq!(presence.stream_top("#bob").await.unwrap().offset, 1);
}

/// Redis restarted without its data: the channel's history is gone, and a
/// client coming back with its old position is told (`recovered: false`,
/// a new epoch), never given a silent gap.
#[tokio::test]
async fn a_redis_restarted_empty_gives_a_new_epoch() {
    let mut server = RedisServer::spawn_persistent().await;
    let presence =
        Presence::redis(RedisOptions::new(server.url()).with_namespace(unique_namespace()))
            .unwrap();
    let mut position = None;
    for n in 1..=3 {
        position = Some(publish(&presence, "room:e", n).await);
    }
    let (offset, epoch) = position.unwrap();
    let mut admin = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = ::redis::cmd("FLUSHALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    server.shutdown_saving().await;
    server.restart().await;

    let since = StreamPosition {
        offset,
        epoch: epoch.clone(),
    };
    let read =
        support::retry_unavailable(|| presence.read_stream("room:e", HISTORY, Some(&since))).await;
    assert!(!read.recovery.unwrap().recovered);
    assert_ne!(read.top.epoch, epoch, "a new epoch");
    assert_eq!(read.top.offset, 0);
    let (offset, new_epoch) = publish(&presence, "room:e", 4).await;
    assert_eq!((offset, new_epoch), (1, read.top.epoch));
}

/// The recovery from `since`.
async fn recover(
    presence: &Presence,
    channel: &str,
    history: HistoryOptions,
    since: &StreamPosition,
) -> pulse_protocol::history::Recovery {
    let read = presence
        .read_stream(channel, history, Some(since))
        .await
        .unwrap();
    read.recovery.unwrap()
}

async fn redis_with_history() -> (
    RedisServer,
    Presence,
    String,
    ::redis::aio::MultiplexedConnection,
) {
    let server = RedisServer::spawn().await;
    let namespace = unique_namespace();
    let presence =
        Presence::redis(RedisOptions::new(server.url()).with_namespace(namespace.clone())).unwrap();
    let admin = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (server, presence, namespace, admin)
}

fn channel_key(namespace: &str, kind: &str, channel: &str) -> String {
    format!(
        "{namespace}:{{b{}}}:{kind}:{channel}",
        pulse_presence::channel_bucket(channel)
    )
}

/// The history list holds its offsets one after another up to the last
/// one; one that does not (an offset taken without its entry, as a version
/// that kept history elsewhere would leave during a rolling upgrade) is
/// never read as if it did: a recovery across the hole says
/// `recovered: false`, and a page holds only what is there, each under its
/// own offset.
#[tokio::test]
async fn a_history_missing_an_offset_is_not_recovered_across_it() {
    let (_server, presence, namespace, mut admin) = redis_with_history().await;
    for n in 1..=4 {
        publish(&presence, "room:hole", n).await;
    }
    let _: i64 = ::redis::cmd("HINCRBY")
        .arg(channel_key(&namespace, "meta", "room:hole"))
        .arg("o")
        .arg(1)
        .query_async(&mut admin)
        .await
        .unwrap();
    let (offset, epoch) = publish(&presence, "room:hole", 6).await;
    assert_eq!(offset, 6);

    let since = |offset| StreamPosition {
        offset,
        epoch: epoch.clone(),
    };
    for position in [3, 4] {
        let recovery = recover(&presence, "room:hole", HISTORY, &since(position)).await;
        assert!(!recovery.recovered, "5 is missing, from {position}");
        assert!(recovery.publications.is_empty());
    }
    // After the hole, what is there is whole.
    let recovery = recover(&presence, "room:hole", HISTORY, &since(5)).await;
    assert!(recovery.recovered);
    assert_eq!(numbers(&recovery.publications), [(6, 6)]);

    let page = presence
        .history("room:hole", &HistoryQuery::after(3, 10))
        .await
        .unwrap();
    assert_eq!(numbers(&page.publications), [(4, 4), (6, 6)]);
    let newest = presence
        .history("room:hole", &HistoryQuery::newest(None, 2))
        .await
        .unwrap();
    assert_eq!(
        numbers(&newest.publications),
        [(6, 6), (4, 4)],
        "5 is not kept"
    );
    let page = presence
        .history("room:hole", &HistoryQuery::after(0, 10))
        .await
        .unwrap();
    assert_eq!(
        numbers(&page.publications),
        [(1, 1), (2, 2), (3, 3), (4, 4), (6, 6)]
    );
}

/// A channel whose history an earlier version kept (a stream under
/// `hist:`, the epoch and last offset in `meta`): the epoch goes on, what
/// the stream held is not read (a recovery from before its last offset says
/// `recovered: false`; one from it recovers nothing missed), and the next
/// publication takes the next offset.
#[tokio::test]
async fn a_history_kept_by_an_earlier_version_is_told_as_lost() {
    let (_server, presence, namespace, mut admin) = redis_with_history().await;
    let () = ::redis::cmd("HSET")
        .arg(channel_key(&namespace, "meta", "room:old"))
        .arg("e")
        .arg("oldepoch")
        .arg("o")
        .arg(3)
        .query_async(&mut admin)
        .await
        .map(|_: i64| ())
        .unwrap();
    for n in 1..=3 {
        let _: String = ::redis::cmd("XADD")
            .arg(channel_key(&namespace, "hist", "room:old"))
            .arg(format!("{n}-0"))
            .arg("d")
            .arg(json!({ "n": n }).to_string())
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    let since = |offset| StreamPosition {
        offset,
        epoch: "oldepoch".into(),
    };
    let behind = presence
        .read_stream("room:old", HISTORY, Some(&since(1)))
        .await
        .unwrap();
    assert!(!behind.recovery.unwrap().recovered);
    assert_eq!(behind.top, since(3));
    let current = recover(&presence, "room:old", HISTORY, &since(3)).await;
    assert!(current.recovered && current.publications.is_empty());
    assert_eq!(
        publish(&presence, "room:old", 4).await,
        (4, "oldepoch".to_owned())
    );
    let recovery = recover(&presence, "room:old", HISTORY, &since(3)).await;
    assert!(recovery.recovered);
    assert_eq!(numbers(&recovery.publications), [(4, 4)]);
}

/// What a trimmed history holds in Redis: the publications it keeps, not
/// the ones trimmed. A stream trimmed one entry at a time kept trimmed
/// entries in its nodes and rounded a 4 KiB node up per three 1 KiB
/// entries: about 380 B per kept publication beyond its data, where this
/// layout takes about 160 at Redis's default list node (BENCHMARKS.md,
/// "Redis memory per stored publication"). The bound leaves room for the
/// allocator's rounding of a node, not for a trimmed entry.
#[tokio::test]
async fn a_trimmed_history_holds_what_it_keeps() {
    let (_server, presence, namespace, mut admin) = redis_with_history().await;
    let kept = HistoryOptions {
        size: 100,
        ttl: Duration::from_secs(60),
    };
    let options = PublishOptions {
        history: Some(kept),
        ..PublishOptions::default()
    };
    let padding = "x".repeat(1000);
    let payload = |n: u64| data(&json!({ "n": n, "p": padding }));
    let data_bytes = payload(0).get().len() as f64;
    for n in 1..=250 {
        presence
            .publish("room:big", &payload(n), &options)
            .await
            .unwrap();
    }
    let key = channel_key(&namespace, "history", "room:big");
    let (len, usage): (u64, u64) = ::redis::pipe()
        .cmd("LLEN")
        .arg(&key)
        .cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(len, 100);
    let beyond = usage as f64 / len as f64 - data_bytes;
    assert!(
        beyond < 200.0,
        "{beyond:.0} B per kept publication beyond its {data_bytes} B of data"
    );
    let recovery = recover(
        &presence,
        "room:big",
        kept,
        &StreamPosition {
            offset: 150,
            epoch: presence.stream_top("room:big").await.unwrap().epoch,
        },
    )
    .await;
    assert!(recovery.recovered);
    assert_eq!(recovery.publications.len(), 100);
    assert_eq!(recovery.publications[0].offset, 151);
}
