//! The `Channels` section (issue 12): each target with the gateway's
//! figure, the floor's from the same run, their ratio and a verdict; then
//! the runs behind them.
//!
//! The floor (`pulse-fanout`, label [`FANOUT_FLOOR`]) writes one frame per
//! `write`, as the gateway does; the coalescing floor
//! ([`FANOUT_FLOOR_COALESCE`]) writes every frame waiting for a socket in
//! one, which is what the "several frames in one write" target asks of the
//! gateway.

use std::fmt::Write as _;

use super::{PULSE, median_connect, number, ratio};
use crate::result::{BenchResult, FanoutPhase, FanoutResult, SubscribeResult, SubscriptionsResult};

/// The label of the fan-out floor's runs (`pulse-fanout`).
pub const FANOUT_FLOOR: &str = "floor";
/// The label of the coalescing floor's runs (`pulse-fanout --coalesce`).
pub const FANOUT_FLOOR_COALESCE: &str = "floor-coalesce";
/// The label of the direct floor's runs (`pulse-fanout --direct`: the
/// publisher writes to an idle socket itself, no task woken), shown beside
/// the others to tell the kernel's share of a delivery from the wake-up's.
pub const FANOUT_FLOOR_DIRECT: &str = "floor-direct";

/// The gateway's CPU per delivery may be at most this many times the floor's.
const CPU_RATIO: f64 = 1.3;
/// Deliveries per second at saturation, at least this share of the floor's.
const SATURATION_RATIO: f64 = 0.8;
/// Publish to last read p99 at 10/s, at most this many times the floor's.
const LATENCY_RATIO: f64 = 1.3;
/// Write calls per delivery at saturation, at most this many times the
/// coalescing floor's.
const WRITES_RATIO: f64 = 1.3;

/// Whether a result is a channel scenario's (the history scenarios of
/// issue 13 included, whose block [`super::render_history`] writes).
pub fn is_channel_result(result: &BenchResult) -> bool {
    matches!(
        result,
        BenchResult::Fanout(_) | BenchResult::Subscribe(_) | BenchResult::Subscriptions(_)
    ) || super::history::is_history_result(result)
}

fn fanouts(results: &[BenchResult]) -> impl DoubleEndedIterator<Item = &FanoutResult> {
    results.iter().filter_map(|result| match result {
        BenchResult::Fanout(run) => Some(run),
        _ => None,
    })
}

/// The last one-channel run of `label` in `phase` with `subscribers`.
fn one_channel<'a>(
    results: &'a [BenchResult],
    label: &str,
    phase: FanoutPhase,
    subscribers: u64,
) -> Option<&'a FanoutResult> {
    fanouts(results).rev().find(|run| {
        run.label == label
            && run.phase == phase
            && run.channels == 1
            && run.subscribers_per_channel == subscribers
    })
}

/// The last run over many channels of `label`.
fn spread<'a>(results: &'a [BenchResult], label: &str) -> Option<&'a FanoutResult> {
    fanouts(results)
        .rev()
        .find(|run| run.label == label && run.channels > 1 && run.phase == FanoutPhase::Rate)
}

/// The largest and smallest one-channel audiences measured.
fn sizes(results: &[BenchResult]) -> (Option<u64>, Option<u64>) {
    let sizes: Vec<u64> = fanouts(results)
        .filter(|run| run.channels == 1)
        .map(|run| run.subscribers_per_channel)
        .collect();
    let big = sizes.iter().copied().max();
    let small = sizes
        .iter()
        .copied()
        .min()
        .filter(|small| Some(*small) != big);
    (big, small)
}

fn subscribe_run(results: &[BenchResult], token: bool) -> Option<&SubscribeResult> {
    results.iter().rev().find_map(|result| match result {
        BenchResult::Subscribe(run) if run.label == PULSE && run.token == token => Some(run),
        _ => None,
    })
}

fn memory_run<'a>(results: &'a [BenchResult], mode: &str) -> Option<&'a SubscriptionsResult> {
    results.iter().rev().find_map(|result| match result {
        BenchResult::Subscriptions(run) if run.channels_mode == mode => Some(run),
        _ => None,
    })
}

/// One row of the targets table.
struct Row {
    target: String,
    pulse: Option<f64>,
    floor: Option<f64>,
    unit: &'static str,
    /// Whether the figures pass, from (pulse, floor).
    pass: Box<dyn Fn(f64, Option<f64>) -> Option<bool>>,
}

