//! The fan-out floor (`pulse-fanout`) in process, and the `fanout` scenario
//! end to end against it: every subscriber reads every publication, with and
//! without coalesced writes, and a bad trigger gets a clear answer.

use std::{net::Ipv4Addr, time::Duration};

use pulse_bench::{
    client::ClientKind,
    fanout_floor::{self, FloorOptions},
    result::FanoutPhase,
    scenario::{
        ClientSetup,
        channels::{Crowd, Publisher, stamp_data, stamp_of, subscribe},
        fanout, loopback_sources, open,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

async fn floor(coalesce: bool, direct: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = FloorOptions {
        coalesce,
        direct,
        ..FloorOptions::default()
    };
    tokio::spawn(fanout_floor::run(listener, options, std::future::pending()));
    addr
}

fn setup() -> ClientSetup {
    ClientSetup {
        kind: ClientKind::Fws,
        jwt_secret: None,
        sources: loopback_sources(Ipv4Addr::new(127, 0, 0, 1), 2).unwrap(),
    }
}

#[tokio::test]
async fn every_subscriber_reads_every_publication_in_order() {
    for (coalesce, direct) in [(false, false), (true, false), (false, true), (true, true)] {
        let server = floor(coalesce, direct).await;
        let setup = setup();
        let mut conns = Vec::new();
        for index in 0..3 {
            let mut conn = open(&setup, server, index, "/ws").await.unwrap().conn;
            subscribe(&mut conn, 1, "room:1", None).await.unwrap();
            conns.push(conn);
        }
        let publisher = Publisher::floor(server).unwrap();
        // More than one frame waits per socket, so the coalescing writer
        // has batches to write.
        for seq in 0..50 {
            publisher
                .publish("room:1".into(), stamp_data(seq, 7))
                .await
                .unwrap();
        }
        publisher
            .publish("room:2".into(), stamp_data(99, 7))
            .await
            .unwrap();
        for conn in &mut conns {
            for seq in 0..50 {
                let text = tokio::time::timeout(Duration::from_secs(5), conn.next_text())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    stamp_of(&text),
                    Some((seq, 7)),
                    "coalesce {coalesce}, direct {direct}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_bad_trigger_is_answered_not_dropped() {
    let server = floor(false, false).await;
    let ask = |request: &'static str| async move {
        let mut stream = TcpStream::connect(server).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let answer = ask("POST /publish HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot json!").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("expected {\"channel\":C,\"data\":JSON}"),
        "{answer}"
    );
    let answer = ask("GET /nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let answer = ask("POST /publish HTTP/1.1\r\nhost: x\r\ncontent-length: 31\r\nconnection: close\r\n\r\n{\"channel\":\"none\",\"data\":[1]}  ").await;
    assert!(answer.contains("{\"subscribers\":0}"), "{answer}");
}

#[tokio::test]
async fn a_small_fanout_run_counts_every_delivery() {
    let server = floor(true, false).await;
    let results = fanout::run(
        setup(),
        fanout::FanoutOptions {
            label: "floor".into(),
            crowd: Crowd {
                servers: vec![server],
                count: 0,
                rate: 2_000.0,
                max_inflight: 32,
                user_prefix: "f".into(),
            },
            publisher: Publisher::floor(server).unwrap(),
            channel_prefix: "bench:t-".into(),
            channels: 2,
            subscribers: 10,
            rate: 40.0,
            duration: Duration::from_millis(500),
            saturate: Duration::from_millis(500),
            window: 4,
            warmup: Duration::from_millis(100),
            server_pids: vec![std::process::id()],
            watch_pids: vec![],
            probe_rate: 20.0,
        },
    )
    .await
    .unwrap();
    assert_eq!(results.len(), 2);
    let rate = &results[0];
    assert_eq!(rate.phase, FanoutPhase::Rate);
    assert_eq!(rate.subscribed, 20);
    assert_eq!(rate.publications, 20);
    assert_eq!(rate.complete, 20, "{rate:?}");
    assert_eq!(rate.deliveries, 200);
    assert_eq!(rate.last_read.count, 20);
    let saturation = &results[1];
    assert_eq!(saturation.phase, FanoutPhase::Saturation);
    assert!(saturation.publications > 0, "{saturation:?}");
    assert_eq!(
        saturation.complete, saturation.publications,
        "{saturation:?}"
    );
    assert!(saturation.deliveries_per_second > 0.0);
    assert!(saturation.server_writes_per_delivery.is_some());
    let probes = saturation.subscribe_meanwhile.expect("the probes ran");
    assert!(probes.count > 0, "{probes:?}");
}
