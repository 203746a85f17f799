//! The `Connections` section: the `connect` runs side by side, the floor
//! (`pulse-echo`) first, with each run's CPU and memory per connection.

use std::fmt::Write as _;

use super::{
    FLOOR, PULSE, PULSE_AT_TARGET, PULSE_GRPC_AUTH, PULSE_GRPC_AUTH_AT_TARGET, connect_runs,
    median_connect, number, ratio,
};
use crate::result::{BenchResult, ConnectResult};

pub(super) fn render(out: &mut String, results: &[BenchResult]) {
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
