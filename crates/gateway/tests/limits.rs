//! The edge's limits, each with its answer: 4429 for rates and per-user
//! counts, HTTP 429 for unauthenticated sockets per IP, 403 for a foreign
//! origin, a closed socket for a slow request head; and the conformance echo.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use crate::support::*;

#[tokio::test]
async fn a_connection_over_its_message_rate_is_closed_with_4429() {
    let mut settings = settings();
    settings.max_messages_per_second = 5;
    let gateway = Gateway::start(settings).await;
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    next_json(&mut client).await;
    // A burst of twice the rate passes; the rest of 30 at once does not.
    for id in 0..30 {
        client
            .send(Message::text(json!({"type": "ping", "id": id}).to_string()))
            .await
            .unwrap();
    }
    let mut pongs = 0;
    let error = loop {
        let message = next_json(&mut client).await;
        if message["type"] == "pong" {
            pongs += 1;
        } else {
            break message;
        }
    };
    assert_eq!(pongs, 10, "the burst");
    assert_eq!(error["code"], "rate_limited");
    assert_eq!(u16::from(close_frame(&mut client).await.code), 4429);
    gateway.stop().await;
}

#[tokio::test]
async fn a_user_over_the_connection_limit_is_refused_with_4429() {
    let mut settings = settings();
    settings.max_connections_per_user = 2;
    let gateway = Gateway::start(settings).await;
    let query = format!("?token={}", token("alice"));
    let mut first = gateway.connect(&query).await;
    next_json(&mut first).await;
    let mut second = gateway.connect(&query).await;
    next_json(&mut second).await;
    let mut third = gateway.connect(&query).await;
    expect_error_then_close(&mut third, "too_many_connections", 4429).await;
    // Another user is not affected, and a freed place can be taken again.
    let mut bob = gateway.connect(&format!("?token={}", token("bob"))).await;
    assert_eq!(next_json(&mut bob).await["type"], "connected");
    first.close(None).await.unwrap();
    let presence = gateway.presence.clone();
    eventually("a place freed", || async {
        presence.user("alice").await.unwrap().len() == 1
    })
    .await;
    let mut again = gateway.connect(&query).await;
    assert_eq!(next_json(&mut again).await["type"], "connected");
    gateway.stop().await;
}

#[tokio::test]
async fn unauthenticated_sockets_per_ip_are_bounded() {
    let mut settings = settings();
    settings.max_unauthenticated_per_ip = 2;
    settings.auth_timeout = Duration::from_secs(3600);
    let gateway = Gateway::start(settings).await;
    let _waiting1 = gateway.connect("").await;
    let mut waiting2 = gateway.connect("").await;
    match tokio_tungstenite::connect_async(gateway.url("")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("expected HTTP 429, got {other:?}"),
    }
    // Once one of them authenticates, its place is free.
    send_json(
        &mut waiting2,
        json!({"type": "auth", "token": token("alice")}),
    )
    .await;
    assert_eq!(next_json(&mut waiting2).await["type"], "connected");
    let _waiting3 = gateway.connect("").await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_gets_403() {
    let mut settings = settings();
    settings.allowed_origins = vec!["https://app.example.com".into()];
    let gateway = Gateway::start(settings).await;
    let with_origin = |origin: &str| {
        let mut request = gateway
            .url(&format!("?token={}", token("alice")))
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        request
    };
    match tokio_tungstenite::connect_async(with_origin("https://evil.example")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected HTTP 403, got {other:?}"),
    }
    let (mut allowed, _) = tokio_tungstenite::connect_async(with_origin("https://app.example.com"))
        .await
        .unwrap();
    assert_eq!(next_json(&mut allowed).await["type"], "connected");
    // Non-browser clients send no Origin at all.
    let mut native = gateway.connect(&format!("?token={}", token("alice"))).await;
    assert_eq!(next_json(&mut native).await["type"], "connected");
    gateway.stop().await;
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    let mut settings = settings();
    settings.handshake_timeout = Duration::from_millis(200);
    let gateway = Gateway::start(settings).await;
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    // The server answers 408 or just closes; either way the read ends.
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the server closed the slow request")
        .ok();
    gateway.stop().await;
}

#[tokio::test]
async fn the_echo_path_echoes_only_when_configured() {
    let mut settings = settings();
    settings.echo_path = Some("/echo".into());
    let gateway = Gateway::start(settings).await;
    let (mut echo, _) = tokio_tungstenite::connect_async(format!("ws://{}/echo", gateway.addr))
        .await
        .unwrap();
    echo.send(Message::text("hello")).await.unwrap();
    assert_eq!(echo.next().await.unwrap().unwrap(), Message::text("hello"));
    echo.send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    assert_eq!(
        echo.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 159, 146, 150])
    );
    gateway.stop().await;

    let gateway = Gateway::start(support::settings()).await;
    match tokio_tungstenite::connect_async(format!("ws://{}/echo", gateway.addr)).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected 404 without --echo-path, got {other:?}"),
    }
    gateway.stop().await;
}