fn at_most(limit: f64) -> Box<dyn Fn(f64, Option<f64>) -> Option<bool>> {
    Box::new(move |pulse, _| Some(pulse <= limit))
}

fn ratio_at_most(limit: f64) -> Box<dyn Fn(f64, Option<f64>) -> Option<bool>> {
    Box::new(move |pulse, floor| floor.filter(|f| *f > 0.0).map(|f| pulse / f <= limit))
}

fn ratio_at_least(limit: f64) -> Box<dyn Fn(f64, Option<f64>) -> Option<bool>> {
    Box::new(move |pulse, floor| floor.filter(|f| *f > 0.0).map(|f| pulse / f >= limit))
}

fn cell(value: Option<f64>, unit: &str) -> String {
    value.map_or("not run".to_owned(), |v| format!("{}{unit}", number(v)))
}

/// Renders the section.
pub(super) fn render(out: &mut String, results: &[BenchResult]) {
    out.push_str("### Targets (issue 12)\n\n");
    out.push_str("| target | Pulse | floor, same run | ÷ floor | verdict |\n");
    out.push_str("| --- | --- | --- | --- | --- |\n");
    for row in rows(results) {
        let verdict = match row.pulse.and_then(|pulse| (row.pass)(pulse, row.floor)) {
            Some(true) => "**PASS**",
            Some(false) => "**FAIL**",
            None => "not measured",
        };
        let divided = match (row.pulse, row.floor) {
            (Some(pulse), Some(floor)) => ratio(pulse, floor),
            _ => "n/a".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {divided} | {verdict} |",
            row.target,
            cell(row.pulse, row.unit),
            row.floor
                .map_or("n/a".to_owned(), |v| format!("{}{}", number(v), row.unit)),
        );
    }
    out.push('\n');
    render_rate_runs(out, results);
    render_saturation_runs(out, results);
    render_subscribes(out, results);
    render_memory(out, results);
    let contended = fanouts(results)
        .map(|run| run.foreign_cpu_percent)
        .fold(0.0_f64, f64::max);
    let _ = writeln!(
        out,
        "Contention: processes outside the benchmark (and the kernel's loopback work, charged to \
         no process) used up to {} % of a core during the fan-out windows.\n",
        number(contended)
    );
}

