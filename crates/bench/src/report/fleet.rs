//! The `fleet` section: a gateway's memory with its own connections, alone
//! in presence and beside many connections of other instances.

use std::fmt::Write as _;

use super::{Goal, median_connect, number, verdict};
use crate::result::{BenchResult, ConnectResult};

/// The label of the `fleet` run where no other instance holds connections.
pub const FLEET_ALONE: &str = "pulse-fleet-alone";
/// The label of the `fleet` run where other instances hold many.
pub const FLEET_CROWDED: &str = "pulse-fleet-crowded";

/// The most the two runs' RSS may differ, in percent of the lone one's.
pub(super) const MAX_DIFFERENCE_PERCENT: f64 = 5.0;

/// The two runs, when both are there.
fn runs(results: &[BenchResult]) -> Option<(ConnectResult, ConnectResult)> {
    Some((
        median_connect(results, FLEET_ALONE)?,
        median_connect(results, FLEET_CROWDED)?,
    ))
}

/// How much more (or less) RSS the crowded run's gateway had than the lone
/// one's with all its connections held, in percent of the lone one's.
pub(super) fn difference_percent(alone: &ConnectResult, crowded: &ConnectResult) -> Option<f64> {
    let alone = alone.server_rss_after_kib? as f64;
    let crowded = crowded.server_rss_after_kib? as f64;
    (alone > 0.0).then(|| (crowded - alone) / alone * 100.0)
}

/// The row of the targets table, measured or not.
pub(super) fn target(results: &[BenchResult]) -> (String, Option<(f64, &'static str)>, Goal) {
    let others = runs(results)
        .and_then(|(_, crowded)| crowded.other_instances_connections)
        .map_or_else(|| "many".to_owned(), |n| number(n as f64));
    (
        format!(
            "gateway RSS with its own connections, {others} held by other instances vs none: within {} %",
            number(MAX_DIFFERENCE_PERCENT)
        ),
        runs(results)
            .and_then(|(alone, crowded)| difference_percent(&alone, &crowded))
            .map(|percent| (percent.abs(), " %")),
        Goal::AtMost(MAX_DIFFERENCE_PERCENT),
    )
}

/// The section, when both runs are there.
pub(super) fn render(out: &mut String, results: &[BenchResult]) {
    let Some((alone, crowded)) = runs(results) else {
        return;
    };
    out.push_str("### A gateway's memory and the rest of the fleet (`fleet`)\n\n");
    out.push_str(
        "| connections other instances hold | own connections | gateway RSS before its own | with its own held |\n",
    );
    out.push_str("| --- | --- | --- | --- |\n");
    let kib = |value: Option<u64>| {
        value.map_or("n/a".to_owned(), |kib| {
            format!("{} KiB", number(kib as f64))
        })
    };
    for run in [&alone, &crowded] {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            number(run.other_instances_connections.unwrap_or(0) as f64),
            number(run.connected as f64),
            kib(run.server_rss_before_kib),
            kib(run.server_rss_after_kib),
        );
    }
    if let Some(percent) = difference_percent(&alone, &crowded) {
        let _ = writeln!(
            out,
            "\nDifference with all its own connections held: {:+.1} %, {}.\n",
            percent,
            verdict(percent.abs(), Goal::AtMost(MAX_DIFFERENCE_PERCENT), " %")
        );
    }
}
