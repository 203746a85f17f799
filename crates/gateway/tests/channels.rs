//! Channels on `/ws` with real WebSocket clients: subscribe, publish from the
//! API and from clients, unsubscribe, every authorization mode, the limits,
//! junk answered with an `error` and the socket kept, two gateways over one
//! Redis, and a subscriber that stops reading.

mod support;

use std::{sync::Arc, time::Duration};

use futures_util::SinkExt;
use pulse_gateway::Settings;
use pulse_presence::{
    Namespaces, Presence, PublishOptions, RedisOptions,
    testing::{RedisServer, unique_namespace},
};
use serde_json::{Map, Value, json, value::RawValue};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const CONFIG: &str = r#"
[default]
authorize = "any"
[namespaces.room]
allow_publish = true
[namespaces.news]
[namespaces.team]
authorize = "claim"
[namespaces.order]
authorize = "token"
"#;

fn channel_settings(instance: &str) -> Settings {
    let mut settings = settings();
    settings.instance_id = instance.to_owned();
    settings.namespaces = Arc::new(Namespaces::parse(CONFIG, "test.toml").unwrap());
    settings.max_subscriptions_per_connection = 4;
    settings
}

#[tokio::test]
async fn subscribers_get_publications_until_they_unsubscribe() {
    let gateway = Gateway::start(channel_settings("gw-1")).await;
    let mut alice = live(&gateway, &token("alice")).await;
    let mut bob = live(&gateway, &token("bob")).await;
    assert_eq!(
        subscribe(&mut alice, 1, "room:1").await,
        json!({"type": "subscribed", "id": 1, "channel": "room:1"})
    );
    assert_eq!(subscribe(&mut bob, 7, "room:1").await["type"], "subscribed");
    assert_eq!(
        subscribe(&mut bob, 8, "lobby").await["type"],
        "subscribed",
        "the default namespace"
    );

    let payload = r#"{"n":18446744073709551615,"text":"hi"}"#;
    let published = gateway
        .presence
        .publish(
            "room:1",
            &RawValue::from_string(payload.into()).unwrap(),
            &PublishOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(published.instances, 1);
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            next_text(client).await,
            format!(r#"{{"type":"publication","channel":"room:1","data":{payload}}}"#),
            "the data byte for byte"
        );
    }

    assert_eq!(
        request(
            &mut alice,
            json!({"type": "unsubscribe", "id": 2, "channel": "room:1"})
        )
        .await,
        json!({"type": "unsubscribed", "id": 2, "channel": "room:1"})
    );
    gateway
        .presence
        .publish("room:1", &data(&json!(2)), &PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(next_json(&mut bob).await["data"], json!(2));
    // Alice got nothing: her next frame answers her own ping.
    still_open(&mut alice).await;
    gateway.stop().await;
}

#[tokio::test]
async fn clients_publish_where_the_namespace_allows_it() {
    let gateway = Gateway::start(channel_settings("gw-1")).await;
    let mut alice = live(&gateway, &token("alice")).await;
    let mut bob = live(&gateway, &token("bob")).await;
    subscribe(&mut alice, 1, "room:1").await;
    subscribe(&mut bob, 1, "room:1").await;
    subscribe(&mut alice, 2, "news:1").await;

    assert_eq!(
        request(
            &mut alice,
            json!({"type": "publish", "id": 3, "channel": "room:1", "data": {"text": "hello"}})
        )
        .await,
        json!({"type": "published", "id": 3})
    );
    assert_eq!(
        next_json(&mut bob).await,
        json!({"type": "publication", "channel": "room:1", "data": {"text": "hello"}})
    );
    // The publisher is a subscriber too.
    assert_eq!(
        next_json(&mut alice).await["data"],
        json!({"text": "hello"})
    );

    for (request_json, code) in [
        (
            json!({"type": "publish", "id": 4, "channel": "news:1", "data": 1}),
            "publish_not_allowed",
        ),
        (
            json!({"type": "publish", "id": 5, "channel": "room:2", "data": 1}),
            "not_subscribed",
        ),
        (
            json!({"type": "publish", "id": 6, "channel": "#bob", "data": 1}),
            "publish_not_allowed",
        ),
        (
            json!({"type": "publish", "id": 7, "channel": "nope:1", "data": 1}),
            "unknown_namespace",
        ),
    ] {
        let id = request_json["id"].clone();
        let answer = request(&mut alice, request_json).await;
        assert_eq!(
            (&answer["type"], &answer["id"], &answer["code"]),
            (&json!("error"), &id, &json!(code)),
            "{answer}"
        );
    }
    still_open(&mut alice).await;
    gateway.stop().await;
}

#[tokio::test]
async fn each_authorization_mode_accepts_and_refuses_what_it_should() {
    let gateway = Gateway::start(channel_settings("gw-1")).await;
    let claimed = token_with("alice", json!({"channels": ["team:red", "team:blue:*"]}));
    let mut alice = live(&gateway, &claimed).await;
    let mut carol = live(&gateway, &token("carol")).await;

    // claim: exact names and prefixes from the connection token.
    assert_eq!(
        subscribe(&mut alice, 1, "team:red").await["type"],
        "subscribed"
    );
    assert_eq!(
        subscribe(&mut alice, 2, "team:blue:ops").await["type"],
        "subscribed"
    );
    assert_eq!(
        subscribe(&mut alice, 3, "team:green").await["code"],
        "permission_denied"
    );
    assert_eq!(
        subscribe(&mut carol, 1, "team:red").await["code"],
        "permission_denied",
        "no claim at all"
    );

    // token: a subscription token for this user and this channel.
    let order_token = |user: &str, channel: &str| token_with(user, json!({"channel": channel}));
    let with_token = |id: u64, channel: &str, token: String| json!({"type": "subscribe", "id": id, "channel": channel, "token": token});
    assert_eq!(
        request(
            &mut carol,
            with_token(2, "order:42", order_token("carol", "order:42"))
        )
        .await["type"],
        "subscribed"
    );
    for (id, channel, token, code) in [
        (
            3,
            "order:43",
            order_token("carol", "order:42"),
            "permission_denied",
        ),
        (
            4,
            "order:44",
            order_token("alice", "order:44"),
            "permission_denied",
        ),
        (5, "order:45", "not.a.jwt".to_owned(), "permission_denied"),
    ] {
        let answer = request(&mut carol, with_token(id, channel, token)).await;
        assert_eq!(
            (&answer["id"], &answer["code"]),
            (&json!(id), &json!(code)),
            "{answer}"
        );
    }
    let expired = pulse_auth::mint_token_with_claims(
        SECRET,
        "carol",
        Duration::ZERO,
        match json!({"channel": "order:46", "exp": 1}) {
            Value::Object(map) => map,
            _ => Map::new(),
        },
    );
    let answer = request(&mut carol, with_token(6, "order:46", expired)).await;
    assert_eq!(answer["code"], "permission_denied");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("token_expired"),
        "{answer}"
    );
    assert_eq!(
        subscribe(&mut carol, 7, "order:47").await["code"],
        "permission_denied",
        "no token"
    );

    // personal: one's own is answered, another's refused.
    assert_eq!(
        subscribe(&mut carol, 8, "#carol").await["type"],
        "subscribed"
    );
    assert_eq!(
        subscribe(&mut carol, 9, "#alice").await["code"],
        "permission_denied"
    );
    still_open(&mut carol).await;
    still_open(&mut alice).await;
    gateway.stop().await;
}

