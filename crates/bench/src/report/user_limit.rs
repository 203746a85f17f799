//! The `user-limit` section (issue 15) and the fleet block's targets: the
//! per-user connection limit when one user connects to three gateways at
//! the same moment.

use std::fmt::Write as _;

use super::{fleet, number, verdict};
use crate::result::{BenchResult, UserLimitResult};

/// The label of the run with more sockets at once than the limit.
pub const USER_LIMIT: &str = "pulse-user-limit";
/// The same with several users' trials at once, for load.
pub const USER_LIMIT_LOADED: &str = "pulse-user-limit-loaded";
/// The label of the control: exactly as many sockets as the limit.
pub const USER_LIMIT_CONTROL: &str = "pulse-user-limit-control";

/// Whether a result belongs to the fleet block (issue 15): the `fleet`
/// runs and the `user-limit` ones.
pub fn is_fleet_result(result: &BenchResult) -> bool {
    match result {
        BenchResult::UserLimit(_) => true,
        BenchResult::Connect(run) => {
            run.label == fleet::FLEET_ALONE || run.label == fleet::FLEET_CROWDED
        }
        _ => false,
    }
}

/// Every `user-limit` run, in the order they ran.
fn runs(results: &[BenchResult]) -> Vec<&UserLimitResult> {
    results
        .iter()
        .filter_map(|result| match result {
            BenchResult::UserLimit(run) => Some(run),
            _ => None,
        })
        .collect()
}

/// The targets of issue 15: the fleet's memory, and the limit.
pub(super) fn render_targets(out: &mut String, results: &[BenchResult]) {
    out.push_str("### Targets (issue 15)\n\n");
    out.push_str("| target | measured | verdict |\n| --- | --- | --- |\n");
    let (target, measured, goal) = fleet::target(results);
    let (cell, judged) = match measured {
        Some((value, unit)) => (
            format!("{}{unit}", number(value)),
            verdict(value, goal, unit),
        ),
        None => ("not run".to_owned(), "not measured".to_owned()),
    };
    let _ = writeln!(out, "| {target} | {cell} | {judged} |");
    let (cell, judged) = limit_target(results);
    let _ = writeln!(
        out,
        "| per-user limit exact across three gateways at the same moment: every trial exactly the limit live, the rest refused 4429 `too_many_connections` | {cell} | {judged} |"
    );
    out.push('\n');
}

/// The measured cell and the verdict of the limit's target: PASS only when
/// an over-the-limit run is there and every run's every trial was exact.
fn limit_target(results: &[BenchResult]) -> (String, String) {
    let runs = runs(results);
    if !runs.iter().any(|run| run.connects_per_trial > run.limit) {
        return ("not run".to_owned(), "not measured".to_owned());
    }
    let cell = runs
        .iter()
        .map(|run| {
            format!(
                "{}/{} trials exact (L {}, K {})",
                number(run.exact_trials as f64),
                number(run.trials as f64),
                run.limit,
                run.connects_per_trial
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let judged = if runs.iter().all(|run| run.all_exact()) {
        "**PASS**"
    } else {
        "**FAIL**"
    };
    (cell, judged.to_owned())
}

/// The section, when a `user-limit` run is there.
pub(super) fn render(out: &mut String, results: &[BenchResult]) {
    let runs = runs(results);
    if runs.is_empty() {
        return;
    }
    out.push_str(
        "### One user's sockets at once on three gateways, over the per-user limit (`user-limit`)\n\n",
    );
    out.push_str(
        "| run | gateways | limit L | sockets at once K | trials (users at once) | trials exact | live per trial (min–max) | refused, by close and code | other outcomes | presence ≠ live | live: upgrade to `connected` p50 / p99 | refused: upgrade to `error` p50 / p99 |\n",
    );
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    let counts = |map: &std::collections::BTreeMap<String, u64>| {
        if map.is_empty() {
            "none".to_owned()
        } else {
            map.iter()
                .map(|(reason, n)| format!("{} × {reason}", number(*n as f64)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let ms = |p: &crate::stats::Percentiles| {
        if p.count == 0 {
            "n/a".to_owned()
        } else {
            format!("{} / {} ms", number(p.p50_ms), number(p.p99_ms))
        }
    };
    for run in &runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} ({}) | {} | {}–{} | {} | {} | {} | {} | {} |",
            run.label,
            run.gateways,
            run.limit,
            run.connects_per_trial,
            number(run.trials as f64),
            run.concurrent_users,
            number(run.exact_trials as f64),
            run.accepted_min,
            run.accepted_max,
            counts(&run.refusals),
            counts(&run.others),
            run.presence_mismatches,
            ms(&run.accepted_handshake),
            ms(&run.refused_handshake),
        );
    }
    out.push('\n');
    for run in &runs {
        let spread = run
            .accepted_by_gateway
            .iter()
            .map(|n| number(*n as f64))
            .collect::<Vec<_>>()
            .join(" / ");
        let _ = writeln!(
            out,
            "- `{}`: live sockets by gateway over all trials {spread}; {} refusals expected ({} per trial), {} seen; {:.1} s.{}",
            run.label,
            number((run.over_limit_per_trial() * run.trials) as f64),
            run.over_limit_per_trial(),
            number(run.refusals.values().sum::<u64>() as f64),
            run.duration_s,
            run.first_inexact
                .as_ref()
                .map_or(String::new(), |first| format!(
                    " First trial not exact: {first}."
                ))
        );
    }
    out.push('\n');
}

#[cfg(test)]
#[path = "user_limit_tests.rs"]
mod tests;
