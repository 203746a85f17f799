//! The whole system: a real redis-server, the real pulse-auth and
//! pulse-presence binaries, two gateway instances, and WebSocket clients over TCP.

use std::{collections::BTreeSet, time::Duration};

use futures_util::{SinkExt, StreamExt};
use pulse_e2e::*;
use pulse_protocol::{
    proto::presence::v1::{
        DisconnectRequest, EventKind, PresenceEvent, SendRequest, UserPresence, WatchRequest,
    },
    status::reason_of,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};

struct Stack {
    _redis: RedisServer,
    auth_service: Service,
    presence_service: Service,
    gateways: Vec<Service>,
    presence: pulse_e2e::Grpc,
}

/// Redis, pulse-auth, pulse-presence and two gateways that use them, in a
/// namespace of their own.
async fn stack() -> Stack {
    let redis = RedisServer::start().await;
    let namespace = unique_namespace();
    let auth = Service::auth().await;
    let presence = Service::presence(redis.url(), &namespace, &[]).await;
    let auth_url = auth.grpc_url();
    let mut gateways = Vec::new();
    for instance in ["gw-a", "gw-b"] {
        gateways.push(
            Service::start(
                "pulse-gateway",
                &[
                    "--listen",
                    "127.0.0.1:0",
                    "--auth-url",
                    &auth_url,
                    "--redis-url",
                    redis.url(),
                    "--redis-namespace",
                    &namespace,
                    "--instance-id",
                    instance,
                    "--drain-spread",
                    "300ms",
                ],
            )
            .await,
        );
    }
    let client = pulse_e2e::presence_client(presence.grpc_url()).await;
    Stack {
        _redis: redis,
        auth_service: auth,
        presence_service: presence,
        gateways,
        presence: client,
    }
}

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
    let mut stack = stack().await;
    let mut watch = stack
        .presence
        .watch(WatchRequest {
            user_ids: vec!["alice".into()],
            all: false,
        })
        .await
        .unwrap()
        .into_inner();

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
    let mut stack = stack().await;
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
    let mut stack = stack().await;
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

