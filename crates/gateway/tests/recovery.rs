//! Recovery on `/ws` with real WebSocket clients, for a namespace with
//! history: `subscribe` with `since` replays what was missed and goes on
//! live with no gap and no doubling at the seam (publications keep coming
//! while clients reconnect to either of two gateways), on channels and on
//! the personal channel. Recovery while Redis fails under the gateway is in
//! `recovery_outage.rs`; the helpers both use in `support/recovery.rs`.

mod support;

use std::time::Duration;

use pulse_presence::{
    Presence,
    testing::{RedisServer, unique_namespace},
};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::support::{
    recovery::{
        HISTORY, Reader, history_settings, personal_history_settings, redis_presence, with_history,
    },
    *,
};

fn publisher(presence: Presence, count: u64, pause: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        for n in 1..=count {
            presence
                .publish("feed:1", &data(&json!({ "n": n })), &with_history())
                .await
                .unwrap();
            tokio::time::sleep(pause).await;
        }
    })
}

#[tokio::test]
async fn a_subscribe_with_since_replays_what_was_missed_then_goes_on_live() {
    let gateway = Gateway::start(history_settings("gw-1")).await;
    let mut client = live(&gateway, &token("alice")).await;
    let mut reader = Reader::default();
    reader.subscribe(&mut client, 1).await;
    assert_eq!(reader.offset, 0, "a new channel");
    let publish = |n: u64| {
        let presence = gateway.presence.clone();
        async move {
            presence
                .publish("feed:1", &data(&json!({ "n": n })), &with_history())
                .await
                .unwrap()
        }
    };
    for n in 1..=3 {
        assert_eq!(publish(n).await.offset, Some(n));
    }
    reader.read_until(&mut client, 3).await;
    drop(client);

    for n in 4..=6 {
        publish(n).await;
    }
    let mut client = live(&gateway, &token("alice")).await;
    reader.subscribe(&mut client, 2).await;
    assert_eq!(reader.numbers, [1, 2, 3, 4, 5, 6], "replayed in order");
    publish(7).await;
    reader.read_until(&mut client, 7).await;

    // A client's own publish gets its offset.
    let answer = support::request(
        &mut client,
        json!({"type": "publish", "id": 9, "channel": "feed:1", "data": {"n": 8}}),
    )
    .await;
    assert_eq!(answer, json!({"type": "published", "id": 9, "offset": 8}));
    reader.read_until(&mut client, 8).await;

    // Another epoch: not recovered, and told the current one.
    let answer = support::request(
        &mut client,
        json!({"type": "subscribe", "id": 10, "channel": "feed:2", "since": {"offset": 3, "epoch": "gone"}}),
    )
    .await;
    assert_eq!(answer["recovered"], json!(false), "{answer}");
    assert_eq!(answer["publications"], json!([]));
    assert!(answer["epoch"].as_str().is_some_and(|e| e != "gone"));
    gateway.stop().await;
}

/// Publications keep coming while a client drops its connection and
/// subscribes again with `since` on the other gateway, over and over: it
/// ends with every number once, in order (the seam between the replay and
/// the live stream neither loses nor doubles one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_seam_holds_while_publications_keep_coming() {
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = || redis_presence(&server, &namespace);
    let gateways = [
        Gateway::start_with(history_settings("gw-1"), presence()).await,
        Gateway::start_with(history_settings("gw-2"), presence()).await,
    ];
    let total = 400;
    let mut reader = Reader::default();
    let mut client = live(&gateways[0], &token("alice")).await;
    reader.subscribe(&mut client, 1).await;
    let publishing = publisher(presence(), total, Duration::from_millis(2));
    let mut round = 0;
    while reader.numbers.len() < total as usize {
        let target = (reader.numbers.len() + 25).min(total as usize);
        reader.read_until(&mut client, target).await;
        drop(client);
        round += 1;
        client = live(&gateways[round % 2], &token("alice")).await;
        reader.subscribe(&mut client, 1).await;
    }
    publishing.await.unwrap();
    assert_eq!(reader.numbers, (1..=total).collect::<Vec<_>>());
    assert!(round >= 10, "it moved {round} times");
    for gateway in gateways {
        gateway.stop().await;
    }
}

