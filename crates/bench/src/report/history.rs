//! The history targets (issue 13), in a block of their own: each with the
//! figure with history, its floor from the same run (the same without
//! history, Redis alone, a plain subscribe) and a verdict that says by how
//! much a target is missed; then the runs behind them.

use std::fmt::Write as _;

use super::{
    PULSE,
    floor_table::{self, Row, ms},
    number,
};
use crate::result::{
    BenchResult, FanoutPhase, FanoutResult, HistoryMemoryResult, PublishResult, RecoverResult,
};

/// The label of the runs in a namespace with history.
pub const PULSE_HISTORY: &str = "pulse-history";
/// The label of the floor under a publication with history: Redis alone.
pub const REDIS_FLOOR: &str = "redis";
/// The label of the same runs with history on a Redis Cluster.
pub(super) const PULSE_HISTORY_CLUSTER: &str = "pulse-history-cluster";
/// The label of the runs without history on a Redis Cluster (their floor),
/// and of the recovery run there.
pub(super) const PULSE_CLUSTER: &str = "pulse-cluster";

/// Which runs a table of targets reads.
struct Labels {
    history: &'static str,
    plain: &'static str,
    /// Redis alone, where it was measured.
    redis: Option<&'static str>,
    recover: &'static str,
}

const ONE_REDIS: Labels = Labels {
    history: PULSE_HISTORY,
    plain: PULSE,
    redis: Some(REDIS_FLOOR),
    recover: PULSE,
};

const CLUSTER: Labels = Labels {
    history: PULSE_HISTORY_CLUSTER,
    plain: PULSE_CLUSTER,
    redis: None,
    recover: PULSE_CLUSTER,
};

/// Publish call p99, at most (ms).
const PUBLISH_P99_MS: f64 = 2.0;
/// Publish to the subscriber's read p99 over two gateways, at most (ms).
const DELIVERY_P99_MS: f64 = 3.0;
/// A recovering subscribe's p99, at most (ms).
const RECOVER_P99_MS: f64 = 10.0;
/// What a stored publication may cost Redis beyond its data (bytes).
const MEMORY_OVERHEAD_BYTES: f64 = 100.0;

/// Whether a result belongs to this section.
pub fn is_history_result(result: &BenchResult) -> bool {
    matches!(
        result,
        BenchResult::Publish(_) | BenchResult::Recover(_) | BenchResult::HistoryMemory(_)
    )
}

fn publish_run<'a>(results: &'a [BenchResult], label: &str) -> Option<&'a PublishResult> {
    results.iter().rev().find_map(|result| match result {
        BenchResult::Publish(run) if run.label == label => Some(run),
        _ => None,
    })
}

fn spread<'a>(results: &'a [BenchResult], label: &str) -> Option<&'a FanoutResult> {
    results.iter().rev().find_map(|result| match result {
        BenchResult::Fanout(run)
            if run.label == label && run.channels > 1 && run.phase == FanoutPhase::Rate =>
        {
            Some(run)
        }
        _ => None,
    })
}

fn recover_run<'a>(results: &'a [BenchResult], label: &str) -> Option<&'a RecoverResult> {
    results.iter().rev().find_map(|result| match result {
        BenchResult::Recover(run) if run.label == label => Some(run),
        _ => None,
    })
}

fn memory_runs(results: &[BenchResult]) -> Vec<&HistoryMemoryResult> {
    results
        .iter()
        .filter_map(|result| match result {
            BenchResult::HistoryMemory(run) => Some(run),
            _ => None,
        })
        .collect()
}

/// Renders the section, when the results have any of it.
pub(super) fn render(out: &mut String, results: &[BenchResult]) {
    if !floor_table::render(
        out,
        "Targets (issue 13: history and recovery)",
        "with history",
        &rows(results),
        false,
    ) {
        return;
    }
    floor_table::render(
        out,
        "Targets on a three-master Redis Cluster (the same targets)",
        "with history",
        &latency_rows(results, &CLUSTER),
        false,
    );
    render_publishes(out, results);
    render_spreads(out, results);
    render_recoveries(out, results);
    render_memory(out, results);
}

