use std::collections::BTreeMap;

use super::*;
use crate::{
    report::{RunInfo, render, render_fleet},
    stats::Samples,
};

fn percentiles(micros: &[u64]) -> crate::stats::Percentiles {
    let mut samples = Samples::default();
    for &m in micros {
        samples.record_micros(m);
    }
    samples.summary()
}

fn run(label: &str, limit: u64, connects: u64, exact: u64) -> UserLimitResult {
    let trials = 200;
    let refused = (connects - limit) * trials;
    UserLimitResult {
        label: label.into(),
        gateways: 3,
        trials,
        concurrent_users: 4,
        limit,
        connects_per_trial: connects,
        exact_trials: exact,
        accepted_min: limit,
        accepted_max: limit,
        accepted_by_gateway: vec![334, 333, 333],
        refusals: if refused == 0 {
            BTreeMap::new()
        } else {
            BTreeMap::from([("4429 too_many_connections".to_owned(), refused)])
        },
        others: BTreeMap::new(),
        presence_mismatches: 0,
        first_inexact: None,
        accepted_handshake: percentiles(&[900, 1_000, 2_500]),
        refused_handshake: percentiles(&[1_100, 1_200, 3_000]),
        duration_s: 12.5,
    }
}

#[test]
fn every_trial_exact_passes_and_the_table_shows_the_counts() {
    let results = [
        BenchResult::UserLimit(run(USER_LIMIT, 5, 12, 200)),
        BenchResult::UserLimit(run(USER_LIMIT_CONTROL, 5, 5, 200)),
    ];
    let text = render_fleet(&results, &RunInfo::default());
    assert!(
        text.contains(
            "| 200/200 trials exact (L 5, K 12); 200/200 trials exact (L 5, K 5) | **PASS** |"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "| pulse-user-limit | 3 | 5 | 12 | 200 (4) | 200 | 5–5 | 1,400 × 4429 too_many_connections | none | 0 | 1 / 2.5 ms | 1.2 / 3 ms |"
        ),
        "{text}"
    );
    assert!(
        text.contains("| pulse-user-limit-control | 3 | 5 | 5 | 200 (4) | 200 | 5–5 | none | none | 0 | 1 / 2.5 ms | 1.2 / 3 ms |"),
        "{text}"
    );
    assert!(
        text.contains("1,400 refusals expected (7 per trial), 1,400 seen"),
        "{text}"
    );
    // The fleet's memory row is there, not measured in this run.
    assert!(
        text.contains("vs none: within 5 % | not run | not measured |"),
        "{text}"
    );
    assert!(text.contains(r#"RESULT {"scenario":"user_limit","label":"pulse-user-limit""#));
    // The gateway's block leaves the limit to the fleet block.
    assert!(!render(&results, &RunInfo::default()).contains("user_limit"));
}

#[test]
fn one_trial_off_or_another_outcome_fails() {
    let mut off = run(USER_LIMIT, 5, 12, 199);
    off.accepted_max = 6;
    off.first_inexact = Some("trial 17 (u-17): 6 live".into());
    let text = render_fleet(&[BenchResult::UserLimit(off)], &RunInfo::default());
    assert!(
        text.contains("| 199/200 trials exact (L 5, K 12) | **FAIL** |"),
        "{text}"
    );
    assert!(text.contains("| 5–6 |"), "{text}");
    assert!(
        text.contains("First trial not exact: trial 17 (u-17): 6 live."),
        "{text}"
    );

    let mut other = run(USER_LIMIT, 5, 12, 200);
    other.refusals.insert("1013 auth_unavailable".into(), 1);
    assert!(!other.all_exact());
    let text = render_fleet(&[BenchResult::UserLimit(other)], &RunInfo::default());
    assert!(text.contains("**FAIL**"), "{text}");

    // The control alone does not test the limit.
    let text = render_fleet(
        &[BenchResult::UserLimit(run(USER_LIMIT_CONTROL, 5, 5, 200))],
        &RunInfo::default(),
    );
    assert!(text.contains("at the same moment: every trial exactly the limit live, the rest refused 4429 `too_many_connections` | not run | not measured |"), "{text}");
}
