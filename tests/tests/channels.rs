//! Channels through the real binaries: `pulse-presence` (gRPC and HTTP API)
//! and two gateways over one Redis, or a three-master Redis Cluster, sharing
//! one config file; WebSocket subscribers on both gateways get every
//! publication once, in publish order.

use std::time::Duration;

use futures_util::SinkExt;
use pulse_e2e::*;
use pulse_presence::testing::RedisCluster;
use pulse_protocol::proto::channels::v1::{PublishRequest, channels_client::ChannelsClient};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = r#"
[namespaces.room]
allow_publish = true
"#;

async fn request(client: &mut Client, request: Value) -> Value {
    client
        .send(Message::text(request.to_string()))
        .await
        .unwrap();
    next_json(client).await
}

/// Presence and two gateways on `redis_url` (cluster when `cluster`), every
/// one with the config file; a subscriber to `room:1` on each gateway.
async fn publish_to_subscribers_on_two_gateways(redis_url: &str, cluster: bool) {
    let config = ConfigFile::new(CONFIG);
    let namespace = unique_namespace();
    let mut extra = vec!["--config", config.path()];
    if cluster {
        extra.push("--redis-cluster");
    }
    let presence = Service::presence(redis_url, &namespace, &extra).await;
    let mut gateways = Vec::new();
    for instance in ["gw-a", "gw-b"] {
        let mut args = extra.clone();
        args.extend(["--instance-id", instance]);
        gateways.push(Service::gateway(redis_url, &namespace, &args).await);
    }
    let mut subscribers = Vec::new();
    for (gateway, user) in gateways.iter().zip(["alice", "bob"]) {
        let mut client = connect(gateway.addr, &format!("?token={}", token(user))).await;
        assert_eq!(next_json(&mut client).await["channel"], format!("#{user}"));
        assert_eq!(
            request(
                &mut client,
                json!({"type": "subscribe", "id": 1, "channel": "room:1"})
            )
            .await,
            json!({"type": "subscribed", "id": 1, "channel": "room:1"})
        );
        subscribers.push(client);
    }

    // Alternately through gRPC and HTTP: one order, whatever the door.
    let mut grpc = ChannelsClient::with_interceptor(
        tonic::transport::Channel::from_shared(presence.grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
        pulse_protocol::api_key::BearerKey::new(API_KEY).unwrap(),
    );
    let http = presence.http_addr().await;
    for n in 0..40 {
        let instances = if n % 2 == 0 {
            grpc.publish(PublishRequest {
                channel: "room:1".into(),
                data_json: json!({"n": n}).to_string(),
                ..PublishRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .instances
        } else {
            let body = json!({"channel": "room:1", "data": {"n": n}}).to_string();
            let (status, answer) = post_api(http, "/api/v1/publish", &body).await;
            assert_eq!(status, 200, "{answer}");
            serde_json::from_str::<Value>(&answer).unwrap()["instances"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(instances, 2, "both gateways have a subscriber");
    }
    // A client publishes too, and everyone (itself included) gets it; its
    // answer comes among the publications already on their way.
    subscribers[0]
        .send(Message::text(
            json!({"type": "publish", "id": 2, "channel": "room:1", "data": {"n": 40}}).to_string(),
        ))
        .await
        .unwrap();
    for (index, client) in subscribers.iter_mut().enumerate() {
        let mut publications = Vec::new();
        let mut answered = index != 0;
        while publications.len() < 41 || !answered {
            let frame = next_json(client).await;
            if frame["type"] == "published" {
                assert_eq!(frame, json!({"type": "published", "id": 2}));
                answered = true;
            } else {
                assert_eq!(frame["type"], "publication", "{frame}");
                assert_eq!(frame["channel"], "room:1", "{frame}");
                publications.push(frame["data"]["n"].as_u64().unwrap());
            }
        }
        assert_eq!(
            publications,
            (0..=40).collect::<Vec<u64>>(),
            "once each, in order"
        );
    }

    // Unsubscribed, bob gets nothing more; alice still does.
    assert_eq!(
        request(
            &mut subscribers[1],
            json!({"type": "unsubscribe", "id": 3, "channel": "room:1"})
        )
        .await["type"],
        "unsubscribed"
    );
    let body = json!({"channel": "room:1", "data": "last"}).to_string();
    let (status, answer) = post_api(http, "/api/v1/publish", &body).await;
    assert_eq!((status, answer.as_str()), (200, r#"{"instances":1}"#));
    assert_eq!(next_json(&mut subscribers[0]).await["data"], "last");
    assert_eq!(
        request(&mut subscribers[1], json!({"type": "ping", "id": 4})).await,
        json!({"type": "pong", "id": 4})
    );

    // The personal channel through the channels API, like Send.
    let (status, _) = post_api(
        http,
        "/api/v1/publish",
        r##"{"channel":"#bob","data":{"hi":1}}"##,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        next_json(&mut subscribers[1]).await,
        json!({"type": "publication", "channel": "#bob", "data": {"hi": 1}})
    );
    drop(gateways);
    drop(presence);
}

#[tokio::test]
async fn one_redis() {
    let redis = RedisServer::start().await;
    publish_to_subscribers_on_two_gateways(redis.url(), false).await;
}

#[tokio::test]
async fn redis_cluster() {
    let cluster = RedisCluster::start().await;
    publish_to_subscribers_on_two_gateways(&cluster.urls().join(","), true).await;
}

/// Runs `name` with `args` and `env` only; it must stop at start with one
/// line on stderr, which is returned.
async fn one_line_at_start(name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new(binary(name));
    command
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("it stops")
        .unwrap();
    assert!(!output.status.success(), "{name} started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{name}: {stderr}");
    lines[0].to_owned()
}

/// A bad config file, or a bad environment override of a good one, stops
/// both binaries at start with one line naming it.
#[tokio::test]
async fn a_bad_config_file_stops_the_start_with_one_line() {
    let config = ConfigFile::new("[namespaces.room]\npresense = true\n");
    let good = ConfigFile::new("[namespaces.room]\n");
    for (name, more) in [
        ("pulse-gateway", ["--jwt-secret", SECRET]),
        (
            "pulse-presence",
            ["--insecure-open-api", "--http-listen=off"],
        ),
    ] {
        let line = one_line_at_start(
            name,
            &[&["--config", config.path()], &more[..]].concat(),
            &[],
        )
        .await;
        assert!(line.contains("--config"), "{name}: {line}");
        assert!(
            line.contains("line 2: unknown field `presense`"),
            "{name}: {line}"
        );
        let line = one_line_at_start(
            name,
            &[&["--config", good.path()], &more[..]].concat(),
            &[("PULSE_NS_ROOM_PRESENCE", "yes")],
        )
        .await;
        assert!(
            line.contains("PULSE_NS_ROOM_PRESENCE: \"yes\" is not true or false"),
            "{name}: {line}"
        );
    }
}
