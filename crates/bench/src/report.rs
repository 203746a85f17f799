//! `pulse-bench report`: the tables of `BENCHMARKS.md`, from the `RESULT`
//! lines of one run, written between two markers so that the rest of the
//! file (notes, other sections) stays as it is.

use std::fmt::Write as _;

use crate::result::{BenchResult, ConnectResult};

mod fleet;

pub use fleet::{FLEET_ALONE, FLEET_CROWDED};

/// The line after which the generated tables start.
pub const START_MARKER: &str = "<!-- bench:start -->";
/// The line before which the generated tables end.
pub const END_MARKER: &str = "<!-- bench:end -->";

/// The label of the floor's runs (`pulse-echo`).
pub const FLOOR: &str = "echo";
/// The label of the gateway with in-process auth and Redis presence.
pub const PULSE: &str = "pulse";
/// The label of the gateway with gRPC auth through `pulse-auth` and Redis presence.
pub const PULSE_GRPC_AUTH: &str = "pulse-grpc-auth";
/// The label of the in-process-auth run asked for exactly the target rate
/// (the `PULSE` runs ask for more, to measure capacity).
pub const PULSE_AT_TARGET: &str = "pulse-at-target";
/// The same for gRPC auth.
pub const PULSE_GRPC_AUTH_AT_TARGET: &str = "pulse-grpc-auth-at-target";

/// Where and how the figures were taken.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// The command that produced them.
    pub command: String,
    /// The machine (cores, architecture, CPU model, memory).
    pub machine: String,
    /// When.
    pub date: String,
    /// Anything else worth knowing about the load generator's set-up.
    pub setup: String,
}

/// A target and which way is good.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// The figure must be at least this.
    AtLeast(f64),
    /// The figure must be at most this.
    AtMost(f64),
}

/// "met" or "missed", and by how much, for `measured` against `goal`.
pub fn verdict(measured: f64, goal: Goal, unit: &str) -> String {
    match goal {
        Goal::AtLeast(target) if measured >= target => {
            format!("**met** ({:.0} % of the target)", measured / target * 100.0)
        }
        Goal::AtLeast(target) => format!(
            "**missed** by {}{unit} ({:.0} % of the target)",
            number(target - measured),
            measured / target * 100.0
        ),
        Goal::AtMost(limit) if measured <= limit => {
            format!("**met** ({:.0} % of the limit)", measured / limit * 100.0)
        }
        Goal::AtMost(limit) => format!(
            "**missed** by {}{unit} ({:.1}× the limit)",
            number(measured - limit),
            measured / limit
        ),
    }
}

/// A figure for a table: thousands grouped, at most three significant decimals.
pub fn number(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_owned();
    }
    if value.abs() >= 100.0 {
        let rounded = value.round() as i64;
        let digits = rounded.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        return if rounded < 0 {
            format!("-{grouped}")
        } else {
            grouped
        };
    }
    let text = if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    };
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

fn ratio(pulse: f64, floor: f64) -> String {
    if floor <= 0.0 || !floor.is_finite() || !pulse.is_finite() {
        "n/a".to_owned()
    } else {
        format!("{:.2}×", pulse / floor)
    }
}

fn find<'a>(results: &'a [BenchResult], scenario: &str, label: &str) -> Option<&'a BenchResult> {
    results
        .iter()
        .rev()
        .find(|result| result.scenario() == scenario && result.label() == label)
}

/// Every `connect` run with `label`, in the order they ran.
fn connect_runs<'a>(results: &'a [BenchResult], label: &str) -> Vec<&'a ConnectResult> {
    results
        .iter()
        .filter_map(|result| match result {
            BenchResult::Connect(run) if run.label == label => Some(run),
            _ => None,
        })
        .collect()
}

/// The `connect` figures for `label`: the run with the median connect rate
/// (bursts on two shared cores vary from run to run), with the idle CPU of
/// the run that had an idle window.
pub fn median_connect(results: &[BenchResult], label: &str) -> Option<ConnectResult> {
    let mut runs = connect_runs(results, label);
    if runs.is_empty() {
        return None;
    }
    runs.sort_by(|a, b| a.rate_achieved.total_cmp(&b.rate_achieved));
    let mut median = runs[(runs.len() - 1) / 2].clone();
    if let Some(idle) = runs
        .iter()
        .filter(|run| run.idle_window_s > 0.0)
        .max_by(|a, b| a.idle_window_s.total_cmp(&b.idle_window_s))
    {
        median.idle_window_s = idle.idle_window_s;
        median.server_idle_cpu_percent = idle.server_idle_cpu_percent;
        median.dropped_while_held = idle.dropped_while_held;
    }
    Some(median)
}

/// The generated part of `BENCHMARKS.md`, without the markers.
pub fn render(results: &[BenchResult], info: &RunInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "_Generated by `pulse-bench report`; edit outside the markers._\n"
    );
    let _ = writeln!(out, "- Command: `{}`", info.command);
    let _ = writeln!(out, "- Machine: {}", info.machine);
    let _ = writeln!(out, "- Date: {}", info.date);
    if !info.setup.is_empty() {
        let _ = writeln!(out, "- Set-up: {}", info.setup);
    }
    out.push('\n');
    render_targets(&mut out, results);
    render_connections(&mut out, results);
    render_latencies(&mut out, results);
    fleet::render(&mut out, results);
    out.push_str("<details><summary>Raw results (one JSON line per scenario)</summary>\n\n```\n");
    for result in results {
        out.push_str(&result.to_line());
        out.push('\n');
    }
    out.push_str("```\n\n</details>\n");
    out
}