fn rows(results: &[BenchResult]) -> Vec<Row> {
    let mut rows = latency_rows(results, &ONE_REDIS);
    for run in memory_runs(results) {
        rows.push(Row {
            target: format!(
                "Redis memory per stored publication beyond its data ≤ {} B ({} B of data; {} kept per channel{}; the larger of `MEMORY USAGE` and `INFO memory`)",
                number(MEMORY_OVERHEAD_BYTES),
                number(run.data_bytes as f64),
                number(run.stored as f64 / run.channels.max(1) as f64),
                list_node_note(run),
            ),
            measured: Some(run.overhead()),
            floor: None,
            floor_cell: format!("the data itself, {} B", number(run.data_bytes as f64)),
            unit: " B",
            limit: MEMORY_OVERHEAD_BYTES,
            broken: None,
        });
    }
    rows
}

/// The publish call, delivery and recovery targets, from `labels`' runs.
fn latency_rows(results: &[BenchResult], labels: &Labels) -> Vec<Row> {
    let mut rows = Vec::new();
    let history = publish_run(results, labels.history);
    let plain = publish_run(results, labels.plain);
    let redis = labels.redis.and_then(|label| publish_run(results, label));
    let without = |p99: Option<f64>| match labels.redis {
        Some(_) => format!(
            "{} without history; {} Redis alone (RPUSH + LTRIM + SPUBLISH, one round trip)",
            ms(p99),
            ms(redis.map(|r| r.call.p99_ms))
        ),
        None => format!("{} without history", ms(p99)),
    };
    rows.push(Row {
        target: format!(
            "publish with history, API call (gRPC) to its answer, p99 at {}/s, {} channels, {} B of data: ≤ {} ms",
            history.map_or("1,000".to_owned(), |r| number(r.rate_target)),
            history.map_or("1,000".to_owned(), |r| number(r.channels as f64)),
            history.map_or(100, |r| r.data_bytes),
            number(PUBLISH_P99_MS)
        ),
        measured: history.map(|r| r.call.p99_ms),
        floor: plain.map(|r| r.call.p99_ms),
        floor_cell: without(plain.map(|r| r.call.p99_ms)),
        unit: " ms",
        limit: PUBLISH_P99_MS,
        broken: history
            .filter(|r| r.errors > 0 || r.with_offset < r.calls)
            .map(|r| {
                format!(
                    "{} failed calls, {} of {} answers with an offset",
                    r.errors, r.with_offset, r.calls
                )
            }),
    });
    let spread_history = spread(results, labels.history);
    let spread_plain = spread(results, labels.plain);
    let spread_words = spread_history.map_or(
        "10,000 channels × 1 subscriber over 2 gateways at 5,000/s".to_owned(),
        |r| {
            format!(
                "{} channels × 1 subscriber over {} gateways at {}/s",
                number(r.channels as f64),
                r.servers,
                number(r.rate_target)
            )
        },
    );
    let lost = |run: &FanoutResult| {
        (run.publish_errors > 0 || run.complete < run.publications).then(|| {
            format!(
                "{} of {} publications read, {} failed calls",
                run.complete, run.publications, run.publish_errors
            )
        })
    };
    rows.push(Row {
        target: format!(
            "the same, {spread_words}: API call p99 ≤ {} ms",
            number(PUBLISH_P99_MS)
        ),
        measured: spread_history.map(|r| r.publish_call.p99_ms),
        floor: spread_plain.map(|r| r.publish_call.p99_ms),
        floor_cell: format!(
            "{} without history",
            ms(spread_plain.map(|r| r.publish_call.p99_ms))
        ),
        unit: " ms",
        limit: PUBLISH_P99_MS,
        broken: spread_history.and_then(lost),
    });
    rows.push(Row {
        target: format!(
            "the same: publish → the subscriber's read p99 ≤ {} ms",
            number(DELIVERY_P99_MS)
        ),
        measured: spread_history.map(|r| r.last_read.p99_ms),
        floor: spread_plain.map(|r| r.last_read.p99_ms),
        floor_cell: format!(
            "{} without history",
            ms(spread_plain.map(|r| r.last_read.p99_ms))
        ),
        unit: " ms",
        limit: DELIVERY_P99_MS,
        broken: spread_history.and_then(lost),
    });
    let recover = recover_run(results, labels.recover);
    rows.push(Row {
        target: format!(
            "a reconnect to the other gateway that recovers {} missed publications: `subscribe` with `since` → its `subscribed` with them, p99 ≤ {} ms",
            recover.map_or(100, |r| r.missed),
            number(RECOVER_P99_MS)
        ),
        measured: recover.map(|r| r.since.p99_ms),
        floor: recover.map(|r| r.plain.p99_ms),
        floor_cell: format!(
            "{} a plain `subscribe`",
            ms(recover.map(|r| r.plain.p99_ms))
        ),
        unit: " ms",
        limit: RECOVER_P99_MS,
        broken: recover
            .filter(|r| r.recovered < r.samples)
            .map(|r| format!("{} of {} recovered", r.recovered, r.samples)),
    });
    rows
}

