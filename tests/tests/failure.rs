//! Presence under failure with real processes: a gateway killed with SIGKILL
//! while it holds hundreds of connections.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use pulse_e2e::*;
use pulse_protocol::proto::presence::v1::EventKind;

const USERS: usize = 100;
const TABS: usize = 3;

#[tokio::test]
async fn a_killed_gateway_is_reaped_with_events_within_the_lease() {
    let redis = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = Service::presence(redis.url(), &namespace, &["--reap-interval", "500ms"]).await;
    let mut gateway = Service::gateway(
        redis.url(),
        &namespace,
        &["--instance-id", "doomed", "--lease-ttl", "3s"],
    )
    .await;
    let mut client = pulse_e2e::presence_client(presence.grpc_url()).await;
    let mut watch = watch(&mut client, &[]).await;

    // 100 users with 3 tabs each: 300 sockets, all held open.
    let mut sockets = Vec::new();
    for user in 0..USERS {
        let query = format!("?token={}", token(&format!("user-{user}")));
        for _ in 0..TABS {
            let mut socket = connect(gateway.addr, &query).await;
            assert_eq!(next_json(&mut socket).await["type"], "connected");
            sockets.push(socket);
        }
    }
    eventually("300 registered", Duration::from_secs(30), || async {
        online_counts(&client).await.unwrap().1 == (USERS * TABS) as u64
    })
    .await;
    // Drain the connect events so that what follows is the death alone.
    let mut seen = 0;
    while seen < USERS * TABS + USERS {
        next_watch(&mut watch).await;
        seen += 1;
    }

    gateway.kill().await;
    let killed = Instant::now();
    let mut disconnected: HashMap<String, usize> = HashMap::new();
    let mut offline: HashMap<String, usize> = HashMap::new();
    while offline.len() < USERS || disconnected.values().sum::<usize>() < USERS * TABS {
        let event = next_watch(&mut watch).await;
        assert_eq!(event.instance_id, "doomed");
        match event.kind() {
            EventKind::Disconnected => *disconnected.entry(event.user_id).or_default() += 1,
            EventKind::Offline => *offline.entry(event.user_id).or_default() += 1,
            other => panic!("unexpected {other:?} after the kill"),
        }
    }
    let elapsed = killed.elapsed();
    eprintln!(
        "kill -9 to the last offline event for {} connections: {elapsed:?}",
        USERS * TABS
    );
    assert!(
        disconnected.values().all(|&n| n == TABS),
        "{TABS} disconnected per user"
    );
    assert!(offline.values().all(|&n| n == 1), "one offline per user");
    assert_eq!(online_counts(&client).await.unwrap(), (0, 0), "no phantoms");
    drop(sockets);
}

async fn next_watch(
    watch: &mut tonic::Streaming<pulse_protocol::proto::presence::v1::PresenceEvent>,
) -> pulse_protocol::proto::presence::v1::PresenceEvent {
    tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("an event within 30 s")
        .expect("the watch is open")
        .expect("an event, not an error")
}
