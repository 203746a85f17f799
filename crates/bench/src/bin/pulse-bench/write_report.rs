//! `pulse-bench report`: the `RESULT` lines of one run into the blocks of
//! `BENCHMARKS.md` they belong to.

use std::path::PathBuf;

use anyhow::Context;
use pulse_bench::{
    report::{self, RunInfo},
    result::BenchResult,
};

/// Which block alone to write, if one.
pub(crate) struct Only {
    pub(crate) history: bool,
    pub(crate) events: bool,
    pub(crate) fleet: bool,
}

pub(crate) fn write_report(
    files: &[PathBuf],
    benchmarks: &PathBuf,
    info: RunInfo,
    only: Only,
) -> anyhow::Result<()> {
    // Any `only` skips the gateway's and the channels' blocks.
    let only_history = only.history || only.events || only.fleet;
    let mut results = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for line in text.lines() {
            if let Some(parsed) = BenchResult::from_line(line) {
                results
                    .push(parsed.with_context(|| format!("a RESULT line in {}", file.display()))?);
            }
        }
    }
    anyhow::ensure!(!results.is_empty(), "no RESULT line in {files:?}");
    let mut updated = std::fs::read_to_string(benchmarks).unwrap_or_default();
    // Each block is written only when its results are there, so a run of
    // the channel scenarios alone leaves the gateway's block as it was,
    // and a run of the history scenarios alone the channels' one.
    if !only_history
        && results.iter().any(|result| {
            !report::is_channel_result(result)
                && !report::is_events_result(result)
                && !matches!(result, BenchResult::UserLimit(_))
        })
    {
        updated = report::splice(&updated, &report::render(&results, &info));
    }
    if !only_history
        && results
            .iter()
            .any(|result| report::is_channel_result(result) && !report::is_history_result(result))
    {
        updated = report::splice_between(
            &updated,
            &report::render_channels(&results, &info),
            report::CHANNELS_START_MARKER,
            report::CHANNELS_END_MARKER,
        );
    }
    if !only.events && !only.fleet && results.iter().any(report::is_history_result) {
        updated = report::splice_between(
            &updated,
            &report::render_history(&results, &info),
            report::HISTORY_START_MARKER,
            report::HISTORY_END_MARKER,
        );
    }
    if !only.history && !only.fleet && results.iter().any(report::is_events_result) {
        updated = report::splice_between(
            &updated,
            &report::render_events(&results, &info),
            report::EVENTS_START_MARKER,
            report::EVENTS_END_MARKER,
        );
    }
    if !only.history && !only.events && results.iter().any(report::is_fleet_result) {
        updated = report::splice_between(
            &updated,
            &report::render_fleet(&results, &info),
            report::FLEET_START_MARKER,
            report::FLEET_END_MARKER,
        );
    }
    std::fs::write(benchmarks, updated)
        .with_context(|| format!("writing {}", benchmarks.display()))?;
    println!(
        "wrote {} results into {}",
        results.len(),
        benchmarks.display()
    );
    Ok(())
}
