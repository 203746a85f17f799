//! The events block's tables behind its targets: the webhook run, the
//! Watch resumes, the propagation runs of both builds, Redis memory.

use std::fmt::Write as _;

use super::{
    EVENTS_ECHO, EVENTS_PRE17, EVENTS_PRESENCE, echo_runs, memory as memory_run, presence_runs,
    resumes as resume_run, webhooks as webhooks_run,
};
use crate::{report::number, result::BenchResult, stats::Percentiles};

fn cell(p: &Percentiles) -> String {
    format!(
        "{} / {} / {} / {} ms",
        number(p.p50_ms),
        number(p.p90_ms),
        number(p.p99_ms),
        number(p.max_ms)
    )
}

pub(super) fn webhooks(out: &mut String, results: &[BenchResult]) {
    let Some(run) = webhooks_run(results) else {
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

pub(super) fn resumes(out: &mut String, results: &[BenchResult]) {
    let Some(run) = resume_run(results) else {
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

pub(super) fn propagation(out: &mut String, results: &[BenchResult]) {
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

pub(super) fn memory(out: &mut String, results: &[BenchResult]) {
    let Some(run) = memory_run(results) else {
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
