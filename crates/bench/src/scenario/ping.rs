//! `ping`: application round trips (`{"type":"ping","id":N}` to the answer
//! carrying the same id) at a fixed total rate over a few connections.
//!
//! The echo server answers with the ping itself, the gateway with a `pong`;
//! both carry the id, which is all the client matches on.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::time::{Instant, sleep_until, timeout};

use super::{ClientSetup, due, open};
use crate::{
    client::Conn,
    result::PingResult,
    stats::{Samples, round3},
};

/// How long one answer may take before the connection gives up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the `ping` scenario is asked to do.
#[derive(Debug, Clone)]
pub struct PingOptions {
    /// Which server and configuration, for the result.
    pub label: String,
    /// The server's address.
    pub server: SocketAddr,
    /// Connections the pings are spread over.
    pub connections: usize,
    /// Pings per second, in total.
    pub rate: f64,
    /// How long to ping for.
    pub duration: Duration,
    /// User ids are this prefix and a number.
    pub user_prefix: String,
}

/// Runs the scenario and returns its figures, printing progress lines.
pub async fn run(setup: ClientSetup, options: PingOptions) -> anyhow::Result<PingResult> {
    let connections = options.connections.max(1);
    let mut conns = Vec::with_capacity(connections);
    for index in 0..connections {
        let path = setup.path_for(&format!("{}-{index}", options.user_prefix));
        let opened = open(&setup, options.server, index, &path)
            .await
            .map_err(|reason| anyhow::anyhow!("opening connection {index}: {reason}"))?;
        conns.push(opened.conn);
    }
    let total = (options.rate * options.duration.as_secs_f64()).round() as u64;
    println!(
        "ping [{}]: {total} pings at {}/s over {connections} connections",
        options.label, options.rate
    );

    // Connection k sends pings k, k + n, k + 2n, ... of one evenly spaced schedule.
    let start = Instant::now() + Duration::from_millis(50);
    let rate = options.rate;
    let label: Arc<str> = options.label.clone().into();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(k, conn)| {
            let label = label.clone();
            tokio::spawn(ping_loop(
                conn,
                k as u64,
                connections as u64,
                total,
                start,
                rate,
                label,
            ))
        })
        .collect();
    let mut rtt = Samples::with_capacity(total as usize);
    let mut sent = 0;
    for task in tasks {
        let (samples, sent_here) = task.await?;
        rtt.merge(samples);
        sent += sent_here;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let summary = rtt.summary();
    println!(
        "ping [{}]: {} answers to {sent} pings; rtt p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        options.label,
        rtt.len(),
        summary.p50_ms,
        summary.p90_ms,
        summary.p99_ms,
        summary.max_ms
    );
    Ok(PingResult {
        label: options.label,
        connections: connections as u64,
        rate_target: options.rate,
        rate_achieved: if elapsed > 0.0 {
            round3(sent as f64 / elapsed)
        } else {
            0.0
        },
        sent,
        received: rtt.len() as u64,
        rtt: summary,
    })
}

/// One connection's share of the schedule: send, wait for the answer, wait
/// for the next turn. Returns the round trips and how many pings it sent.
async fn ping_loop(
    mut conn: Conn,
    first: u64,
    step: u64,
    total: u64,
    start: Instant,
    rate: f64,
    label: Arc<str>,
) -> (Samples, u64) {
    let mut samples = Samples::with_capacity((total / step + 1) as usize);
    let mut sent = 0;
    for id in (first..total).step_by(step as usize) {
        sleep_until(due(start, id, rate)).await;
        let message = format!("{{\"type\":\"ping\",\"id\":{id}}}");
        let written = Instant::now();
        if let Err(error) = conn.send_text(&message).await {
            eprintln!("ping [{label}]: connection {first} write failed: {error}");
            break;
        }
        sent += 1;
        let answered = timeout(ANSWER_TIMEOUT, async {
            loop {
                match conn.next_text().await {
                    Ok(Some(text)) if answer_id(&text) == Some(id) => return true,
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return false,
                }
            }
        })
        .await;
        match answered {
            Ok(true) => samples.record(written.elapsed()),
            Ok(false) => {
                eprintln!("ping [{label}]: connection {first} closed");
                break;
            }
            Err(_) => {
                eprintln!("ping [{label}]: connection {first}: no answer to ping {id} within 5 s");
                break;
            }
        }
    }
    (samples, sent)
}

/// The numeric `id` of a `pong` (or echoed `ping`).
pub fn answer_id(message: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(message).ok()?;
    match value["type"].as_str()? {
        "pong" | "ping" => value["id"].as_u64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_by_id() {
        assert_eq!(answer_id(br#"{"type":"pong","id":42}"#), Some(42));
        assert_eq!(answer_id(br#"{"type":"ping","id":7}"#), Some(7));
        assert_eq!(
            answer_id(br##"{"type":"publication","channel":"#u","data":{"id":7}}"##),
            None
        );
        assert_eq!(answer_id(b"not json"), None);
    }
}
