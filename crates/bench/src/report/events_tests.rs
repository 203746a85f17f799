use std::collections::BTreeMap;

use super::*;
use crate::{
    report::{
        EVENTS_END_MARKER, EVENTS_START_MARKER, RunInfo, render, render_events, splice_between,
    },
    result::ResumeFigures,
    stats::{Percentiles, Samples},
};

fn percentiles(micros: &[u64]) -> Percentiles {
    let mut samples = Samples::default();
    for &m in micros {
        samples.record_micros(m);
    }
    samples.summary()
}

fn hooks(p99_micros: u64, received: u64) -> WebhooksResult {
    WebhooksResult {
        label: "pulse".into(),
        rate_target: 1_000.0,
        rate_achieved: 999.5,
        duration_s: 20.0,
        expected: 20_000,
        received,
        repeats: 0,
        bad_signatures: 0,
        posts: 4_000,
        out_of_order_users: 0,
        latency: percentiles(&[p99_micros]),
        latency_from_call: percentiles(&[p99_micros + 300]),
        watch: percentiles(&[400]),
        watch_received: 20_000,
        call_errors: 0,
        cpu_us_per_event: BTreeMap::from([("pulse-presence".to_owned(), 40.0)]),
        foreign_cpu_percent: 1.5,
    }
}

fn presence(label: &str, p99_micros: u64) -> PresenceResult {
    PresenceResult {
        label: label.into(),
        rate_target: 200.0,
        connects: 2_000,
        events: 2_000,
        latency: percentiles(&[p99_micros]),
        after_connected_message: percentiles(&[150]),
        handshake: percentiles(&[p99_micros - 100]),
    }
}

fn resume(first_micros: u64, exact: u64) -> WatchResumeResult {
    let figures = |missed| ResumeFigures {
        missed,
        open: percentiles(&[1_000]),
        first: percentiles(&[first_micros]),
        last: percentiles(&[first_micros + 2_000]),
        exact,
    };
    WatchResumeResult {
        label: "pulse".into(),
        samples: 1,
        resumes: vec![figures(10), figures(100)],
        unary: percentiles(&[800]),
        fresh_open: percentiles(&[900]),
        fresh_first: percentiles(&[1_300]),
        failures: BTreeMap::new(),
        foreign_cpu_percent: 0.0,
    }
}

fn memory_run() -> EventMemoryResult {
    EventMemoryResult {
        label: "pulse".into(),
        calls: 100_000,
        events: 110_000,
        logs: 128,
        field_bytes: [12, 36, 20],
        log_bytes: 11_000_000,
        used_memory_before: 1_000_000,
        used_memory_after: 13_100_000,
        floor_bytes: 9_900_000,
        floor_used_memory: 10_000_000,
        floor_events: 110_000,
    }
}

fn all(webhook_p99: u64, watch_p99: u64) -> Vec<BenchResult> {
    vec![
        BenchResult::Webhooks(hooks(webhook_p99, 20_000)),
        BenchResult::Presence(presence(EVENTS_PRESENCE, watch_p99)),
        BenchResult::Presence(presence(EVENTS_PRE17, 1_300)),
        BenchResult::Presence(presence(EVENTS_PRESENCE, watch_p99 + 2)),
        BenchResult::WatchResume(resume(4_000, 1)),
        BenchResult::EventMemory(memory_run()),
    ]
}

#[test]
fn each_target_is_beside_its_floor_with_a_verdict() {
    let text = render_events(&all(12_000, 1_400), &RunInfo::default());
    let row = |start: &str| {
        text.lines()
            .find(|line| line.starts_with(&format!("| {start}")))
            .unwrap_or_else(|| panic!("no row {start:?} in\n{text}"))
            .to_owned()
    };
    let hook = row("event (its change acknowledged) → webhook receiver p99 at 1,000 events/s");
    assert!(hook.contains("| 12 ms | 0.4 ms the same events on a `Watch` stream | 30.00× | **PASS** (24 % of the limit) |"), "{hook}");
    let watch = row("event → a `Watch` consumer p99");
    assert!(watch.contains("median of 2 runs"), "{watch}");
    assert!(watch.contains("| 1.401 ms |"), "{watch}");
    assert!(
        watch.contains("1.3 ms the build before issue 17"),
        "{watch}"
    );
    let resumed = row("a `Watch` that reconnects with `since` after 100 missed events");
    assert!(
        resumed.contains("| 4 ms | 1.3 ms a fresh `Watch`"),
        "{resumed}"
    );
    assert!(resumed.contains("**PASS**"), "{resumed}");
    // 12,100,000 B over 110,000 events is 110 B; MEMORY USAGE gives 100 B.
    let memory = row("Redis memory per retained event");
    assert!(
        memory.contains("| 110 B | 90 B the same entries"),
        "{memory}"
    );
    assert!(memory.contains("**PASS** (73 % of the limit)"), "{memory}");
    assert!(text.contains("### `Watch` propagation"));
    assert!(
        text.contains("| 2 | before issue 17 (`098c020`) |"),
        "{text}"
    );
    assert!(text.contains("RESULT {\"scenario\":\"webhooks\""));
}

#[test]
fn missed_targets_and_lost_events_fail() {
    let mut results = all(80_000, 7_000);
    results.push(BenchResult::WatchResume(resume(150_000, 0)));
    let text = render_events(&results, &RunInfo::default());
    assert!(
        text.contains("**FAIL** (by 30 ms, 1.6× the limit)"),
        "{text}"
    );
    assert!(
        text.contains("**FAIL** (by 2.001 ms, 1.4× the limit)"),
        "{text}"
    );
    assert!(
        text.contains("**FAIL** (0 of 1 resumes delivered exactly the missed events)"),
        "{text}"
    );
    let lost = vec![BenchResult::Webhooks(hooks(1_000, 19_999))];
    let text = render_events(&lost, &RunInfo::default());
    assert!(text.contains("**FAIL** (19999 of 20000 received"), "{text}");
}

#[test]
fn the_events_block_is_its_own() {
    let results = all(12_000, 1_400);
    assert!(results.iter().all(is_events_result));
    assert!(!is_events_result(&BenchResult::Presence(presence(
        "pulse", 1_000
    ))));
    // The gateway's block leaves them out.
    let gateway = render(&results, &RunInfo::default());
    assert!(!gateway.contains("webhooks"), "{gateway}");
    let document = format!("# B\n\n{EVENTS_START_MARKER}\nold\n{EVENTS_END_MARKER}\n\nafter\n");
    let updated = splice_between(
        &document,
        &render_events(&results, &RunInfo::default()),
        EVENTS_START_MARKER,
        EVENTS_END_MARKER,
    );
    assert!(!updated.contains("old"));
    assert!(updated.ends_with("after\n"));
    assert!(updated.contains("### Targets (issue 17"));
}
