//! `send`: `Presence/Send` at a fixed rate to users who hold a socket on each
//! of several gateways; latency from just before the gRPC call to receipt at
//! the client, read from a timestamp carried in the message's data.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use pulse_protocol::proto::presence::v1::{SendRequest, presence_client::PresenceClient};
use tokio::{
    sync::Mutex,
    time::{Instant, sleep, sleep_until},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::{ClientSetup, bearer, clock_micros, due, open};
use crate::{
    client::Conn,
    result::SendResult,
    stats::{Samples, round3},
};

/// How long deliveries may trail the last call before the count is taken.
const GRACE: Duration = Duration::from_secs(2);

/// What the `send` scenario is asked to do.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Which servers and configuration, for the result.
    pub label: String,
    /// The gateways; every user gets one socket on each.
    pub gateways: Vec<SocketAddr>,
    /// The `pulse-presence` gRPC endpoint (`http://127.0.0.1:PORT`).
    pub presence_url: String,
    /// The API key every call to `pulse-presence` carries.
    pub api_key: String,
    /// Users sent to, round robin.
    pub users: usize,
    /// Send calls per second.
    pub rate: f64,
    /// How long to send for.
    pub duration: Duration,
    /// User ids are this prefix and a number.
    pub user_prefix: String,
}

/// Runs the scenario and returns its figures, printing progress lines.
pub async fn run(setup: ClientSetup, options: SendOptions) -> anyhow::Result<SendResult> {
    anyhow::ensure!(!options.gateways.is_empty(), "name at least one gateway");
    let users: Vec<String> = (0..options.users.max(1))
        .map(|user| format!("{}-{user}", options.user_prefix))
        .collect();
    let stop = CancellationToken::new();
    let mut receivers = Vec::new();
    for (index, user) in users.iter().enumerate() {
        let path = setup.path_for(user);
        for (g, gateway) in options.gateways.iter().enumerate() {
            let opened = open(&setup, *gateway, index * options.gateways.len() + g, &path)
                .await
                .map_err(|reason| anyhow::anyhow!("opening {user} on {gateway}: {reason}"))?;
            receivers.push(tokio::spawn(receive(opened.conn, stop.clone())));
        }
    }
    let connections = receivers.len() as u64;
    let channel = Channel::from_shared(options.presence_url.clone())?
        .connect()
        .await?;
    let client = PresenceClient::with_interceptor(channel, bearer(&options.api_key)?);
    let total = (options.rate * options.duration.as_secs_f64()).round() as u64;
    println!(
        "send [{}]: {total} sends at {}/s to {} users with {connections} sockets on {} gateways",
        options.label,
        options.rate,
        users.len(),
        options.gateways.len()
    );

    let calls = Arc::new(Mutex::new(Samples::with_capacity(total as usize)));
    let errors = Arc::new(AtomicU64::new(0));
    let reported = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(50);
    let mut inflight = Vec::with_capacity(total as usize);
    for seq in 0..total {
        sleep_until(due(start, seq, options.rate)).await;
        let user_id = users[seq as usize % users.len()].clone();
        let (mut client, calls, errors, reported) = (
            client.clone(),
            calls.clone(),
            errors.clone(),
            reported.clone(),
        );
        // Open loop: each call on its own task, so a slow answer does not
        // delay the next call.
        inflight.push(tokio::spawn(async move {
            let called = Instant::now();
            let request = SendRequest {
                user_id,
                data_json: format!("{{\"seq\":{seq},\"t\":{}}}", clock_micros()),
            };
            match client.send(request).await {
                Ok(answer) => {
                    calls.lock().await.record(called.elapsed());
                    reported.fetch_add(answer.into_inner().connections, Ordering::Relaxed);
                }
                Err(status) => {
                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("send: first failed call: {status}");
                    }
                }
            }
        }));
    }
    let elapsed = start.elapsed().as_secs_f64();
    for call in inflight {
        call.await?;
    }
    let reported = reported.load(Ordering::Relaxed);
    // Wait for the deliveries the answers promised, within the grace period.
    let deadline = Instant::now() + GRACE;
    sleep(Duration::from_millis(100)).await;
    while Instant::now() < deadline && delivered_so_far() < reported {
        sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let mut latency = Samples::with_capacity(reported as usize);
    for receiver in receivers {
        latency.merge(receiver.await?);
    }
    let summary = latency.summary();
    let calls = calls.lock().await.summary();
    let sent = total;
    println!(
        "send [{}]: {} deliveries of {reported} reported ({} failed calls); latency p50 {} ms, p90 {} ms, p99 {} ms, max {} ms; gRPC call p99 {} ms",
        options.label,
        latency.len(),
        errors.load(Ordering::Relaxed),
        summary.p50_ms,
        summary.p90_ms,
        summary.p99_ms,
        summary.max_ms,
        calls.p99_ms
    );
    Ok(SendResult {
        label: options.label,
        users: users.len() as u64,
        connections,
        gateways: options.gateways.len() as u64,
        rate_target: options.rate,
        rate_achieved: if elapsed > 0.0 {
            round3(sent as f64 / elapsed)
        } else {
            0.0
        },
        sent,
        grpc_errors: errors.load(Ordering::Relaxed),
        reported,
        delivered: latency.len() as u64,
        latency: summary,
        grpc_call: calls,
    })
}

static DELIVERED: AtomicU64 = AtomicU64::new(0);

fn delivered_so_far() -> u64 {
    DELIVERED.load(Ordering::Relaxed)
}

/// Reads one socket's messages until told to stop; returns their latencies.
async fn receive(mut conn: Conn, stop: CancellationToken) -> Samples {
    let mut samples = Samples::default();
    tokio::select! {
        () = stop.cancelled() => {}
        () = async {
            while let Ok(Some(text)) = conn.next_text().await {
                let now = clock_micros();
                if let Some(sent) = sent_at(&text) {
                    samples.record_micros(now.saturating_sub(sent));
                    DELIVERED.fetch_add(1, Ordering::Relaxed);
                }
            }
        } => {}
    }
    samples
}

/// The send timestamp in a `{"type":"publication","channel":"#<user>","data":{"t":MICROS,...}}`.
pub fn sent_at(message: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(message).ok()?;
    if value["type"] != "publication" {
        return None;
    }
    value["data"]["t"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_come_from_message_data() {
        assert_eq!(
            sent_at(br##"{"type":"publication","channel":"#u","data":{"seq":3,"t":123456}}"##),
            Some(123456)
        );
        assert_eq!(sent_at(br#"{"type":"pong","id":1}"#), None);
        assert_eq!(
            sent_at(br##"{"type":"publication","channel":"#u","data":"text"}"##),
            None
        );
    }
}
