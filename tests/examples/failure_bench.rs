//! Failure timings for `scripts/bench.sh` (issue 3): how long presence takes
//! to tell the truth again after a gateway holding N connections is killed
//! with SIGKILL, and after Redis restarts empty under N open connections.
//!
//! `cargo run --release -p pulse-e2e --example failure_bench -- [connections]`
//! (binaries built in the same profile first). Prints human lines and one
//! `RESULT {json}` line.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pulse_e2e::*;
use pulse_protocol::proto::presence::v1::EventKind;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let connections: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("a number of connections"))
        .unwrap_or(5000);
    let users = connections / 5;

    let redis = RedisServer::spawn().await;
    let port = redis.port().expect("a private redis-server");
    let url = redis.url().to_owned();
    let namespace = unique_namespace();
    let presence = Service::presence(&url, &namespace, &[]).await;
    let gateway_args = |id: &'static str| {
        vec![
            "--listen".to_owned(),
            "127.0.0.1:0".into(),
            "--jwt-secret".into(),
            SECRET.into(),
            "--redis-url".into(),
            url.clone(),
            "--redis-namespace".into(),
            namespace.clone(),
            "--instance-id".into(),
            id.into(),
            "--max-unauthenticated-per-ip".into(),
            "0".into(),
        ]
    };
    let args = gateway_args("victim");
    let mut victim = Service::start(
        "pulse-gateway",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let args = gateway_args("survivor");
    let survivor = Service::start(
        "pulse-gateway",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let client = pulse_e2e::presence_client(presence.grpc_url()).await;

    // 1. SIGKILL a gateway holding `connections`: time to the last offline.
    let sockets = open(victim.addr, connections, users).await;
    wait_for(&client, connections as u64).await;
    let mut watch = watch(&mut client.clone(), &[]).await;
    victim.kill().await;
    let killed = Instant::now();
    let mut offline = 0;
    while offline < users {
        let event = tokio::time::timeout(Duration::from_secs(60), watch.next())
            .await
            .expect("events within 60 s")
            .expect("watch open")
            .expect("an event");
        if event.kind() == EventKind::Offline {
            offline += 1;
        }
    }
    let kill_to_offline = killed.elapsed();
    drop(sockets);
    println!(
        "kill -9 of a gateway with {connections} connections -> last offline event: {kill_to_offline:?}"
    );

    // 2. Redis restarts empty under `connections` open sockets: time until
    //    presence counts them all again.
    let sockets = open(survivor.addr, connections, users).await;
    wait_for(&client, connections as u64).await;
    redis.stop().await;
    let _redis = RedisServer::spawn_on(port).await;
    let back = Instant::now();
    loop {
        if online_counts(&client).await.ok().map(|(_, n)| n) == Some(connections as u64) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "presence never recovered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let redis_to_truth = back.elapsed();
    println!(
        "redis restarted empty under {connections} connections -> presence true again: {redis_to_truth:?}"
    );
    println!(
        "RESULT {}",
        serde_json::json!({
            "scenario": "failure",
            "connections": connections,
            "kill_to_last_offline_ms": kill_to_offline.as_secs_f64() * 1000.0,
            "redis_return_to_truth_ms": redis_to_truth.as_secs_f64() * 1000.0,
        })
    );
    drop(sockets);
}

/// Opens `n` authenticated sockets spread over `users` users, 64 at a time.
async fn open(addr: std::net::SocketAddr, n: usize, users: usize) -> Vec<Client> {
    let mut sockets = Vec::with_capacity(n);
    let tokens: Vec<String> = (0..users).map(|u| token(&format!("bench-{u}"))).collect();
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let batch = futures_util::future::join_all(chunk.iter().map(|i| {
            let query = format!("?token={}", tokens[i % users]);
            async move {
                let mut socket = connect(addr, &query).await;
                next_json(&mut socket).await;
                socket
            }
        }))
        .await;
        sockets.extend(batch);
    }
    sockets
}

async fn wait_for(client: &pulse_e2e::Grpc, connections: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if online_counts(client).await.ok().map(|(_, n)| n) == Some(connections) {
            return;
        }
        assert!(Instant::now() < deadline, "never registered {connections}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
