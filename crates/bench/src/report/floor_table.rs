//! A targets table whose rows each stand beside a floor from the same run:
//! the shape the history (issue 13) and presence-event (issue 17) blocks
//! share.

use std::fmt::Write as _;

use super::{number, ratio};

/// One row: a target, its figure, its floor, and the limit it is held to.
pub(super) struct Row {
    pub target: String,
    pub measured: Option<f64>,
    /// The floor's figure, for the ratio.
    pub floor: Option<f64>,
    /// The floor cell, in words.
    pub floor_cell: String,
    pub unit: &'static str,
    pub limit: f64,
    /// A reason the row fails whatever the figure (a recovery that lost
    /// publications, a webhook run that lost events).
    pub broken: Option<String>,
}

impl Row {
    /// `**PASS**` (with the share of the limit used when `share` is set),
    /// `**FAIL** (...)` with by how much, or "not measured".
    fn verdict(&self, share: bool) -> String {
        let Some(measured) = self.measured else {
            return "not measured".to_owned();
        };
        if let Some(broken) = &self.broken {
            return format!("**FAIL** ({broken})");
        }
        if measured > self.limit {
            return format!(
                "**FAIL** (by {}{}, {:.1}× the limit)",
                number(measured - self.limit),
                self.unit,
                measured / self.limit
            );
        }
        if share {
            format!(
                "**PASS** ({:.0} % of the limit)",
                measured / self.limit * 100.0
            )
        } else {
            "**PASS**".to_owned()
        }
    }
}

/// `value` in milliseconds, or "not run".
pub(super) fn ms(value: Option<f64>) -> String {
    value.map_or("not run".to_owned(), |v| format!("{} ms", number(v)))
}

/// Writes `title` and the rows' table, with `measured` as the figure
/// column's heading; nothing when no row was measured. Returns whether it
/// wrote.
pub(super) fn render(
    out: &mut String,
    title: &str,
    measured: &str,
    rows: &[Row],
    share: bool,
) -> bool {
    if rows.iter().all(|row| row.measured.is_none()) {
        return false;
    }
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(
        out,
        "| target | {measured} | floor, same run | ÷ floor | verdict |"
    );
    out.push_str("| --- | --- | --- | --- | --- |\n");
    for row in rows {
        let divided = match (row.measured, row.floor) {
            (Some(measured), Some(floor)) => ratio(measured, floor),
            _ => "n/a".to_owned(),
        };
        let figure = row.measured.map_or("not run".to_owned(), |v| {
            format!("{}{}", number(v), row.unit)
        });
        let _ = writeln!(
            out,
            "| {} | {figure} | {} | {divided} | {} |",
            row.target,
            row.floor_cell,
            row.verdict(share)
        );
    }
    out.push('\n');
    true
}
