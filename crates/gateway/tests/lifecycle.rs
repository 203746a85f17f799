//! A live connection's life: messages, heartbeats, token expiry, every kind of
//! end, and what the manager and presence hold afterwards.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use pulse_auth::{Authenticator, Validator, ValidatorSettings};
use pulse_gateway::{Gateway as GatewayCore, Settings};
use pulse_presence::{Presence, RedisOptions, testing::RedisServer};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

async fn online(presence: &Presence, user: &str) -> usize {
    presence.user(user).await.unwrap().len()
}

#[tokio::test]
async fn ping_is_answered_with_the_same_id() {
    let gateway = Gateway::start(settings()).await;
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    next_json(&mut client).await;
    for id in [json!(1), json!("x"), json!({"nested": [1, 2]})] {
        send_json(&mut client, json!({"type": "ping", "id": id})).await;
        assert_eq!(
            next_json(&mut client).await,
            json!({"type": "pong", "id": id})
        );
    }
    send_json(&mut client, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut client).await, json!({"type": "pong"}));
    gateway.stop().await;
}

#[tokio::test]
async fn junk_after_auth_closes_with_4400() {
    let gateway = Gateway::start(settings()).await;
    for junk in [
        Message::text("not json"),
        Message::text(r#"{"type":"nope","channel":"x"}"#),
        Message::binary(vec![1, 2, 3]),
    ] {
        let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
        next_json(&mut client).await;
        client.send(junk).await.unwrap();
        expect_error_then_close(&mut client, "malformed_message", 4400).await;
    }
    let presence = gateway.presence.clone();
    eventually("alice cleaned up", || async {
        online(&presence, "alice").await == 0
    })
    .await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009() {
    let mut settings = settings();
    settings.max_message_bytes = 2048;
    let gateway = Gateway::start(settings).await;
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    next_json(&mut client).await;
    let id = "x".repeat(4096);
    send_json(&mut client, json!({"type": "ping", "id": id})).await;
    assert_eq!(u16::from(close_frame(&mut client).await.code), 1009);
    gateway.stop().await;
}

#[tokio::test]
async fn clean_close_and_tcp_drop_are_cleaned_up() {
    let gateway = Gateway::start(settings()).await;
    let query = format!("?token={}", token("alice"));
    let mut first = gateway.connect(&query).await;
    next_json(&mut first).await;
    let mut second = gateway.connect(&query).await;
    next_json(&mut second).await;
    let presence = gateway.presence.clone();
    assert_eq!(online(&presence, "alice").await, 2);

    first.close(None).await.unwrap();
    eventually("one left", || async {
        online(&presence, "alice").await == 1
    })
    .await;
    drop(second);
    eventually("none left", || async {
        online(&presence, "alice").await == 0
    })
    .await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed() {
    let mut settings = settings();
    settings.heartbeat_interval = Duration::from_millis(100);
    let gateway = Gateway::start(settings).await;
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    let connected = next_json(&mut client).await;
    assert_eq!(connected["heartbeat_interval_ms"], 100);
    let presence = gateway.presence.clone();
    assert_eq!(online(&presence, "alice").await, 1);
    // tungstenite answers pings only while it is read; not reading is a dead client.
    eventually("the silent client removed", || async {
        online(&presence, "alice").await == 0
    })
    .await;
    expect_error_then_close(&mut client, "heartbeat_timeout", 4408).await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_client_that_answers_pings_stays() {
    let mut settings = settings();
    settings.heartbeat_interval = Duration::from_millis(50);
    let gateway = Gateway::start(settings).await;
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    next_json(&mut client).await;
    // Reading lets tungstenite answer every ping; twenty intervals pass, each
    // ending with a pong round trip of our own.
    for id in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send_json(&mut client, json!({"type": "ping", "id": id})).await;
        assert_eq!(next_json(&mut client).await["id"], id);
    }
    assert_eq!(online(&gateway.presence, "alice").await, 1);
    gateway.stop().await;
}

/// On paused time: the expiry and the wait past it are tokio's timers, so
/// the test takes no wall-clock seconds.
#[tokio::test(start_paused = true)]
async fn a_token_expires_on_a_live_connection_unless_refreshed() {
    let mut settings = settings();
    settings.token_leeway = Duration::ZERO;
    let gateway = Gateway::start(settings).await;

    let short = pulse_auth::mint_token(SECRET, "alice", Duration::from_secs(2));
    let mut client = gateway.connect(&format!("?token={short}")).await;
    next_json(&mut client).await;
    expect_error_then_close(&mut client, "token_expired", 4401).await;

    let short = pulse_auth::mint_token(SECRET, "alice", Duration::from_secs(2));
    let mut client = gateway.connect(&format!("?token={short}")).await;
    next_json(&mut client).await;
    send_json(
        &mut client,
        json!({"type": "auth", "token": token("alice")}),
    )
    .await;
    // Past the first token's expiry, the connection still answers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    send_json(&mut client, json!({"type": "ping", "id": 1})).await;
    assert_eq!(next_json(&mut client).await["type"], "pong");

    // A token for someone else is refused.
    send_json(
        &mut client,
        json!({"type": "auth", "token": token("mallory")}),
    )
    .await;
    expect_error_then_close(&mut client, "user_mismatch", 4403).await;
    gateway.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001_and_deregisters() {
    let gateway = Gateway::start(settings()).await;
    let mut clients = Vec::new();
    for user in ["alice", "bob", "alice"] {
        let mut client = gateway.connect(&format!("?token={}", token(user))).await;
        next_json(&mut client).await;
        clients.push(client);
    }
    let presence = gateway.presence.clone();
    let report = gateway.stop().await;
    assert_eq!(report.open_at_shutdown, 3);
    assert!(report.completed);
    for client in &mut clients {
        expect_error_then_close(client, "going_away", 1001).await;
    }
    assert_eq!(presence.count_online().await.unwrap().connections, 0);
}

#[tokio::test]
async fn probes_say_alive_and_ready() {
    let gateway = Gateway::start(settings()).await;
    let (status, body) = http_get(gateway.addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(gateway.addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("auth: ok") && body.contains("presence: ok"),
        "{body}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn readiness_fails_while_pulse_auth_is_unreachable() {
    // A port that was free a moment ago: nothing answers there.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut settings = settings();
    settings.auth_url = Some(format!("http://{closed}"));
    let gateway = Gateway::start(settings).await;
    let addr = gateway.addr;
    eventually("/readyz answers 503", || async {
        let (status, body) = http_get(addr, "/readyz").await;
        status == 503 && body.contains("auth: unreachable")
    })
    .await;
    // Alive all the same.
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    gateway.stop().await;
}

#[tokio::test]
async fn plain_http_gets_a_clear_answer() {
    let gateway = Gateway::start(settings()).await;
    let (status, body) = http_get(gateway.addr, "/ws").await;
    assert_eq!(status, 426, "{body}");
    let (status, _) = http_get(gateway.addr, "/elsewhere").await;
    assert_eq!(status, 404);
    let (status, _) = http_get(gateway.addr, "/auth/login").await;
    assert_eq!(status, 404, "the dev login is off by default");
    gateway.stop().await;
}

/// Two gateways on one Redis share one per-user limit, each holding only
/// its own connections.
#[tokio::test]
async fn two_instances_share_one_per_user_limit() {
    let redis = RedisServer::start().await;
    let namespace = pulse_presence::testing::unique_namespace();
    let redis_presence = || {
        Presence::redis(RedisOptions::new(redis.url()).with_namespace(namespace.clone())).unwrap()
    };
    let validator = Validator::new(ValidatorSettings {
        leeway: Duration::ZERO,
        ..ValidatorSettings::with_secret(SECRET)
    })
    .unwrap();
    let mut handles = Vec::new();
    let mut addrs = Vec::new();
    let mut managers = Vec::new();
    for instance in ["a", "b"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let core = GatewayCore::new(
            Settings {
                drain_spread: Duration::from_millis(100),
                max_connections_per_user: 2,
                ..Settings::new(instance)
            },
            Authenticator::Local(validator.clone()),
            redis_presence(),
        );
        managers.push(core.manager());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        handles.push((
            tx,
            tokio::spawn(core.serve(listener, async move {
                let _ = rx.await;
            })),
        ));
    }
    let query = format!("?token={}", token("alice"));
    let open = |addr| {
        let url = format!("ws://{addr}/ws{query}");
        async move { tokio_tungstenite::connect_async(url).await.unwrap().0 }
    };
    let mut on_a = open(addrs[0]).await;
    assert_eq!(next_json(&mut on_a).await["type"], "connected");
    let mut on_b = open(addrs[1]).await;
    assert_eq!(next_json(&mut on_b).await["type"], "connected");
    for addr in &addrs {
        let mut third = open(*addr).await;
        expect_error_then_close(&mut third, "too_many_connections", 4429).await;
    }
    assert_eq!(managers[0].local_count("alice"), 1);
    assert_eq!(managers[1].local_count("alice"), 1);

    drop(on_b);
    let presence = redis_presence();
    eventually("b's place freed", || async {
        online(&presence, "alice").await == 1
    })
    .await;
    let mut again = open(addrs[0]).await;
    assert_eq!(next_json(&mut again).await["type"], "connected");
    assert_eq!(managers[0].local_count("alice"), 2);
    drop((on_a, again));
    for (tx, handle) in handles {
        tx.send(()).unwrap();
        handle.await.unwrap().unwrap();
    }
    assert!(presence.user("alice").await.unwrap().is_empty());
}