fn render_publishes(out: &mut String, results: &[BenchResult]) {
    let runs: Vec<&PublishResult> = results
        .iter()
        .filter_map(|result| match result {
            BenchResult::Publish(run) => Some(run),
            _ => None,
        })
        .collect();
    if runs.is_empty() {
        return;
    }
    out.push_str("### Publish calls (`publish`)\n\n");
    out.push_str("| run | path | channels | data | calls/s asked (made) | calls (failed) | with an offset | p50 | p90 | p99 | max | CPU per call | load generator per call | others' CPU |\n");
    out.push_str(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for run in runs {
        let cpu = run
            .cpu_us_per_call
            .iter()
            .map(|(name, us)| format!("{name} {} µs", number(*us)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} B | {} ({}) | {} ({}) | {} | {} ms | {} ms | {} ms | {} ms | {} | {} µs | {} % |",
            run.label,
            run.path,
            number(run.channels as f64),
            run.data_bytes,
            number(run.rate_target),
            number(run.rate_achieved),
            run.calls,
            run.errors,
            run.with_offset,
            number(run.call.p50_ms),
            number(run.call.p90_ms),
            number(run.call.p99_ms),
            number(run.call.max_ms),
            if cpu.is_empty() {
                "n/a".to_owned()
            } else {
                cpu
            },
            number(run.client_cpu_us_per_call),
            number(run.foreign_cpu_percent),
        );
    }
    out.push('\n');
}

fn render_spreads(out: &mut String, results: &[BenchResult]) {
    let runs: Vec<&FanoutResult> = [
        spread(results, PULSE),
        spread(results, PULSE_HISTORY),
        spread(results, PULSE_CLUSTER),
        spread(results, PULSE_HISTORY_CLUSTER),
    ]
    .into_iter()
    .flatten()
    .collect();
    if runs.is_empty() {
        return;
    }
    out.push_str("### Publish → the subscriber's read, with and without history (`fanout`)\n\n");
    out.push_str("| run | channels × subscribers, gateways | publications/s asked (made) | complete / made (failed calls) | publish call p50 / p99 | read p50 / p99 / max | gateways' CPU per delivery | others per delivery | others' CPU |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for run in runs {
        let others = run
            .other_cpu_us_per_delivery
            .iter()
            .map(|(name, us)| format!("{name} {} µs", number(*us)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | {} × {}, {} | {} ({}) | {} / {} ({}) | {} / {} ms | {} / {} / {} ms | {} | {} | {} % |",
            run.label,
            number(run.channels as f64),
            number(run.subscribers_per_channel as f64),
            run.servers,
            number(run.rate_target),
            number(run.rate_achieved),
            run.complete,
            run.publications,
            run.publish_errors,
            number(run.publish_call.p50_ms),
            number(run.publish_call.p99_ms),
            number(run.last_read.p50_ms),
            number(run.last_read.p99_ms),
            number(run.last_read.max_ms),
            run.server_cpu_us_per_delivery
                .map_or("n/a".to_owned(), |us| format!("{} µs", number(us))),
            if others.is_empty() {
                "n/a".to_owned()
            } else {
                others
            },
            number(run.foreign_cpu_percent),
        );
    }
    out.push('\n');
}

fn render_recoveries(out: &mut String, results: &[BenchResult]) {
    let runs: Vec<&RecoverResult> = results
        .iter()
        .filter_map(|result| match result {
            BenchResult::Recover(run) => Some(run),
            _ => None,
        })
        .collect();
    if runs.is_empty() {
        return;
    }
    out.push_str("### Recovery after a reconnect (`recover`)\n\n");
    out.push_str("| run | namespace | missed | data | subscribes/s | recovered / sent (not recovered) | with `since` p50 / p90 / p99 / max | its answer | plain p50 / p90 / p99 / max | gateway CPU per subscribe | others per subscribe | others' CPU | failures |\n");
    out.push_str(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for run in runs {
        let others = run
            .other_cpu_us_per_subscribe
            .iter()
            .map(|(name, us)| format!("{name} {} µs", number(*us)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} B | {} | {} / {} ({}) | {} / {} / {} / {} ms | {} B | {} / {} / {} / {} ms | {} | {} | {} % | {:?} |",
            run.label,
            run.namespace,
            run.missed,
            run.data_bytes,
            number(run.rate_target),
            run.recovered,
            run.samples,
            run.not_recovered,
            number(run.since.p50_ms),
            number(run.since.p90_ms),
            number(run.since.p99_ms),
            number(run.since.max_ms),
            number(run.answer_bytes),
            number(run.plain.p50_ms),
            number(run.plain.p90_ms),
            number(run.plain.p99_ms),
            number(run.plain.max_ms),
            run.server_cpu_us_per_subscribe
                .map_or("n/a".to_owned(), |us| format!("{} µs", number(us))),
            if others.is_empty() {
                "n/a".to_owned()
            } else {
                others
            },
            number(run.foreign_cpu_percent),
            run.failures,
        );
    }
    out.push('\n');
}

/// The run's list node size, when it was read: `; list nodes of 8 KiB
/// (Redis's default)`.
fn list_node_note(run: &HistoryMemoryResult) -> String {
    match (run.list_node, run.list_node_text()) {
        (Some(DEFAULT_LIST_NODE), Some(text)) => {
            format!("; list nodes of {text} (Redis's default)")
        }
        (Some(setting), Some(text)) => {
            format!("; list nodes of {text}, `list-max-listpack-size {setting}`")
        }
        _ => String::new(),
    }
}

/// Redis's default `list-max-listpack-size`: nodes of 8 KiB.
const DEFAULT_LIST_NODE: i64 = -2;

fn render_memory(out: &mut String, results: &[BenchResult]) {
    let runs = memory_runs(results);
    if runs.is_empty() {
        return;
    }
    out.push_str("### Redis memory per stored publication (`history-memory`)\n\n");
    out.push_str("| channels × published each (plus `i % stagger`) | list nodes | kept | data | `MEMORY USAGE`, histories + meta | per publication | `INFO memory` `used_memory` delta | per publication | beyond the data (the larger) |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for run in runs {
        let _ = writeln!(
            out,
            "| {} × {} (+ `i % {}`) | {} | {} | {} B | {} + {} B | {} B | {} B | {} B | {} B |",
            number(run.channels as f64),
            number(run.per_channel as f64),
            run.stagger,
            run.list_node_text()
                .unwrap_or_else(|| "not read".to_owned()),
            number(run.stored as f64),
            number(run.data_bytes as f64),
            number(run.hist_bytes as f64),
            number(run.meta_bytes as f64),
            number(run.usage_per_publication),
            number(run.used_memory_after as f64 - run.used_memory_before as f64),
            number(run.info_per_publication),
            number(run.overhead()),
        );
    }
    out.push('\n');
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