fn rows(results: &[BenchResult]) -> Vec<Row> {
    let (big, small) = sizes(results);
    let big_n = big.unwrap_or(10_000);
    let sat = |label| big.and_then(|n| one_channel(results, label, FanoutPhase::Saturation, n));
    let rate_big = |label| big.and_then(|n| one_channel(results, label, FanoutPhase::Rate, n));
    let rate_small = |label| small.and_then(|n| one_channel(results, label, FanoutPhase::Rate, n));
    let rate_of = |run: Option<&FanoutResult>, default: &str| {
        run.map_or(default.to_owned(), |run| number(run.rate_target))
    };
    let spread_pulse = spread(results, PULSE);
    let mut rows = vec![
        Row {
            target: format!(
                "one channel, {} subscribers, one gateway: gateway CPU per delivery at saturation ≤ {CPU_RATIO} × the floor's",
                number(big_n as f64)
            ),
            pulse: sat(PULSE).and_then(|r| r.server_cpu_us_per_delivery),
            floor: sat(FANOUT_FLOOR).and_then(|r| r.server_cpu_us_per_delivery),
            unit: " µs",
            pass: ratio_at_most(CPU_RATIO),
        },
        Row {
            target: format!(
                "the same: deliveries per second at saturation ≥ {SATURATION_RATIO} × the floor's"
            ),
            pulse: sat(PULSE).map(|r| r.deliveries_per_second),
            floor: sat(FANOUT_FLOOR).map(|r| r.deliveries_per_second),
            unit: "/s",
            pass: ratio_at_least(SATURATION_RATIO),
        },
        Row {
            target: format!(
                "the same: publish (API call) → last subscriber's read p99 at {}/s ≤ {LATENCY_RATIO} × the floor's",
                rate_of(rate_big(PULSE), "10")
            ),
            pulse: rate_big(PULSE).map(|r| r.last_read.p99_ms),
            floor: rate_big(FANOUT_FLOOR).map(|r| r.last_read.p99_ms),
            unit: " ms",
            pass: ratio_at_most(LATENCY_RATIO),
        },
        Row {
            target: format!(
                "one channel, {} subscribers: publish → last read p99 at {}/s ≤ 25 ms",
                small.map_or("1,000".to_owned(), |n| number(n as f64)),
                rate_of(rate_small(PULSE), "50")
            ),
            pulse: rate_small(PULSE).map(|r| r.last_read.p99_ms),
            floor: rate_small(FANOUT_FLOOR).map(|r| r.last_read.p99_ms),
            unit: " ms",
            pass: at_most(25.0),
        },
        Row {
            target: format!(
                "several frames waiting for one socket go out in one write: write calls per delivery at saturation ≤ {WRITES_RATIO} × the coalescing floor's"
            ),
            pulse: sat(PULSE).and_then(|r| r.server_writes_per_delivery),
            floor: sat(FANOUT_FLOOR_COALESCE).and_then(|r| r.server_writes_per_delivery),
            unit: "",
            pass: ratio_at_most(WRITES_RATIO),
        },
        Row {
            target: format!(
                "{} channels × 1 subscriber over {} gateways, {}/s through gRPC: publish → delivery p99 ≤ 3 ms",
                spread_pulse.map_or("10,000".to_owned(), |r| number(r.channels as f64)),
                spread_pulse.map_or("two".to_owned(), |r| r.servers.to_string()),
                rate_of(spread_pulse, "5,000")
            ),
            pulse: spread_pulse.map(|r| r.last_read.p99_ms),
            floor: spread(results, FANOUT_FLOOR).map(|r| r.last_read.p99_ms),
            unit: " ms",
            pass: at_most(3.0),
        },
    ];
    for (mode, words) in [
        (
            "shared",
            "subscriptions to channels other connections hold too",
        ),
        (
            "distinct",
            "each to a channel of its own, the channel's cost included",
        ),
    ] {
        rows.push(Row {
            target: format!(
                "gateway memory per subscription beyond the connection's own ≤ 150 B ({words})"
            ),
            pulse: memory_run(results, mode).map(|r| r.bytes_per_subscription),
            floor: None,
            unit: " B",
            pass: at_most(150.0),
        });
    }
    // The connect burst of the same run holds more connections (19,500),
    // which spreads the gateway's fixed costs thinner: its figure when it
    // was run, else the memory run's own.
    let (idle, held) = match median_connect(results, PULSE) {
        Some(run) => (run.server_rss_per_connection_kib, run.connected),
        None => memory_run(results, "shared")
            .or_else(|| memory_run(results, "distinct"))
            .map_or((None, 0), |r| {
                (Some(r.rss_per_connection_kib), r.connections)
            }),
    };
    rows.push(Row {
        target: format!(
            "an idle connection with only its personal channel ≤ 1.5 KiB ({} held)",
            number(held as f64)
        ),
        pulse: idle,
        floor: None,
        unit: " KiB",
        pass: at_most(1.5),
    });
    for (token, limit, words) in [
        (false, 2.0, "an open namespace"),
        (true, 5.0, "with a subscription token"),
    ] {
        rows.push(Row {
            target: format!("subscribe round trip p99, {words}: ≤ {} ms", number(limit)),
            pulse: subscribe_run(results, token).map(|r| r.rtt.p99_ms),
            floor: None,
            unit: " ms",
            pass: at_most(limit),
        });
    }
    rows
}

fn opt(value: Option<f64>, unit: &str) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{}{unit}", number(v)))
}

