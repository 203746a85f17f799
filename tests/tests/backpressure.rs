//! Backpressure: 1,000 clients that stop reading while an internal service
//! keeps sending to them through `pulse-presence`'s `Send`. The gateway's
//! memory stays bounded by its outbound queues, the slow consumers are
//! closed (4429 `slow_consumer`, or a dropped transport when not even a
//! close frame fits), and the gateway keeps serving.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt, stream};
use pulse_e2e::{raw::RawSocket, *};
use pulse_protocol::proto::presence::v1::SendRequest;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 1000;
/// Messages sent to each client: about twice what fills the socket buffers
/// on both ends (two or three messages with the clients below), the one a
/// blocked write holds and the queue.
const MESSAGES: usize = 36;
/// Bytes of each message's data.
const DATA_BYTES: usize = 8 * 1024;
const QUEUE: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_closed_and_memory_stays_bounded() {
    let redis = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = Service::presence(redis.url(), &namespace, &[]).await;
    let queue = QUEUE.to_string();
    let gateway = Service::gateway(
        redis.url(),
        &namespace,
        &[
            "--outbound-queue",
            &queue,
            // A close that does not fit is given up quickly.
            "--write-timeout",
            "2s",
            "--max-unauthenticated-per-ip",
            "0",
        ],
    )
    .await;
    let addr = gateway.addr;

    // 1,000 users, one socket each, with a small receive buffer so that the
    // server's writes block soon; each reads `connected` and then nothing.
    let started = Instant::now();
    let mut clients: Vec<RawSocket> = stream::iter(0..CLIENTS)
        .map(|i| async move {
            let stream = slow_client_socket().connect(addr).await.expect("connect");
            let mut client = RawSocket::from_stream(stream);
            client
                .handshake(addr, &format!("/ws?token={}", token(&user(i))))
                .await;
            let connected = client.read_frame().await.expect("connected");
            assert!(connected.payload.starts_with(br#"{"type":"connected""#));
            client
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let connected_in = started.elapsed();
    let grpc = pulse_e2e::presence_client(presence.grpc_url()).await;
    eventually("every client registered", Duration::from_secs(20), || {
        let mut grpc = grpc.clone();
        async move { online(&mut grpc).await == CLIENTS as u64 }
    })
    .await;
    let rss_before = proc_status_kib(gateway.pid(), "VmRSS");

    // Round after round, one distinct message to every user, so that every
    // queue holds its own copies (one user's sockets would share one).
    let started = Instant::now();
    let handed = AtomicU64::new(0);
    let filler = "x".repeat(DATA_BYTES - 16);
    let sends = (0..MESSAGES).flat_map(|round| (0..CLIENTS).map(move |i| (round, i)));
    stream::iter(sends)
        .for_each_concurrent(64, |(round, i)| {
            let mut grpc = grpc.clone();
            let data_json = format!("\"{round:04}:{i:04}:{filler}\"");
            let handed = &handed;
            async move {
                let reply = grpc
                    .send(SendRequest {
                        user_id: user(i),
                        data_json,
                    })
                    .await
                    .expect("Send answers");
                handed.fetch_add(reply.into_inner().connections, Ordering::Relaxed);
            }
        })
        .await;
    let sent_in = started.elapsed();

    // Every slow consumer is closed and deregistered.
    eventually(
        "every slow consumer closed",
        Duration::from_secs(20),
        || {
            let mut grpc = grpc.clone();
            async move { online(&mut grpc).await == 0 }
        },
    )
    .await;
    let pid = gateway.pid();
    let (rss_after, peak) = (proc_status_kib(pid, "VmRSS"), proc_status_kib(pid, "VmHWM"));

    let (mut closed_4429, mut dropped) = (0, 0);
    for client in &mut clients {
        match client.close_or_eof().await {
            Some(closed) => {
                assert_eq!(closed.code, 4429);
                assert_eq!(closed.error.as_deref(), Some("slow_consumer"));
                closed_4429 += 1;
            }
            None => dropped += 1,
        }
    }
    drop(clients);

    // What the gateway may hold for slow consumers: per socket, the queue
    // plus the frame a blocked write holds plus one for fastwebsockets'
    // write buffer, each a frame of the data and its JSON envelope; plus a
    // fixed 64 MiB for allocator slack and the gRPC, Redis and runtime
    // buffers: 205 MiB. Without the bound, the 36 messages each client is
    // sent, less the few its socket holds, would be some 260 MiB waiting.
    let frame_bytes = DATA_BYTES + 64;
    let bound_kib = ((CLIENTS * (QUEUE + 2) * frame_bytes) >> 10) as u64 + 64 * 1024;
    let grew_kib = peak.saturating_sub(rss_before);
    eprintln!(
        "backpressure: {CLIENTS} clients connected in {connected_in:?}; {} Sends of {DATA_BYTES} B \
         in {sent_in:?}, {} handed to a connection; gateway RSS {} MiB before, peak {} MiB, \
         {} MiB after (grew {} MiB, bound {} MiB); {closed_4429} closed 4429, {dropped} dropped",
        MESSAGES * CLIENTS,
        handed.load(Ordering::Relaxed),
        rss_before >> 10,
        peak >> 10,
        rss_after >> 10,
        grew_kib >> 10,
        bound_kib >> 10,
    );
    assert!(
        grew_kib <= bound_kib,
        "the gateway grew {grew_kib} KiB with slow consumers; bound {bound_kib} KiB"
    );
    assert_eq!(closed_4429 + dropped, CLIENTS);

    // And it keeps serving.
    let mut client = connect(addr, &format!("?token={}", token("after"))).await;
    assert_eq!(next_json(&mut client).await["type"], "connected");
    client
        .send(Message::text(r#"{"type":"ping","id":1}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut client).await["type"], "pong");
}

/// A client socket as a phone on a real network would have: a small
/// receive buffer and an Ethernet-sized segment (1460 bytes). Over loopback
/// (MTU 64 KiB) the kernel would otherwise size the server's send buffer for
/// 64 KiB segments, about 3 MiB per socket, and absorb everything sent.
fn slow_client_socket() -> TcpSocket {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_tcp_mss(1460).unwrap();
    socket.set_nonblocking(true).unwrap();
    TcpSocket::from_std_stream(socket.into())
}

fn user(i: usize) -> String {
    format!("slow-{i:04}")
}

async fn online(grpc: &mut pulse_e2e::Grpc) -> u64 {
    online_counts(grpc).await.expect("CountOnline answers").0
}
