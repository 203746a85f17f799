//! `pulse-bench report`: the tables of `BENCHMARKS.md`, from the `RESULT`
//! lines of one run, written between two markers so that the rest of the
//! file (notes, other sections) stays as it is. The channel scenarios
//! (issue 12) have a block and markers of their own, so that a run of only
//! them (`scripts/bench-channels.sh`) leaves the gateway's block as it was;
//! so have the history scenarios (issue 13), so that a run of only them
//! (`HISTORY_ONLY=1 scripts/bench-channels.sh`) leaves the channels' block.

use std::fmt::Write as _;

use crate::result::{BenchResult, ConnectResult};

mod channels;
mod connections;
mod events;
mod fleet;
mod floor_table;
mod history;
mod latencies;
mod targets;
mod user_limit;

pub use channels::{FANOUT_FLOOR, FANOUT_FLOOR_COALESCE, FANOUT_FLOOR_DIRECT, is_channel_result};
pub use events::{EVENTS_PRE17, EVENTS_PRESENCE, is_events_result};
pub use fleet::{FLEET_ALONE, FLEET_CROWDED};
pub use history::{PULSE_HISTORY, REDIS_FLOOR, is_history_result};
pub use user_limit::{USER_LIMIT, USER_LIMIT_CONTROL, USER_LIMIT_LOADED, is_fleet_result};

/// The line after which the generated tables start.
pub const START_MARKER: &str = "<!-- bench:start -->";
/// The line before which the generated tables end.
pub const END_MARKER: &str = "<!-- bench:end -->";
/// The line after which the channel tables start.
pub const CHANNELS_START_MARKER: &str = "<!-- bench:channels:start -->";
/// The line before which the channel tables end.
pub const CHANNELS_END_MARKER: &str = "<!-- bench:channels:end -->";
/// The line after which the history tables (issue 13) start.
pub const HISTORY_START_MARKER: &str = "<!-- bench:history:start -->";
/// The line before which the history tables end.
pub const HISTORY_END_MARKER: &str = "<!-- bench:history:end -->";
/// The line after which the presence events tables (issue 17) start.
pub const EVENTS_START_MARKER: &str = "<!-- bench:events:start -->";
/// The line before which the presence events tables end.
pub const EVENTS_END_MARKER: &str = "<!-- bench:events:end -->";
/// The line after which the fleet tables (issue 15) start.
pub const FLEET_START_MARKER: &str = "<!-- bench:fleet:start -->";
/// The line before which the fleet tables end.
pub const FLEET_END_MARKER: &str = "<!-- bench:fleet:end -->";

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

/// The generated part of `BENCHMARKS.md` for the gateway's scenarios
/// (channel results are left to [`render_channels`]), without the markers.
pub fn render(results: &[BenchResult], info: &RunInfo) -> String {
    let results: Vec<BenchResult> = results
        .iter()
        .filter(|result| {
            !is_channel_result(result)
                && !is_events_result(result)
                && !matches!(result, BenchResult::UserLimit(_))
        })
        .cloned()
        .collect();
    let mut out = header(info);
    targets::render(&mut out, &results);
    connections::render(&mut out, &results);
    latencies::render(&mut out, &results);
    fleet::render(&mut out, &results);
    raw(&mut out, &results);
    out
}

/// The generated channels block (issue 12), without its markers. It lists
/// only the channel results, but reads the gateway's `connect` figures too
/// when the run has them (the idle connection's memory).
pub fn render_channels(results: &[BenchResult], info: &RunInfo) -> String {
    let mut out = header(info);
    channels::render(&mut out, results);
    let own: Vec<BenchResult> = results
        .iter()
        .filter(|result| is_channel_result(result) && !is_history_result(result))
        .cloned()
        .collect();
    raw(&mut out, &own);
    out
}

/// The generated history block (issue 13), without its markers: its
/// targets beside their floors, from the history results and the spread
/// fan-out runs (with history, and the same without, its floor).
pub fn render_history(results: &[BenchResult], info: &RunInfo) -> String {
    let mut out = header(info);
    history::render(&mut out, results);
    let own: Vec<BenchResult> = results
        .iter()
        .filter(|result| {
            is_history_result(result)
                || matches!(result, BenchResult::Fanout(run) if run.channels > 1)
        })
        .cloned()
        .collect();
    raw(&mut out, &own);
    out
}

/// The generated presence events block (issue 17), without its markers.
pub fn render_events(results: &[BenchResult], info: &RunInfo) -> String {
    let mut out = header(info);
    events::render(&mut out, results);
    let own: Vec<BenchResult> = results
        .iter()
        .filter(|result| is_events_result(result))
        .cloned()
        .collect();
    raw(&mut out, &own);
    out
}

/// The generated fleet block (issue 15), without its markers: its targets,
/// a gateway's memory beside the fleet, and the per-user limit across
/// gateways at the same moment.
pub fn render_fleet(results: &[BenchResult], info: &RunInfo) -> String {
    let own: Vec<BenchResult> = results
        .iter()
        .filter(|result| is_fleet_result(result))
        .cloned()
        .collect();
    let mut out = header(info);
    user_limit::render_targets(&mut out, &own);
    fleet::render(&mut out, &own);
    user_limit::render(&mut out, &own);
    raw(&mut out, &own);
    out
}

fn header(info: &RunInfo) -> String {
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
    out
}

fn raw(out: &mut String, results: &[BenchResult]) {
    out.push_str("<details><summary>Raw results (one JSON line per scenario)</summary>\n\n```\n");
    for result in results {
        out.push_str(&result.to_line());
        out.push('\n');
    }
    out.push_str("```\n\n</details>\n");
}

/// `document` with `block` between the markers, which are appended (after a
/// title when the document is empty) when missing. Nothing outside the
/// markers changes.
pub fn splice(document: &str, block: &str) -> String {
    splice_between(document, block, START_MARKER, END_MARKER)
}

/// [`splice`] between other markers (the channels block's).
pub fn splice_between(document: &str, block: &str, start_marker: &str, end_marker: &str) -> String {
    let block = block.trim_end();
    if let Some(start) = document.find(start_marker)
        && let Some(end) = document[start..].find(end_marker).map(|end| start + end)
    {
        return format!(
            "{}\n{block}\n{}",
            &document[..start + start_marker.len()],
            &document[end..]
        );
    }
    let head = if document.trim().is_empty() {
        "# Benchmarks".to_owned()
    } else {
        document.trim_end().to_owned()
    };
    format!("{head}\n\n{start_marker}\n{block}\n{end_marker}\n")
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