/// With `[personal] history_size`, what `Send` publishes to a user while
/// they are away is recovered by a `subscribe` to their personal channel
/// with `since`, from `connected`'s position, on another gateway; and
/// publications keep arriving live, once, around the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_made_while_the_user_was_away_is_recovered() {
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = || redis_presence(&server, &namespace);
    let one = Gateway::start_with(personal_history_settings("gw-1"), presence()).await;
    let two = Gateway::start_with(personal_history_settings("gw-2"), presence()).await;
    let api = presence();
    api.set_personal_history(HISTORY);

    let mut client = one.connect(&format!("?token={}", token("alice"))).await;
    let connected = next_json(&mut client).await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["offset"], json!(0));
    let epoch = connected["epoch"].as_str().unwrap().to_owned();
    eventually("alice is registered", || {
        let api = api.clone();
        async move { api.user("alice").await.unwrap().len() == 1 }
    })
    .await;
    assert_eq!(api.send("alice", data(&json!({"n": 1}))).await.unwrap(), 1);
    let live = next_json(&mut client).await;
    assert_eq!(
        live,
        json!({"type": "publication", "channel": "#alice", "offset": 1, "data": {"n": 1}})
    );
    drop(client);
    eventually("alice is gone", || {
        let api = api.clone();
        async move { api.user("alice").await.unwrap().is_empty() }
    })
    .await;
    for n in 2..=3 {
        assert_eq!(
            api.send("alice", data(&json!({ "n": n }))).await.unwrap(),
            0
        );
    }
    let mut client = two.connect(&format!("?token={}", token("alice"))).await;
    let connected = next_json(&mut client).await;
    assert_eq!(connected["offset"], json!(3), "{connected}");
    let answer = support::request(
        &mut client,
        json!({"type": "subscribe", "id": 1, "channel": "#alice", "since": {"offset": 1, "epoch": epoch}}),
    )
    .await;
    assert_eq!(answer["recovered"], json!(true), "{answer}");
    assert_eq!(
        answer["publications"],
        json!([{"offset": 2, "data": {"n": 2}}, {"offset": 3, "data": {"n": 3}}])
    );
    api.send("alice", data(&json!({"n": 4}))).await.unwrap();
    // Live; or, should this gateway's Redis subscription have dropped
    // meanwhile (a loaded machine misses a ping), told to recover it.
    let live = next_json(&mut client).await;
    let four = if live["type"] == "unsubscribed" {
        assert_eq!(live["code"], "resubscribe", "{live}");
        let answer = support::request(
            &mut client,
            json!({"type": "subscribe", "id": 2, "channel": "#alice", "since": {"offset": 3, "epoch": answer["epoch"]}}),
        )
        .await;
        answer["publications"][0].clone()
    } else {
        live
    };
    assert_eq!(four["offset"], json!(4), "{four}");
    assert_eq!(four["data"], json!({"n": 4}), "{four}");
    one.stop().await;
    two.stop().await;
}

/// The personal channel is live from `connected` on, so frames of it may
/// wait in the connection's queue when the client's `subscribe` with
/// `since` is answered: the answer comes after them, and nothing that it
/// replays arrives again after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_a_personal_replay_holds_arrives_again_after_it() {
    let gateway = Gateway::start(personal_history_settings("test-instance")).await;
    let presence = gateway.presence.clone();
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    let connected = next_json(&mut client).await;
    let epoch = connected["epoch"].as_str().unwrap().to_owned();
    // Big frames the client does not read yet: the socket's buffers fill
    // and the rest waits in the connection's queue.
    let burst = 200;
    let padding = "x".repeat(60 * 1024);
    for n in 1..=burst {
        presence
            .send("alice", data(&json!({ "n": n, "padding": padding })))
            .await
            .unwrap();
    }
    send_json(
        &mut client,
        json!({"type": "subscribe", "id": 1, "channel": "#alice", "since": {"offset": 0, "epoch": epoch}}),
    )
    .await;
    let answered = loop {
        let frame = next_json(&mut client).await;
        match frame["type"].as_str() {
            Some("subscribed") => {
                assert_eq!(frame["recovered"], json!(true), "{frame}");
                break frame["offset"].as_u64().unwrap();
            }
            // Live before the answer: the client holds these (README).
            Some("publication") => {}
            _ => panic!("unexpected {frame}"),
        }
    };
    // A marker after the answer: what comes before it is what followed
    // the answer.
    presence
        .send("alice", data(&json!({ "n": "marker" })))
        .await
        .unwrap();
    let mut after = Vec::new();
    loop {
        let frame = next_json(&mut client).await;
        assert_eq!(frame["type"], "publication", "{frame}");
        if frame["data"]["n"] == "marker" {
            break;
        }
        after.push(frame["offset"].as_u64().unwrap());
    }
    assert!(
        after.iter().all(|&offset| offset > answered),
        "after the answer (offset {answered}) came {after:?}"
    );
    gateway.stop().await;
}
