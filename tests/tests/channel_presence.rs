//! Per-channel presence through the real binaries, on one Redis and on a
//! three-master Redis Cluster: a gateway killed with kill -9 while its
//! connections are subscribed leaves its channels once its lease runs out,
//! with exactly one `leave` per user it was the last holder for, and the
//! `Presence` API agrees.

use futures_util::SinkExt;
use pulse_e2e::*;
use pulse_presence::testing::RedisCluster;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = r#"
[namespaces.room]
presence = true
join_leave = true
"#;

async fn send(client: &mut Client, request: Value) {
    client
        .send(Message::text(request.to_string()))
        .await
        .unwrap();
}

async fn subscribed(client: &mut Client, channel: &str) {
    send(
        client,
        json!({"type": "subscribe", "id": 1, "channel": channel}),
    )
    .await;
    // A join on its way may come first (see the README).
    loop {
        let frame = next_json(client).await;
        if frame["type"] == "subscribed" {
            return;
        }
        assert_eq!(frame["type"], "join", "{frame}");
    }
}

/// The `Presence` API's users of `room:1`, as (user, connections).
async fn members(http: std::net::SocketAddr) -> Vec<(String, u64)> {
    let (status, body) = post_api(http, "/api/v1/presence", r#"{"channel":"room:1"}"#).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| {
            (
                user["user_id"].as_str().unwrap().to_owned(),
                user["connections"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn kill_9_leaves_once_per_user(redis_url: &str, cluster: bool) {
    let config = ConfigFile::new(CONFIG);
    let namespace = unique_namespace();
    let mut extra = vec!["--config", config.path()];
    if cluster {
        extra.push("--redis-cluster");
    }
    let mut presence_args = extra.clone();
    presence_args.extend(["--reap-interval", "200ms"]);
    let presence = Service::presence(redis_url, &namespace, &presence_args).await;
    let http = presence.http_addr().await;
    let mut gateways = Vec::new();
    for instance in ["gw-stays", "gw-dies"] {
        let mut args = extra.clone();
        args.extend(["--instance-id", instance, "--lease-ttl", "1s"]);
        gateways.push(Service::gateway(redis_url, &namespace, &args).await);
    }
    let (stays, dies) = (gateways[0].addr, gateways[1].addr);

    // The watcher and carol's first connection on the gateway that stays;
    // alice (two connections), bob and carol's second on the one that dies.
    let mut watcher = connect(stays, &format!("?token={}", token("watcher"))).await;
    next_json(&mut watcher).await;
    subscribed(&mut watcher, "room:1").await;
    let mut doomed = Vec::new();
    for (addr, user) in [
        (stays, "carol"),
        (dies, "alice"),
        (dies, "alice"),
        (dies, "bob"),
        (dies, "carol"),
    ] {
        let mut client = connect(addr, &format!("?token={}", token(user))).await;
        next_json(&mut client).await;
        subscribed(&mut client, "room:1").await;
        doomed.push(client);
    }
    let mut joined = Vec::new();
    while joined.len() < 3 {
        let frame = next_json(&mut watcher).await;
        assert_eq!(frame["type"], "join", "{frame}");
        joined.push(frame["user_id"].as_str().unwrap().to_owned());
    }
    joined.sort();
    assert_eq!(joined, ["alice", "bob", "carol"], "one join per user");
    assert_eq!(
        members(http).await,
        [
            ("alice".to_owned(), 2),
            ("bob".to_owned(), 1),
            ("carol".to_owned(), 2),
            ("watcher".to_owned(), 1)
        ]
    );

    gateways[1].kill().await;
    // The reaper takes the dead gateway's memberships out once its lease
    // runs out: alice and bob leave, carol is still in on the other one.
    let mut left = Vec::new();
    while left.len() < 2 {
        let frame = next_json(&mut watcher).await;
        assert_eq!(frame["type"], "leave", "{frame}");
        left.push(frame["user_id"].as_str().unwrap().to_owned());
    }
    left.sort();
    assert_eq!(left, ["alice", "bob"]);
    assert_eq!(
        members(http).await,
        [("carol".to_owned(), 1), ("watcher".to_owned(), 1)]
    );
    // Nothing more: the next frame is the answer to a ping.
    send(&mut watcher, json!({"type": "ping", "id": "end"})).await;
    assert_eq!(
        next_json(&mut watcher).await,
        json!({"type": "pong", "id": "end"}),
        "one leave per user, no more"
    );
    drop(doomed);
}

#[tokio::test]
async fn one_redis() {
    let redis = RedisServer::start().await;
    kill_9_leaves_once_per_user(redis.url(), false).await;
}

#[tokio::test]
async fn redis_cluster() {
    let cluster = RedisCluster::start().await;
    kill_9_leaves_once_per_user(&cluster.urls().join(","), true).await;
}