#[tokio::test]
async fn junk_gets_an_error_with_a_code_and_the_socket_stays() {
    let gateway = Gateway::start(channel_settings("gw-1")).await;
    let mut client = live(&gateway, &token("alice")).await;
    let long = "a".repeat(10_000);
    for (junk, id, code) in [
        (
            json!({"type": "subscribe", "id": 1}),
            json!(1),
            "bad_request",
        ),
        (
            json!({"type": "subscribe", "channel": "room:1"}),
            Value::Null,
            "bad_request",
        ),
        (
            json!({"type": "subscribe", "id": 2, "channel": long}),
            json!(2),
            "invalid_channel",
        ),
        (
            json!({"type": "subscribe", "id": 3, "channel": "a b"}),
            json!(3),
            "invalid_channel",
        ),
        (
            json!({"type": "subscribe", "id": 4, "channel": "nope:1"}),
            json!(4),
            "unknown_namespace",
        ),
        (
            json!({"type": "subscribe", "id": 5, "channel": "room:1", "since": {"offset": "x"}}),
            json!(5),
            "bad_request",
        ),
        (
            json!({"type": "unsubscribe", "id": 6, "channel": "room:9"}),
            json!(6),
            "not_subscribed",
        ),
        (
            json!({"type": "unsubscribe", "id": 7, "channel": "#alice"}),
            json!(7),
            "permission_denied",
        ),
        (
            json!({"type": "presence", "id": 8, "channel": "room:1"}),
            json!(8),
            "presence_disabled",
        ),
        (
            json!({"type": "publish", "id": 9, "channel": "room:1"}),
            json!(9),
            "bad_request",
        ),
    ] {
        let answer = request(&mut client, junk.clone()).await;
        assert_eq!(answer["type"], "error", "{junk}: {answer}");
        assert_eq!(
            answer.get("id").cloned().unwrap_or(Value::Null),
            id,
            "{junk}: {answer}"
        );
        assert_eq!(answer["code"], code, "{junk}: {answer}");
    }
    // Twice the same subscription, and the per-connection limit (4).
    assert_eq!(
        subscribe(&mut client, 10, "room:1").await["type"],
        "subscribed"
    );
    assert_eq!(
        subscribe(&mut client, 11, "room:1").await["code"],
        "already_subscribed"
    );
    for (id, channel) in [(12, "room:2"), (13, "room:3"), (14, "room:4")] {
        assert_eq!(
            subscribe(&mut client, id, channel).await["type"],
            "subscribed"
        );
    }
    assert_eq!(
        subscribe(&mut client, 15, "room:5").await["code"],
        "too_many_subscriptions"
    );
    // A `since` cannot be recovered where the namespace keeps no history:
    // said, not hidden.
    request(
        &mut client,
        json!({"type": "unsubscribe", "id": 16, "channel": "room:4"}),
    )
    .await;
    assert_eq!(
        request(&mut client, json!({"type": "subscribe", "id": 17, "channel": "room:4", "since": {"offset": 3, "epoch": "e"}})).await,
        json!({"type": "subscribed", "id": 17, "channel": "room:4", "recovered": false, "publications": []})
    );
    still_open(&mut client).await;
    gateway.stop().await;
}