fn others(run: &FanoutResult) -> String {
    if run.other_cpu_us_per_delivery.is_empty() {
        return "n/a".to_owned();
    }
    run.other_cpu_us_per_delivery
        .iter()
        .map(|(name, us)| format!("{name} {} µs", number(*us)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_rate_runs(out: &mut String, results: &[BenchResult]) {
    let runs: Vec<&FanoutResult> = fanouts(results)
        .filter(|run| run.phase == FanoutPhase::Rate)
        .collect();
    if runs.is_empty() {
        return;
    }
    out.push_str("### Publications at a fixed rate (`fanout`)\n\n");
    out.push_str(
        "| run | channels × subscribers, servers | publications/s asked (made) | complete / made (failed calls) | deliveries / expected | first read p50 / p99 | last read p50 / p99 / max | publish call p99 | server CPU per delivery | others per delivery |\n",
    );
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for run in runs {
        let _ = writeln!(
            out,
            "| {} | {} × {}, {} | {} ({}) | {} / {} ({}) | {} / {} | {} / {} ms | {} / {} / {} ms | {} ms | {} | {} |",
            run.label,
            number(run.channels as f64),
            number(run.subscribers_per_channel as f64),
            run.servers,
            number(run.rate_target),
            number(run.rate_achieved),
            run.complete,
            run.publications,
            run.publish_errors,
            number(run.deliveries as f64),
            number(run.deliveries_expected as f64),
            number(run.first_read.p50_ms),
            number(run.first_read.p99_ms),
            number(run.last_read.p50_ms),
            number(run.last_read.p99_ms),
            number(run.last_read.max_ms),
            number(run.publish_call.p99_ms),
            opt(run.server_cpu_us_per_delivery, " µs"),
            others(run),
        );
    }
    out.push('\n');
}

fn render_saturation_runs(out: &mut String, results: &[BenchResult]) {
    let runs: Vec<&FanoutResult> = fanouts(results)
        .filter(|run| run.phase == FanoutPhase::Saturation)
        .collect();
    if runs.is_empty() {
        return;
    }
    out.push_str("### Saturation: a window of publications in flight (`fanout --saturate`)\n\n");
    out.push_str(
        "| run | subscribers | in flight | deliveries/s | server CPU per delivery | server CPU (% of a core) | write calls per delivery | others per delivery | load generator per delivery | last read p99 | lost | subscribe round trip meanwhile, p50 / p99 (count) | others' CPU |\n",
    );
    out.push_str(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for run in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} µs | {} ms | {} | {} | {} % |",
            run.label,
            number(run.subscribers_per_channel as f64),
            run.window,
            number(run.deliveries_per_second),
            opt(run.server_cpu_us_per_delivery, " µs"),
            opt(run.server_cpu_percent, " %"),
            opt(run.server_writes_per_delivery, ""),
            others(run),
            number(run.client_cpu_us_per_delivery),
            number(run.last_read.p99_ms),
            run.publications - run.complete,
            run.subscribe_meanwhile
                .map_or("n/a".to_owned(), |p| format!(
                    "{} / {} ms ({})",
                    number(p.p50_ms),
                    number(p.p99_ms),
                    p.count
                )),
            number(run.foreign_cpu_percent),
        );
    }
    out.push('\n');
}

fn render_subscribes(out: &mut String, results: &[BenchResult]) {
    let runs: Vec<&SubscribeResult> = results
        .iter()
        .filter_map(|result| match result {
            BenchResult::Subscribe(run) => Some(run),
            _ => None,
        })
        .collect();
    if runs.is_empty() {
        return;
    }
    out.push_str("### Subscribe round trip (`subscribe`)\n\n");
    out.push_str("| run | namespace | token | subscribes/s | subscribed / sent | p50 | p90 | p99 | max | gateway CPU per subscribe | others per subscribe | failures |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for run in runs {
        let others = run
            .other_cpu_us_per_subscribe
            .iter()
            .map(|(name, us)| format!("{name} {} µs", number(*us)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} / {} | {} ms | {} ms | {} ms | {} ms | {} | {} | {:?} |",
            run.label,
            run.namespace,
            if run.token { "yes" } else { "no" },
            number(run.rate_target),
            run.subscribed,
            run.subscribes,
            number(run.rtt.p50_ms),
            number(run.rtt.p90_ms),
            number(run.rtt.p99_ms),
            number(run.rtt.max_ms),
            opt(run.server_cpu_us_per_subscribe, " µs"),
            if others.is_empty() {
                "n/a".to_owned()
            } else {
                others
            },
            run.failures,
        );
    }
    out.push('\n');
}

fn render_memory(out: &mut String, results: &[BenchResult]) {
    let runs: Vec<&SubscriptionsResult> = results
        .iter()
        .filter_map(|result| match result {
            BenchResult::Subscriptions(run) => Some(run),
            _ => None,
        })
        .collect();
    if runs.is_empty() {
        return;
    }
    out.push_str("### Memory per subscription (`subscriptions`)\n\n");
    out.push_str("| channels | connections | subscriptions each | subscribed | RSS before | with the connections | with the subscriptions | per idle connection | per subscription |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for run in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} KiB | {} KiB | {} KiB | {} KiB | {} B |",
            run.channels_mode,
            number(run.connections as f64),
            run.per_connection,
            number(run.subscribed as f64),
            number(run.rss_before_kib as f64),
            number(run.rss_connected_kib as f64),
            number(run.rss_subscribed_kib as f64),
            number(run.rss_per_connection_kib),
            number(run.bytes_per_subscription),
        );
    }
    out.push('\n');
}

#[cfg(test)]
#[path = "channels_tests.rs"]
mod tests;
