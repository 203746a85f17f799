//! The whole system: a real redis-server, the real pulse-auth and
//! pulse-presence binaries, two gateway instances ([`Stack`]), and WebSocket
//! clients over TCP: presence across instances, `Send` and `Disconnect`
//! through the presence service, and a gateway stopped with SIGTERM.

use std::{collections::BTreeSet, time::Duration};

use futures_util::{SinkExt, StreamExt};
use pulse_e2e::*;
use pulse_protocol::{
    proto::presence::v1::{DisconnectRequest, EventKind, PresenceEvent, SendRequest, UserPresence},
    status::reason_of,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};

async fn user(presence: &mut pulse_e2e::Grpc, user_id: &str) -> UserPresence {
    get_user(presence, user_id).await
}

async fn instances_of(presence: &mut pulse_e2e::Grpc, user_id: &str) -> Vec<String> {
    let mut instances: Vec<String> = user(presence, user_id)
        .await
        .connections
        .into_iter()
        .map(|c| c.instance_id)
        .collect();
    instances.sort();
    instances
}

async fn next_event(stream: &mut tonic::Streaming<PresenceEvent>) -> (EventKind, String) {
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the watch stream is open")
        .expect("an event, not an error");
    (event.kind(), event.instance_id)
}

#[tokio::test]
async fn one_user_on_two_instances() {
    let mut stack = Stack::start().await;
    let mut watch = watch(&mut stack.presence, &["alice"]).await;

    // A tab on each instance.
    let query = format!("?token={}", token("alice"));
    let mut on_a = connect(stack.gateways[0].addr, &query).await;
    let connected_a = next_json(&mut on_a).await;
    assert_eq!(connected_a["type"], "connected");
    assert_eq!(connected_a["instance_id"], "gw-a");
    assert_eq!(
        next_event(&mut watch).await,
        (EventKind::Connected, "gw-a".into())
    );
    assert_eq!(
        next_event(&mut watch).await,
        (EventKind::Online, "gw-a".into())
    );

    let mut on_b = connect(stack.gateways[1].addr, &query).await;
    let connected_b = next_json(&mut on_b).await;
    assert_eq!(connected_b["instance_id"], "gw-b");
    assert_ne!(connected_a["connection_id"], connected_b["connection_id"]);
    assert_eq!(
        next_event(&mut watch).await,
        (EventKind::Connected, "gw-b".into())
    );

    let presence = user(&mut stack.presence, "alice").await;
    assert!(presence.online);
    assert_eq!(
        instances_of(&mut stack.presence, "alice").await,
        ["gw-a", "gw-b"]
    );
    let ids: BTreeSet<String> = presence
        .connections
        .iter()
        .map(|c| c.connection_id.clone())
        .collect();
    let expected: BTreeSet<String> = [&connected_a, &connected_b]
        .iter()
        .map(|m| m["connection_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, expected);

    // The application ping works on a live socket.
    on_a.send(Message::text(
        json!({"type": "ping", "id": "p1"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut on_a).await,
        json!({"type": "pong", "id": "p1"})
    );

    // A clean close on A leaves B.
    on_a.close(Some(CloseFrame {
        code: 1000.into(),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    assert_eq!(
        next_event(&mut watch).await,
        (EventKind::Disconnected, "gw-a".into())
    );
    assert_eq!(instances_of(&mut stack.presence, "alice").await, ["gw-b"]);

    // Dropping B's TCP without a close frame is cleaned up too, and the user goes offline.
    drop(on_b);
    assert_eq!(
        next_event(&mut watch).await,
        (EventKind::Disconnected, "gw-b".into())
    );
    assert_eq!(
        next_event(&mut watch).await,
        (EventKind::Offline, "gw-b".into())
    );
    let presence = user(&mut stack.presence, "alice").await;
    assert!(!presence.online);
    assert!(presence.connections.is_empty());
}

#[tokio::test]
async fn send_and_disconnect_through_the_presence_service() {
    let mut stack = Stack::start().await;
    let query = format!("?token={}", token("carol"));
    let mut on_a = connect(stack.gateways[0].addr, &query).await;
    next_json(&mut on_a).await;
    let mut on_b = connect(stack.gateways[1].addr, &query).await;
    next_json(&mut on_b).await;

    let sent = stack
        .presence
        .send(SendRequest {
            user_id: "carol".into(),
            data_json: r#"{"title":"hello","n":[1,2,3]}"#.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.connections, 2);
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(
            next_json(client).await,
            json!({"type": "publication", "channel": "#carol", "data": {"title": "hello", "n": [1, 2, 3]}})
        );
    }

    let bad = stack
        .presence
        .send(SendRequest {
            user_id: "carol".into(),
            data_json: "{not json".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert_eq!(reason_of(&bad).as_deref(), Some("invalid_argument"));

    let offline = stack
        .presence
        .send(SendRequest {
            user_id: "nobody".into(),
            data_json: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(offline.connections, 0);

    let closed = stack
        .presence
        .disconnect(DisconnectRequest {
            user_id: "carol".into(),
            connection_id: String::new(),
            reason: "account suspended".into(),
            block_for: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.connections, 2);
    for client in [&mut on_a, &mut on_b] {
        let error = next_json(client).await;
        assert_eq!(error["code"], "disconnected");
        assert_eq!(error["message"], "account suspended");
        match client.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4403),
            other => panic!("expected a 4403 close, got {other:?}"),
        }
    }
    eventually("carol offline", Duration::from_secs(10), || {
        let mut presence = stack.presence.clone();
        async move { !user(&mut presence, "carol").await.online }
    })
    .await;
}

#[tokio::test]
async fn a_gateway_stopped_with_sigterm_closes_with_1001_and_deregisters() {
    let mut stack = Stack::start().await;
    let mut client = connect(stack.gateways[0].addr, &format!("?token={}", token("bob"))).await;
    assert_eq!(next_json(&mut client).await["type"], "connected");
    eventually("bob online", Duration::from_secs(10), || {
        let mut presence = stack.presence.clone();
        async move { user(&mut presence, "bob").await.online }
    })
    .await;

    let status = stack.gateways[0].terminate().await;
    assert!(status.success(), "gateway exit status {status}");
    let error = next_json(&mut client).await;
    assert_eq!(error["code"], "going_away");
    match client.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    // Deregistered before the process exited: no polling needed.
    assert!(!user(&mut stack.presence, "bob").await.online);
}
