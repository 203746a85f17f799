//! The `Targets` section: each target of issue 7 (and Send's of issue 4)
//! with the figure measured and whether it was met.

use std::fmt::Write as _;

use super::{
    Goal, PULSE, PULSE_AT_TARGET, PULSE_GRPC_AUTH, PULSE_GRPC_AUTH_AT_TARGET, find, fleet,
    median_connect, number, verdict,
};
use crate::result::BenchResult;

pub(super) fn render(out: &mut String, results: &[BenchResult]) {
    out.push_str("### Targets (issue 7; Send from issue 4)\n\n");
    out.push_str("| target | measured | verdict |\n| --- | --- | --- |\n");
    let mut row = |target: &str, measured: Option<(f64, &str)>, goal: Goal| {
        let (cell, verdict) = match measured {
            Some((value, unit)) => (
                format!("{}{unit}", number(value)),
                verdict(value, goal, unit),
            ),
            None => ("not run".to_owned(), "not measured".to_owned()),
        };
        let _ = writeln!(out, "| {target} | {cell} | {verdict} |");
    };
    let pulse = median_connect(results, PULSE);
    let grpc = median_connect(results, PULSE_GRPC_AUTH);
    let (pulse, grpc) = (pulse.as_ref(), grpc.as_ref());
    row(
        "connect + auth + presence, in-process auth + Redis: ≥ 15,000/s",
        pulse.map(|r| (r.rate_achieved, "/s")),
        Goal::AtLeast(15_000.0),
    );
    row(
        "connect + auth + presence, gRPC auth + Redis: ≥ 10,000/s",
        grpc.map(|r| (r.rate_achieved, "/s")),
        Goal::AtLeast(10_000.0),
    );
    row(
        "handshake p99 during the in-process-auth burst (TCP connect start): ≤ 30 ms",
        pulse.map(|r| (r.handshake.p99_ms, " ms")),
        Goal::AtMost(30.0),
    );
    let pulse_at_target = median_connect(results, PULSE_AT_TARGET);
    let grpc_at_target = median_connect(results, PULSE_GRPC_AUTH_AT_TARGET);
    row(
        "the same, from the schedule, with exactly 15,000/s asked (open loop): ≤ 30 ms",
        pulse_at_target
            .as_ref()
            .map(|r| (r.handshake_from_schedule.p99_ms, " ms")),
        Goal::AtMost(30.0),
    );
    row(
        "handshake p99 during the gRPC-auth burst (TCP connect start): ≤ 30 ms",
        grpc.map(|r| (r.handshake.p99_ms, " ms")),
        Goal::AtMost(30.0),
    );
    row(
        "the same, from the schedule, with exactly 10,000/s asked (open loop): ≤ 30 ms",
        grpc_at_target
            .as_ref()
            .map(|r| (r.handshake_from_schedule.p99_ms, " ms")),
        Goal::AtMost(30.0),
    );
    row(
        "gateway RSS per idle authenticated connection: ≤ 1.5 KiB",
        pulse.and_then(|r| r.server_rss_per_connection_kib.map(|kib| (kib, " KiB"))),
        Goal::AtMost(1.5),
    );
    row(
        "application ping RTT p99 at 1,000 msg/s: ≤ 1 ms",
        match find(results, "ping", PULSE) {
            Some(BenchResult::Ping(r)) => Some((r.rtt.p99_ms, " ms")),
            _ => None,
        },
        Goal::AtMost(1.0),
    );
    row(
        "presence propagation p99 (connect start to Watch event): ≤ 5 ms",
        match find(results, "presence", PULSE) {
            Some(BenchResult::Presence(r)) => Some((r.latency.p99_ms, " ms")),
            _ => None,
        },
        Goal::AtMost(5.0),
    );
    row(
        "idle CPU, 19,500 connections, 30 s heartbeats: ≤ 2 % of a core",
        pulse.and_then(|r| r.server_idle_cpu_percent.map(|p| (p, " %"))),
        Goal::AtMost(2.0),
    );
    row(
        "Send to user across two gateways p99 at 1,000 msg/s: ≤ 3 ms",
        match find(results, "send", PULSE) {
            Some(BenchResult::Send(r)) => Some((r.latency.p99_ms, " ms")),
            _ => None,
        },
        Goal::AtMost(3.0),
    );
    let (target, measured, goal) = fleet::target(results);
    row(&target, measured, goal);
    out.push('\n');
}