#[tokio::test]
async fn the_login_checkpoint() {
    let users = std::env::temp_dir().join(format!("pulse-dev-users-{}.json", unique_namespace()));
    let hash = hash_password("test123").await;
    std::fs::write(
        &users,
        json!({"users": [{"email": "test@test.com", "user_id": "test-user", "password_hash": hash}]})
            .to_string(),
    )
    .unwrap();
    let gateway = Service::start(
        "pulse-gateway",
        &[
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--dev-users",
            users.to_str().unwrap(),
        ],
    )
    .await;

    let (status, body) = post_json(
        gateway.addr,
        "/auth/login",
        r#"{"email":"test@test.com","password":"test123"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = body["token"].as_str().unwrap();

    let query = format!("?token={token}");
    let mut first = connect(gateway.addr, &query).await;
    let connected = next_json(&mut first).await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["user_id"], "test-user");
    // A second tab with the same token, and the first stays connected.
    let mut second = connect(gateway.addr, &query).await;
    assert_eq!(next_json(&mut second).await["type"], "connected");
    first
        .send(Message::text(r#"{"type":"ping","id":1}"#))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut first).await,
        json!({"type": "pong", "id": 1})
    );

    let (status, body) = post_json(
        gateway.addr,
        "/auth/login",
        r#"{"email":"test@test.com","password":"wrong"}"#,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("invalid_credentials"));
    let (status, _) = post_json(gateway.addr, "/auth/login", "not json").await;
    assert_eq!(status, 400);
    std::fs::remove_file(users).ok();
}

async fn hash_password(password: &str) -> String {
    let mut child = tokio::process::Command::new(binary("pulse-gateway"))
        .arg("hash-password")
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(password.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A bad setting stops a binary at start with one line naming it.
#[tokio::test]
async fn bad_settings_fail_with_one_line() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "pulse-gateway",
            &["--heartbeat-interval", "soon"],
            "--heartbeat-interval",
        ),
        ("pulse-gateway", &[], "--jwt-secret"),
        (
            "pulse-gateway",
            &["--jwt-secret", "s", "--auth-timeout", "0s"],
            "--auth-timeout",
        ),
        (
            "pulse-gateway",
            &["--jwt-secret", "s", "--listen", "nowhere"],
            "--listen",
        ),
        (
            "pulse-gateway",
            &[
                "--jwt-secret",
                "s",
                "--dev-users",
                "/nonexistent/users.json",
            ],
            "--dev-users",
        ),
        ("pulse-auth", &[], "--jwt-secret"),
        (
            "pulse-presence",
            &["--listen", "127.0.0.1:99999"],
            "--listen",
        ),
        // The internal API is never open by accident, and a key is never echoed.
        ("pulse-presence", &[], "--api-key"),
        ("pulse-presence", &["--api-key", "tooshort-1"], "--api-key"),
        (
            "pulse-presence",
            &["--api-keys-file", "/nonexistent/keys.toml"],
            "--api-keys-file",
        ),
        (
            "pulse-presence",
            &[
                "--api-key",
                "long-enough-key-0123456789",
                "--tls-cert",
                "/nonexistent/cert.pem",
                "--tls-key",
                "/nonexistent/key.pem",
            ],
            "--tls-cert",
        ),
    ];
    for (binary_name, args, setting) in cases {
        let output = tokio::process::Command::new(binary(binary_name))
            .args(*args)
            .env_clear()
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{binary_name} {args:?}: {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{binary_name} {args:?} printed {stderr:?}");
        assert!(
            lines[0].contains(setting),
            "{binary_name} {args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains("tooshort-1"),
            "a key in an error: {stderr}"
        );
    }
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let stack = stack().await;
    let gateway = stack.gateways[0].addr;
    let scrape = |addr: std::net::SocketAddr| async move {
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let before = scrape(gateway).await;
    let mut client = connect(gateway, &format!("?token={}", token("dave"))).await;
    next_json(&mut client).await;
    client
        .send(Message::text(r#"{"type":"ping","id":1}"#))
        .await
        .unwrap();
    next_json(&mut client).await;
    let after = scrape(gateway).await;
    assert_eq!(
        metric(&after, "pulse_gateway_connects_total"),
        metric(&before, "pulse_gateway_connects_total") + 1.0
    );
    assert_eq!(metric(&after, "pulse_gateway_connections"), 1.0);
    assert!(metric(&after, "pulse_gateway_messages_in_total") >= 1.0);
    assert!(
        after.contains("pulse_gateway_auth_seconds_bucket"),
        "{after}"
    );
    assert!(
        after.contains("pulse_presence_redis_seconds_bucket{op=\"register\""),
        "{after}"
    );

    drop(client);
    eventually(
        "the disconnect counted",
        Duration::from_secs(10),
        || async move {
            let body = scrape(gateway).await;
            body.contains("pulse_gateway_disconnects_total{phase=\"live\"")
                && metric(&body, "pulse_gateway_connections") == 0.0
        },
    )
    .await;

    // pulse-presence serves its own on --metrics-listen: the events it saw.
    let presence_metrics: std::net::SocketAddr = stack
        .presence_service
        .log_field("serving metrics", "metrics_addr")
        .expect("pulse-presence logs its metrics address")
        .parse()
        .unwrap();
    // pulse-auth counts its validations.
    let auth_metrics: std::net::SocketAddr = stack
        .auth_service
        .log_field("serving metrics", "metrics_addr")
        .expect("pulse-auth logs its metrics address")
        .parse()
        .unwrap();
    let body = scrape(auth_metrics).await;
    assert!(
        body.contains("pulse_auth_validations_total{result=\"ok\"}"),
        "{body}"
    );
    assert!(
        body.contains("pulse_auth_validate_seconds_bucket"),
        "{body}"
    );

    eventually(
        "presence counted the events",
        Duration::from_secs(10),
        || async move {
            let body = scrape(presence_metrics).await;
            body.contains("pulse_presence_events_total{kind=\"connected\"}")
                && body.contains("pulse_presence_events_total{kind=\"offline\"}")
        },
    )
    .await;
}

/// The value of an unlabelled metric (0 when absent).
fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
