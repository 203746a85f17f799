//! The presence-event targets (issue 17), in a block of their own: each
//! figure beside its floor from the same run and a verdict; then the runs
//! behind them (webhooks, Watch resumes, Watch propagation on this build
//! and on the build before issue 17, Redis memory per event).

use std::fmt::Write as _;

use super::{number, ratio};
use crate::{
    result::{
        BenchResult, ConnectResult, EventMemoryResult, PresenceResult, WatchResumeResult,
        WebhooksResult,
    },
    stats::Percentiles,
};

/// The label of the `presence` runs of this build in the events run.
pub const EVENTS_PRESENCE: &str = "events-current";
/// The label of the `presence` runs of the build before issue 17.
pub const EVENTS_PRE17: &str = "events-pre17";
/// The label of the `connect` runs against `pulse-echo` in the events run
/// (the handshake floor beside the propagation).
pub(crate) const EVENTS_ECHO: &str = "events-echo";

/// Event to the webhook receiver p99, at most (ms).
const WEBHOOK_P99_MS: f64 = 50.0;
/// Event to a Watch consumer p99, at most (ms).
const WATCH_P99_MS: f64 = 5.0;
/// A resumed Watch's first event, at most (ms).
const RESUME_FIRST_MS: f64 = 100.0;
/// Redis memory per retained event, at most (bytes).
const BYTES_PER_EVENT: f64 = 150.0;

/// Whether a result belongs to this block.
pub fn is_events_result(result: &BenchResult) -> bool {
    match result {
        BenchResult::WatchResume(_) | BenchResult::EventMemory(_) | BenchResult::Webhooks(_) => {
            true
        }
        BenchResult::Presence(run) => run.label.starts_with("events-"),
        BenchResult::Connect(run) => run.label.starts_with("events-"),
        _ => false,
    }
}

fn webhooks(results: &[BenchResult]) -> Option<&WebhooksResult> {
    results.iter().rev().find_map(|result| match result {
        BenchResult::Webhooks(run) => Some(run),
        _ => None,
    })
}

fn resumes(results: &[BenchResult]) -> Option<&WatchResumeResult> {
    results.iter().rev().find_map(|result| match result {
        BenchResult::WatchResume(run) => Some(run),
        _ => None,
    })
}

fn memory(results: &[BenchResult]) -> Option<&EventMemoryResult> {
    results.iter().rev().find_map(|result| match result {
        BenchResult::EventMemory(run) => Some(run),
        _ => None,
    })
}

fn presence_runs<'a>(results: &'a [BenchResult], label: &str) -> Vec<&'a PresenceResult> {
    results
        .iter()
        .filter_map(|result| match result {
            BenchResult::Presence(run) if run.label == label => Some(run),
            _ => None,
        })
        .collect()
}

fn echo_runs(results: &[BenchResult]) -> Vec<&ConnectResult> {
    results
        .iter()
        .filter_map(|result| match result {
            BenchResult::Connect(run) if run.label == EVENTS_ECHO => Some(run),
            _ => None,
        })
        .collect()
}

/// The median of `values` (the lower middle one of an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len().checked_sub(1)? / 2).copied()
}

/// The presence runs' median p99 (connect start → Watch event).
fn median_propagation(runs: &[&PresenceResult]) -> Option<f64> {
    median(runs.iter().map(|run| run.latency.p99_ms).collect())
}

/// One row of the targets table.
struct Row {
    target: String,
    measured: Option<f64>,
    floor: Option<f64>,
    floor_cell: String,
    unit: &'static str,
    limit: f64,
    /// A reason the row fails whatever the figure.
    broken: Option<String>,
}

