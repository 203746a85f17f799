//! Per-channel presence on `/ws` with real WebSocket clients and two
//! gateways over one real Redis: `join` and `leave` once per user
//! transition, the `presence` request, `max_subscribers`, and what a
//! namespace without presence answers.

mod support;

use std::sync::Arc;

use pulse_gateway::Settings;
use pulse_presence::{
    Namespaces, Presence, RedisOptions,
    testing::{RedisServer, unique_namespace},
};
use serde_json::{Value, json};

use crate::support::*;

const CONFIG: &str = r#"
[namespaces.room]
presence = true
join_leave = true
[namespaces.doc]
presence = true
[namespaces.small]
max_subscribers = 2
[namespaces.news]
"#;

fn presence_settings(instance: &str) -> Settings {
    let mut settings = settings();
    settings.instance_id = instance.to_owned();
    settings.namespaces = Arc::new(Namespaces::parse(CONFIG, "test.toml").unwrap());
    settings
}

/// Two gateways over one Redis namespace.
async fn two_gateways(server: &RedisServer) -> (Gateway, Gateway) {
    let namespace = unique_namespace();
    let presence = || {
        Presence::redis(RedisOptions::new(server.url()).with_namespace(namespace.clone())).unwrap()
    };
    (
        Gateway::start_with(presence_settings("gw-1"), presence()).await,
        Gateway::start_with(presence_settings("gw-2"), presence()).await,
    )
}

async fn presence_of(client: &mut Client, id: u64, channel: &str) -> Value {
    request(
        client,
        json!({"type": "presence", "id": id, "channel": channel}),
    )
    .await
}

/// The next frames up to a pong for `marker`: whatever the connection was
/// sent before it.
async fn frames_before_pong(client: &mut Client, marker: &str) -> Vec<Value> {
    send_json(client, json!({"type": "ping", "id": marker})).await;
    let mut frames = Vec::new();
    loop {
        let frame = next_json(client).await;
        if frame == json!({"type": "pong", "id": marker}) {
            return frames;
        }
        frames.push(frame);
    }
}

#[tokio::test]
async fn join_and_leave_go_out_once_per_user_across_two_gateways() {
    let server = RedisServer::start().await;
    let (one, two) = two_gateways(&server).await;
    let mut watcher = live(&one, &token("watcher")).await;
    assert_eq!(
        subscribe(&mut watcher, 1, "room:1").await["type"],
        "subscribed"
    );
    assert!(
        frames_before_pong(&mut watcher, "own").await.is_empty(),
        "a subscriber is not sent its own join"
    );

    // Alice subscribes from both gateways at once: one join.
    let mut alice_one = live(&one, &token("alice")).await;
    let mut alice_two = live(&two, &token("alice")).await;
    let (a, b) = tokio::join!(
        subscribe(&mut alice_one, 1, "room:1"),
        subscribe(&mut alice_two, 1, "room:1")
    );
    assert_eq!(
        (a["type"].as_str(), b["type"].as_str()),
        (Some("subscribed"), Some("subscribed"))
    );
    let joined = next_json(&mut watcher).await;
    assert_eq!(
        joined,
        json!({"type": "join", "channel": "room:1", "user_id": "alice"})
    );
    assert_eq!(
        presence_of(&mut watcher, 2, "room:1").await,
        json!({
            "type": "presence", "id": 2, "channel": "room:1",
            "users": [
                {"user_id": "alice", "connections": 2},
                {"user_id": "watcher", "connections": 1}
            ],
            "num_users": 2, "num_connections": 3
        })
    );
    assert!(
        frames_before_pong(&mut watcher, "one-join")
            .await
            .is_empty(),
        "exactly one join for two subscriptions"
    );

    // One of alice's subscriptions ends: she is still in, no leave. (The
    // join went out with whichever subscription Redis took first; it may
    // still reach the other, which was subscribing meanwhile: a frame on its
    // way goes to whoever is subscribed when it lands.)
    send_json(
        &mut alice_one,
        json!({"type": "unsubscribe", "id": 2, "channel": "room:1"}),
    )
    .await;
    loop {
        let frame = next_json(&mut alice_one).await;
        if frame["type"] == "unsubscribed" {
            break;
        }
        assert_eq!(
            frame,
            json!({"type": "join", "channel": "room:1", "user_id": "alice"})
        );
    }
    assert!(
        frames_before_pong(&mut watcher, "still-in")
            .await
            .is_empty()
    );
    // Her last one goes with its socket: one leave.
    drop(alice_two);
    assert_eq!(
        next_json(&mut watcher).await,
        json!({"type": "leave", "channel": "room:1", "user_id": "alice"})
    );
    assert_eq!(
        presence_of(&mut watcher, 3, "room:1").await["users"],
        json!([{"user_id": "watcher", "connections": 1}])
    );
    still_open(&mut alice_one).await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn presence_without_join_leave_and_where_it_is_off() {
    let server = RedisServer::start().await;
    let (one, two) = two_gateways(&server).await;
    let mut alice = live(&one, &token("alice")).await;
    let mut bob = live(&two, &token("bob")).await;
    subscribe(&mut alice, 1, "doc:7").await;
    subscribe(&mut bob, 1, "doc:7").await;
    assert!(
        frames_before_pong(&mut alice, "quiet").await.is_empty(),
        "doc has presence but no join_leave"
    );
    assert_eq!(
        presence_of(&mut alice, 2, "doc:7").await["num_users"],
        json!(2)
    );
    subscribe(&mut alice, 3, "news:1").await;
    for (channel, code) in [
        ("news:1", "presence_disabled"),
        ("#alice", "presence_disabled"),
        ("room:1", "not_subscribed"),
        ("nope:1", "unknown_namespace"),
        ("a b", "invalid_channel"),
    ] {
        let answer = presence_of(&mut alice, 4, channel).await;
        assert_eq!(
            (
                answer["type"].as_str(),
                answer["code"].as_str(),
                &answer["id"]
            ),
            (Some("error"), Some(code), &json!(4)),
            "{channel}: {answer}"
        );
    }
    still_open(&mut alice).await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn a_full_channel_answers_channel_full_across_gateways() {
    let server = RedisServer::start().await;
    let (one, two) = two_gateways(&server).await;
    let mut first = live(&one, &token("a")).await;
    let mut second = live(&two, &token("b")).await;
    let mut third = live(&one, &token("c")).await;
    assert_eq!(
        subscribe(&mut first, 1, "small:1").await["type"],
        "subscribed"
    );
    assert_eq!(
        subscribe(&mut second, 1, "small:1").await["type"],
        "subscribed"
    );
    let refused = subscribe(&mut third, 9, "small:1").await;
    assert_eq!(
        (
            refused["type"].as_str(),
            refused["code"].as_str(),
            &refused["id"]
        ),
        (Some("error"), Some("channel_full"), &json!(9)),
        "{refused}"
    );
    still_open(&mut third).await;
    // A place frees up when a subscriber's socket closes.
    drop(second);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = subscribe(&mut third, 10, "small:1").await;
        if answer["type"] == "subscribed" {
            break;
        }
        assert_eq!(answer["code"], "channel_full", "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed socket's place was never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    one.stop().await;
    two.stop().await;
}
