//! Internal services acting on users: Send and Disconnect, on one instance
//! and across two, and the slow consumer whose queue overflows.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use pulse_auth::{Authenticator, Validator, ValidatorSettings};
use pulse_gateway::{Gateway as GatewayCore, Settings};
use pulse_presence::{
    Presence, RedisOptions,
    testing::{RedisServer, unique_namespace},
};
use serde_json::{json, value::RawValue};
use tokio::{sync::oneshot, task::JoinHandle};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

fn raw(value: &str) -> Box<RawValue> {
    RawValue::from_string(value.to_owned()).unwrap()
}

#[tokio::test]
async fn send_reaches_every_tab_of_the_user_and_no_one_else() {
    let gateway = Gateway::start(settings()).await;
    let query = format!("?token={}", token("alice"));
    let mut tab1 = gateway.connect(&query).await;
    next_json(&mut tab1).await;
    let mut tab2 = gateway.connect(&query).await;
    next_json(&mut tab2).await;
    let mut bob = gateway.connect(&format!("?token={}", token("bob"))).await;
    next_json(&mut bob).await;

    // Numbers beyond 2^53 arrive exactly as sent: the data is never re-encoded.
    let data = r#"{"id":18446744073709551615,"text":"hi"}"#;
    let reached = gateway.presence.send("alice", raw(data)).await.unwrap();
    assert_eq!(reached, 2);
    for tab in [&mut tab1, &mut tab2] {
        let text = next_text(tab).await;
        assert_eq!(
            text,
            format!(r##"{{"type":"publication","channel":"#alice","data":{data}}}"##)
        );
    }
    assert_eq!(
        gateway.presence.send("carol", raw("1")).await.unwrap(),
        0,
        "offline"
    );
    // Bob got nothing: his next message is the answer to his own ping.
    send_json(&mut bob, json!({"type": "ping", "id": "b"})).await;
    assert_eq!(
        next_json(&mut bob).await,
        json!({"type": "pong", "id": "b"})
    );
    gateway.stop().await;
}

#[tokio::test]
async fn disconnect_closes_one_connection_or_all_with_4403() {
    let gateway = Gateway::start(settings()).await;
    let query = format!("?token={}", token("alice"));
    let mut tab1 = gateway.connect(&query).await;
    let first_id = next_json(&mut tab1).await["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut tab2 = gateway.connect(&query).await;
    next_json(&mut tab2).await;
    let mut tab3 = gateway.connect(&query).await;
    next_json(&mut tab3).await;

    let closed = gateway
        .presence
        .disconnect("alice", Some(&first_id), "session revoked")
        .await
        .unwrap();
    assert_eq!(closed, 1);
    let error = next_json(&mut tab1).await;
    assert_eq!(error["code"], "disconnected");
    assert_eq!(error["message"], "session revoked");
    assert_eq!(u16::from(close_frame(&mut tab1).await.code), 4403);
    let presence = gateway.presence.clone();
    eventually("two left", || async {
        presence.user("alice").await.unwrap().len() == 2
    })
    .await;

    assert_eq!(
        gateway
            .presence
            .disconnect("alice", None, "banned")
            .await
            .unwrap(),
        2
    );
    for tab in [&mut tab2, &mut tab3] {
        expect_error_then_close(tab, "disconnected", 4403).await;
    }
    eventually("none left", || async {
        presence.user("alice").await.unwrap().is_empty()
    })
    .await;
    assert_eq!(
        gateway
            .presence
            .disconnect("alice", None, "again")
            .await
            .unwrap(),
        0
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_and_memory_stays_bounded() {
    let mut settings = settings();
    settings.outbound_queue = 8;
    let gateway = Gateway::start(settings).await;
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    next_json(&mut client).await;

    // 2,000 messages of 32 KiB (64 MB) at a client that reads nothing: the
    // socket buffers fill, then the queue of 8, then the connection is closed.
    let data = format!("\"{}\"", "x".repeat(32 * 1024));
    let mut handed = 0;
    for _ in 0..2000 {
        handed += gateway.presence.send("alice", raw(&data)).await.unwrap();
        if gateway.presence.user("alice").await.unwrap().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let presence = gateway.presence.clone();
    eventually("the slow consumer removed", || async {
        presence.user("alice").await.unwrap().is_empty()
    })
    .await;
    assert!(
        handed < 2000,
        "the connection was closed before the burst ended"
    );
    assert_eq!(gateway.presence.send("alice", raw(&data)).await.unwrap(), 0);

    // What the client finds when it finally reads: the messages the socket
    // buffers held, then the end of the connection (a 4429 close when there
    // was room for it, else the dropped transport), and nothing more.
    let mut messages = 0;
    let ending = loop {
        match tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(_))) => messages += 1,
            Some(Ok(Message::Ping(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                break format!("close {:?}", frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(error)) => break format!("error {error}"),
            None => break "end".to_owned(),
        }
    };
    eprintln!("slow consumer: handed {handed}, read {messages} messages then {ending}");
    assert!(messages < 2000, "{messages} messages then {ending}");
    assert!(
        !ending.starts_with("close") || ending == "close Some(4429)",
        "{ending}"
    );
    gateway.stop().await;
}

struct Instance {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<pulse_gateway::DrainReport, std::io::Error>>,
}

async fn instance(redis: &RedisServer, namespace: &str, id: &str) -> Instance {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let validator = Validator::new(ValidatorSettings {
        leeway: Duration::ZERO,
        ..ValidatorSettings::with_secret(SECRET)
    })
    .unwrap();
    let presence =
        Presence::redis(RedisOptions::new(redis.url()).with_namespace(namespace)).unwrap();
    let settings = Settings {
        drain_spread: Duration::from_millis(100),
        ..Settings::new(id)
    };
    let core = GatewayCore::new(settings, Authenticator::Local(validator), presence);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(core.serve(listener, async move {
        let _ = stopped.await;
    }));
    Instance { addr, stop, task }
}

#[tokio::test]
async fn send_and_disconnect_reach_every_instance() {
    let redis = RedisServer::start().await;
    let namespace = unique_namespace();
    let a = instance(&redis, &namespace, "a").await;
    let b = instance(&redis, &namespace, "b").await;
    // An internal service's view: presence without an instance of its own.
    let service =
        Presence::redis(RedisOptions::new(redis.url()).with_namespace(&namespace)).unwrap();

    let query = format!("?token={}", token("alice"));
    let connect = |addr: std::net::SocketAddr| {
        let url = format!("ws://{addr}/ws{query}");
        async move { tokio_tungstenite::connect_async(url).await.unwrap().0 }
    };
    let mut on_a = connect(a.addr).await;
    next_json(&mut on_a).await;
    let mut on_b1 = connect(b.addr).await;
    let b1_id = next_json(&mut on_b1).await["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut on_b2 = connect(b.addr).await;
    next_json(&mut on_b2).await;

    assert_eq!(service.send("alice", raw(r#"{"n":1}"#)).await.unwrap(), 3);
    for client in [&mut on_a, &mut on_b1, &mut on_b2] {
        assert_eq!(
            next_json(client).await,
            json!({"type": "publication", "channel": "#alice", "data": {"n": 1}})
        );
    }

    assert_eq!(
        service
            .disconnect("alice", Some(&b1_id), "moved")
            .await
            .unwrap(),
        1
    );
    expect_error_then_close(&mut on_b1, "disconnected", 4403).await;
    eventually("b1 gone", || async {
        service.user("alice").await.unwrap().len() == 2
    })
    .await;

    assert_eq!(
        service.disconnect("alice", None, "logout").await.unwrap(),
        2
    );
    expect_error_then_close(&mut on_a, "disconnected", 4403).await;
    expect_error_then_close(&mut on_b2, "disconnected", 4403).await;
    eventually("all gone", || async {
        service.user("alice").await.unwrap().is_empty()
    })
    .await;

    for instance in [a, b] {
        instance.stop.send(()).unwrap();
        instance.task.await.unwrap().unwrap();
    }
}