impl Row {
    fn verdict(&self) -> String {
        let Some(measured) = self.measured else {
            return "not measured".to_owned();
        };
        if let Some(broken) = &self.broken {
            return format!("**FAIL** ({broken})");
        }
        if measured <= self.limit {
            format!(
                "**PASS** ({:.0} % of the limit)",
                measured / self.limit * 100.0
            )
        } else {
            format!(
                "**FAIL** (by {}{}, {:.1}× the limit)",
                number(measured - self.limit),
                self.unit,
                measured / self.limit
            )
        }
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or("not run".to_owned(), |v| format!("{} ms", number(v)))
}

fn rows(results: &[BenchResult]) -> Vec<Row> {
    let mut rows = Vec::new();
    let hooks = webhooks(results);
    rows.push(Row {
        target: format!(
            "event (its change acknowledged) → webhook receiver p99 at {} events/s: ≤ {} ms",
            number(hooks.map_or(1000.0, |r| r.rate_target)),
            number(WEBHOOK_P99_MS)
        ),
        measured: hooks.map(|r| r.latency.p99_ms),
        floor: hooks.map(|r| r.watch.p99_ms),
        floor_cell: format!(
            "{} the same events on a `Watch` stream",
            ms(hooks.map(|r| r.watch.p99_ms))
        ),
        unit: " ms",
        limit: WEBHOOK_P99_MS,
        broken: hooks
            .filter(|r| {
                r.received < r.expected
                    || r.bad_signatures > 0
                    || r.out_of_order_users > 0
                    || r.call_errors > 0
            })
            .map(|r| {
                format!(
                    "{} of {} received, {} bad signatures, {} users out of order, {} failed calls",
                    r.received, r.expected, r.bad_signatures, r.out_of_order_users, r.call_errors
                )
            }),
    });
    let current = presence_runs(results, EVENTS_PRESENCE);
    let pre17 = presence_runs(results, EVENTS_PRE17);
    let echo = median(
        echo_runs(results)
            .iter()
            .map(|run| run.handshake.p99_ms)
            .collect(),
    );
    let gateway_handshake = median(current.iter().map(|run| run.handshake.p99_ms).collect());
    rows.push(Row {
        target: format!(
            "event → a `Watch` consumer p99 (TCP connect start of a new user's socket → its `connected` on `Watch`, {}/s; median of {} runs): ≤ {} ms",
            number(current.first().map_or(200.0, |r| r.rate_target)),
            current.len(),
            number(WATCH_P99_MS)
        ),
        measured: median_propagation(&current),
        floor: echo,
        floor_cell: format!(
            "{} `pulse-echo`'s handshake; {} the gateway's own handshake; {} the build before issue 17",
            ms(echo),
            ms(gateway_handshake),
            ms(median_propagation(&pre17))
        ),
        unit: " ms",
        limit: WATCH_P99_MS,
        broken: None,
    });
    rows.push(Row {
        target: format!(
            "the same, from the client's `connected` message → the `Watch` event: ≤ {} ms",
            number(WATCH_P99_MS)
        ),
        measured: median(
            current
                .iter()
                .map(|run| run.after_connected_message.p99_ms)
                .collect(),
        ),
        floor: None,
        floor_cell: format!(
            "{} the build before issue 17",
            ms(median(
                pre17
                    .iter()
                    .map(|run| run.after_connected_message.p99_ms)
                    .collect()
            ))
        ),
        unit: " ms",
        limit: WATCH_P99_MS,
        broken: None,
    });
    rows.push(Row {
        target: format!(
            "event (registration acknowledged) → a `Watch` consumer p99 at {} events/s: ≤ {} ms",
            number(hooks.map_or(1000.0, |r| r.rate_target)),
            number(WATCH_P99_MS)
        ),
        measured: hooks.map(|r| r.watch.p99_ms),
        floor: None,
        floor_cell: "n/a".to_owned(),
        unit: " ms",
        limit: WATCH_P99_MS,
        broken: hooks
            .filter(|r| r.watch_received < r.expected)
            .map(|r| format!("{} of {} on the stream", r.watch_received, r.expected)),
    });
    if let Some(run) = resumes(results) {
        for resume in &run.resumes {
            rows.push(Row {
                target: format!(
                    "a `Watch` that reconnects with `since` after {} missed events: reconnect start → first event p99 ≤ {} ms",
                    resume.missed,
                    number(RESUME_FIRST_MS)
                ),
                measured: Some(resume.first.p99_ms),
                floor: Some(run.fresh_first.p99_ms),
                floor_cell: format!(
                    "{} a fresh `Watch` to its first live event; {} a unary call (`GetUser`), each on a new channel",
                    ms(Some(run.fresh_first.p99_ms)),
                    ms(Some(run.unary.p99_ms))
                ),
                unit: " ms",
                limit: RESUME_FIRST_MS,
                broken: (resume.exact < resume.first.count || resume.first.count < run.samples)
                    .then(|| {
                        format!(
                            "{} of {} resumes delivered exactly the missed events",
                            resume.exact, run.samples
                        )
                    }),
            });
        }
    } else {
        rows.push(Row {
            target: format!(
                "a `Watch` that reconnects with `since`: first event p99 ≤ {} ms",
                number(RESUME_FIRST_MS)
            ),
            measured: None,
            floor: None,
            floor_cell: "not run".to_owned(),
            unit: " ms",
            limit: RESUME_FIRST_MS,
            broken: None,
        });
    }
    let mem = memory(results);
    rows.push(Row {
        target: format!(
            "Redis memory per retained event (the larger of `MEMORY USAGE` and `INFO memory`): ≤ {} B",
            number(BYTES_PER_EVENT)
        ),
        measured: mem.map(|r| r.usage_per_event().max(r.info_per_event())),
        floor: mem.map(EventMemoryResult::floor_per_event),
        floor_cell: mem.map_or("not run".to_owned(), |r| {
            format!(
                "{} B the same entries in one bare stream (`XADD *`)",
                number(r.floor_per_event())
            )
        }),
        unit: " B",
        limit: BYTES_PER_EVENT,
        broken: None,
    });
    rows
}

fn cell(p: &Percentiles) -> String {
    format!(
        "{} / {} / {} / {} ms",
        number(p.p50_ms),
        number(p.p90_ms),
        number(p.p99_ms),
        number(p.max_ms)
    )
}

/// Renders the block's tables, when the results have any of them.
pub(super) fn render(out: &mut String, results: &[BenchResult]) {
    let rows = rows(results);
    if rows.iter().all(|row| row.measured.is_none()) {
        return;
    }
    out.push_str("### Targets (issue 17: presence events and webhooks)\n\n");
    out.push_str("| target | measured | floor, same run | ÷ floor | verdict |\n");
    out.push_str("| --- | --- | --- | --- | --- |\n");
    for row in &rows {
        let divided = match (row.measured, row.floor) {
            (Some(measured), Some(floor)) => ratio(measured, floor),
            _ => "n/a".to_owned(),
        };
        let measured = row.measured.map_or("not run".to_owned(), |v| {
            format!("{}{}", number(v), row.unit)
        });
        let _ = writeln!(
            out,
            "| {} | {measured} | {} | {divided} | {} |",
            row.target,
            row.floor_cell,
            row.verdict()
        );
    }
    out.push('\n');
    render_webhooks(out, results);
    render_resumes(out, results);
    render_propagation(out, results);
    render_memory(out, results);
}

fn render_webhooks(out: &mut String, results: &[BenchResult]) {
    let Some(run) = webhooks(results) else {
        return;
    };
    out.push_str("### Events to a webhook receiver (`webhooks`)\n\n");
    out.push_str("| events/s asked (made) | window | received / expected | repeats | bad signatures | users out of order | POSTs (events per POST) | ack → receiver p50 / p90 / p99 / max | call start → receiver p99 | floor: ack → `Watch` p50 / p90 / p99 / max | CPU per event | others' CPU |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    let cpu = if run.cpu_us_per_event.is_empty() {
        "n/a".to_owned()
    } else {
        run.cpu_us_per_event
            .iter()
            .map(|(name, us)| format!("{name} {} µs", number(*us)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "| {} ({}) | {} s | {} / {} | {} | {} | {} | {} ({}) | {} | {} ms | {} | {cpu} | {} % |\n",
        number(run.rate_target),
        number(run.rate_achieved),
        number(run.duration_s),
        run.received,
        run.expected,
        run.repeats,
        run.bad_signatures,
        run.out_of_order_users,
        run.posts,
        number(run.received as f64 / run.posts.max(1) as f64),
        cell(&run.latency),
        number(run.latency_from_call.p99_ms),
        cell(&run.watch),
        number(run.foreign_cpu_percent),
    );
}

fn render_resumes(out: &mut String, results: &[BenchResult]) {
    let Some(run) = resumes(results) else {
        return;
    };
    out.push_str("### A `Watch` that reconnects (`watch-resume`)\n\n");
    out.push_str("| sample (each on a new gRPC channel) | count | to the headers p50 / p99 | to the first event p50 / p90 / p99 / max | to the last missed event p50 / p90 / p99 / max | exact |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for resume in &run.resumes {
        let _ = writeln!(
            out,
            "| `Watch` with `since`, {} events missed | {} | {} / {} ms | {} | {} | {} |",
            resume.missed,
            resume.first.count,
            number(resume.open.p50_ms),
            number(resume.open.p99_ms),
            cell(&resume.first),
            cell(&resume.last),
            resume.exact
        );
    }
    let _ = writeln!(
        out,
        "| floor: a fresh `Watch` (no `since`), its first live event | {} | {} / {} ms | {} | n/a | n/a |",
        run.fresh_first.count,
        number(run.fresh_open.p50_ms),
        number(run.fresh_open.p99_ms),
        cell(&run.fresh_first)
    );
    let _ = writeln!(
        out,
        "| floor: `GetUser` | {} | {} | n/a | n/a | n/a |",
        run.unary.count,
        cell(&run.unary)
    );
    let failures = if run.failures.is_empty() {
        "none".to_owned()
    } else {
        format!("{:?}", run.failures)
    };
    let _ = writeln!(
        out,
        "\nFailures: {failures}. Others' CPU over the run: {} % of a core.\n",
        number(run.foreign_cpu_percent)
    );
}

fn render_propagation(out: &mut String, results: &[BenchResult]) {
    let current = presence_runs(results, EVENTS_PRESENCE);
    let pre17 = presence_runs(results, EVENTS_PRE17);
    let echo = echo_runs(results);
    if current.is_empty() && pre17.is_empty() && echo.is_empty() {
        return;
    }
    out.push_str("### `Watch` propagation, this build and the one before issue 17 (`presence`), beside `pulse-echo`'s handshake\n\n");
    out.push_str("| run | build | connects / events | connect start → `Watch` event p50 / p90 / p99 / max | `connected` message → `Watch` event p50 / p90 / p99 / max | handshake p50 / p90 / p99 / max |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- |\n");
    // In the order they ran (the builds alternate).
    let mut index = 0;
    for result in results {
        match result {
            BenchResult::Presence(run)
                if run.label == EVENTS_PRESENCE || run.label == EVENTS_PRE17 =>
            {
                index += 1;
                let build = if run.label == EVENTS_PRE17 {
                    "before issue 17 (`098c020`)"
                } else {
                    "this build"
                };
                let _ = writeln!(
                    out,
                    "| {index} | {build} | {} / {} | {} | {} | {} |",
                    run.connects,
                    run.events,
                    cell(&run.latency),
                    cell(&run.after_connected_message),
                    cell(&run.handshake)
                );
            }
            BenchResult::Connect(run) if run.label == EVENTS_ECHO => {
                index += 1;
                let _ = writeln!(
                    out,
                    "| {index} | `pulse-echo` (floor) | {} / n/a | n/a | n/a | {} |",
                    run.connected,
                    cell(&run.handshake)
                );
            }
            _ => {}
        }
    }
    out.push('\n');
}

fn render_memory(out: &mut String, results: &[BenchResult]) {
    let Some(run) = memory(results) else {
        return;
    };
    out.push_str("### Redis memory per retained event (`event-memory`)\n\n");
    out.push_str("| calls | events kept (logs) | field sizes: user / connection / instance | `MEMORY USAGE` of the logs | per event | `used_memory` delta | per event | floor: one bare stream, `MEMORY USAGE` | per entry | floor `used_memory` delta | per entry |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    let _ = writeln!(
        out,
        "| {} | {} ({}) | {} / {} / {} B | {} B | {} B | {} B | {} B | {} B | {} B | {} B | {} B |\n",
        number(run.calls as f64),
        number(run.events as f64),
        run.logs,
        run.field_bytes[0],
        run.field_bytes[1],
        run.field_bytes[2],
        number(run.log_bytes as f64),
        number(run.usage_per_event()),
        number(run.used_memory_after as f64 - run.used_memory_before as f64),
        number(run.info_per_event()),
        number(run.floor_bytes as f64),
        number(run.floor_per_event()),
        number(run.floor_used_memory as f64),
        number(run.floor_info_per_event()),
    );
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