fn render_targets(out: &mut String, results: &[BenchResult]) {
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

fn render_connections(out: &mut String, results: &[BenchResult]) {
    let floor = median_connect(results, FLOOR);
    let floor = floor.as_ref();
    let columns: Vec<(&str, ConnectResult)> = [
        ("floor: pulse-echo", FLOOR),
        ("Pulse: in-process auth + Redis", PULSE),
        ("Pulse: gRPC auth + Redis", PULSE_GRPC_AUTH),
        (
            "Pulse, in-process auth, at exactly the target rate",
            PULSE_AT_TARGET,
        ),
        (
            "Pulse, gRPC auth, at exactly the target rate",
            PULSE_GRPC_AUTH_AT_TARGET,
        ),
    ]
    .into_iter()
    .filter_map(|(title, label)| median_connect(results, label).map(|result| (title, result)))
    .collect();
    if columns.is_empty() {
        return;
    }
    out.push_str("### Connect burst, then held idle (`connect`)\n\n| |");
    let mut rule = String::from("| --- |");
    for (title, result) in &columns {
        let _ = write!(out, " {title} |");
        rule.push_str(" --- |");
        if floor.is_some() && result.label != FLOOR {
            out.push_str(" ÷ floor |");
            rule.push_str(" --- |");
        }
    }
    let _ = writeln!(out, "\n{rule}");
    type Figure = fn(&ConnectResult) -> Option<f64>;
    let rows: [(&str, Figure, &str); 17] = [
        ("connections held", |r| Some(r.connected as f64), ""),
        (
            "handshakes in flight, at most",
            |r| Some(r.max_inflight as f64),
            "",
        ),
        (
            "failed connects",
            |r| Some(r.failures.values().sum::<u64>() as f64),
            "",
        ),
        ("connect rate asked", |r| Some(r.rate_target), "/s"),
        ("connect rate achieved", |r| Some(r.rate_achieved), "/s"),
        ("handshake p50", |r| Some(r.handshake.p50_ms), " ms"),
        ("handshake p90", |r| Some(r.handshake.p90_ms), " ms"),
        ("handshake p99", |r| Some(r.handshake.p99_ms), " ms"),
        ("handshake max", |r| Some(r.handshake.max_ms), " ms"),
        (
            "from the schedule p50",
            |r| Some(r.handshake_from_schedule.p50_ms),
            " ms",
        ),
        (
            "from the schedule p99",
            |r| Some(r.handshake_from_schedule.p99_ms),
            " ms",
        ),
        (
            "server CPU per connect",
            |r| r.server_cpu_us_per_connection,
            " µs",
        ),
        ("Redis CPU per connect", |r| other(r, "redis"), " µs"),
        (
            "pulse-auth CPU per connect",
            |r| other(r, "pulse-auth"),
            " µs",
        ),
        (
            "load generator CPU per connect",
            |r| Some(r.client_cpu_us_per_connection),
            " µs",
        ),
        (
            "server RSS per held connection",
            |r| r.server_rss_per_connection_kib,
            " KiB",
        ),
        (
            "server idle CPU (% of a core)",
            |r| r.server_idle_cpu_percent,
            " %",
        ),
    ];
    for (name, figure, unit) in rows {
        let _ = write!(out, "| {name} |");
        for (_, result) in &columns {
            let value = figure(result);
            let cell = value.map_or("n/a".to_owned(), |v| format!("{}{unit}", number(v)));
            let _ = write!(out, " {cell} |");
            if let Some(floor) = floor.filter(|_| result.label != FLOOR) {
                let cell = value
                    .zip(figure(floor))
                    .map_or("n/a".to_owned(), |(pulse, floor)| ratio(pulse, floor));
                let _ = write!(out, " {cell} |");
            }
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\nEach column is the run with the median connect rate of {} \
         (\"others\": CPU of processes outside the benchmark during the burst, in % of a core). \
         The idle window was {} s; connections closed by the server while held: {}.\n",
        columns
            .iter()
            .map(|(_, r)| {
                let rates: Vec<String> = connect_runs(results, &r.label)
                    .iter()
                    .map(|run| {
                        format!(
                            "{}/s (p99 {} ms, others {} %)",
                            number(run.rate_achieved),
                            number(run.handshake.p99_ms),
                            number(run.foreign_cpu_percent)
                        )
                    })
                    .collect();
                format!("{}: {}", r.label, rates.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; "),
        columns
            .first()
            .map_or("0".to_owned(), |(_, r)| number(r.idle_window_s)),
        columns
            .iter()
            .map(|(_, r)| format!("{} {}", r.label, r.dropped_while_held))
            .collect::<Vec<_>>()
            .join(", "),
    );
}

fn other(result: &ConnectResult, name: &str) -> Option<f64> {
    result.other_cpu_us_per_connection.get(name).copied()
}

fn render_latencies(out: &mut String, results: &[BenchResult]) {
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

/// `document` with `block` between the markers, which are appended (after a
/// title when the document is empty) when missing. Nothing outside the
/// markers changes.
pub fn splice(document: &str, block: &str) -> String {
    let block = block.trim_end();
    if let Some(start) = document.find(START_MARKER)
        && let Some(end) = document[start..].find(END_MARKER).map(|end| start + end)
    {
        return format!(
            "{}\n{block}\n{}",
            &document[..start + START_MARKER.len()],
            &document[end..]
        );
    }
    let head = if document.trim().is_empty() {
        "# Benchmarks".to_owned()
    } else {
        document.trim_end().to_owned()
    };
    format!("{head}\n\n{START_MARKER}\n{block}\n{END_MARKER}\n")
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
