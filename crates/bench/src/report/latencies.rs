//! The `Latencies` section: ping and Send round trips, against the floor's.

use std::fmt::Write as _;

use super::{FLOOR, PULSE, find, number, ratio};
use crate::result::BenchResult;

pub(super) fn render(out: &mut String, results: &[BenchResult]) {
    out.push_str("### Latencies\n\n");
    out.push_str("| measure | count | p50 | p90 | p99 | max | floor p99 | ÷ floor (p99) |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    let floor_ping = match find(results, "ping", FLOOR) {
        Some(BenchResult::Ping(r)) => Some(r.rtt),
        _ => None,
    };
    let mut row = |name: String,
                   p: crate::stats::Percentiles,
                   floor: Option<crate::stats::Percentiles>| {
        let (floor_cell, ratio_cell) = floor.map_or(("n/a".to_owned(), "n/a".to_owned()), |f| {
            (
                format!("{} ms", number(f.p99_ms)),
                ratio(p.p99_ms, f.p99_ms),
            )
        });
        let _ = writeln!(
            out,
            "| {name} | {} | {} ms | {} ms | {} ms | {} ms | {floor_cell} | {ratio_cell} |",
            p.count,
            number(p.p50_ms),
            number(p.p90_ms),
            number(p.p99_ms),
            number(p.max_ms)
        );
    };
    if let Some(BenchResult::Ping(r)) = find(results, "ping", PULSE) {
        row(
            format!(
                "ping RTT, {} msg/s over {} connections ({} answers / {} pings)",
                number(r.rate_target),
                r.connections,
                r.received,
                r.sent
            ),
            r.rtt,
            floor_ping,
        );
    }
    if let Some(BenchResult::Send(r)) = find(results, "send", PULSE) {
        row(
            format!(
                "Send → client, {} msg/s, {} users × {} gateways ({} delivered / {} reported, {} failed calls)",
                number(r.rate_target),
                r.users,
                r.gateways,
                r.delivered,
                r.reported,
                r.grpc_errors
            ),
            r.latency,
            None,
        );
        row("Send: the gRPC call alone".to_owned(), r.grpc_call, None);
    }
    if let Some(BenchResult::Presence(r)) = find(results, "presence", PULSE) {
        row(
            format!(
                "presence: connect start → Watch `connected` event, {}/s ({} events / {} connects)",
                number(r.rate_target),
                r.events,
                r.connects
            ),
            r.latency,
            None,
        );
        row(
            "presence: client's `connected` message → Watch event".to_owned(),
            r.after_connected_message,
            None,
        );
    }
    out.push('\n');
}
