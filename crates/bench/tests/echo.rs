//! The load generator against the in-process echo server: every client
//! implementation, and the `connect` and `ping` scenarios end to end.

use std::{net::Ipv4Addr, time::Duration};

use pulse_bench::{
    client::ClientKind,
    echo::GREETING,
    scenario::{ClientSetup, connect, loopback_sources, open, ping},
};
use tokio::net::TcpListener;

async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(pulse_bench::echo::run(listener, std::future::pending()));
    addr
}

fn setup(kind: ClientKind) -> ClientSetup {
    ClientSetup {
        kind,
        jwt_secret: Some("test-secret".into()),
        sources: loopback_sources(Ipv4Addr::new(127, 0, 0, 1), 2).unwrap(),
    }
}

#[tokio::test]
async fn every_client_gets_the_greeting_and_its_echo() {
    let server = echo_server().await;
    for kind in [
        ClientKind::Fws,
        ClientKind::FwsHyper,
        ClientKind::Tungstenite,
    ] {
        let setup = setup(kind);
        let mut opened = open(&setup, server, 1, &setup.path_for("alice"))
            .await
            .unwrap_or_else(|reason| panic!("{kind:?}: {reason}"));
        assert_eq!(&opened.first[..], GREETING, "{kind:?}");
        opened
            .conn
            .send_text(r#"{"type":"ping","id":9}"#)
            .await
            .unwrap();
        let echoed = opened.conn.next_text().await.unwrap().unwrap();
        assert_eq!(&echoed[..], br#"{"type":"ping","id":9}"#, "{kind:?}");
    }
}

#[tokio::test]
async fn a_small_connect_and_ping_run() {
    let server = echo_server().await;
    let result = connect::run(
        setup(ClientKind::Fws),
        connect::ConnectOptions {
            label: "echo".into(),
            server,
            server_pid: Some(std::process::id()),
            watch_pids: vec![("self".into(), std::process::id())],
            connections: 200,
            rate: 2000.0,
            max_inflight: 50,
            user_prefix: "u".into(),
            users: 20,
            settle: Duration::from_millis(10),
            idle_window: Duration::from_millis(100),
        },
    )
    .await
    .unwrap();
    assert_eq!(result.connected, 200, "{:?}", result.failures);
    assert_eq!(result.handshake.count, 200);
    assert!(result.server_rss_per_connection_kib.is_some());
    assert!(result.server_idle_cpu_percent.is_some());
    assert_eq!(result.dropped_while_held, 0);
    assert!(result.other_cpu_us_per_connection.contains_key("self"));

    let result = ping::run(
        setup(ClientKind::Fws),
        ping::PingOptions {
            label: "echo".into(),
            server,
            connections: 4,
            rate: 200.0,
            duration: Duration::from_millis(250),
            user_prefix: "p".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(result.sent, 50);
    assert_eq!(result.received, 50);
}

#[tokio::test]
async fn a_refusal_is_a_reason_not_a_panic() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    drop(listener);
    let setup = setup(ClientKind::Fws);
    let error = open(&setup, server, 0, "/ws").await.err().unwrap();
    assert!(error.starts_with("tcp connect"), "{error}");
}
