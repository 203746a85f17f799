//! The whole system on a Redis Cluster: three `redis-server` masters joined
//! with `redis-cli --cluster create`, the real `pulse-presence` and two real
//! `pulse-gateway` processes with `--redis-cluster`, WebSocket clients and
//! gRPC over TCP. Register, query, watch, send, disconnect and reap.

use std::time::Duration;

use pulse_e2e::*;
use pulse_presence::testing::RedisCluster;
use pulse_protocol::proto::presence::v1::{
    DisconnectRequest, EventKind, PresenceEvent, SendRequest,
};
use serde_json::json;

async fn next_event(stream: &mut tonic::Streaming<PresenceEvent>) -> (String, EventKind, String) {
    use futures_util::StreamExt;
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the watch stream is open")
        .expect("an event, not an error");
    (event.user_id.clone(), event.kind(), event.instance_id)
}

async fn online(presence: &mut pulse_e2e::Grpc, user_id: &str) -> usize {
    get_user(presence, user_id).await.connections.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_and_presence_share_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let nodes = cluster.urls().join(",");
    let namespace = unique_namespace();
    let presence_service = Service::presence(
        &nodes,
        &namespace,
        &["--redis-cluster", "--reap-interval", "200ms"],
    )
    .await;
    let mut gateways = Vec::new();
    for instance in ["gw-a", "gw-b"] {
        gateways.push(
            Service::gateway(
                &nodes,
                &namespace,
                &[
                    "--redis-cluster",
                    "--instance-id",
                    instance,
                    "--lease-ttl",
                    "600ms",
                ],
            )
            .await,
        );
    }
    let mut presence = pulse_e2e::presence_client(presence_service.grpc_url()).await;
    let mut watch = watch(&mut presence, &["alice", "bob"]).await;

    // alice on both gateways, bob on gw-b only.
    let mut alice_a = connect(gateways[0].addr, &format!("?token={}", token("alice"))).await;
    let alice_a_id = next_json(&mut alice_a).await["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        next_event(&mut watch).await,
        ("alice".into(), EventKind::Connected, "gw-a".into())
    );
    assert_eq!(
        next_event(&mut watch).await,
        ("alice".into(), EventKind::Online, "gw-a".into())
    );
    let mut alice_b = connect(gateways[1].addr, &format!("?token={}", token("alice"))).await;
    next_json(&mut alice_b).await;
    assert_eq!(
        next_event(&mut watch).await,
        ("alice".into(), EventKind::Connected, "gw-b".into())
    );
    let mut bob = connect(gateways[1].addr, &format!("?token={}", token("bob"))).await;
    next_json(&mut bob).await;
    assert_eq!(
        next_event(&mut watch).await,
        ("bob".into(), EventKind::Connected, "gw-b".into())
    );
    assert_eq!(
        next_event(&mut watch).await,
        ("bob".into(), EventKind::Online, "gw-b".into())
    );

    assert_eq!(online(&mut presence, "alice").await, 2);
    assert_eq!(online_counts(&presence).await.unwrap(), (2, 3));

    // Send reaches alice on both gateways over their sharded command
    // channels at the first try: a gateway accepts sockets only once it is
    // subscribed to its channel on the channel's master.
    let mut client = presence.clone();
    let reached = client
        .send(SendRequest {
            user_id: "alice".into(),
            data_json: r#"{"n":1}"#.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .connections;
    assert_eq!(reached, 2);
    for socket in [&mut alice_a, &mut alice_b] {
        assert_eq!(
            next_json(socket).await,
            json!({"type": "publication", "channel": "#alice", "data": {"n": 1}})
        );
    }

    // Disconnect one connection, on gw-a.
    let kicked = client
        .disconnect(DisconnectRequest {
            user_id: "alice".into(),
            connection_id: alice_a_id,
            reason: "bye".into(),
            block_for: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kicked.connections, 1);
    loop {
        let message = next_json(&mut alice_a).await;
        if message["type"] == "error" {
            assert_eq!(message["code"], "disconnected");
            break;
        }
    }
    assert_eq!(
        next_event(&mut watch).await,
        ("alice".into(), EventKind::Disconnected, "gw-a".into())
    );

    // gw-b dies without saying goodbye: the reaper removes alice's last
    // connection and bob's, with offline events.
    gateways[1].kill().await;
    let mut reaped = Vec::new();
    for _ in 0..4 {
        reaped.push(next_event(&mut watch).await);
    }
    // Each user's two events in order; the users' may interleave.
    for user in ["alice", "bob"] {
        let theirs: Vec<_> = reaped.iter().filter(|event| event.0 == user).collect();
        assert_eq!(
            theirs,
            [
                &(user.to_owned(), EventKind::Disconnected, "gw-b".to_owned()),
                &(user.to_owned(), EventKind::Offline, "gw-b".to_owned()),
            ]
        );
    }
    assert_eq!(online(&mut presence, "alice").await, 0);
    assert_eq!(online(&mut presence, "bob").await, 0);
    drop((alice_b, bob));
}