#[tokio::test]
async fn two_gateways_deliver_once_each_in_publish_order() {
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = |_: ()| {
        Presence::redis(RedisOptions::new(server.url()).with_namespace(namespace.clone())).unwrap()
    };
    let one = Gateway::start_with(channel_settings("gw-1"), presence(())).await;
    let two = Gateway::start_with(channel_settings("gw-2"), presence(())).await;
    let mut on_one = live(&one, &token("alice")).await;
    let mut on_two = live(&two, &token("bob")).await;
    let mut also_two = live(&two, &token("carol")).await;
    for client in [&mut on_one, &mut on_two, &mut also_two] {
        assert_eq!(subscribe(client, 1, "room:x").await["type"], "subscribed");
    }
    let api = presence(());
    for n in 0..50 {
        let published = api
            .publish("room:x", &data(&json!(n)), &PublishOptions::default())
            .await
            .unwrap();
        assert_eq!(
            published.instances, 2,
            "one delivery per gateway with subscribers"
        );
    }
    for client in [&mut on_one, &mut on_two, &mut also_two] {
        for n in 0..50 {
            assert_eq!(next_json(client).await["data"], json!(n));
        }
        still_open(client).await;
    }
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_cut_off_and_the_others_get_everything() {
    let mut settings = channel_settings("gw-1");
    settings.outbound_queue = 8;
    let gateway = Gateway::start(settings).await;
    let mut slow = live(&gateway, &token("slow")).await;
    let mut fine = live(&gateway, &token("fine")).await;
    subscribe(&mut slow, 1, "room:1").await;
    subscribe(&mut fine, 1, "room:1").await;
    // Big publications fill the slow socket's buffers, then its queue.
    let big = json!("x".repeat(60_000));
    let mut received = 0;
    let mut sent = 0;
    let mut closed = false;
    while !closed {
        gateway
            .presence
            .publish("room:1", &data(&big), &PublishOptions::default())
            .await
            .unwrap();
        sent += 1;
        // The fine client keeps up.
        assert_eq!(next_json(&mut fine).await["data"], big);
        received += 1;
        closed = eventually_kicked(&gateway, "slow").await;
        assert!(sent < 10_000, "the slow subscriber was never cut off");
    }
    assert_eq!(received, sent);
    // The slow one sees its close (4429) once it reads again, or its
    // transport was dropped when no close frame fit.
    let _ = slow.send(Message::Ping(Vec::new().into())).await;
    drop(slow);
    still_open(&mut fine).await;
    gateway.stop().await;
}

/// Whether `user` has no connection left on the gateway.
async fn eventually_kicked(gateway: &Gateway, user: &str) -> bool {
    tokio::task::yield_now().await;
    gateway.presence.user(user).await.unwrap().is_empty()
}

#[tokio::test]
async fn a_server_side_subscribe_reaches_open_sockets_and_later_ones_until_unsubscribe() {
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = |_: ()| {
        Presence::redis(RedisOptions::new(server.url()).with_namespace(namespace.clone())).unwrap()
    };
    let one = Gateway::start_with(channel_settings("gw-1"), presence(())).await;
    let two = Gateway::start_with(channel_settings("gw-2"), presence(())).await;
    let api = presence(());
    let mut open = live(&one, &token("alice")).await;
    let mut other_user = live(&two, &token("bob")).await;

    assert_eq!(api.subscribe_user("alice", "news:1").await.unwrap(), 1);
    assert_eq!(
        next_json(&mut open).await,
        json!({"type": "subscribed", "channel": "news:1"})
    );
    // A connection opened later, on the other gateway, joins it at connect.
    let mut later = live(&two, &token("alice")).await;
    assert_eq!(
        next_json(&mut later).await,
        json!({"type": "subscribed", "channel": "news:1"})
    );
    assert_eq!(
        api.publish("news:1", &data(&json!("hot")), &PublishOptions::default())
            .await
            .unwrap()
            .instances,
        2
    );
    for client in [&mut open, &mut later] {
        assert_eq!(
            next_json(client).await,
            json!({"type": "publication", "channel": "news:1", "data": "hot"})
        );
    }

    assert_eq!(api.unsubscribe_user("alice", "news:1").await.unwrap(), 2);
    for client in [&mut open, &mut later] {
        assert_eq!(
            next_json(client).await,
            json!({"type": "unsubscribed", "channel": "news:1", "code": "unsubscribed_by_server"})
        );
    }
    assert_eq!(
        api.publish("news:1", &data(&json!("cold")), &PublishOptions::default())
            .await
            .unwrap()
            .instances,
        0
    );
    let mut after = live(&one, &token("alice")).await;
    for client in [&mut open, &mut later, &mut after, &mut other_user] {
        still_open(client).await;
    }
    // Bad requests: a personal channel, a bad name.
    assert!(api.subscribe_user("alice", "#alice").await.is_err());
    assert!(api.subscribe_user("alice", "a b").await.is_err());
    one.stop().await;
    two.stop().await;
}
